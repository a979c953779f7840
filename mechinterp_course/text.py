"""Real text, offline: the source code of Python's standard library, and the course's tokenizer for it.

The course downloads nothing, so its first language model (``stdlib-2l`` in the zoo, chapters 03 and 04) is trained
on text every Python installation carries: the ``.py`` files of the interpreter's standard library. Files are read
in sorted order of their path relative to the library root (``site-packages`` left out) and assigned to the train or
the held-out split by a hash of that path, so the split never depends on the order the file system lists them in.

The tokenizer is a byte-level BPE (GPT-2's scheme, trained by the ``tokenizers`` package that transformers already
installs) with ``VOCAB_SIZE`` tokens, trained on the train split only. Its token 0 is ``<|endoftext|>``, which the
course uses as BOS and as the separator between files.

Different Python versions carry different libraries, so the corpus (and everything trained on it) depends on the
local Python. The zoo therefore ships, beside the model, a sample of *held-out tokens* (``stdlib-2l.tokens``): the
chapters measure on those, so their numbers are the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

#: BPE vocabulary size: big enough that common identifiers and keywords are single tokens (so induction has
#: something to copy), small enough that the embedding and unembedding stay a minority of a small model's weights.
VOCAB_SIZE = 4096
#: The special token that starts every sequence and separates files.
BOS = "<|endoftext|>"
#: One file in HELD_OUT_MODULUS goes to the held-out split (by the hash of its relative path): 5%.
HELD_OUT_MODULUS = 20


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(root: Path | None = None) -> list[Path]:
    """Every ``.py`` file of the standard library, sorted by relative path (site-packages left out)."""
    root = stdlib_root() if root is None else Path(root)
    files = [p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_held_out(relative_path: str) -> bool:
    """The split rule: a stable hash of the path, not of the content (a file edited between Python patch releases
    stays on its side)."""
    digest = hashlib.sha256(relative_path.encode()).digest()
    return int.from_bytes(digest[:8], "big") % HELD_OUT_MODULUS == 0


@dataclass
class Corpus:
    train: list[str]  # file texts, in sorted path order
    held_out: list[str]
    sha256: str  # of every (path, text) pair in order: the card records it
    python: str

    @property
    def n_bytes(self) -> dict[str, int]:
        return {
            "train": sum(len(t.encode()) for t in self.train),
            "held_out": sum(len(t.encode()) for t in self.held_out),
        }


def read_corpus(root: Path | None = None) -> Corpus:
    """Read the standard library's source, split by :func:`is_held_out`. Files that are not UTF-8 are skipped."""
    root = stdlib_root() if root is None else Path(root)
    hasher = hashlib.sha256()
    train, held_out = [], []
    for path in corpus_files(root):
        relative = path.relative_to(root).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        hasher.update(relative.encode() + b"\0" + text.encode() + b"\0")
        (held_out if is_held_out(relative) else train).append(text)
    version = ".".join(map(str, sys.version_info[:3]))
    return Corpus(train=train, held_out=held_out, sha256=hasher.hexdigest(), python=version)


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer (``tokenizers.Tokenizer``) trained on ``texts``; ``BOS`` is token 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def encode_files(tokenizer, texts: list[str]) -> Tensor:
    """All files as one stream of token ids, each file preceded by BOS: ``[n_tokens]`` (int64)."""
    bos = tokenizer.token_to_id(BOS)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts):
        ids.append(bos)
        ids.extend(encoding.ids)
    return torch.tensor(ids, dtype=torch.long)


def windows(stream: Tensor, seq_len: int, bos: int = 0) -> Tensor:
    """Cut a token stream into non-overlapping rows of ``seq_len - 1`` tokens, each prefixed with BOS:
    ``[n_rows, seq_len]``. Every row starts with BOS, as every sequence the model sees does (its first position is
    then a fixed "attention sink", and position 1 onwards is real text)."""
    body = seq_len - 1
    n_rows = len(stream) // body
    rows = stream[: n_rows * body].reshape(n_rows, body)
    return torch.cat([torch.full((n_rows, 1), bos, dtype=stream.dtype), rows], dim=1)


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's vocabulary and merges (what the card records)."""
    return hashlib.sha256(json.dumps(json.loads(tokenizer.to_str()), sort_keys=True).encode()).hexdigest()[:16]
