"""Adafactor with every ablation switch of Shazeer & Stern (2018) (docs/PAPER.md §2).

One step, for each parameter X with gradient G at step t (t = 1, 2, ...):

1. α_t            = lr (absolute) or max(ε2, RMS(X_{t−1}))·lr (relative, §8)      -> step_size
2. β̂2t            = Adam's bias-corrected β2 (Alg. 3) or 1 − t^(−c) (§7)           -> second_moment_rate
3. V̂              ← full / factored / row-only / column-only EMA of G² + ε1 (§3)  -> update_second_moment_
4. U              = G/√V̂, or m̂/√V̂ with Adam-style momentum                         -> precondition
5. Û              = U / max(1, RMS(U)/d) (§6)                                          -> clip_
6. X              ← X − α_t·Û, or X ← X − m with Tensor2Tensor-style momentum on α_t·Û

Corners of the space (see README):
    Adam (Alg. 1):      Adafactor(p, lr, beta1=0.9, beta2=0.999, beta2_exponent=None,
                                  second_moment="full", clip_threshold=None, relative_step=False)
    Adafactor (Alg. 6): Adafactor(p, lr=rho_t)   (the defaults: beta1=0.0, beta2_exponent=0.8,
                                  second_moment="factored", clip_threshold=1.0, relative_step=True)

Four implementations of that step, written as functions over lists of tensors as in
``torch.optim.adam`` and chosen by ``adafactor`` (the dispatcher; see ``Adafactor``'s ``foreach``,
``fused`` and ``compile``):

* ``_single_tensor_adafactor``: the reference, one ``functional`` call per link of the chain above;
* ``_multi_tensor_adafactor``: the same chain with ``torch._foreach_*`` ops (accelerators, and the
  many small vectors of a model on CPU);
* ``_fused_adafactor``: the C kernel of ``kernels.c`` for contiguous float32 CPU matrices (the
  default on CPU);
* ``compiled.compiled_adafactor`` (``compile=True``, opt-in): the reference's chain traced by
  ``torch.compile`` for all tensors at once, replayed from CUDA graphs on CUDA (``compiled.py``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import chain
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import functional as OF
from . import knobs as K
from . import native as native_kernel

__all__ = ["Adafactor", "adafactor"]


def validate_paths(*, foreach: bool | None, fused: bool | None, compile: Any = False, cuda_graphs: Any = True,
                   prefix: str = "") -> None:
    """Check the implementation flags together: ``fused=True`` excludes ``foreach=True``; ``compile=True`` (the
    compiled step takes every tensor) excludes ``fused=True`` and any ``foreach``. Raise ValueError naming the
    argument (as ``<prefix><name>``), the value and what is allowed. The trainer's config check calls it too
    (prefix ``optim.``), so the rule exists once."""
    for name, value in (("foreach", foreach), ("fused", fused)):
        if value is not None and not isinstance(value, bool):
            raise K.invalid(prefix + name, value, "None, True or False")
    if fused and foreach:
        raise K.invalid(prefix + "fused", fused, "fused=True only with foreach=None or False")
    if not isinstance(compile, bool):
        raise K.invalid(prefix + "compile", compile,
                       "False (the eager paths) or True (the whole step in one torch.compile'd function, replayed "
                       "from CUDA graphs on CUDA)")
    if not isinstance(cuda_graphs, bool):
        raise K.invalid(prefix + "cuda_graphs", cuda_graphs, "True or False (whether compile=True replays CUDA graphs)")
    if compile and fused:
        raise K.invalid(prefix + "fused", fused, "None or False with compile=True (the compiled step takes every tensor)")
    if compile and foreach is not None:
        raise K.invalid(prefix + "foreach", foreach,
                       "None with compile=True (the compiled step takes every tensor)")


def validate_hyperparameters(*, lr: float, prefix: str = "", **knobs: Any) -> None:
    """Raise ValueError naming the argument (as ``<prefix><name>``), the value and what is allowed: ``lr`` and
    every knob of the spec (factorial.optim.knobs), a name that is not a knob included."""
    K.check(knobs, lr=lr, prefix=prefix)


def _plain(method):
    """``method`` without torch's lazy ``torch._dynamo.disable`` wrapper (see Adafactor.add_param_group)."""
    return getattr(method, "__wrapped__", method)


class Adafactor(Optimizer):
    """Adafactor whose every knob of the paper is an argument.

    The knobs (``beta1`` … ``weight_decay``, keyword arguments) are those of the spec in
    ``factorial.optim.knobs``, each at Alg. 6's value unless given: β1 = 0, β̂2t = 1 − t^−0.8, factored,
    d = 1, relative step (Adam's corner: ``beta1=0.9, beta2_exponent=None, second_moment="full",
    clip_threshold=None, relative_step=False``). A name that is not a knob is refused with the list.

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
        beta2_exponent: None for constant β2; c > 0 for the schedule β̂2t = 1 − t^(−c) (§7); 0.8 by default.
        second_moment: ``"factored"`` (R·Cᵀ/mean R, §3), ``"row"`` (row means only), ``"col"``
            (column means only, §3.2) or ``"full"`` (Adam's V). Tensors of rank < 2 always keep a
            full accumulator; rank > 2 factors the last two dimensions.
        clip_threshold: d of update clipping (§6), per tensor; None disables clipping.
        relative_step: scale the step by max(ε2, RMS(X)) (§8).
        eps1: added to G² (inside the means, as in the paper); 1e−30 in Alg. 6.
        eps2: floor of RMS(X) for the relative step, so zero-initialised parameters move.
        weight_decay: decoupled decay, X ← X·(1 − lr·wd) before the update; 0 in every paper cell.
        foreach: which path the tensors that the C kernel does not take go through. True: the
            multi-tensor path (``_multi_tensor_adafactor``, ``torch._foreach_*`` ops); False: the
            single-tensor reference path (``_single_tensor_adafactor``, the chain of ``functional``);
            None: multi-tensor for CUDA tensors and for vectors and scalars (small tensors, where
            per-op overhead dominates), single-tensor for the other CPU tensors. ``foreach=False``
            alone (``fused=None``) runs everything on the reference path.
        fused: the C kernel of ``kernels.c`` (``_fused_adafactor``) for contiguous float32 CPU
            matrices: every second-moment mode, momentum on the gradient inside it (momentum on the
            update, which stores α·Û, is not in it). Built at first use by the system C compiler (see
            ``native.py``). None: used where it builds, unless ``foreach`` is given; where it cannot be
            built, those matrices take the reference path after one warning. True: required
            (RuntimeError here when it cannot be built). False: never. ``FACTORIAL_NATIVE=0`` in the
            environment turns it off too. Not stored in the state dict.
        compile: True runs every tensor through ``compiled.compiled_adafactor``: the reference's chain
            traced by ``torch.compile`` as one function for the whole group (inductor: Triton kernels on
            CUDA, C++ on CPU), its per-step numbers in a device tensor so that no step recompiles or
            syncs. Opt-in: its CUDA speed is not measured yet, and on CPU the C kernel is the default.
            Needs ``foreach=None`` and ``fused`` None or False. The first step (and each new set of
            shapes) compiles, which takes seconds. Not stored in the state dict.
        cuda_graphs: with ``compile=True`` on CUDA, replay the compiled step from CUDA graphs (see
            ``compiled.CudaGraphs``); False runs the compiled function each step (to measure what the
            graphs save). Ignored otherwise.

    Every path computes the same numbers up to float32 rounding (tests/test_optim.py checks each against
    the reference in every mode).

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
        foreach: bool | None = None,
        fused: bool | None = None,
        compile: bool = False,
        cuda_graphs: bool = True,
        **knobs: Any,
    ) -> None:
        # Every knob of the spec, at Alg. 6's value unless given (an unknown name is refused with the list).
        defaults = dict(lr=lr, **{**K.DEFAULTS, **knobs})
        validate_hyperparameters(**defaults)
        validate_paths(foreach=foreach, fused=fused, compile=compile, cuda_graphs=cuda_graphs)
        if fused and native_kernel.kernel() is None:
            raise RuntimeError(f"fused=True but the C kernel is unavailable: {native_kernel.why_unavailable()}")
        self.fused = fused
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self._graphs = None  # compiled.CudaGraphs of this optimizer, made at its first compiled CUDA step
        defaults["foreach"] = foreach
        super().__init__(params, defaults)  # validates each group's own values (add_param_group)

    # --- torch.optim.Optimizer's bookkeeping, without importing torch._dynamo ------------------
    #
    # torch wraps these four methods in a lazy ``torch._dynamo.disable`` whose first call imports
    # torch._dynamo, a large part of a small cell's start-up (a sweep or the test suite starts
    # hundreds of cells). The wrapper only matters while dynamo traces the caller; this optimizer's
    # step is eager (or the C kernel) and never traced, so it calls the plain methods. Where a torch
    # release drops ``__wrapped__``, the wrapped method runs as before.

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group as torch does, then check its values as the constructor checks the defaults."""
        _plain(Optimizer.add_param_group)(self, param_group)
        group = self.param_groups[-1]
        try:
            validate_hyperparameters(**{k: group[k] for k in self.defaults if k != "foreach"})
            validate_paths(foreach=group["foreach"], fused=self.fused, compile=self.compile)
        except ValueError:
            self.param_groups.pop()
            raise

    def zero_grad(self, set_to_none: bool = True) -> None:
        _plain(Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _plain(Optimizer.state_dict)(self)

    # --- state ---------------------------------------------------------------------------------

    def _init_state(self, param: Tensor, group: dict) -> dict:
        state = self.state[param]
        if state:
            return state
        f32 = dict(dtype=torch.float32, device=param.device)
        state["step"] = 0
        mode = OF.accumulator_mode(param, group["second_moment"])
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
        _plain(Optimizer.load_state_dict)(self, state_dict)
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
            params, grads, exp_avg_sqs, rows, cols, exp_avgs, steps = [], [], [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adafactor does not support sparse gradients")
                if p.is_complex():
                    raise RuntimeError("Adafactor does not support complex parameters")
                state = self._init_state(p, group)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avg_sqs.append(state.get("exp_avg_sq"))
                rows.append(state.get("exp_avg_sq_row"))
                cols.append(state.get("exp_avg_sq_col"))
                exp_avgs.append(state.get("exp_avg"))
                steps.append(state["step"])
            if not params:
                continue
            update_rms = adafactor(
                params, grads, exp_avg_sqs, rows, cols, exp_avgs, steps, foreach=group["foreach"], fused=self.fused,
                compile=self.compile, graphs=self._cuda_graphs(), **{k: group[k] for k in _KNOBS})
            for p, rms in zip(params, update_rms):
                self.state[p]["update_rms"] = rms
        return loss

    def _cuda_graphs(self):
        """This optimizer's CUDA graphs of the compiled step (None unless compile=True and cuda_graphs=True)."""
        if not (self.compile and self.cuda_graphs):
            return None
        if self._graphs is None:
            from .compiled import CudaGraphs

            self._graphs = CudaGraphs()
        return self._graphs

    def c_kernel_status(self) -> str:
        """Whether this optimizer's CPU matrices may take the C kernel: "off" when no group with CPU
        parameters would (``compile=True``, ``fused=False``, or ``foreach`` given with ``fused=None``),
        otherwise ``native.status()``: "loaded" or "unavailable: <why>". For run metadata."""
        if self.compile or not any(_kernel_wanted(g["foreach"], self.fused) and any(not p.is_cuda for p in g["params"])
                   for g in self.param_groups):
            return "off"
        return native_kernel.status()


# --- the functional API: one step over lists of tensors (as torch.optim.adam) ---------------------------

_KNOBS = ("lr", *K.NAMES)


def _kernel_wanted(foreach: bool | None, fused: bool | None) -> bool:
    """Whether the C kernel is tried at all: ``fused=True``, or ``fused=None`` with ``foreach=None``."""
    return bool(fused) or (fused is None and foreach is None)


def _takes_kernel(param: Tensor, grad: Tensor, states: tuple, *, beta1: float, momentum: str) -> bool:
    """Whether the C kernel can run this tensor: a contiguous float32 CPU matrix, with no momentum on
    the update, and a kernel that builds (asked last: the first ask builds it)."""
    return (param.dim() >= 2 and not (beta1 > 0 and momentum == "update")
            and native_kernel.supports(param, grad, *states) and native_kernel.kernel() is not None)


def adafactor(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avg_sqs: list[Tensor | None],
    exp_avg_sq_rows: list[Tensor | None],
    exp_avg_sq_cols: list[Tensor | None],
    exp_avgs: list[Tensor | None],
    state_steps: list[int],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    compile: bool = False,
    graphs: Any = None,
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
) -> list[Tensor]:
    """One Adafactor step of every tensor in ``params`` (see ``Adafactor`` for the knobs), in place.

    The state lists run parallel to ``params``: the full accumulator V (vectors, scalars and
    ``second_moment="full"``), R and C (the modes that keep them) and the first moment (β1 > 0), None
    where a tensor does not keep one; ``state_steps`` holds each tensor's t, already advanced. Each
    tensor goes through the C kernel, the multi-tensor or the single-tensor path as ``Adafactor``'s
    ``fused`` and ``foreach`` say, or all of them through the compiled path with ``compile=True``
    (replayed from ``graphs``, a ``compiled.CudaGraphs``, on CUDA when given). Returns RMS(U) of each
    tensor as a new 0-d float32 tensor.
    """
    knobs = dict(lr=lr, beta1=beta1, momentum=momentum, beta2=beta2, beta2_exponent=beta2_exponent,
                 second_moment=second_moment, clip_threshold=clip_threshold, relative_step=relative_step, eps1=eps1,
                 eps2=eps2, weight_decay=weight_decay)
    lists = (params, grads, exp_avg_sqs, exp_avg_sq_rows, exp_avg_sq_cols, exp_avgs, state_steps)
    if compile:
        from .compiled import compiled_adafactor

        return compiled_adafactor(*lists, graphs=graphs, **knobs)
    paths: dict[Any, list[int]] = {_fused_adafactor: [], _multi_tensor_adafactor: [], _single_tensor_adafactor: []}
    kernel = _kernel_wanted(foreach, fused)
    for i, (p, g) in enumerate(zip(params, grads)):
        states = (exp_avg_sqs[i], exp_avg_sq_rows[i], exp_avg_sq_cols[i], exp_avgs[i])
        if kernel and _takes_kernel(p, g, states, beta1=beta1, momentum=momentum):
            paths[_fused_adafactor].append(i)
        elif foreach or (foreach is None and (p.is_cuda or p.dim() < 2)):
            paths[_multi_tensor_adafactor].append(i)
        else:
            paths[_single_tensor_adafactor].append(i)
    out: list[Tensor | None] = [None] * len(params)
    for path, idx in paths.items():
        if idx:
            for i, rms in zip(idx, path(*([xs[i] for i in idx] for xs in lists), **knobs)):
                out[i] = rms
    return out


def _single_tensor_adafactor(params, grads, exp_avg_sqs, exp_avg_sq_rows, exp_avg_sq_cols, exp_avgs, state_steps, *,
                             lr, beta1, momentum, beta2, beta2_exponent, second_moment, clip_threshold, relative_step,
                             eps1, eps2, weight_decay) -> list[Tensor]:
    """The reference path: the chain of docs/PAPER.md §2 for one tensor at a time, link by link, each
    link one function of ``functional``."""
    out = []
    for param, grad, exp_avg_sq, row, col, exp_avg, t in zip(params, grads, exp_avg_sqs, exp_avg_sq_rows,
                                                             exp_avg_sq_cols, exp_avgs, state_steps):
        mode = OF.accumulator_mode(param, second_moment)
        alpha = OF.step_size(param, lr, relative_step, eps2)  # 1. α_t
        rate = OF.second_moment_rate(beta2, beta2_exponent, t)  # 2. β̂2t
        OF.update_second_moment_(exp_avg_sq, row, col, grad, mode, rate, eps1)  # 3. V̂
        direction = grad
        if beta1 > 0 and momentum == "gradient":
            direction = OF.gradient_momentum_(exp_avg, grad, beta1, t)
        update = OF.precondition(direction, exp_avg_sq, row, col, mode)  # 4. U
        update_rms = OF.rms(update)
        OF.clip_(update, update_rms, clip_threshold)  # 5. Û
        update.mul_(alpha)
        if beta1 > 0 and momentum == "update":
            update = OF.update_momentum_(exp_avg, update, beta1)
        if weight_decay:
            param.mul_(1.0 - lr * weight_decay)
        OF.subtract_(param, update)  # 6. X ← X − α_t·Û
        out.append(update_rms)
    return out


def _multi_tensor_adafactor(params, grads, exp_avg_sqs, exp_avg_sq_rows, exp_avg_sq_cols, exp_avgs, state_steps, *,
                            lr, beta1, momentum, beta2, beta2_exponent, second_moment, clip_threshold, relative_step,
                            eps1, eps2, weight_decay) -> list[Tensor]:
    """The same chain with ``torch._foreach_*`` ops, tensors bucketed by shape class.

    A bucket shares device, parameter dtype, accumulator mode and step count, so every per-step scalar
    (β̂2t, β̂1t) is one number for the bucket. The factored statistics need reductions along one axis,
    which have no foreach form, so those stay per tensor.
    """
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        buckets[(p.device, p.dtype, OF.accumulator_mode(p, second_moment), state_steps[i])].append(i)
    out: list[Tensor | None] = [None] * len(params)
    for (_, dtype, mode, t), idx in buckets.items():
        ps = [params[i] for i in idx]
        grads_ = [grads[i] if grads[i].dtype == torch.float32 else grads[i].float() for i in idx]
        accs, rows, cols = ([xs[i] for i in idx] for xs in (exp_avg_sqs, exp_avg_sq_rows, exp_avg_sq_cols))

        if relative_step:
            alphas = _foreach_rms(ps)
            torch._foreach_clamp_min_(alphas, eps2)
            torch._foreach_mul_(alphas, lr)
        rate = OF.second_moment_rate(beta2, beta2_exponent, t)
        if mode == "full":
            torch._foreach_mul_(accs, rate)
            torch._foreach_addcmul_(accs, grads_, grads_, value=1.0 - rate)
            torch._foreach_add_(accs, (1.0 - rate) * eps1)
        else:
            for row, col, g in zip(rows, cols, grads_):
                OF.update_second_moment_(None, row, col, g, mode, rate, eps1)

        directions = grads_
        if beta1 > 0 and momentum == "gradient":
            directions = [exp_avgs[i] for i in idx]
            torch._foreach_lerp_(directions, grads_, 1.0 - OF.bias_corrected_rate(beta1, t))
        if mode == "full":
            updates = torch._foreach_sqrt(accs)
            torch._foreach_reciprocal_(updates)
            torch._foreach_mul_(updates, directions)
        else:
            updates = [OF.precondition(d, None, row, col, mode) for d, row, col in zip(directions, rows, cols)]

        norms = _foreach_rms(updates)
        for i, n in zip(idx, norms):
            out[i] = n
        if clip_threshold is not None:
            denoms = torch._foreach_div(norms, clip_threshold)
            torch._foreach_clamp_min_(denoms, 1.0)
            torch._foreach_div_(updates, denoms)
        if relative_step:
            torch._foreach_mul_(updates, alphas)
        else:
            torch._foreach_mul_(updates, lr)
        if beta1 > 0 and momentum == "update":
            moms = [exp_avgs[i] for i in idx]
            torch._foreach_lerp_(moms, updates, 1.0 - beta1)
            updates = moms

        if weight_decay:
            torch._foreach_mul_(ps, 1.0 - lr * weight_decay)
        if dtype == torch.float32:
            torch._foreach_sub_(ps, updates)
        else:
            for p, u in zip(ps, updates):
                OF.subtract_(p, u)
    return out


def _fused_adafactor(params, grads, exp_avg_sqs, exp_avg_sq_rows, exp_avg_sq_cols, exp_avgs, state_steps, *,
                     lr, beta1, momentum, beta2, beta2_exponent, second_moment, clip_threshold, relative_step,
                     eps1, eps2, weight_decay) -> list[Tensor]:
    """The C kernel (``kernels.c``), one call per matrix: the factored, row and column modes in three loops
    over the tensor, the full mode in two; momentum on the gradient advanced inside the first loop. Only
    the tensors ``_takes_kernel`` accepts come here (momentum on the update never does)."""
    out = []
    for param, grad, exp_avg_sq, row, col, exp_avg, t in zip(params, grads, exp_avg_sqs, exp_avg_sq_rows,
                                                             exp_avg_sq_cols, exp_avgs, state_steps):
        weight = 1.0 - OF.bias_corrected_rate(beta1, t) if beta1 > 0 else 0.0  # m̂ ← lerp(m̂, G, 1 − β̂1t)
        out.append(native_kernel.step(
            param, grad, exp_avg if beta1 > 0 else None, weight, exp_avg_sq, row, col,
            OF.accumulator_mode(param, second_moment), rate=OF.second_moment_rate(beta2, beta2_exponent, t), eps1=eps1,
            lr=lr, relative=relative_step, eps2=eps2, threshold=clip_threshold, decay=1.0 - lr * weight_decay))
    return out


def _foreach_rms(tensors: list[Tensor]) -> list[Tensor]:
    """RMS of each tensor as a 0-d float32 tensor, for the multi-tensor path.

    On CUDA ``_foreach_norm`` reduces as a tree and is accurate. On CPU it accumulates each whole
    tensor serially in float32, which is off by ~1e-4 relative on an 8192×512 matrix, so there
    each tensor takes ``OF.rms`` (row norms first, then their norm): float32 rounding.
    """
    if tensors[0].device.type == "cpu":
        return [OF.rms(x) for x in tensors]
    norms = torch._foreach_norm([x if x.dtype == torch.float32 else x.float() for x in tensors])
    torch._foreach_mul_(norms, [1.0 / math.sqrt(x.numel()) for x in tensors])
    return norms
