"""Synthetic data sets. Everything is generated on the fly from a seed: nothing is downloaded.

Induction data uses a vocabulary whose token 0 is ``BOS`` and tokens ``1 .. d_vocab - 1`` are "random" tokens with no
meaning, so the only way to predict a token is to have seen the sequence before: exactly the job of an induction head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

BOS = 0


def _generator(seed: int | torch.Generator | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def _random_tokens(shape: tuple[int, ...], d_vocab: int, generator: torch.Generator) -> Tensor:
    return torch.randint(1, d_vocab, shape, generator=generator)


def _distinct_tokens(batch: int, length: int, d_vocab: int, generator: torch.Generator) -> Tensor:
    """``[batch, length]`` tokens, all different within a row (so "the earlier copy" is unambiguous)."""
    if length > d_vocab - 1:
        raise ValueError(f"cannot draw {length} distinct tokens from a vocabulary of {d_vocab - 1} non-BOS tokens")
    rows = [torch.randperm(d_vocab - 1, generator=generator)[:length] + 1 for _ in range(batch)]
    return torch.stack(rows)


def with_bos(tokens: Tensor) -> Tensor:
    """Prepend ``BOS`` to every row of ``tokens [batch, pos]``."""
    return torch.cat([torch.full((tokens.shape[0], 1), BOS, dtype=tokens.dtype), tokens], dim=1)


def repeated_tokens(batch: int, half_len: int, d_vocab: int, seed: int | torch.Generator | None = 0) -> Tensor:
    """``[batch, 1 + 2 * half_len]``: BOS, then ``half_len`` random tokens, then the same tokens again.

    The standard probe for induction heads (Olsson et al. 2022): the second half is perfectly predictable by
    copying, the first half not at all.
    """
    generator = _generator(seed)
    first = _random_tokens((batch, half_len), d_vocab, generator)
    return with_bos(torch.cat([first, first], dim=1))


def periodic_tokens(
    batch: int,
    seq_len: int,
    d_vocab: int,
    min_period: int,
    max_period: int,
    seed: int | torch.Generator | None = 0,
) -> Tensor:
    """``[batch, seq_len]``: BOS, then a random span whose length (the period) is drawn per row from
    ``[min_period, max_period]``, tiled to fill the sequence. The course's induction training data."""
    generator = _generator(seed)
    periods = torch.randint(min_period, max_period + 1, (batch,), generator=generator)
    spans = _random_tokens((batch, max_period), d_vocab, generator)
    positions = torch.arange(seq_len - 1)
    index = positions[None, :] % periods[:, None]  # [batch, seq_len - 1]
    return with_bos(torch.gather(spans, 1, index))


@dataclass
class PatchingPair:
    """A batch of clean/corrupted prompts for activation patching.

    Every prompt is ``BOS, r_1 .. r_n, r_1 .. r_m``: the model should continue with ``answer = r_{m+1}`` by induction.

    - ``corruption="value"``: in the corrupted prompt the first copy's ``r_{m+1}`` is replaced by ``wrong``, so
      the induction head still attends to the same place but copies ``wrong`` instead.
    - ``corruption="key"``: the first copy's ``r_m`` is replaced, so nothing earlier matches the current token
      and the induction head has nowhere to attend (the previous-token head -> induction head key path breaks).

    ``source_pos`` is the position of ``r_{m+1}`` in the first copy (the position the induction head should attend
    to from the last position).
    """

    clean: Tensor  # [batch, pos]
    corrupted: Tensor  # [batch, pos]
    answer: Tensor  # [batch]
    wrong: Tensor  # [batch]
    source_pos: int
    corruption: str


def patching_pair(
    batch: int,
    half_len: int,
    d_vocab: int,
    prefix_len: int | None = None,
    corruption: str = "value",
    seed: int | torch.Generator | None = 0,
) -> PatchingPair:
    """Clean/corrupted prompts that differ in one token of the first copy (see :class:`PatchingPair`)."""
    if corruption not in ("value", "key"):
        raise ValueError(f"corruption must be 'value' or 'key', not {corruption!r}")
    generator = _generator(seed)
    m = half_len // 2 if prefix_len is None else prefix_len
    if not 1 <= m < half_len:
        raise ValueError(f"prefix_len must be in [1, {half_len - 1}], got {m}")
    # half_len + 1 distinct tokens per row: the last one is the "wrong" token, absent from the clean prompt.
    distinct = _distinct_tokens(batch, half_len + 1, d_vocab, generator)
    first, wrong = distinct[:, :half_len], distinct[:, half_len]
    clean = with_bos(torch.cat([first, first[:, :m]], dim=1))
    corrupted = clean.clone()
    source_pos = 1 + m  # position of r_{m+1} in the first copy (position 0 is BOS)
    changed_pos = source_pos if corruption == "value" else source_pos - 1
    corrupted[:, changed_pos] = wrong
    return PatchingPair(clean, corrupted, first[:, m], wrong, source_pos, corruption)


# --------------------------------------------------------------------------------------------------------------
# Modular addition (the grokking chapter)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ModularAddition:
    """All ``p * p`` problems ``a b =`` -> ``(a + b) mod p``, split into train and test.

    Tokens ``0 .. p-1`` are numbers and token ``p`` is ``=``, so ``d_vocab = p + 1``; the model predicts one of ``p``
    answers from the logits at the ``=`` position (Nanda et al. 2023).
    """

    p: int
    train_tokens: Tensor  # [n_train, 3]
    train_labels: Tensor  # [n_train]
    test_tokens: Tensor  # [n_test, 3]
    test_labels: Tensor  # [n_test]

    @property
    def all_tokens(self) -> Tensor:
        """``[p * p, 3]`` in the order ``a * p + b`` (handy for Fourier analysis over the full ``(a, b)`` grid)."""
        a, b = torch.meshgrid(torch.arange(self.p), torch.arange(self.p), indexing="ij")
        return torch.stack([a.flatten(), b.flatten(), torch.full((self.p * self.p,), self.p)], dim=1)

    @property
    def all_labels(self) -> Tensor:
        tokens = self.all_tokens
        return (tokens[:, 0] + tokens[:, 1]) % self.p


def modular_addition(p: int, train_fraction: float, seed: int = 0, split: Callable | None = None) -> ModularAddition:
    """The modular addition data set with a random train/test split of the ``p * p`` pairs.

    ``split(n, train_fraction, seed) -> (train indices, test indices)`` is the grokking chapter's ``split_indices``
    exercise: a notebook passes the student's own. Without it, trusted code (the zoo recipe, the tests) gets the
    chapter's reference answer, loaded when called (a graded notebook's kernel cannot load it, so a notebook always
    passes its own)."""
    if split is None:
        from .grokking import reference

        split = reference.split_indices
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    tokens = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], dim=1)  # [p * p, 3] rows a b =
    labels = (tokens[:, 0] + tokens[:, 1]) % p
    train, test = split(p * p, train_fraction, seed)
    train, test = torch.as_tensor(train, dtype=torch.long), torch.as_tensor(test, dtype=torch.long)
    return ModularAddition(p, tokens[train], labels[train], tokens[test], labels[test])


# --------------------------------------------------------------------------------------------------------------
# Symbolic indirect object identification (the backup chapter)
# --------------------------------------------------------------------------------------------------------------

#: Positions of a symbolic IOI prompt ``BOS X Y f f S END``: the two names, the repeated name, the answer position.
IOI_X, IOI_Y, IOI_S2, IOI_END = 1, 2, 5, 6
IOI_LENGTH = 7


@dataclass
class SymbolicIOI:
    """A batch of symbolic IOI prompts ``BOS X Y f f S END`` (Wang et al. 2022, with symbols for names).

    ``{X, Y} = {IO, S}`` in random order, ``f`` are random filler tokens, and the subject ``S`` is repeated at
    position 5; the answer at ``END`` is the indirect object ``IO``, the name that is *not* repeated. Token 0 is
    ``BOS``, names are ``1 .. n_names``, fillers the next ``n_fillers`` tokens, and ``END`` the last token."""

    tokens: Tensor  # [batch, 7]
    io: Tensor  # [batch] the indirect object (the answer)
    s: Tensor  # [batch] the repeated subject


def ioi_vocab(n_names: int, n_fillers: int) -> int:
    """``d_vocab`` of symbolic IOI: BOS, the names, the fillers and END."""
    return 1 + n_names + n_fillers + 1


def symbolic_ioi(batch: int, n_names: int, n_fillers: int, seed: int | torch.Generator | None = 0) -> SymbolicIOI:
    """``batch`` symbolic IOI prompts (see :class:`SymbolicIOI`), drawn from ``seed``."""
    generator = _generator(seed)
    names = _distinct_tokens(batch, 2, n_names + 1, generator)  # [batch, 2] distinct names in 1 .. n_names
    io, s = names[:, 0], names[:, 1]
    io_first = torch.randint(0, 2, (batch,), generator=generator).bool()
    fillers = torch.randint(1 + n_names, 1 + n_names + n_fillers, (batch, 2), generator=generator)
    end = 1 + n_names + n_fillers
    tokens = torch.stack(
        [
            torch.full((batch,), BOS),
            torch.where(io_first, io, s),
            torch.where(io_first, s, io),
            fillers[:, 0],
            fillers[:, 1],
            s,
            torch.full((batch,), end),
        ],
        dim=1,
    )
    return SymbolicIOI(tokens, io, s)
