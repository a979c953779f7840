"""Reference implementations for the "Grokking" chapter: the Fourier view of modular addition (Nanda et al. 2023).

Conventions. For a prime ``p`` the real Fourier basis has ``p`` rows: the constant, then ``cos(w_k x)`` and
``sin(w_k x)`` for ``k = 1 .. (p - 1) / 2`` with ``w_k = 2 pi k / p``, each row normalised to unit length, so the
basis is orthonormal: ``basis @ basis.T == I``. Frequency ``k`` owns rows ``2k - 1`` (cos) and ``2k`` (sin).
"""

from __future__ import annotations

import math

import einops
import torch
from torch import Tensor


def fourier_basis(p: int) -> tuple[Tensor, list[str]]:
    """``([p, p], labels)``: the orthonormal real Fourier basis over ``Z_p`` (rows are basis vectors)."""
    x = torch.arange(p, dtype=torch.float64)
    rows, labels = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        labels += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float(), labels


def fourier_transform_2d(grid: Tensor, p: int) -> Tensor:
    """``grid [p, p, ...]`` over ``(a, b)`` -> coefficients ``[p, p, ...]`` in the 2D basis ``basis_a x basis_b``."""
    basis, _ = fourier_basis(p)
    return einops.einsum(basis, basis, grid, "i a, j b, a b ... -> i j ...")


def frequency_norms(W: Tensor, p: int) -> Tensor:
    """``[(p - 1) / 2 + 1]``: the norm of ``W [p, d]``'s Fourier components per frequency (index 0 = constant).
    Applied to the embedding ``W_E[:p]`` this shows the handful of key frequencies the model uses."""
    basis, _ = fourier_basis(p)
    coefficients = basis @ W  # [p, d]
    norms = [coefficients[0].norm()]
    for k in range(1, (p - 1) // 2 + 1):
        norms.append(coefficients[2 * k - 1 : 2 * k + 1].norm())
    return torch.stack(norms)


def key_frequencies(W_E: Tensor, p: int, threshold: float = 0.5) -> list[int]:
    """Frequencies whose embedding norm exceeds ``threshold`` times the largest (the sparse spectrum of a grokked
    model; a memorising model's spectrum is flat)."""
    norms = frequency_norms(W_E, p)[1:]
    return [k + 1 for k in torch.nonzero(norms > threshold * norms.max()).flatten().tolist()]


def gini(values: Tensor) -> Tensor:
    """The Gini coefficient of non-negative ``values``: 0 when all equal, near 1 when one dominates."""
    x, _ = values.flatten().double().sort()
    n = x.numel()
    index = torch.arange(1, n + 1, dtype=torch.float64)
    return ((2 * index - n - 1) * x).sum() / (n * x.sum())


def neuron_frequency_fractions(neuron_acts: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """For MLP activations on every ``(a, b)`` (``neuron_acts [p, p, d_mlp]``), the fraction of each neuron's variance
    (constant term removed) explained by its best single frequency, and that frequency.

    A frequency ``k`` here owns every 2D basis term that uses ``k`` alone: ``cos/sin(w_k a)``, ``cos/sin(w_k b)`` and
    the four products ``{cos,sin}(w_k a){cos,sin}(w_k b)``.
    """
    coefficients = fourier_transform_2d(neuron_acts, p)  # [p, p, d_mlp]
    coefficients[0, 0] = 0.0
    total = coefficients.pow(2).sum(dim=(0, 1))  # [d_mlp]
    per_frequency = []
    for k in range(1, (p - 1) // 2 + 1):
        rows = [0, 2 * k - 1, 2 * k]
        block = coefficients[rows][:, rows]
        per_frequency.append(block.pow(2).sum(dim=(0, 1)))
    per_frequency = torch.stack(per_frequency)  # [n_freq, d_mlp]
    best, best_index = per_frequency.max(dim=0)
    return best / total.clamp_min(1e-12), best_index + 1


def sum_of_squared_weights(model) -> Tensor:
    """The quantity weight decay pushes down: it falls sharply in the clean-up phase."""
    return sum(param.detach().pow(2).sum() for param in model.parameters())
