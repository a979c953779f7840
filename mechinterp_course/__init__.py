"""mechinterp-course: the helper library behind the course's notebooks.

One module per concern, each imported by the notebooks and the tests:

- ``models``    the course's small transformers (TransformerLens 4.x ``TransformerBridge``) and the model zoo;
- ``tasks``     synthetic data sets (repeated-token sequences, clean/corrupted pairs);
- ``training``  a small training loop with a progress bar, evaluation and snapshots;
- ``recipes``   the zoo's training recipes (``mechinterp-course train NAME`` rebuilds a zoo model);
- ``history``   chapter 00: the deck's history and maps as data, the digits CNN and feature visualisation;
- ``circuits``  chapter 01: reference implementations (what the graders compare against);
- ``grokking``  chapter 02: modular addition, the Fourier analysis, progress measures, the in-notebook run;
- ``graders``   instant-feedback ``check_*`` functions, used in notebooks and in nbgrader test cells
  (``grokking_graders`` holds chapter 02's);
- ``plots``     plotly figures and offline circuitsvis wrappers;
- ``research``  the deck's point scores and research advice, and the widget students record their own in;
- ``real_models`` the optional online path to GPT-2 small;
- ``notebooks`` / ``autograde`` / ``cli``  the instructor's tools (build the student notebooks, grade submissions).
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
