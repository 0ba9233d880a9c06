"""The paper's step-size schedules s_t (docs/PAPER.md §3), exact at paper scale, rescaled below it.

At the paper's length (100k steps, warmup W = 10k):

    with warmup:    s_t = min(1e−6·t, 1/√t)      — linear ramp to 1e−2 at t = W, then 1/√t
    without warmup: s_t = min(1e−2, 1/√t)        — flat 1e−2 until t = W, then 1/√t

Written in terms of W, the same shapes are

    with warmup:    s_t = peak · min(t/W, √(W/t))
    without warmup: s_t = peak · min(1, √(W/t))

with peak = 1e−2; at W = 10,000 they are the paper's formulas exactly (1e−2·t/1e4 = 1e−6·t and
1e−2·√(1e4/t) = 1/√t). A shorter run keeps the shape with a smaller W (by default a tenth of the run,
as in the paper). The step of a cell is then ``lr_scale · multiplier · s_t``: lr_scale = 0.1 for the
absolute-step rows (α_t = 0.1·s_t), 1 for the relative rows (ρ_t = s_t), k for SGD (lr = k·s_t); the
multiplier is the scale's calibration factor (1 at paper scale).
"""

from __future__ import annotations

import math

PAPER_PEAK = 1e-2


def step_size_schedule(t: int, *, warmup: bool, warmup_steps: int, peak: float = PAPER_PEAK) -> float:
    """s_t for step t >= 1."""
    if t < 1:
        raise ValueError(f"step t={t} is invalid; allowed: t >= 1 (the paper counts steps from 1)")
    decay = math.sqrt(warmup_steps / t)
    ramp = t / warmup_steps if warmup else 1.0
    return peak * min(ramp, decay)


def lr_lambda(*, warmup: bool, warmup_steps: int, factor: float, peak: float = PAPER_PEAK):
    """A ``LambdaLR`` multiplier: LambdaLR calls it with 0, 1, 2, ... before steps 1, 2, 3, ..."""

    def f(epoch: int) -> float:
        return factor * step_size_schedule(epoch + 1, warmup=warmup, warmup_steps=warmup_steps, peak=peak)

    return f
