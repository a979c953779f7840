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
from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: Rows of a batch processed at once in the sparse TopK step (bounds the [rows, k, d_in] temporaries to ~32 MB).
SPARSE_CHUNK = 512


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


class TopKDecode(torch.autograd.Function):
    """``(x_centred [B, d_in], W_enc, b_enc, W_dec, k) -> (recon [B, d_in] without b_dec, values [B, k],
    indices [B, k])``: the TopK encoder and the decoder in one step whose backward touches only the ``k`` active
    latents of each row. A dense step spends ``B x d_sae x d_in`` multiply-adds on each of the encoder's backward,
    the decoder's forward and the decoder's backward; here each costs ``B x k x d_in``."""

    @staticmethod
    def forward(ctx, x_centred: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, k: int):
        pre = x_centred @ W_enc + b_enc  # [B, d_sae]: the one dense product left
        values, indices = pre.topk(k, dim=-1, sorted=False)
        values = values.relu()
        recon = nn.functional.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")
        ctx.save_for_backward(x_centred, W_enc, W_dec, values, indices)
        ctx.mark_non_differentiable(indices)
        return recon, values, indices

    @staticmethod
    def backward(ctx, grad_recon: Tensor, grad_values_out: Tensor, _grad_indices):
        x_centred, W_enc, W_dec, values, indices = ctx.saved_tensors
        grad_x = torch.zeros_like(x_centred)
        grad_W_enc_t = torch.zeros(W_enc.shape[1], W_enc.shape[0], dtype=W_enc.dtype)  # [d_sae, d_in]
        grad_b_enc = torch.zeros(W_enc.shape[1], dtype=W_enc.dtype)
        grad_W_dec = torch.zeros_like(W_dec)
        W_enc_t = W_enc.t()
        for start in range(0, len(x_centred), SPARSE_CHUNK):
            rows = slice(start, start + SPARSE_CHUNK)
            idx, val, g_out, x = indices[rows], values[rows], grad_recon[rows], x_centred[rows]
            flat = idx.reshape(-1)
            dec_rows = W_dec[flat].view(*idx.shape, -1)  # [b, k, d_in]
            grad_val = torch.einsum("bd,bkd->bk", g_out, dec_rows)
            if grad_values_out is not None:
                grad_val = grad_val + grad_values_out[rows]
            grad_pre = grad_val * (val > 0)  # through the ReLU; the top-k selection passes the gradient as is
            grad_W_dec.index_add_(0, flat, (val[..., None] * g_out[:, None, :]).reshape(-1, W_dec.shape[1]))
            grad_W_enc_t.index_add_(0, flat, (grad_pre[..., None] * x[:, None, :]).reshape(-1, x.shape[1]))
            grad_b_enc.index_add_(0, flat, grad_pre.reshape(-1))
            grad_x[rows] = torch.einsum("bk,bkd->bd", grad_pre, W_enc_t[flat].view(*idx.shape, -1))
        return grad_x, grad_W_enc_t.t(), grad_b_enc, grad_W_dec, None


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
        MSE is the squared error summed over ``d_in`` and averaged over the batch, as sae-lens reports it."""
        arch = self.config.architecture
        if arch == "topk":
            return self._topk_loss(x)
        f = self.encode(x)
        recon = self.decode(f)
        mse = (recon - x).pow(2).sum(-1).mean()
        if arch == "relu":
            sparsity = (f * self.W_dec.norm(dim=-1)).sum(-1).mean()
            return {"loss": mse + self.config.l1_coefficient * sparsity, "mse": mse, "l1": sparsity}
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


def mmcs(learned: Tensor, true: Tensor) -> float:
    """Mean max cosine similarity: for each true feature ``true [n_true, d]``, the best cosine with any learned
    feature ``learned [n_learned, d]``, averaged (Sharkey et al. 2022)."""
    learned = learned / learned.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    true = true / true.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return float((true @ learned.t()).max(dim=-1).values.mean())
