"""The knobs of the Adafactor paper, one small function each (docs/PAPER.md §2).

Every function here does one job and reads next to the paper's equation it implements.
``_single_tensor_adafactor`` (adafactor.py, the reference path) chains them; a study's cells
differ in which link of the chain they swap. All math is done in float32 whatever the parameter dtype, and nothing here
calls ``.item()``: per-tensor quantities stay 0-d tensors so a GPU step never waits on the host.

Shapes. For a parameter X of shape (..., n, m) (rank >= 2; the paper is silent above rank 2, so
we follow Tensor2Tensor and factor the last two dimensions):

* ``row``  statistic R has shape (..., n): the mean of G² over the last dimension (each row's mean);
* ``col``  statistic C has shape (..., m): the mean of G² over the second-to-last dimension.

The paper writes row and column *sums*; means give the same V̂ (docs/PAPER.md §2) and keep the
accumulators on the scale of G², so ε1 has the same meaning for every mode. Vectors and scalars
always keep a full accumulator (Alg. 5).

"Rows" are the first matrix index as PyTorch stores the weight: for the token embedding
(vocab × d_model, shared with the softmax) a row is one token, which is what §3.2's explanation of
rows D and E is about. Note that ``nn.Linear`` stores (out_features, in_features), the transpose of
Tensor2Tensor's (in, out) kernels; for factored V̂ the two are the same, for row-only / column-only
the roles of the two axes of a Linear swap.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .knobs import MOMENTUM_KINDS, SECOND_MOMENTS  # noqa: F401 (the knob spec's words, re-exported)


# --- decay rates ------------------------------------------------------------------------------


def bias_corrected_rate(beta: float, step: int) -> float:
    """β̂_t = β(1 − β^(t−1)) / (1 − β^t)  (Alg. 3): an EMA with Adam's bias correction folded in.

    β̂_1 = 0, so the first step replaces the (zero) accumulator by the first observation.
    """
    if beta == 0.0:
        return 0.0
    return beta * (1.0 - beta ** (step - 1)) / (1.0 - beta**step)


def scheduled_rate(exponent: float, step: int) -> float:
    """β̂2t = 1 − t^(−c)  (§7). Zero at t = 1, so no bias correction is needed."""
    return 1.0 - step ** (-exponent)


def second_moment_rate(beta2: float, exponent: float | None, step: int) -> float:
    """The decay rate of the second-moment accumulator: constant β2 (Alg. 3) or the schedule (§7)."""
    if exponent is None:
        return bias_corrected_rate(beta2, step)
    return scheduled_rate(exponent, step)


# --- second-moment statistics --------------------------------------------------------------------


def row_mean_sq(grad: Tensor) -> Tensor:
    """mean over the last dim of G², shape (..., n), without a temporary the size of G."""
    return torch.linalg.vector_norm(grad, 2, dim=-1, dtype=torch.float32).square_().div_(grad.shape[-1])


def col_mean_sq(grad: Tensor) -> Tensor:
    """mean over the second-to-last dim of G², shape (..., m).

    This one squares into a temporary the size of G: on CPU, ``vector_norm(dim=-2)`` (no temporary)
    is an order of magnitude slower than square-then-sum on the embedding's gradient and was most of
    the step's time (``python -m factorial.bench``, "Kernels").
    """
    return grad.float().square().sum(dim=-2).div_(grad.shape[-2])


def ema_(acc: Tensor, observation: Tensor, rate: float, eps1: float) -> None:
    """acc ← rate·acc + (1 − rate)·(observation + ε1), in place.

    ``observation`` is already a mean of G², so adding ε1 to it is the paper's mean(G² + ε1).
    """
    acc.mul_(rate).add_(observation, alpha=1.0 - rate).add_((1.0 - rate) * eps1)


def ema_sq_(acc: Tensor, grad: Tensor, rate: float, eps1: float) -> None:
    """Full accumulator (Alg. 1/5): V ← rate·V + (1 − rate)·(G² + ε1), with no G² temporary."""
    acc.mul_(rate).addcmul_(grad, grad, value=1.0 - rate).add_((1.0 - rate) * eps1)


def update_second_moment_(exp_avg_sq: Tensor | None, row: Tensor | None, col: Tensor | None, grad: Tensor, mode: str,
                          rate: float, eps1: float) -> None:
    """Advance the accumulators that ``mode`` keeps (full V, or R and/or C; the others are None) by one step."""
    if mode == "full":
        ema_sq_(exp_avg_sq, grad, rate, eps1)
        return
    if mode in ("factored", "row"):
        ema_(row, row_mean_sq(grad), rate, eps1)
    if mode in ("factored", "col"):
        ema_(col, col_mean_sq(grad), rate, eps1)


def precondition(direction: Tensor, exp_avg_sq: Tensor | None, row: Tensor | None, col: Tensor | None,
                 mode: str) -> Tensor:
    """U = direction / √V̂ as a new float32 tensor, never materialising V̂ for the factored modes.

    * full:     V̂ = V                 (``exp_avg_sq``)
    * factored: V̂ = R·Cᵀ / mean(R)   (the rank-1 fit of §3, in means)
    * row:      V̂[i, j] = R[i]       (each row's mean, broadcast along the row: row D)
    * col:      V̂[i, j] = C[j]       (each column's mean, broadcast down the column: row E)
    """
    if mode == "full":
        denom = exp_avg_sq.sqrt()
        return torch.div(direction, denom, out=denom)
    # Mixed-dtype products promote to float32, so a bf16 direction is never copied first.
    if mode == "col":
        return direction * col.rsqrt().unsqueeze(-2)
    if mode == "factored":
        row = row / row.mean(dim=-1, keepdim=True)
    u = direction * row.rsqrt().unsqueeze(-1)
    if mode == "factored":
        u.mul_(col.rsqrt().unsqueeze(-2))
    return u


# --- update clipping, step size ----------------------------------------------------------------------


def rms(x: Tensor) -> Tensor:
    """RMS(Z) = √mean(z²) of a whole tensor, as a 0-d float32 tensor (no temporary the size of Z).

    Row norms first, then the norm of those: a single float32 ``vector_norm`` over a tensor of
    millions of entries loses several digits on CPU (it accumulates without pairwise summation);
    the two-stage sum stays at float32 rounding (``python -m factorial.bench``, "Kernels").
    """
    numel = x.numel()
    if x.dim() >= 2:
        x = torch.linalg.vector_norm(x, 2, dim=-1, dtype=torch.float32)
    return torch.linalg.vector_norm(x, 2, dtype=torch.float32).div_(math.sqrt(numel))


def clip_(update: Tensor, update_rms: Tensor, threshold: float | None) -> None:
    """Û = U / max(1, RMS(U)/d)  (§6), in place. Shrinks an update whose RMS exceeds d, never enlarges one."""
    if threshold is not None:
        update.div_(torch.clamp(update_rms / threshold, min=1.0))


def step_size(param: Tensor, lr: float, relative: bool, eps2: float) -> Tensor | float:
    """α_t: ``lr`` itself (absolute), or max(ε2, RMS(X_{t−1}))·ρ_t with ρ_t = ``lr`` (relative, §8)."""
    if not relative:
        return lr
    return torch.clamp(rms(param), min=eps2).mul_(lr)


# --- momentum ----------------------------------------------------------------------------------------


def gradient_momentum_(exp_avg: Tensor, grad: Tensor, beta1: float, step: int) -> Tensor:
    """m̂ ← β̂1t·m̂ + (1 − β̂1t)·G  (Alg. 3: Adam's bias-corrected first moment), in place; returns m̂."""
    exp_avg.lerp_(grad.float(), 1.0 - bias_corrected_rate(beta1, step))
    return exp_avg


def update_momentum_(exp_avg: Tensor, scaled_update: Tensor, beta1: float) -> Tensor:
    """m ← β1·m + (1 − β1)·α_t·Û  (Tensor2Tensor / Hugging Face convention: no bias correction)."""
    exp_avg.lerp_(scaled_update, 1.0 - beta1)
    return exp_avg


# --- where the step lands ---------------------------------------------------------------------------


def accumulator_mode(param: Tensor, second_moment: str) -> str:
    """The second-moment mode a tensor actually uses: vectors and scalars are always full."""
    return second_moment if param.dim() >= 2 else "full"


def subtract_(param: Tensor, update: Tensor) -> None:
    """X ← X − update, computed in float32 and rounded once into the parameter's dtype."""
    if param.dtype == torch.float32:
        param.sub_(update)
    else:
        param.copy_(param.float().sub_(update))
