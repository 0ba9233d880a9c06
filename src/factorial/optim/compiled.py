"""The compiled path of the step (``Adafactor(compile=True)``): all tensors of a parameter group in one
``torch.compile``d function, replayed from a CUDA graph on CUDA.

Why (docs/OPTIMIZER.md, "The compiled path"). On a GPU the eager paths are bound by kernel launches,
not by memory: the multi-tensor path issues about twenty small kernels per matrix (statistics,
precondition, RMS, clip, scale, subtract), each paying the host's launch cost. Here inductor fuses each
tensor's chain into a few kernels, and on CUDA the whole parameter list's kernels are captured once in a
CUDA graph, so that a step is one host-to-device copy of the step's numbers, one graph launch and one
copy of RMS(U).
``torch.compile`` adds no dependency and generates Triton on CUDA and C++ on CPU from the same trace, so
the code that runs on a GPU is traced from the same Python as the code the CPU tests run.

One definition of the math. ``_graph_step`` chains the links of ``functional`` that the reference path
(``adafactor._single_tensor_adafactor``) chains, in the same order: ``step_size``, the row and column
statistics, ``precondition``, ``rms``, ``clip_`` and the subtraction. The links that take a number that
changes with the step (β̂2t, the momentum weight) take it as a Python float in ``functional``
(``alpha=``, ``value=``), which a tensor cannot be, so ``_ema_``, ``_ema_sq_`` and the momenta below
restate them with that number as a 0-d tensor. The numbers come from ``step_scalars``: the reference's
own rate functions in float64, each rounded once to float32, which is what the reference's ops do with
a Python float. tests/test_compiled.py checks this path against the reference element for element for
every row of Table 2 and the other knobs, over several steps, in float32 and bf16.

No recompiles, no host syncs. Every per-step number (ρ_t or α_t, β̂2t, 1 − β̂2t, (1 − β̂2t)·ε1, the
momentum weight, ε2, d, 1 − lr·wd) is a column of one (tensors × 8) float32 tensor built on the host and
copied to the device without blocking (from pinned memory on CUDA): a new step or learning rate changes
the tensor's contents, never the traced graph, and nothing is read back. The graph depends only on the
tensors' shapes and dtypes and on four knobs: the second-moment mode, where momentum acts (or none),
clipping on or off, relative or absolute step. Weight decay is a column (1 − lr·wd; multiplying by 1.0 is
exact), so it adds no graph. RMS(U) of every tensor comes back as one new (tensors,) float32 tensor whose
0-d views become ``state[p]["update_rms"]``, as on the other paths.

CUDA graphs (``CudaGraphs``). A captured graph is bound to the addresses of the tensors it read and
wrote. So graphs are kept by those addresses (with shapes, strides, dtypes and the knobs); the first step
of a new set of shapes runs the compiled function directly (it compiles, autotunes and loads the kernels,
which a capture cannot do), a later step whose addresses have no graph yet captures one
(``torch.cuda.graph``: one host-device synchronisation per capture), and a step with known addresses
replays it. Gradients that a training loop frees (``zero_grad(set_to_none=True)``) usually come back at
the same addresses from PyTorch's caching allocator; if they keep moving, after ``max_captures`` captures
that set of shapes runs without graphs, with one warning. ``stats()`` counts direct runs, captures and
replays.
"""

from __future__ import annotations

import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import functional as OF

# The columns of the per-step numbers, one row per tensor.
SCALARS = ("lr", "rate", "fresh", "eps1_fresh", "momentum_weight", "eps2", "threshold", "decay")

# Separate compiled graphs one process may hold (per set of shapes and knobs); dynamo's default of 8
# is reached by a test suite or a benchmark that builds many optimizers, after which it would silently
# run the function uncompiled. Past this limit it raises instead.
RECOMPILE_LIMIT = 64


def step_scalars(t: int, *, lr: float, beta1: float, momentum: str, beta2: float, beta2_exponent: float | None,
                 clip_threshold: float | None, eps1: float, eps2: float, weight_decay: float, **_: Any) -> list[float]:
    """The step's numbers for a tensor at step ``t``, in the order of ``SCALARS``, each computed in float64 by
    the functions the reference path calls (β̂2t by ``second_moment_rate``, β̂1t by ``bias_corrected_rate``)."""
    rate = OF.second_moment_rate(beta2, beta2_exponent, t)
    if beta1 > 0 and momentum == "gradient":
        weight = 1.0 - OF.bias_corrected_rate(beta1, t)  # m̂ ← lerp(m̂, G, 1 − β̂1t)
    elif beta1 > 0:
        weight = 1.0 - beta1  # m ← lerp(m, α·Û, 1 − β1)
    else:
        weight = 0.0
    threshold = clip_threshold if clip_threshold is not None else 1.0  # unused without clipping
    return [lr, rate, 1.0 - rate, (1.0 - rate) * eps1, weight, eps2, threshold, 1.0 - lr * weight_decay]


def structure(*, beta1: float, momentum: str, second_moment: str, clip_threshold: float | None,
              relative_step: bool, **_: Any) -> dict[str, Any]:
    """The knobs that shape the traced graph (everything else is a number in ``step_scalars``)."""
    return dict(second_moment=second_moment, momentum=momentum if beta1 > 0 else None,
                clip=clip_threshold is not None, relative=relative_step)


# --- the traced step ----------------------------------------------------------------------------------


def _ema_(acc: Tensor, observation: Tensor, rate: Tensor, fresh: Tensor, eps1_fresh: Tensor) -> None:
    """``functional.ema_`` with 0-d tensor rates: acc ← rate·acc + (1 − rate)·observation + (1 − rate)·ε1."""
    acc.mul_(rate).add_(observation * fresh).add_(eps1_fresh)


def _ema_sq_(acc: Tensor, grad: Tensor, rate: Tensor, fresh: Tensor, eps1_fresh: Tensor) -> None:
    """``functional.ema_sq_`` with 0-d tensor rates: V ← rate·V + (1 − rate)·G² + (1 − rate)·ε1."""
    g = grad.float()
    acc.mul_(rate).add_(g * g * fresh).add_(eps1_fresh)


def _update_second_moment_(exp_avg_sq, row, col, grad, mode, rate, fresh, eps1_fresh) -> None:
    """``functional.update_second_moment_`` with 0-d tensor rates."""
    if mode == "full":
        _ema_sq_(exp_avg_sq, grad, rate, fresh, eps1_fresh)
        return
    if mode in ("factored", "row"):
        _ema_(row, OF.row_mean_sq(grad), rate, fresh, eps1_fresh)
    if mode in ("factored", "col"):
        _ema_(col, OF.col_mean_sq(grad), rate, fresh, eps1_fresh)


def _decay_(param: Tensor, decay: Tensor) -> None:
    """X ← X·(1 − lr·wd) as the reference's ``param.mul_(float)``: the factor stays float32 (a bf16 tensor
    times a 0-d float32 tensor would round the factor to bf16 first), the product is rounded into X's dtype."""
    if param.dtype == torch.float32:
        param.mul_(decay)
    else:
        param.copy_(param.float() * decay)


def _graph_step(params, grads, exp_avg_sqs, rows, cols, exp_avgs, scalars, *, second_moment: str,
                momentum: str | None, clip: bool, relative: bool) -> Tensor:
    """One step of every tensor, the chain of ``_single_tensor_adafactor`` link by link; ``scalars`` holds
    each tensor's ``step_scalars`` as a row. Returns RMS(U) of each tensor as one (tensors,) tensor."""
    out = []
    for param, grad, exp_avg_sq, row, col, exp_avg, s in zip(params, grads, exp_avg_sqs, rows, cols, exp_avgs,
                                                             scalars.unbind(0)):
        lr, rate, fresh, eps1_fresh, weight, eps2, threshold, decay = s.unbind(0)
        mode = OF.accumulator_mode(param, second_moment)
        alpha = OF.step_size(param, lr, relative, eps2)  # 1. α_t
        _update_second_moment_(exp_avg_sq, row, col, grad, mode, rate, fresh, eps1_fresh)  # 2.-3. β̂2t, V̂
        direction = grad
        if momentum == "gradient":
            direction = exp_avg.lerp_(grad.float(), weight)
        update = OF.precondition(direction, exp_avg_sq, row, col, mode)  # 4. U
        update_rms = OF.rms(update)
        OF.clip_(update, update_rms, threshold if clip else None)  # 5. Û
        update.mul_(alpha)
        if momentum == "update":
            update = exp_avg.lerp_(update, weight)
        _decay_(param, decay)
        OF.subtract_(param, update)  # 6. X ← X − α_t·Û
        out.append(update_rms)
    return torch.stack(out)


_COMPILED: dict[str, Callable[..., Tensor]] = {}


def compiled_step() -> Callable[..., Tensor]:
    """``_graph_step`` under ``torch.compile`` (inductor, whole graph, static shapes), made once per process.

    ``emulate_precision_casts`` makes inductor round a bf16 intermediate where eager PyTorch does (the
    decayed bf16 parameter before the subtraction), so bf16 parameters follow the reference too."""
    fn = _COMPILED.get("fn")
    if fn is None:
        fn = _COMPILED["fn"] = torch.compile(_graph_step, fullgraph=True, dynamic=False,
                                             options={"emulate_precision_casts": True})
    return fn


def _run_compiled(fn: Callable[..., Tensor], lists: tuple, scalars: Tensor, knobs: dict) -> Tensor:
    import torch._dynamo

    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True):
        return fn(*lists, scalars, **knobs)


def _host_scalars(rows: list[list[float]], device: torch.device) -> Tensor:
    """The step's numbers as a float32 host tensor, pinned when they go to an accelerator (so the copy does
    not block)."""
    return torch.tensor(rows, dtype=torch.float32, pin_memory=device.type == "cuda")


def _device_scalars(rows: list[list[float]], device: torch.device) -> Tensor:
    host = _host_scalars(rows, device)
    return host if device.type == "cpu" else host.to(device, non_blocking=True)


# --- CUDA graphs ------------------------------------------------------------------------------------------


def _capture_cuda_graph(run: Callable[[], None]) -> Callable[[], None]:
    """Capture ``run()`` into a CUDA graph (``torch.cuda.graph``: nothing executes); returns its replay. Only
    this thread's CUDA calls are held to the capture's rules (``thread_local``), so another thread of the
    training process (a data loader's, say) cannot make it fail."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        run()
    return graph.replay


class CudaGraphs:
    """CUDA graphs of the compiled step, by the addresses (and shapes, strides, dtypes) of every tensor it
    reads or writes and by the knobs that shape it; one per optimizer.

    A graph reads the step's numbers from a device tensor of its own (refreshed before each replay) and
    writes RMS(U) into another (cloned after each replay). ``capture(run) -> replay`` records ``run``
    without executing it (``torch.cuda.graph`` on ``device_type`` "cuda"; a test passes a stand-in that
    binds the same tensors). ``keep`` graphs are kept (the least recently used go first); after
    ``max_captures`` captures of one set of shapes (its tensors keep moving), that set runs without
    graphs, with one warning, as it does when a capture fails.
    """

    def __init__(self, capture: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
                 device_type: str = "cuda", keep: int = 2, max_captures: int = 16) -> None:
        self._capture = capture or _capture_cuda_graph
        self.device_type, self.keep, self.max_captures = device_type, keep, max_captures
        self._graphs: OrderedDict[tuple, tuple[Callable[[], None], Tensor, Tensor]] = OrderedDict()
        self._warm: set[tuple] = set()
        self._captures: Counter = Counter()
        self.off: dict[tuple, str] = {}  # signature -> why it runs without graphs
        self.counts: Counter = Counter()  # "direct", "capture", "replay"

    def stats(self) -> dict[str, Any]:
        """Direct runs, captures and replays so far, the graphs kept, and why a set of tensors runs without."""
        return {"direct": self.counts["direct"], "captures": self.counts["capture"], "replays": self.counts["replay"],
                "graphs_kept": len(self._graphs), "without_graphs": sorted(set(self.off.values()))}

    def run(self, fn: Callable[..., Tensor], lists: tuple, rows: list[list[float]], knobs: dict,
            device: torch.device) -> Tensor:
        tensors = [t for xs in lists for t in xs]
        signature = (tuple(sorted(knobs.items())), device,
                     tuple(None if t is None else (tuple(t.shape), t.stride(), t.dtype) for t in tensors))
        key = (signature, tuple(None if t is None else t.data_ptr() for t in tensors))
        entry = self._graphs.get(key)
        if entry is None:
            if signature not in self._warm or signature in self.off:
                self._warm.add(signature)  # this run compiles and loads the kernels that a capture records
                return self._direct(fn, lists, rows, knobs, device)
            if self._captures[signature] >= self.max_captures:
                self._turn_off(signature, f"its tensors moved to new addresses {self.max_captures} times")
                return self._direct(fn, lists, rows, knobs, device)
            scalars = torch.empty((len(rows), len(SCALARS)), dtype=torch.float32, device=device)
            output = torch.empty((len(rows),), dtype=torch.float32, device=device)

            def step() -> None:
                output.copy_(_run_compiled(fn, lists, scalars, knobs))

            try:
                replay = self._capture(step)
            except RuntimeError as err:
                self._turn_off(signature, f"capture failed: {type(err).__name__}: {str(err).splitlines()[0]}")
                return self._direct(fn, lists, rows, knobs, device)
            self._captures[signature] += 1
            self.counts["capture"] += 1
            entry = self._graphs[key] = (replay, scalars, output)
            while len(self._graphs) > self.keep:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        replay, scalars, output = entry
        scalars.copy_(_host_scalars(rows, device), non_blocking=True)
        replay()
        self.counts["replay"] += 1
        return output.clone()  # the next replay overwrites output; each step's RMS(U) is a tensor of its own

    def _direct(self, fn, lists, rows, knobs, device) -> Tensor:
        self.counts["direct"] += 1
        return _run_compiled(fn, lists, _device_scalars(rows, device), knobs)

    def _turn_off(self, signature: tuple, why: str) -> None:
        self.off[signature] = why
        for key in [k for k in self._graphs if k[0] == signature]:
            del self._graphs[key]
        warnings.warn(f"factorial: the compiled Adafactor step runs without CUDA graphs for a set of "
                      f"{len(signature[2]) // 6} tensors: {why}", RuntimeWarning, stacklevel=4)


# --- the path ---------------------------------------------------------------------------------------------


def compiled_adafactor(params, grads, exp_avg_sqs, exp_avg_sq_rows, exp_avg_sq_cols, exp_avgs, state_steps, *,
                       graphs: CudaGraphs | None = None, **knobs) -> list[Tensor]:
    """One step of every tensor in one compiled call per device (``adafactor`` with ``compile=True``), replayed
    from ``graphs`` on CUDA when given. Returns RMS(U) of each tensor as a 0-d float32 tensor."""
    shape = structure(**knobs)
    fn = compiled_step()
    memo: dict[int, list[float]] = {}
    by_device: dict[torch.device, list[int]] = {}
    for i, p in enumerate(params):
        by_device.setdefault(p.device, []).append(i)
    out: list[Tensor | None] = [None] * len(params)
    with torch.no_grad():
        for device, idx in by_device.items():
            lists = tuple([xs[i] for i in idx] for xs in (params, grads, exp_avg_sqs, exp_avg_sq_rows,
                                                          exp_avg_sq_cols, exp_avgs))
            rows = []
            for i in idx:
                t = state_steps[i]
                if t not in memo:
                    memo[t] = step_scalars(t, **knobs)
                rows.append(memo[t])
            if graphs is not None and device.type == graphs.device_type:
                rms = graphs.run(fn, lists, rows, shape, device)
            else:
                rms = _run_compiled(fn, lists, _device_scalars(rows, device), shape)
            for i, r in zip(idx, rms.unbind(0)):
                out[i] = r
    return out
