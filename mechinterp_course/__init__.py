"""mechinterp-course: the helper library behind the course's notebooks.

Shared machinery, small and flat:

- ``models``    the course's small transformers (TransformerLens 4.x ``TransformerBridge``) and the model zoo;
- ``tasks``     synthetic data sets (repeated-token sequences, clean/corrupted pairs, modular arithmetic);
- ``training``  the course's one training loop (progress bar, evaluation, snapshots, early stopping);
- ``recipes``   the zoo's training recipes (``mechinterp-course train NAME`` rebuilds a zoo model);
- ``plots``     every figure: plotly helpers, offline circuitsvis, the timeline and maps, live training curves;
- ``research``  the talk's research areas (one frozen ``Area`` each: scores, advice, chapter) and the score widget;
- ``checking``  what exercises and checks are written with: ``@exercise``, ``@check``, ``call``, ``compare``,
  ``fail``, seeded ``trials``, answer digests;
- ``real_models`` the optional online path to GPT-2 small.

One room per chapter, each of the same shape: the chapter's tools (``__init__`` and data modules), ``reference``
(the exercises' answers, generated from the chapter's solution notebook) and ``checks`` (what its test cells call):

- ``history``   chapter 00, History and landscape;
- ``circuits``  chapter 01, Circuits;
- ``grokking``  chapter 02, Grokking;
- ``backup``    chapter 03, Backup behaviour;
- ``understanding``  chapter 06, What counts as mechanistic understanding.

The instructor's tools are ``instructor``: ``build`` (student notebooks and reference modules from the solutions),
``grade`` (sandboxed, parallel grading with nbgrader) and the ``mechinterp-course`` command line.
"""

from __future__ import annotations

import os
import random

__version__ = "0.1.0"


def setup(seed: int = 0, device: str | None = None) -> str:
    """Seed every random number generator the course uses and pick a device.

    Called by the first cell of every chapter, so that a notebook gives the same numbers each time it runs.
    Returns the device name (``"cpu"`` unless CUDA is available and no device was asked for).
    """
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device
