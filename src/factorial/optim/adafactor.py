"""Adafactor with every ablation switch of Shazeer & Stern (2018) (docs/PAPER.md §2).

One step, for each parameter X with gradient G at step t (t = 1, 2, ...):

1. α_t            = lr (absolute) or max(ε2, RMS(X_{t−1}))·lr (relative, §8)      -> step_size
2. β̂2t            = Adam's bias-corrected β2 (Alg. 3) or 1 − t^(−c) (§7)           -> second_moment_rate
3. V̂              ← full / factored / row-only / column-only EMA of G² + ε1 (§3)  -> update_second_moment_
4. U              = G/√V̂, or m̂/√V̂ with Adam-style momentum                         -> precondition
5. Û              = U / max(1, RMS(U)/d) (§6)                                          -> clip_
6. X              ← X − α_t·Û, or X ← X − m with Tensor2Tensor-style momentum on α_t·Û

Corners of the space (see README):
    Adam (Alg. 1):      Adafactor(p, lr, beta1=0.9, beta2=0.999, second_moment="full",
                                  clip_threshold=None, relative_step=False)
    Adafactor (Alg. 6): Adafactor(p, lr=rho_t, beta1=0.0, beta2_exponent=0.8,
                                  second_moment="factored", clip_threshold=1.0, relative_step=True)
"""

from __future__ import annotations

import math
import types
from collections import defaultdict
from itertools import chain
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import functional as F
from . import native as native_kernel

__all__ = ["Adafactor"]


def _invalid(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"invalid {name}={value!r}; allowed: {allowed}")


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _invalid(name, value, "a finite real number")
    return float(value)


def validate_paths(*, foreach: bool | None, fused: bool | None, compile: bool, native: bool | None = None,
                   prefix: str = "") -> None:
    """Check the implementation flags together: ``fused`` excludes ``foreach``; ``compile`` and ``native``
    run on the fused path only, and not together. Raise ValueError naming the argument (as
    ``<prefix><name>``), the value and what is allowed. The trainer's config check calls it too (prefix
    ``optim.``), so the rule exists once."""
    for name, value in (("foreach", foreach), ("fused", fused), ("native", native)):
        if value is not None and not isinstance(value, bool):
            raise _invalid(prefix + name, value, "None, True or False")
    if fused and foreach:
        raise _invalid(prefix + "fused", fused, "fused=True only with foreach=None or False")
    if not isinstance(compile, bool):
        raise _invalid(prefix + "compile", compile, "True or False")
    if compile and (foreach or fused is False):
        raise _invalid(prefix + "compile", compile,
                       f"false with {prefix}foreach={foreach}, {prefix}fused={fused} (compile=True runs on the fused path "
                       f"only: foreach None or False, fused None or True)")
    if native and (compile or foreach or fused is False):
        raise _invalid(prefix + "native", native,
                       f"None or False with {prefix}compile={compile}, {prefix}foreach={foreach}, {prefix}fused={fused} "
                       f"(the C kernel runs on the eager fused path only: compile False, foreach None or False, "
                       f"fused None or True)")


def validate_hyperparameters(
    *,
    lr: float,
    beta1: float,
    momentum: str,
    beta2: float,
    beta2_exponent: float | None,
    second_moment: str,
    clip_threshold: float | None,
    relative_step: bool,
    eps1: float,
    eps2: float,
    weight_decay: float,
    prefix: str = "",
) -> None:
    """Raise ValueError naming the argument (as ``<prefix><name>``), the value and what is allowed."""

    def number(name: str, value: Any) -> float:
        return _check_number(prefix + name, value)

    def bad(name: str, value: Any, allowed: str) -> ValueError:
        return _invalid(prefix + name, value, allowed)

    if number("lr", lr) < 0:
        raise bad("lr", lr, "lr >= 0")
    if not 0.0 <= number("beta1", beta1) < 1.0:
        raise bad("beta1", beta1, "0 <= beta1 < 1")
    if momentum not in F.MOMENTUM_KINDS:
        raise bad("momentum", momentum, " | ".join(repr(m) for m in F.MOMENTUM_KINDS))
    if not 0.0 < number("beta2", beta2) < 1.0:
        raise bad("beta2", beta2, "0 < beta2 < 1")
    if beta2_exponent is not None and number("beta2_exponent", beta2_exponent) <= 0:
        raise bad("beta2_exponent", beta2_exponent, "None (constant beta2) or c > 0 (beta2_t = 1 - t^-c)")
    if second_moment not in F.SECOND_MOMENTS:
        raise bad("second_moment", second_moment, " | ".join(repr(m) for m in F.SECOND_MOMENTS))
    if clip_threshold is not None and number("clip_threshold", clip_threshold) <= 0:
        raise bad("clip_threshold", clip_threshold, "None (no clipping) or d > 0")
    if not isinstance(relative_step, bool):
        raise bad("relative_step", relative_step, "True or False")
    for name, value in (("eps1", eps1), ("eps2", eps2), ("weight_decay", weight_decay)):
        if number(name, value) < 0:
            raise bad(name, value, f"{name} >= 0")


class Adafactor(Optimizer):
    """Adafactor whose every knob of the paper is an argument.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim.Optimizer``.
        lr: α_t when ``relative_step=False``; ρ_t when ``relative_step=True``. A scheduler (e.g.
            ``torch.optim.lr_scheduler.LambdaLR``) drives it per step; the paper's s_t lives in
            ``factorial.schedule``.
        beta1: first-moment decay; 0 disables momentum (no state is kept).
        momentum: where β1 acts. ``"gradient"``: Adam's bias-corrected EMA of G, divided by √V̂ and
            then clipped (the paper's "as in Adam"). ``"update"``: EMA of the already clipped and
            scaled update α_t·Û, no bias correction (Tensor2Tensor and Hugging Face ``transformers``).
        beta2: constant second-moment decay, bias-corrected as in Adam (Alg. 3). Ignored when
            ``beta2_exponent`` is set.
        beta2_exponent: None for constant β2; c > 0 for the schedule β̂2t = 1 − t^(−c) (§7).
        second_moment: ``"factored"`` (R·Cᵀ/mean R, §3), ``"row"`` (row means only), ``"col"``
            (column means only, §3.2) or ``"full"`` (Adam's V). Tensors of rank < 2 always keep a
            full accumulator; rank > 2 factors the last two dimensions.
        clip_threshold: d of update clipping (§6), per tensor; None disables clipping.
        relative_step: scale the step by max(ε2, RMS(X)) (§8).
        eps1: added to G² (inside the means, as in the paper); 1e−30 in Alg. 6.
        eps2: floor of RMS(X) for the relative step, so zero-initialised parameters move.
        weight_decay: decoupled decay, X ← X·(1 − lr·wd) before the update; 0 in every paper cell.
        foreach: use the multi-tensor (``torch._foreach_*``) path. None picks it on CUDA.
        fused: use the fast path. Matrices go through the C kernel (``native``) where it applies.
            Otherwise factored, row-only and column-only matrices go through ``_broadcast_step``:
            U = D·aᵢ·bⱼ is never stored, one float32 scratch tensor per parameter size and step (11
            passes over G-sized tensors for a factored matrix, where the reference makes 17 and
            allocates two G-sized tensors); full-mode matrices and ``momentum="update"`` go through
            ``_fused_step``: step size and clipping folded into one 0-d scale of the final multiply-add.
            Vectors and scalars take the multi-tensor path. None picks it on CPU when ``foreach`` is
            None too; ``foreach=False`` alone selects the reference path (``_single_tensor_step``). Not
            stored in the state dict.
        compile: on the fused path, run the heavy loops of the factored mode through ``torch.compile``
            (``functional.factored_statistics`` and ``factored_apply_``: loops over X, G and D, no
            temporary the size of G). Opt-in: the first step compiles one graph per parameter shape
            (seconds each, a C++ compiler on CPU); later steps reuse them. On the 2-core CPU of the
            benchmark it is slower than the eager fused path (``make bench``). Other modes, and
            ``momentum="update"``, stay on the eager fused path.
        native: on the fused path, run contiguous float32 CPU matrices through the C kernel of
            ``kernels.c`` (factored, row and column modes: three loops, six passes over X-sized tensors;
            full mode: two loops; momentum on the gradient inside the first loop; built at first use by
            the system C compiler, see ``native.py``). Momentum on the update stays eager. None: where it loads,
            else the eager fused path with one warning; True: required (RuntimeError when it cannot be
            built); False: never. ``FACTORIAL_NATIVE=0`` in the environment turns it off too.

    After each step ``state[p]["update_rms"]`` is the unclipped RMS(U) of that step as a 0-d float32
    tensor (with β1 = 0 it is Figure 1's √mean(G²/V̂)); reading it is the caller's host sync, not ours.
    State tensors are float32 whatever the parameter dtype, and keep that dtype across
    ``load_state_dict``.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        *,
        beta1: float = 0.0,
        momentum: str = "gradient",
        beta2: float = 0.999,
        beta2_exponent: float | None = None,
        second_moment: str = "factored",
        clip_threshold: float | None = 1.0,
        relative_step: bool = True,
        eps1: float = 1e-30,
        eps2: float = 1e-3,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        fused: bool | None = None,
        compile: bool = False,
        native: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            beta1=beta1,
            momentum=momentum,
            beta2=beta2,
            beta2_exponent=beta2_exponent,
            second_moment=second_moment,
            clip_threshold=clip_threshold,
            relative_step=relative_step,
            eps1=eps1,
            eps2=eps2,
            weight_decay=weight_decay,
        )
        validate_hyperparameters(**defaults)
        validate_paths(foreach=foreach, fused=fused, compile=compile, native=native)
        if native and native_kernel.kernel() is None:
            raise RuntimeError(f"native=True but the C kernel is unavailable: {native_kernel.why_unavailable()}")
        self.native = native
        if compile:
            fused = True
        self.compile = compile
        defaults["foreach"] = foreach
        self.fused = fused
        super().__init__(params, defaults)
        # Groups added later (add_param_group) are validated too.
        for group in self.param_groups:
            validate_hyperparameters(**{k: group[k] for k in defaults if k != "foreach"})

    # --- state ---------------------------------------------------------------------------------

    @staticmethod
    def accumulator_mode(param: Tensor, second_moment: str) -> str:
        """The second-moment mode a tensor actually uses: vectors and scalars are always full."""
        return second_moment if param.dim() >= 2 else "full"

    def _init_state(self, param: Tensor, group: dict) -> dict:
        state = self.state[param]
        if state:
            return state
        f32 = dict(dtype=torch.float32, device=param.device)
        state["step"] = 0
        mode = self.accumulator_mode(param, group["second_moment"])
        if mode == "full":
            state["exp_avg_sq"] = torch.zeros(param.shape, **f32)
        if mode in ("factored", "row"):
            state["exp_avg_sq_row"] = torch.zeros(param.shape[:-1], **f32)
        if mode in ("factored", "col"):
            state["exp_avg_sq_col"] = torch.zeros(param.shape[:-2] + param.shape[-1:], **f32)
        if group["beta1"] > 0:
            state["exp_avg"] = torch.zeros(param.shape, **f32)
        state["update_rms"] = torch.zeros((), **f32)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Load as torch does, then put back the saved state tensors in their own dtype.

        ``Optimizer.load_state_dict`` casts floating state to the parameter's dtype, which would
        turn the float32 accumulators of a bf16 parameter into bf16 and break exact resumption.
        """
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        id_to_param = dict(zip(saved_ids, params))
        super().load_state_dict(state_dict)
        for param_id, saved in state_dict["state"].items():
            param = id_to_param[param_id]
            for key, value in saved.items():
                if torch.is_tensor(value):
                    self.state[param][key] = value.to(device=param.device, copy=True)

    # --- the step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adafactor does not support sparse gradients")
                if p.is_complex():
                    raise RuntimeError("Adafactor does not support complex parameters")
                self._init_state(p, group)["step"] += 1
                params.append(p)
            if not params:
                continue
            path = self._path(group["foreach"], params[0].is_cuda)
            if path == "foreach":
                self._multi_tensor_step(params, group)
            elif path == "fused":
                alphas: dict[torch.device, Tensor] = {}  # the compiled step's absolute α_t: one 0-d tensor per device
                scratch: dict[tuple, Tensor] = {}  # this step's float32 scratch tensors, one per (device, numel)
                vectors = [p for p in params if p.dim() < 2]
                for p in params:
                    if p.dim() < 2:
                        continue
                    if self._kernel_applies(p, group):
                        self._kernel_step(p, group)
                    elif self._broadcast_scaled(p, group):
                        self._broadcast_step(p, group, scratch)
                    else:
                        self._fused_step(p, group, alphas)
                if vectors:  # biases, norm gains, scalars: small, so per-op overhead dominates; foreach ops batch it
                    self._multi_tensor_step(vectors, group)
            else:
                for p in params:
                    self._single_tensor_step(p, group)
        return loss

    def c_kernel_status(self) -> str:
        """Which implementation of the same math this optimizer's CPU matrices take: "off" when no group
        with CPU parameters runs the fused path (or ``native=False``), otherwise ``native.status()``:
        "loaded" or "unavailable: <why>". For run metadata."""
        fused_cpu = any(self._path(g["foreach"], is_cuda=False) == "fused" and any(not p.is_cuda for p in g["params"])
                        for g in self.param_groups)
        if self.native is False or not fused_cpu:
            return "off"
        return native_kernel.status()

    def _path(self, foreach: bool | None, is_cuda: bool) -> str:
        """Which implementation a group runs: "fused", "foreach" or "single" (the reference)."""
        if self.fused:
            return "fused"
        if foreach is None:
            if is_cuda:
                return "foreach"
            return "fused" if self.fused is None else "single"
        return "foreach" if foreach else "single"

    def _unscaled_update(self, param: Tensor, group: dict) -> tuple[dict, Tensor, Tensor | float]:
        """Links 1–4 of the chain, shared by both per-tensor paths: α_t, the decay rate, the
        second-moment accumulators, the (momentum) direction and U = direction/√V̂ with its RMS."""
        state = self.state[param]
        grad = param.grad
        t = state["step"]
        mode = self.accumulator_mode(param, group["second_moment"])
        beta1 = group["beta1"]

        alpha = F.step_size(param, group["lr"], group["relative_step"], group["eps2"])
        rate = F.second_moment_rate(group["beta2"], group["beta2_exponent"], t)
        F.update_second_moment_(state, grad, mode, rate, group["eps1"])

        direction = grad
        if beta1 > 0 and group["momentum"] == "gradient":
            direction = F.gradient_momentum_(state["exp_avg"], grad, beta1, t)
        update = F.precondition(direction, state, mode)
        state["update_rms"] = F.rms(update)
        return state, update, alpha

    def _single_tensor_step(self, param: Tensor, group: dict) -> None:
        """The reference path: the chain of docs/PAPER.md §2 for one tensor, link by link."""
        state, update, alpha = self._unscaled_update(param, group)
        F.clip_(update, state["update_rms"], group["clip_threshold"])
        update.mul_(alpha)
        beta1 = group["beta1"]
        if beta1 > 0 and group["momentum"] == "update":
            update = F.update_momentum_(state["exp_avg"], update, beta1)

        if group["weight_decay"]:
            param.mul_(1.0 - group["lr"] * group["weight_decay"])
        _subtract_(param, update)

    def _eager_only(self, param: Tensor, group: dict) -> bool:
        """Momentum on the update (which stores α·Û) and the compiled factored step: neither the C kernel
        nor ``_broadcast_step`` takes them."""
        if group["beta1"] > 0 and group["momentum"] == "update":
            return True
        return self.compile and self.accumulator_mode(param, group["second_moment"]) == "factored"

    def _kernel_applies(self, param: Tensor, group: dict) -> bool:
        """Whether the fused path runs ``param`` (a matrix) through the C kernel: every mode, for contiguous
        float32 CPU tensors, unless ``native=False`` or the kernel could not be built."""
        return (self.native is not False and not self._eager_only(param, group)
                and native_kernel.supports(param, param.grad) and native_kernel.kernel() is not None)

    def _kernel_step(self, param: Tensor, group: dict) -> None:
        """One matrix through the C kernel (``kernels.c``): the factored, row and column modes in three
        loops, the full mode in two; momentum on the gradient advanced inside the first loop."""
        state = self.state[param]
        t = state["step"]
        mode = self.accumulator_mode(param, group["second_moment"])
        scalars = dict(rate=F.second_moment_rate(group["beta2"], group["beta2_exponent"], t), eps1=group["eps1"],
                       lr=group["lr"], relative=group["relative_step"], eps2=group["eps2"],
                       threshold=group["clip_threshold"], decay=1.0 - group["lr"] * group["weight_decay"])
        exp_avg, weight = None, 0.0
        if group["beta1"] > 0:  # m̂ ← lerp(m̂, G, 1 − β̂1t), as F.gradient_momentum_
            exp_avg, weight = state["exp_avg"], 1.0 - F.bias_corrected_rate(group["beta1"], t)
        if mode == "full":
            state["update_rms"] = native_kernel.full_step(param, param.grad, exp_avg, weight, state["exp_avg_sq"],
                                                          **scalars)
        else:
            state["update_rms"] = native_kernel.step(param, param.grad, exp_avg, weight, state.get("exp_avg_sq_row"),
                                                     state.get("exp_avg_sq_col"), mode, **scalars)

    def _broadcast_scaled(self, param: Tensor, group: dict) -> bool:
        """Whether the fused path runs ``param`` through ``_broadcast_step``: the factored, row and column
        modes (U = D·aᵢ·bⱼ) that the C kernel does not take."""
        return self.accumulator_mode(param, group["second_moment"]) != "full" and not self._eager_only(param, group)

    def _broadcast_step(self, param: Tensor, group: dict, scratch: dict[tuple, Tensor]) -> None:
        """The factored, row-only and column-only chains without V̂ or U (on CPU where the C kernel is not used).

        With a = rsqrt(R/mean R) (factored) or rsqrt(R) (row), b = rsqrt(C) (factored, col) and D the
        direction (G, or m̂ with momentum on the gradient), U = D·aᵢ·bⱼ. One float32 scratch tensor of
        the parameter's size, shared by the parameters of that size within a step, holds G² (for R and
        C) and then D·b. RMS(U) comes from the row norms of D·b times a, and the step is one multiply-add
        X ← X − (s·a) ∘ (D·b) with s = α_t/max(1, RMS(U)/d). Passes over G-sized tensors (a read or a
        write each) for a factored matrix: X for α_t (1), G → G² (2), its row and column sums (2),
        D → D·b (2), its row norms (1), X, D·b → X (3): 11, where the reference makes 17. Column sums go
        by blocks of rows (``functional.col_sum_by_row_blocks``) so that every large op splits the matrix
        by rows across threads the same way. Equal to the reference up to float32 rounding (tests/test_optim.py).
        """
        state = self.state[param]
        grad = param.grad
        t = state["step"]
        mode = group["second_moment"]
        eps1 = group["eps1"]
        alpha = F.step_size(param, group["lr"], group["relative_step"], group["eps2"])
        rate = F.second_moment_rate(group["beta2"], group["beta2_exponent"], t)

        buf = None
        n, m = param.shape[-2:]
        if mode == "row":
            F.ema_(state["exp_avg_sq_row"], F.row_mean_sq(grad), rate, eps1)
        else:
            key = (param.device, param.numel())
            if key not in scratch:
                scratch[key] = torch.empty(param.numel(), dtype=torch.float32, device=param.device)
            buf = scratch[key].view(param.shape)
            sq = F.square_into(grad, buf)
            if mode == "factored":
                F.ema_sum_(state["exp_avg_sq_row"], sq.sum(dim=-1), m, rate, eps1)
            F.ema_sum_(state["exp_avg_sq_col"], F.col_sum_by_row_blocks(sq), n, rate, eps1)

        direction = grad
        if group["beta1"] > 0:  # momentum on the gradient: the update kind never comes here
            direction = F.gradient_momentum_(state["exp_avg"], grad, group["beta1"], t)
        row_scale = None
        if mode != "col":
            row = state["exp_avg_sq_row"]
            row_scale = (row / row.mean(dim=-1, keepdim=True)).rsqrt_() if mode == "factored" else row.rsqrt()
        scaled = direction
        if mode != "row":
            scaled = torch.mul(direction, state["exp_avg_sq_col"].rsqrt().unsqueeze(-2), out=buf)

        state["update_rms"] = F.broadcast_update_rms(scaled, row_scale)
        scale = F.clipped_step_size(alpha, state["update_rms"], group["clip_threshold"])
        if row_scale is not None:
            scale = row_scale.mul_(scale).unsqueeze(-1)
        if group["weight_decay"]:
            param.mul_(1.0 - group["lr"] * group["weight_decay"])
        _subtract_scaled_(param, scaled, scale)

    def _fused_step(self, param: Tensor, group: dict, alphas: dict[torch.device, Tensor]) -> None:
        """The reference chain in fewer passes over memory (on CPU: momentum on the update, the compiled
        factored step, and the full mode where the C kernel is not used).

        The same links as ``_single_tensor_step`` up to RMS(U); then, instead of three passes
        over U (U ← U/max(1, RMS(U)/d), U ← α·U, X ← X − U), one 0-d scale
        s = α/max(1, RMS(U)/d) and one multiply-add X ← X − s·U. Equal to the reference up to float32
        rounding (tests/test_optim.py checks every setting).
        """
        beta1 = group["beta1"]
        momentum_on_update = beta1 > 0 and group["momentum"] == "update"
        if self.compile and self.accumulator_mode(param, group["second_moment"]) == "factored" and not momentum_on_update:
            self._compiled_factored_step(param, group, alphas)
            return

        state, update, alpha = self._unscaled_update(param, group)
        scale = F.clipped_step_size(alpha, state["update_rms"], group["clip_threshold"])
        if momentum_on_update:
            update = F.update_momentum_(state["exp_avg"], _scaled_(update, scale), beta1)
            scale = 1.0

        if group["weight_decay"]:
            param.mul_(1.0 - group["lr"] * group["weight_decay"])
        _subtract_scaled_(param, update, scale)

    def _compiled_factored_step(self, param: Tensor, group: dict, alphas: dict[torch.device, Tensor]) -> None:
        """The factored chain with its two heavy parts compiled (``compile=True``).

        statistics (one loop over X, one over G) → the EMAs of R and C and the step size α_t (eager,
        vectors) → U = D·rsqrt(R/mean R)·rsqrt(C)ᵀ, RMS(U) and X ← X − α_t/max(1, RMS(U)/d)·U (one
        reduction over D, one loop over X and D).
        """
        state = self.state[param]
        grad = param.grad
        t = state["step"]
        lr, relative = group["lr"], group["relative_step"]
        rate = F.second_moment_rate(group["beta2"], group["beta2_exponent"], t)

        key = (tuple(param.shape), param.dtype, grad.dtype, param.device)
        x_sq, row_sum, col_sum = _compiled("factored_statistics", *key, relative)(param, grad, relative)
        F.ema_(state["exp_avg_sq_row"], row_sum.div_(param.shape[-1]), rate, group["eps1"])
        F.ema_(state["exp_avg_sq_col"], col_sum.div_(param.shape[-2]), rate, group["eps1"])
        if relative:  # α_t = max(ε2, RMS(X_{t−1}))·ρ_t
            alpha = torch.clamp(x_sq.div_(param.numel()).sqrt_(), min=group["eps2"]).mul_(lr)
        else:  # the group's lr as a 0-d tensor (a float would recompile as it changes), made once per step
            alpha = alphas.get(param.device)
            if alpha is None:
                alpha = alphas[param.device] = torch.full((), lr, dtype=torch.float32, device=param.device)
        direction = grad
        if group["beta1"] > 0:
            direction = F.gradient_momentum_(state["exp_avg"], grad, group["beta1"], t)
        row = state["exp_avg_sq_row"]
        row_scale = (row / row.mean(dim=-1, keepdim=True)).rsqrt_()
        col_scale = state["exp_avg_sq_col"].rsqrt()

        if group["weight_decay"]:
            param.mul_(1.0 - lr * group["weight_decay"])
        threshold = group["clip_threshold"]
        state["update_rms"] = _compiled("factored_apply_", *key, direction.dtype, threshold)(
            param, direction, row_scale, col_scale, alpha, threshold)

    def _multi_tensor_step(self, params: list[Tensor], group: dict) -> None:
        """The same chain with ``torch._foreach_*`` ops, tensors bucketed by shape class.

        A bucket shares device, parameter dtype, accumulator mode and step count, so every
        per-step scalar (β̂2t, β̂1t) is one number for the bucket. The factored statistics need
        reductions along one axis, which have no foreach form, so those stay per tensor.
        """
        buckets: dict[tuple, list[Tensor]] = defaultdict(list)
        for p in params:
            mode = self.accumulator_mode(p, group["second_moment"])
            buckets[(p.device, p.dtype, mode, self.state[p]["step"])].append(p)
        beta1 = group["beta1"]
        for (_, _, mode, t), ps in buckets.items():
            states = [self.state[p] for p in ps]
            grads = [p.grad if p.grad.dtype == torch.float32 else p.grad.float() for p in ps]

            if group["relative_step"]:
                alphas = _foreach_rms(ps)
                torch._foreach_clamp_min_(alphas, group["eps2"])
                torch._foreach_mul_(alphas, group["lr"])
            rate = F.second_moment_rate(group["beta2"], group["beta2_exponent"], t)
            if mode == "full":
                accs = [s["exp_avg_sq"] for s in states]
                torch._foreach_mul_(accs, rate)
                torch._foreach_addcmul_(accs, grads, grads, value=1.0 - rate)
                torch._foreach_add_(accs, (1.0 - rate) * group["eps1"])
            else:
                for s, g in zip(states, grads):
                    F.update_second_moment_(s, g, mode, rate, group["eps1"])

            directions = grads
            if beta1 > 0 and group["momentum"] == "gradient":
                directions = [s["exp_avg"] for s in states]
                torch._foreach_lerp_(directions, grads, 1.0 - F.bias_corrected_rate(beta1, t))
            if mode == "full":
                updates = torch._foreach_sqrt([s["exp_avg_sq"] for s in states])
                torch._foreach_reciprocal_(updates)
                torch._foreach_mul_(updates, directions)
            else:
                updates = [F.precondition(d, s, mode) for d, s in zip(directions, states)]

            norms = _foreach_rms(updates)
            for s, n in zip(states, norms):
                s["update_rms"] = n
            if group["clip_threshold"] is not None:
                denoms = torch._foreach_div(norms, group["clip_threshold"])
                torch._foreach_clamp_min_(denoms, 1.0)
                torch._foreach_div_(updates, denoms)
            if group["relative_step"]:
                torch._foreach_mul_(updates, alphas)
            else:
                torch._foreach_mul_(updates, group["lr"])
            if beta1 > 0 and group["momentum"] == "update":
                moms = [s["exp_avg"] for s in states]
                torch._foreach_lerp_(moms, updates, 1.0 - beta1)
                updates = moms

            if group["weight_decay"]:
                torch._foreach_mul_(ps, 1.0 - group["lr"] * group["weight_decay"])
            if ps[0].dtype == torch.float32:
                torch._foreach_sub_(ps, updates)
            else:
                for p, u in zip(ps, updates):
                    _subtract_(p, u)


def _foreach_rms(tensors: list[Tensor]) -> list[Tensor]:
    """RMS of each tensor as a 0-d float32 tensor, for the multi-tensor path.

    On CUDA ``_foreach_norm`` reduces as a tree and is accurate. On CPU it accumulates each whole
    tensor serially in float32, which is off by ~1e-4 relative on an 8192×512 matrix, so there
    each tensor takes ``F.rms`` (row norms first, then their norm): float32 rounding.
    """
    if tensors[0].device.type == "cpu":
        return [F.rms(x) for x in tensors]
    norms = torch._foreach_norm([x if x.dtype == torch.float32 else x.float() for x in tensors])
    torch._foreach_mul_(norms, [1.0 / math.sqrt(x.numel()) for x in tensors])
    return norms


_COMPILED: dict[tuple, Any] = {}


def _compiled(name: str, *key: Any):
    """``torch.compile`` of a kernel of ``functional`` for one kind of call (shape, dtypes, flags).

    Each key gets its own copy of the function, so its own compile cache with a single static-shape
    graph: dynamo's limit of 8 recompiles per function would otherwise send a model with more
    parameter shapes back to eager, and dynamic-shape kernels measured slower than eager here.
    """
    if (name, *key) not in _COMPILED:
        fn = getattr(F, name)
        copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        _COMPILED[(name, *key)] = torch.compile(copy, dynamic=False)
    return _COMPILED[(name, *key)]


def _scaled_(update: Tensor, scale: Tensor | float) -> Tensor:
    """update ← scale·update, in place (``scale`` a 0-d tensor or a number)."""
    return update.mul_(scale)


def _subtract_scaled_(param: Tensor, update: Tensor, scale: Tensor | float) -> None:
    """X ← X − scale·update in one pass, in float32, rounded once into the parameter's dtype."""
    target = param if param.dtype == torch.float32 else param.float()
    if torch.is_tensor(scale):
        target.addcmul_(update, scale, value=-1.0)
    else:
        target.add_(update, alpha=-scale)
    if target is not param:
        param.copy_(target)


def _subtract_(param: Tensor, update: Tensor) -> None:
    """X ← X − update, computed in float32 and rounded once into the parameter's dtype."""
    if param.dtype == torch.float32:
        param.sub_(update)
    else:
        param.copy_(param.float().sub_(update))
