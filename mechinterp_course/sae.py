"""Sparse autoencoders in plain PyTorch, with sae-lens's names and conventions (``W_enc [d_in, d_sae]``, ``b_enc``,
``W_dec [d_sae, d_in]``, ``b_dec``; decoder rows of unit norm), so that code read in the literature reads the same
here. sae-lens itself cannot be installed beside TransformerLens 4.

Three architectures:

- ``"relu"``: ReLU encoder, loss ``MSE + l1_coefficient * sum_i f_i ||W_dec[i]||`` (the L1 penalty weighted by the
  decoder norms, as sae-lens does, so that shrinking the decoder cannot buy sparsity);
- ``"topk"``: keep the ``k`` largest pre-activations (Gao et al. 2024), plus their auxiliary loss: the dead latents'
  top ``k_aux`` reconstruct what the live ones missed, which keeps latents alive. Its step uses the sparsity that
  dense code leaves unused: decoding and both weight gradients run over the ``k`` active latents only
  (:class:`TopKDecode`), which is what Gao et al.'s kernels do on a GPU;
- ``"jumprelu"``: ``f = pre * (pre > threshold)`` with a learned threshold per latent and an L0 penalty, both
  trained through a straight-through estimator with a rectangle kernel of width ``bandwidth`` (Rajamanoharan et
  al. 2024).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class SAEConfig:
    d_in: int
    d_sae: int
    architecture: str = "relu"  # "relu" | "topk" | "jumprelu"
    l1_coefficient: float = 1.0  # relu
    k: int = 32  # topk
    k_aux: int | None = None  # topk: latents in the auxiliary loss (default d_in // 2, as Gao et al.)
    aux_coefficient: float = 1 / 32  # topk
    dead_after: int = 10_000_000  # topk: a latent is dead after this many tokens without firing (Gao et al.)
    l0_coefficient: float = 1.0  # jumprelu
    bandwidth: float = 0.001  # jumprelu: the straight-through estimator's kernel width
    initial_threshold: float = 0.001  # jumprelu
    seed: int = 0

    def __post_init__(self):
        if self.architecture not in ("relu", "topk", "jumprelu"):
            raise ValueError(f"architecture must be 'relu', 'topk' or 'jumprelu', not {self.architecture!r}")
        if self.architecture == "topk" and not 0 < self.k <= self.d_sae:
            raise ValueError(f"k must be between 1 and d_sae = {self.d_sae}, not {self.k}")


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state": what is used here is tested
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _argsort(keys: Tensor) -> Tensor:
    """``keys.argsort()``, any order among equal keys. On the CPU by numpy: torch's parallel sort of a few hundred
    thousand integers took 20 times longer on 2 threads than on 1 (140 ms against 6 ms), numpy's takes 3 ms."""
    if keys.device.type != "cpu":
        return keys.argsort()
    return torch.from_numpy(keys.numpy().argsort())


def _sparse_backward(
    x_centred: Tensor,
    W_enc: Tensor,
    W_dec: Tensor,
    grad_recon: Tensor,
    crow: Tensor,
    col: Tensor,
    rows: Tensor,
    values: Tensor,
    grad_values: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The backward of ``recon = F @ W_dec`` and ``F = relu(x_centred @ W_enc + b_enc)`` restricted to the entries of
    the sparse ``F [B, d_sae]`` (CSR: ``crow``, ``col`` and ``values``; ``rows`` holds each entry's row), with
    ``grad_values`` (the loss's other gradient with respect to those entries) added. Returns the gradients of
    ``x_centred``, ``W_enc``, ``b_enc`` and ``W_dec``, each product costing ``nnz x d_in`` multiply-adds where a dense
    step spends ``B x d_sae x d_in``.

    The entries' gradient is ``grad_recon @ W_dec.T`` sampled at ``F``'s pattern (``torch.sparse.sampled_addmm``);
    the input's is a sparse-dense product with ``W_enc.T``; the weights' are products of ``F``'s transpose (the
    entries sorted by latent: CSR again, so that each latent's row of the gradient is summed in one place, without
    the scatter-adds of ``index_add_``) with ``grad_recon`` and with the input."""
    batch, d_sae = len(x_centred), len(W_dec)
    pattern = _csr(crow, col, torch.zeros_like(values), (batch, d_sae))
    grad_entries = torch.sparse.sampled_addmm(pattern, grad_recon, W_dec.t(), beta=0.0).values()
    if grad_values is not None:
        grad_entries = grad_entries + grad_values
    grad_pre = grad_entries * (values > 0)  # through the ReLU
    grad_x = _csr(crow, col, grad_pre, (batch, d_sae)) @ W_enc.t()
    order = _argsort(col)
    crow_t = torch.zeros(d_sae + 1, dtype=crow.dtype, device=crow.device)
    crow_t[1:] = torch.bincount(col, minlength=d_sae).cumsum(0)
    rows_t, grad_pre_t = rows[order], grad_pre[order]
    grad_W_dec = _csr(crow_t, rows_t, values[order], (d_sae, batch)) @ grad_recon
    grad_W_enc = (_csr(crow_t, rows_t, grad_pre_t, (d_sae, batch)) @ x_centred).t()
    grad_b_enc = torch.zeros(d_sae, dtype=grad_pre.dtype, device=col.device).index_add_(0, col[order], grad_pre_t)
    return grad_x, grad_W_enc, grad_b_enc, grad_W_dec


class TopKDecode(torch.autograd.Function):
    """``(x_centred [B, d_in], W_enc, b_enc, W_dec, k) -> (recon [B, d_in] without b_dec, values [B, k],
    indices [B, k])``: the TopK encoder and the decoder in one step whose backward touches only the ``k`` active
    latents of each row. A dense step spends ``B x d_sae x d_in`` multiply-adds on each of the encoder's backward,
    the decoder's forward and the decoder's backward; here each costs ``B x k x d_in`` (:func:`_sparse_backward`:
    the active latents as a sparse matrix with ``k`` entries a row)."""

    @staticmethod
    def forward(ctx, x_centred: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, k: int):
        pre = torch.addmm(b_enc, x_centred, W_enc)  # [B, d_sae]: the one dense product left
        values, indices = pre.topk(k, dim=-1, sorted=False)
        del pre
        values = values.relu()
        recon = nn.functional.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")
        ctx.save_for_backward(x_centred, W_enc, W_dec, values, indices)
        ctx.mark_non_differentiable(indices)
        return recon, values, indices

    @staticmethod
    def backward(ctx, grad_recon: Tensor, grad_values: Tensor | None, _grad_indices):
        x_centred, W_enc, W_dec, values, indices = ctx.saved_tensors
        (batch, k), device = indices.shape, indices.device
        crow = torch.arange(0, batch * k + 1, k, device=device)
        rows = torch.arange(batch, device=device).repeat_interleave(k)
        grad_values = None if grad_values is None else grad_values.reshape(-1)
        # The top-k selection passes the gradient as is.
        grads = _sparse_backward(
            x_centred, W_enc, W_dec, grad_recon, crow, indices.reshape(-1), rows, values.reshape(-1), grad_values
        )
        return *grads, None


#: The ReLU step goes sparse (:class:`_ReLUDecode`) when at most this fraction of the latents is active: above it,
#: the dense products are cheaper than extracting the active latents and multiplying sparsely.
RELU_SPARSE_DENSITY = 1 / 32


class _ReLUDecode(torch.autograd.Function):
    """``(x_centred [B, d_in], W_enc, b_enc, W_dec, norms [d_sae], max_density) -> (recon [B, d_in] without b_dec,
    l1 [B])`` with ``f = relu(x_centred @ W_enc + b_enc)``, ``recon = f @ W_dec`` and ``l1 = f @ norms``. When at
    most ``max_density`` of ``f`` is nonzero (a trained ReLU SAE's L0 is a few tens out of thousands of latents), ``f``
    is kept as a sparse matrix and the decoder and the backward run over its entries only
    (:func:`_sparse_backward`); otherwise dense, with the gradient's temporaries updated in place."""

    @staticmethod
    def forward(ctx, x_centred: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, norms: Tensor, max_density):
        f = torch.addmm(b_enc, x_centred, W_enc).relu_()
        l1 = f @ norms
        ctx.sparse = int(torch.count_nonzero(f)) <= max_density * f.numel()
        if not ctx.sparse:
            ctx.save_for_backward(x_centred, W_enc, W_dec, norms, f)
            return f @ W_dec, l1
        rows, col = f.nonzero().unbind(1)
        values = f[rows, col]
        del f
        crow = torch.zeros(len(x_centred) + 1, dtype=rows.dtype, device=rows.device)
        crow[1:] = torch.bincount(rows, minlength=len(x_centred)).cumsum(0)
        ctx.save_for_backward(x_centred, W_enc, W_dec, norms, crow, col, rows, values)
        return _csr(crow, col, values, (len(x_centred), len(W_dec))) @ W_dec, l1

    @staticmethod
    def backward(ctx, grad_recon: Tensor, grad_l1: Tensor):
        if ctx.sparse:
            x_centred, W_enc, W_dec, norms, crow, col, rows, values = ctx.saved_tensors
            grad_l1_rows = grad_l1[rows]
            grads = _sparse_backward(
                x_centred, W_enc, W_dec, grad_recon, crow, col, rows, values, grad_l1_rows * norms[col]
            )
            grad_norms = torch.zeros_like(norms).index_add_(0, col, values * grad_l1_rows)
            return *grads, grad_norms, None
        x_centred, W_enc, W_dec, norms, f = ctx.saved_tensors
        grad_pre = (grad_recon @ W_dec.t()).addr_(grad_l1, norms)
        grad_pre = torch.ops.aten.threshold_backward(grad_pre, f, 0)  # through the ReLU, as autograd's relu
        grad_W_dec = f.t() @ grad_recon
        grad_norms = f.t() @ grad_l1
        return grad_pre @ W_enc.t(), x_centred.t() @ grad_pre, grad_pre.sum(0), grad_W_dec, grad_norms, None


def _rectangle(x: Tensor) -> Tensor:
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    """``pre * (pre > threshold)``; the threshold's gradient by the straight-through estimator."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        grad_threshold = -(threshold / bandwidth) * _rectangle((pre - threshold) / bandwidth) * grad
        return grad_pre, grad_threshold.sum(0), None


class _Step(torch.autograd.Function):
    """``pre > threshold`` as 0/1 (for the L0 penalty); the threshold's gradient by the straight-through estimator."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        grad_threshold = -(1.0 / bandwidth) * _rectangle((pre - threshold) / bandwidth) * grad
        return torch.zeros_like(pre), grad_threshold.sum(0), None


class SAE(nn.Module):
    """A sparse autoencoder (module docstring). ``forward(x)`` returns the reconstruction; :meth:`loss` the
    training loss and its parts."""

    def __init__(self, config: SAEConfig):
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        W_dec = torch.randn(config.d_sae, config.d_in, generator=generator)
        W_dec /= W_dec.norm(dim=-1, keepdim=True)
        # Encoder initialised as the decoder's transpose (Gao et al.; sae-lens's default): reconstruction starts sane.
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(config.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(config.d_in))
        if config.architecture == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((config.d_sae,), math.log(config.initial_threshold)))
        # Tokens since each latent last fired (TopK's dead-latent detection).
        self.register_buffer("tokens_since_fired", torch.zeros(config.d_sae, dtype=torch.long))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def pre_activations(self, x: Tensor) -> Tensor:
        """``x [..., d_in] -> [..., d_sae]``: ``(x - b_dec) @ W_enc + b_enc``."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """``x [..., d_in] -> f [..., d_sae]``: the latents' activations (dense)."""
        pre = self.pre_activations(x)
        arch = self.config.architecture
        if arch == "relu":
            return pre.relu()
        if arch == "jumprelu":
            return _JumpReLU.apply(pre, self.threshold, self.config.bandwidth)
        values, indices = pre.topk(self.config.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu())

    def decode(self, f: Tensor) -> Tensor:
        """``f [..., d_sae] -> [..., d_in]``."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Give every decoder row unit norm (after each optimiser step, as sae-lens does for ReLU and TopK)."""
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        """``x [batch, d_in]`` -> ``{"loss", "mse", ...}``: the training loss and its parts (module docstring).
        MSE is the squared error summed over ``d_in`` and averaged over the batch, as sae-lens reports it. Leading
        dimensions beyond the batch are flattened into it."""
        x = x.reshape(-1, x.shape[-1])
        arch = self.config.architecture
        if arch == "topk":
            return self._topk_loss(x)
        if arch == "relu":
            recon, l1 = _ReLUDecode.apply(
                x - self.b_dec, self.W_enc, self.b_enc, self.W_dec, self.W_dec.norm(dim=-1), RELU_SPARSE_DENSITY
            )
            mse = (recon + self.b_dec - x).pow(2).sum(-1).mean()
            sparsity = l1.mean()  # the L1 penalty weighted by the decoder norms
            return {"loss": mse + self.config.l1_coefficient * sparsity, "mse": mse, "l1": sparsity}
        recon = self.decode(self.encode(x))
        mse = (recon - x).pow(2).sum(-1).mean()
        l0 = _Step.apply(self.pre_activations(x), self.threshold, self.config.bandwidth).sum(-1).mean()
        return {"loss": mse + self.config.l0_coefficient * l0, "mse": mse, "l0": l0}

    def _topk_loss(self, x: Tensor) -> dict[str, Tensor]:
        config = self.config
        recon, values, indices = TopKDecode.apply(x - self.b_dec, self.W_enc, self.b_enc, self.W_dec, config.k)
        recon = recon + self.b_dec
        residual = x - recon
        mse = residual.pow(2).sum(-1).mean()
        with torch.no_grad():  # dead-latent bookkeeping
            fired = torch.zeros_like(self.tokens_since_fired, dtype=torch.bool)
            fired[indices[values > 0]] = True
            self.tokens_since_fired += len(x)
            self.tokens_since_fired[fired] = 0
        dead = self.tokens_since_fired >= config.dead_after
        out = {"mse": mse, "aux": torch.zeros(())}
        if dead.any():
            # The dead latents' top k_aux reconstruct the residual the live ones left (Gao et al., section A.2).
            k_aux = min(config.k_aux or config.d_in // 2, int(dead.sum()))
            pre = self.pre_activations(x).masked_fill(~dead, -math.inf)
            aux_values, aux_indices = pre.topk(k_aux, dim=-1)
            aux_recon = nn.functional.embedding_bag(
                aux_indices, self.W_dec, per_sample_weights=aux_values.relu(), mode="sum"
            )
            aux = (aux_recon - residual.detach()).pow(2).sum(-1).mean()
            out["aux"] = aux / residual.detach().pow(2).sum(-1).mean().clamp_min(1e-8)
        out["loss"] = mse + config.aux_coefficient * out["aux"]
        return out


def train_step(
    sae: SAE, optimizer: torch.optim.Optimizer, x: Tensor, grad_clip: float | None = 1.0
) -> dict[str, Tensor]:
    """One training step on the batch ``x [batch, d_in]``: the loss (:meth:`SAE.loss`), its backward, the gradient's
    norm clipped at ``grad_clip`` (``None``: no clipping), the optimiser's step, then unit decoder rows again for
    ReLU and TopK (:meth:`SAE.normalise_decoder`). Returns the loss and its parts, detached.

    Written once so that every training loop runs the same step, and so that it is the step sae-lens's trainer runs
    (loss, backward, ``clip_grad_norm_(..., 1.0)``, Adam): ``benchmarks/sae_lens_bench.py`` times the two on the
    same activations. sae-lens leaves its decoder's norms free instead (its TopK selects by pre-activation times
    decoder norm; its ReLU penalty is weighted by the norms, as here); the renormalisation costs a few milliseconds."""
    out = sae.loss(x)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), grad_clip)
    optimizer.step()
    if sae.config.architecture != "jumprelu":
        sae.normalise_decoder()
    return {name: value.detach() for name, value in out.items()}


# --------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(sae: SAE, x: Tensor) -> dict[str, float]:
    """The metrics the literature reports, on activations ``x [n, d_in]``: L0 (active latents per input), explained
    variance (1 - residual variance / variance of x), the fraction of dead latents (never active on ``x``) and of
    dense ones (active on more than 10% of inputs), and shrinkage (the reconstructions' total length over the inputs':
    below 1 when the L1 penalty shrinks the latents; a ratio of sums, since an input near zero has no length to
    shrink)."""
    f = sae.encode(x)
    recon = sae.decode(f)
    active = f > 0
    density = active.double().mean(0)
    variance = (x - x.mean(0)).pow(2).sum()
    return {
        "l0": float(active.double().sum(-1).mean()),
        "explained_variance": float(1 - (x - recon).pow(2).sum() / variance),
        "dead_fraction": float((density == 0).double().mean()),
        "dense_fraction": float((density > 0.1).double().mean()),
        "shrinkage": float(recon.norm(dim=-1).sum() / x.norm(dim=-1).sum().clamp_min(1e-8)),
    }


def best_cosines(learned: Tensor, true: Tensor) -> Tensor:
    """``[n_true]``: each true feature's (``true [n_true, d]``) best cosine with a learned direction (``learned
    [n_learned, d]``)."""
    learned = learned.detach() / learned.detach().norm(dim=-1, keepdim=True).clamp_min(1e-8)
    true = true / true.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return (true @ learned.t()).max(dim=-1).values


def mmcs(learned: Tensor, true: Tensor) -> float:
    """Mean max cosine similarity: :func:`best_cosines` averaged over the true features (Sharkey et al. 2022)."""
    return float(best_cosines(learned, true).mean())
