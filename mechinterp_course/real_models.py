"""Optional: real pretrained models (GPT-2 small and friends) through ``TransformerBridge.boot_transformers``.

The course itself never needs this module: its own models ship in the package (``mechinterp_course.models.load``) and
everything runs offline. This is the door to published models for students with the network (Colab, a GPU box) or
with a Hugging Face cache: ``load_pretrained("gpt2")`` returns a TransformerLens 4.x ``TransformerBridge`` with the
same hook names the chapters use (``blocks.0.attn.hook_pattern``, ``blocks.0.hook_resid_pre``, ...).

TransformerLens 4 removed ``HookedTransformer.from_pretrained``; ``boot_transformers`` replaces it. Two differences
matter for the notebooks: it returns Hugging Face's raw weights (LayerNorm not folded, weights not centred; call
``model.enable_compatibility_mode()`` for the 2.x numerics that direct logit attribution expects), and it forces the
"eager" attention implementation so that attention-pattern hooks fire.

``make_tiny_gpt2(folder)`` writes a tiny, randomly initialised GPT-2 (weights and a byte-level tokenizer built in
code) so that this path can be tested, and tried in class, with no network: ``load_pretrained(folder)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

#: The model ``load_pretrained`` loads by default: GPT-2 small (124M parameters, about 550 MB on first download).
DEFAULT_MODEL = "gpt2"

#: What to tell a student whose load failed for want of the network.
OFFLINE_HINT = (
    "needs the network or a Hugging Face cache that already holds it (or a local folder with config.json, the "
    "weights and a tokenizer, such as one written by real_models.make_tiny_gpt2); the course's own models are in "
    "mechinterp_course.models.load(...), which works offline"
)

# The tiny GPT-2 of make_tiny_gpt2: small enough to build and load in well under a second.
TINY_N_LAYER = 2
TINY_N_HEAD = 2
TINY_N_EMBD = 32
TINY_N_POSITIONS = 64
#: GPT-2's end-of-text token, which GPT-2 also uses as BOS and (for batching) as padding.
END_OF_TEXT = "<|endoftext|>"
#: One token per byte (ids 0..255 are the byte values, as in GPT-2's base alphabet) plus END_OF_TEXT (id 256).
TINY_VOCAB_SIZE = 257


class PretrainedUnavailableError(OSError):
    """A pretrained model could not be loaded (no network, no cache, no such folder). An ``OSError``, like the
    Hugging Face error it wraps, so code that already catches ``OSError`` keeps working."""


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Hide transformers' progress bars inside the block when ``enabled`` is False (then restore the user's choice).

    A local load takes milliseconds; its "Loading weights" bar is noise on stderr in a notebook."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled and was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not enabled and was_enabled:
            hf_logging.enable_progress_bar()


def is_cached(name: str) -> bool:
    """Whether the Hugging Face cache already holds ``name``'s config (so loading it needs no network). Looks at the
    disk only: it never opens a connection."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id=str(name), filename="config.json"), str)
    except Exception:  # an invalid repo id, an unreadable cache: not cached
        return False


def should_load(name: str, choice: bool | str = "auto") -> tuple[bool, str]:
    """``(load?, why)`` for a notebook's optional real-model section. ``choice`` True or False decides; ``"auto"``
    loads only when that costs no surprise download: the model is already cached, or the notebook runs on Colab or
    on a GPU (where the download is quick and expected). Never opens a connection."""
    import sys

    if choice is True or choice is False:
        return choice, "as you chose"
    if choice != "auto":
        raise ValueError(f"choice must be True, False or 'auto', not {choice!r}")
    if is_cached(name):
        return True, f"{name} is in the Hugging Face cache"
    if "google.colab" in sys.modules:
        return True, "running on Colab"
    if torch.cuda.is_available():
        return True, "a GPU is available"
    return False, (
        f"{name} is not cached and this looks like a laptop (no GPU, not Colab): set the choice to True to "
        f"download it (GPT-2 small is about 550 MB)"
    )


def load_pretrained(name: str | Path = DEFAULT_MODEL, device: str | None = None, **kwargs: Any):
    """A Hugging Face model wrapped in a TransformerLens 4.x ``TransformerBridge``, in eval mode.

    ``name`` is a Hub name (``"gpt2"``, ``"EleutherAI/pythia-70m"``: needs the network the first time, then the
    Hugging Face cache) or a local folder holding ``config.json``, the weights and a tokenizer (works offline).
    ``device`` defaults to TransformerLens's choice (CUDA if available, else CPU); other keyword arguments go to
    ``TransformerBridge.boot_transformers`` (``dtype``, ``n_ctx``, ``hf_config_overrides``, ...).

    Raises :class:`PretrainedUnavailableError` (an ``OSError``) with a hint when the model cannot be fetched.
    """
    from transformer_lens.model_bridge import TransformerBridge

    local = Path(str(name)).expanduser()
    is_local = local.is_dir()
    looks_like_path = str(name).startswith((".", "/", "~")) or isinstance(name, Path)
    if looks_like_path and not is_local:
        raise PretrainedUnavailableError(
            f"load_pretrained({str(name)!r}): no such folder. A local model is a folder "
            f"with config.json, the weights and a tokenizer."
        )
    source = str(local) if is_local else str(name)
    try:
        with _progress_bars(enabled=not is_local):
            model = TransformerBridge.boot_transformers(source, device=device, **kwargs)
    except OSError as error:  # transformers / huggingface_hub raise OSError subclasses when they cannot fetch
        raise PretrainedUnavailableError(
            f"load_pretrained({source!r}) {OFFLINE_HINT}. The underlying error was: {error}"
        ) from error
    model.eval()
    return model


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (so that a byte-level vocabulary is plain strings).

    Printable Latin-1 bytes map to themselves; the rest to code points from 256 upwards, in byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = {}
    extra = 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def tiny_tokenizer():
    """A byte-level ``PreTrainedTokenizerFast`` built in code (no download): token id ``b`` is byte ``b`` and
    ``END_OF_TEXT`` is 256, used as BOS, EOS and padding as in GPT-2. Any text tokenizes, one token per UTF-8 byte,
    and decodes back exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
    vocab[END_OF_TEXT] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: every byte is its own token
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        name_or_path="tiny-gpt2",
    )


def make_tiny_gpt2(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny randomly initialised Hugging Face GPT-2 (``GPT2LMHeadModel``: 2 layers, 2 heads, d_model 32,
    context 64, the 257-token byte-level vocabulary of :func:`tiny_tokenizer`) and its tokenizer to ``path``.

    Fully offline; the same seed gives the same weights (the global torch RNG is left as it was). Dropout is off, so
    the model is deterministic in train mode too. Returns the folder, ready for ``load_pretrained(path)``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    end_of_text = TINY_VOCAB_SIZE - 1
    config = GPT2Config(
        vocab_size=TINY_VOCAB_SIZE,
        n_positions=TINY_N_POSITIONS,
        n_embd=TINY_N_EMBD,
        n_layer=TINY_N_LAYER,
        n_head=TINY_N_HEAD,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=end_of_text,
        eos_token_id=end_of_text,
        pad_token_id=end_of_text,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config).eval()
    tokenizer = tiny_tokenizer()
    if tokenizer.convert_tokens_to_ids(END_OF_TEXT) != end_of_text or len(tokenizer) != TINY_VOCAB_SIZE:
        raise AssertionError("tiny tokenizer and tiny GPT-2 disagree on the vocabulary")
    with _progress_bars(enabled=False):
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
