"""Benchmarks: optimizer step time against its peers, optimizer state bytes, the trainer's overhead.

    python -m factorial.bench                    # everything; writes results/bench/<device>.{json,md}
    python -m factorial.bench --quick            # tiny preset, few rounds: seconds, to check the plumbing;
                                                 # writes results/bench/<device>-quick.{json,md}
    make bench ARGS="--presets base --rounds 30"

What it measures, in one process:

* **Step time** of ``optimizer.step()`` on the real parameter list of the ``tiny``, ``cpu`` and
  ``base`` model presets, with fixed random gradients: our Adafactor in the Alg. 6 setting (the
  default path, plus the reference and foreach paths) and in each ``second_moment`` mode with
  β1 = 0 and 0.9; ``torch.optim.Adafactor`` (single-tensor and foreach), ``torch.optim.Adam``
  (foreach and fused), ``torch.optim.SGD``, and ``transformers``' Adafactor when that package is
  installed (``pip install -e '.[bench]'``). Every optimizer has its own copy of the parameters and
  gradients; rounds are interleaved (each round times ``--steps`` steps of every optimizer, in a
  rotated order), and the median over rounds is reported with its interquartile range.
* **State bytes** of each optimizer, summed over its state tensors of rank >= 1 (what
  ``factorial.train.state_bytes`` logs; 0-d step counters and diagnostics are not memory).
* **Trainer overhead**: tokens/s of a cell (``factorial.train.run_cell``, evaluation time taken
  out) against a bare loop with the same model, data, optimizer and schedule and nothing else.
* **Variants** (``--variants``): a ``torch.compile``d Alg. 6 step, one function per tensor
  (compile time apart from warm step time) against the default path, with 1 and 2 threads, kept
  here as a measurement (the optimizer's own compiled path is ``compile=True``, below).
* **The compiled path** (``--compiled``; on by default on CUDA): ``Adafactor(compile=True)`` in the
  Alg. 6 setting beside the others (on CUDA also without its CUDA graphs), how many graphs it
  captured and replayed, and (``--parity``; on by default on CUDA) its largest relative difference
  from the reference path on this device for every Adafactor row of Table 2 and the knobs no row sets
  (``compiled_parity``; the tests run the same check on CPU).
* **CUDA** (when a GPU is there): the same tables, a check that ``step()`` of every setting makes
  no host-device synchronisation after its first steps (``torch.cuda.set_sync_debug_mode("error")``),
  and the model FLOP utilisation of a bf16 cell on the ``base`` preset, once with the default
  optimizer path and, with ``--compiled``, once with ``optim.compile=true`` (which gives the
  optimizer's share of a base cell's step).

Timing targets are read from the output (the ``targets`` section), never asserted by tests.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import runfiles as RF
from .layout import REPO_ROOT
from .model import PRESETS, Transformer, flops_per_token, peak_bf16_tflops
from .optim import Adafactor
from .optim.knobs import DEFAULTS as KNOB_DEFAULTS

# The vocabulary each preset is benchmarked with: the smoke scale's (tiny), the CPU scale's (cpu),
# and for base the 8192 of the Transformer-base-like shapes described in docs/NOTES.md
# (23.1 M parameters); the paper scale's 32768 is `--vocab base=32768`.
VOCAB = {"tiny": 512, "cpu": 4096, "base": 8192}
ALG6 = dict(lr=1e-2, **KNOB_DEFAULTS)  # Adafactor as the paper recommends it: the knob spec's defaults
TARGETS = {"alg6_over_transformers": 0.5, "alg6_over_adam_fused": 2.0, "state_over_adam": 0.005, "overhead": 0.05,
           # the compiled path's (GPU issue): <= 1.5x fused Adam (stretch: 1x), the optimizer <= 5% of a base cell's step
           "compiled_over_adam_fused": 1.5, "compiled_over_adam_fused_stretch": 1.0, "optimizer_share_of_cell": 0.05}
# The compiled path against the reference (compiled_parity): largest relative difference allowed in float32.
PARITY_TOLERANCE = 1e-6


# --- the machine --------------------------------------------------------------------------------


def machine(device: torch.device) -> dict:
    from .train import cpu_name

    info = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "load_average_start": _loadavg(),
    }
    info["memory_management"] = _memory_management()
    if device.type == "cpu":
        from .optim import native

        info["c_kernel"] = native.status()
        if info["c_kernel"] == "loaded":
            info["c_kernel_cold_build_s"] = round(native.cold_build_seconds(), 3)
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its descendants, such as
    inductor's compile workers), from /proc."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        hz = os.sysconf("SC_CLK_TCK")
        parent, cpu = {}, {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            rest = stat[stat.rindex(")") + 2:].split()  # fields after the command name
            parent[int(entry.name)] = int(rest[1])
            cpu[int(entry.name)] = sum(int(x) for x in rest[11:15]) / hz  # utime stime cutime cstime
    except (OSError, ValueError, IndexError):
        return None
    tree, frontier = set(), {os.getpid()}
    while frontier:
        tree |= frontier
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree}
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / hz, sum(cpu.get(pid, 0.0) for pid in tree)


def other_cpu_share(start: tuple[float, float] | None, wall_s: float) -> float | None:
    """Fraction of the machine's CPU time that other processes used since ``start``."""
    end = _cpu_seconds()
    if start is None or end is None or wall_s <= 0:
        return None
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(0.0, others) / (wall_s * (os.cpu_count() or 1))


def _memory_management() -> dict:
    """Kernel settings that move timings on a VM: transparent huge pages, DAMON schemes (e.g. pageout)."""
    out = {}
    for key, path in (("transparent_hugepage", "/sys/kernel/mm/transparent_hugepage/enabled"),):
        with contextlib.suppress(OSError):
            out[key] = Path(path).read_text().strip()
    with contextlib.suppress(OSError):
        for kd in sorted(Path("/sys/kernel/mm/damon/admin/kdamonds").glob("[0-9]*")):
            actions = sorted({a.read_text().strip() for a in kd.glob("contexts/*/schemes/*/action")})
            out[f"damon_{kd.name}"] = f"{(kd / 'state').read_text().strip()}, actions {actions}"
    return out


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --- parameters and optimizers ------------------------------------------------------------------------


def preset_shapes(preset: str, vocab: int) -> list[tuple[int, ...]]:
    """The parameter shapes of ``Transformer(PRESETS[preset])`` with that vocabulary, in model order."""
    cfg = dataclasses.replace(PRESETS[preset], vocab_size=vocab)
    with torch.device("meta"):
        model = Transformer(cfg)
    return [tuple(p.shape) for p in model.parameters()]


def make_params(shapes: list[tuple[int, ...]], device: torch.device, seed: int = 0) -> list[torch.nn.Parameter]:
    """Parameters ~ N(0, 0.02²) with fixed gradients ~ N(0, 1e−4) of different row/column scales."""
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter((torch.randn(shape, generator=g) * 0.02).to(device))
        grad = torch.randn(shape, generator=g) * 1e-2
        if len(shape) == 2:  # rows and columns of different scales, as in a real gradient
            grad *= torch.rand(shape[0], 1, generator=g).add_(0.1) * torch.rand(shape[1], generator=g).add_(0.1)
        p.grad = grad.to(device)
        params.append(p)
    return params


Factory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


COMPILED = "ours alg6 compiled"
COMPILED_NO_GRAPHS = "ours alg6 compiled, no CUDA graphs"


def settings(device: torch.device, compiled: bool = False) -> dict[str, dict]:
    """name -> {"make": params -> optimizer, "ours": bool, "note": str}, in table order; ``compiled`` adds
    the compiled path (and on CUDA the compiled path without its CUDA graphs)."""
    out: dict[str, dict] = {}

    def add(name: str, make: Factory, note: str, ours: bool = False) -> None:
        out[name] = {"make": make, "note": note, "ours": ours}

    add("ours alg6", lambda ps: Adafactor(ps, **ALG6),
        "Alg. 6, default path (on CPU the C kernel for matrices, multi-tensor for vectors; multi-tensor on CUDA)", True)
    add("ours alg6 reference", lambda ps: Adafactor(ps, **ALG6, foreach=False),
        "single-tensor reference path (foreach=False; what CPU matrices run where no C compiler is found)", True)
    add("ours alg6 foreach", lambda ps: Adafactor(ps, **ALG6, foreach=True), "multi-tensor path", True)
    if compiled:
        add(COMPILED, lambda ps: Adafactor(ps, **ALG6, compile=True),
            "compile=True: the whole step in one torch.compile'd function" +
            (", replayed from CUDA graphs" if device.type == "cuda" else ""), True)
        if device.type == "cuda":
            add(COMPILED_NO_GRAPHS, lambda ps: Adafactor(ps, **ALG6, compile=True, cuda_graphs=False),
                "compile=True, cuda_graphs=False: the compiled function launched each step", True)
    for mode in ("factored", "row", "col", "full"):
        for beta1 in (0.0, 0.9):
            if mode == "factored" and beta1 == 0.0:
                continue  # that is Alg. 6
            kw = {**ALG6, "second_moment": mode, "beta1": beta1}
            add(f"ours {mode} b1={beta1:g}", lambda ps, kw=kw: Adafactor(ps, **kw), "Alg. 6 otherwise, default path", True)
    add("torch Adafactor", lambda ps: torch.optim.Adafactor(ps, lr=1e-2, beta2_decay=-0.8, d=1.0, foreach=False),
        "torch.optim.Adafactor, single-tensor")
    add("torch Adafactor foreach", lambda ps: torch.optim.Adafactor(ps, lr=1e-2, beta2_decay=-0.8, d=1.0, foreach=True),
        "torch.optim.Adafactor, foreach")
    try:
        from transformers.optimization import Adafactor as HFAdafactor

        add("transformers Adafactor", lambda ps: HFAdafactor(
            ps, lr=1e-2, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None, weight_decay=0.0,
            scale_parameter=True, relative_step=False, warmup_init=False), "transformers.optimization.Adafactor, Alg. 6 settings")
    except ImportError:
        pass
    add("torch Adam foreach", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True), "torch.optim.Adam(foreach=True)")
    add("torch Adam fused", lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True), "torch.optim.Adam(fused=True)")
    add("torch SGD", lambda ps: torch.optim.SGD(ps, lr=1e-3), "torch.optim.SGD, default")
    return out


def state_bytes(optimizer) -> int:
    """Bytes of the optimizer's state tensors of rank >= 1 (as ``factorial.train.state_bytes``)."""
    from .train import state_bytes as trainer_state_bytes

    return trainer_state_bytes(optimizer)


# --- a torch.compile'd Alg. 6 step: a measured variant, not part of the optimizer ------------------------


def _compiled_alg6_tensor(x, g, row, col, full, lr, rate, factored: bool, eps1: float, eps2: float, d: float):
    """One tensor's Alg. 6 step as a single function for inductor (float32 parameters)."""
    alpha = torch.clamp(torch.linalg.vector_norm(x) / math.sqrt(x.numel()), min=eps2) * lr
    g2 = g * g + eps1
    if factored:
        row.lerp_(g2.mean(-1), 1 - rate)
        col.lerp_(g2.mean(-2), 1 - rate)
        u = g * torch.rsqrt(row / row.mean(-1, keepdim=True)).unsqueeze(-1) * torch.rsqrt(col).unsqueeze(-2)
    else:
        full.lerp_(g2, 1 - rate)
        u = g * torch.rsqrt(full)
    rms = torch.linalg.vector_norm(u) / math.sqrt(u.numel())
    x.sub_(u * (alpha / torch.clamp(rms / d, min=1.0)))
    return rms


class CompiledAlg6:
    """Alg. 6 with each tensor's step compiled by ``torch.compile`` (rates and lr as 0-d tensors so
    that the step count does not recompile; one graph per shape)."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float = 1e-2, dynamic: bool = False,
                 backend: str = "inductor") -> None:
        self.params = params
        self.lr = lr
        self.t = 0
        self.fn = torch.compile(_compiled_alg6_tensor, dynamic=dynamic, backend=backend)
        self.state = {}
        for p in params:
            f32 = dict(dtype=torch.float32, device=p.device)
            if p.dim() >= 2:
                self.state[p] = (torch.zeros(p.shape[:-1], **f32), torch.zeros(p.shape[:-2] + p.shape[-1:], **f32), None)
            else:
                self.state[p] = (None, None, torch.zeros(p.shape, **f32))

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        dev = self.params[0].device
        lr = torch.full((), self.lr, device=dev)
        rate = torch.full((), 1.0 - self.t ** -0.8, device=dev)
        for p in self.params:
            row, col, full = self.state[p]
            self.fn(p, p.grad, row, col, full, lr, rate, p.dim() >= 2, 1e-30, 1e-3, 1.0)


def variant_agrees(a: list[torch.Tensor], b: list[torch.Tensor], rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Whether a measured variant computed what our optimizer did: the parameters of both, after the same
    number of steps on the same gradients, agree to float32 rounding."""
    return all(torch.allclose(x.detach().float(), y.detach().float(), rtol=rtol, atol=atol) for x, y in zip(a, b))


# --- the compiled path against the reference ---------------------------------------------------------------

# A matrix, a vector that starts at zero (so ε2 acts in the relative step), a rank-3 tensor (the last two
# dimensions factored), a tall matrix, a 0-d tensor and a narrow matrix.
PARITY_SHAPES = [(9, 7), (7,), (2, 3, 4), (37, 5), (), (6, 2)]


EVERY_NUMBER = "row P, d = 0.1, weight decay 0.01, ε1 = 0.1"


def parity_cases() -> dict[str, dict]:
    """name -> Adafactor's knobs and the parameters' dtype: every Adafactor row of Table 2 (factorial.rows, with
    α = 0.005 for the absolute rows and ρ = 0.05 for the relative ones), then the knobs no row sets: momentum on
    the update, weight decay, bf16 parameters, and a setting in which every number of the step acts (P's
    momentum keeps RMS(U) under d = 1 here: d = 0.1 clips at every step, and ε1 = 0.1 moves the accumulators)."""
    from .rows import TABLE2

    cases = {}
    for letter, row in TABLE2.items():
        if row.is_sgd:
            continue
        knobs = {k: v for k, v in row.optim.items() if k not in ("name", "lr_scale")}
        cases[f"row {letter}"] = dict(knobs={**knobs, "lr": 0.05 * row.optim["lr_scale"]}, dtype="float32")
    o, p = cases["row O"]["knobs"], cases["row P"]["knobs"]
    cases["row P, momentum on the update"] = dict(knobs={**p, "momentum": "update"}, dtype="float32")
    cases["row O, weight decay 0.01"] = dict(knobs={**o, "weight_decay": 0.01}, dtype="float32")
    cases["row O, bf16, weight decay 0.01"] = dict(knobs={**o, "weight_decay": 0.01}, dtype="bfloat16")
    cases["row B, bf16"] = dict(knobs=dict(cases["row B"]["knobs"]), dtype="bfloat16")
    cases[EVERY_NUMBER] = dict(knobs={**p, "clip_threshold": 0.1, "weight_decay": 0.01, "eps1": 0.1}, dtype="float32")
    return cases


def parity_run(knobs: dict, dtype: str, device: torch.device, path: dict, *, steps: int = 6,
               seed: int = 0) -> tuple[list[torch.Tensor], dict, list[torch.Tensor]]:
    """``steps`` steps of Adafactor(**knobs, **path) on PARITY_SHAPES with the same parameters and gradients for
    every path (drawn on the CPU), ``lr`` scaled by 1/√t through a LambdaLR, the last gradients 30× larger so
    that clipping acts. Returns the parameters, the state of each and each step's RMS(U) (steps × tensors)."""
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    params = []
    for i, shape in enumerate(PARITY_SHAPES):
        x = torch.zeros(shape) if i == 1 else torch.randn(shape, generator=g)
        params.append(torch.nn.Parameter(x.to(device=device, dtype=dt)))
    opt = Adafactor(params, **knobs, **path)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / math.sqrt(s + 1))
    rms = []
    for step in range(steps):
        scale = 30.0 if step == steps - 1 else 1.0
        for p in params:
            p.grad = (torch.randn(p.shape, generator=g) * scale).to(device=device, dtype=dt)
        opt.step()
        sched.step()
        rms.append(torch.stack([opt.state[p]["update_rms"] for p in params]))
    return params, {i: opt.state[p] for i, p in enumerate(params)}, rms


def relative_difference(new: torch.Tensor, ref: torch.Tensor) -> float:
    """max |new − ref| / max |ref| over one tensor, in float64 (0 when both are 0): the difference relative to
    the tensor's scale, which an entry near zero cannot inflate."""
    a, b = new.detach().double().cpu(), ref.detach().double().cpu()
    scale = b.abs().max().item() if b.numel() else 0.0
    diff = (a - b).abs().max().item() if b.numel() else 0.0
    return diff / scale if scale > 0 else diff


def parity(knobs: dict, dtype: str, device: torch.device, *, steps: int = 6) -> dict:
    """The compiled path (``compile=True``; CUDA graphs on CUDA) against the reference path (``foreach=False``)
    on ``device``: the largest relative difference of the parameters, the state tensors and every step's RMS(U),
    and whether clipping acted at some step (None without clipping)."""
    ref_params, ref_state, ref_rms = parity_run(knobs, dtype, device, dict(foreach=False), steps=steps)
    new_params, new_state, new_rms = parity_run(knobs, dtype, device, dict(compile=True), steps=steps)
    states = [relative_difference(new_state[i][k], v) for i, s in ref_state.items() for k, v in s.items()
              if torch.is_tensor(v) and k != "update_rms"]
    out = {"params": max(relative_difference(q, p) for p, q in zip(ref_params, new_params)),
           "states": max(states), "update_rms": max(relative_difference(b, a) for a, b in zip(ref_rms, new_rms)),
           "clipped": None if knobs.get("clip_threshold") is None else bool(
               any((r > knobs["clip_threshold"]).any().item() for r in ref_rms))}
    if dtype == "float32":
        out["max"] = max(out["params"], out["states"], out["update_rms"])
    else:  # a bf16 parameter may round the other way from a last-bit difference of its float32 update
        out["max"] = max(out["states"], out["update_rms"])
        out["params_bf16_ulps"] = max(_bf16_ulps(q, p) for p, q in zip(ref_params, new_params))
    return out


def _bf16_ulps(new: torch.Tensor, ref: torch.Tensor) -> float:
    """The largest difference of two bf16 tensors in units of the reference entry's last place."""
    a, b = new.detach().float().cpu(), ref.detach().float().cpu()
    ulp = torch.ldexp(torch.ones_like(b), torch.frexp(b).exponent - 8)  # bf16 keeps 8 significant bits
    return ((a - b).abs() / ulp).max().item() if b.numel() else 0.0


def large_matrix_accuracy(device: torch.device, shape: tuple[int, int] = (8192, 512)) -> dict[str, dict[str, float]]:
    """One step of the factored mode with a relative step on a large matrix (the base preset's embedding), the
    reference path and the compiled path on ``device``: the relative errors against float64 of R, C, RMS(U) and
    the step's scale ρ·RMS(X) (its least-squares fit to the parameter's change). Sums of thousands of float32
    terms lose digits unless they are summed in blocks or pairs, as PyTorch's eager CPU reductions and
    Triton's block reductions do."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 3 + 1
    grad = torch.randn(shape, generator=g) * (torch.rand(shape[0], 1, generator=g) + 0.1) * (
        torch.rand(shape[1], generator=g) + 0.1)
    g2 = grad.double().square()
    row, col = g2.mean(-1), g2.mean(-2)
    vhat = row[:, None] * col[None, :] / row.mean()
    u = grad.double() / vhat.sqrt()
    rho = 1e-2
    scale = rho * x.double().square().mean().sqrt().item()
    out = {}
    for name, path in (("reference", dict(foreach=False)), ("compiled", dict(compile=True))):
        p = torch.nn.Parameter(x.to(device, copy=True))
        p.grad = grad.to(device, copy=True)
        opt = Adafactor([p], lr=rho, relative_step=True, clip_threshold=None, eps1=0.0, eps2=0.0, **path)
        opt.step()
        st = opt.state[p]
        moved = x.double() - p.detach().double().cpu()
        out[name] = {
            "row": ((st["exp_avg_sq_row"].double().cpu() - row).abs() / row).max().item(),
            "col": ((st["exp_avg_sq_col"].double().cpu() - col).abs() / col).max().item(),
            "update_rms": abs(float(st["update_rms"]) / (g2 / vhat).mean().sqrt().item() - 1.0),
            "step_scale": abs((moved * u).sum().item() / u.square().sum().item() / scale - 1.0),
        }
        del opt, p
    return out


def compiled_parity(device: torch.device, cases: list[str] | None = None, *, steps: int = 6,
                    log: Callable[[str], None] = print) -> dict:
    """``parity`` of every case of ``parity_cases`` (or the named ones) on ``device``."""
    all_cases = parity_cases()
    out = {}
    for name in cases or list(all_cases):
        case = all_cases[name]
        t0 = time.perf_counter()
        out[name] = {**parity(case["knobs"], case["dtype"], device, steps=steps), "dtype": case["dtype"],
                     "seconds": round(time.perf_counter() - t0, 1)}
        r = out[name]
        log(f"  {name:34s} params {r['params']:.1e}  states {r['states']:.1e}  RMS(U) {r['update_rms']:.1e}"
            + (f"  bf16 ulps {r['params_bf16_ulps']:.0f}" if "params_bf16_ulps" in r else "")
            + f"  ({r['seconds']:.0f} s)")
    return out


# --- timing ----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times_ms: list[float]) -> dict:
    qs = statistics.quantiles(times_ms, n=4) if len(times_ms) >= 2 else [times_ms[0]] * 3
    return {
        "median_ms": statistics.median(times_ms),
        "p25_ms": qs[0],
        "p75_ms": qs[2],
        "min_ms": min(times_ms),
        "rounds": len(times_ms),
        "raw_ms": [round(x, 3) for x in times_ms],
    }


def time_optimizers(makers: dict[str, Factory], shapes, device, *, rounds: int, steps: int, warmup: int,
                    log: Callable[[str], None] = print) -> tuple[dict, dict]:
    """Interleaved rounds; returns ({name: summary}, {name: optimizer after the runs})."""
    opts, setup = {}, {}
    for name, make in makers.items():
        params = make_params(shapes, device)
        t0 = time.perf_counter()
        opt = make(params)
        opt.step()  # the first step creates the state (and compiles, for a compiled variant)
        _sync(device)
        setup[name] = (time.perf_counter() - t0) * 1e3
        for _ in range(warmup):
            opt.step()
        _sync(device)
        opts[name] = opt
    names = list(opts)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            opt = opts[name]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3 / steps)
    out = {}
    for name in names:
        out[name] = {**summarize(times[name]), "first_step_ms": setup[name]}
        log(f"  {name:28s} {out[name]['median_ms']:9.2f} ms  [{out[name]['p25_ms']:.2f}, {out[name]['p75_ms']:.2f}]")
    return out, opts


def check_no_sync(makers: dict[str, Factory], shapes, device, warmup: int = 3) -> dict[str, str]:
    """CUDA only: run each optimizer's step under set_sync_debug_mode("error") after ``warmup`` steps (the first
    step creates the state; the compiled path compiles at its first step and captures its CUDA graph at its
    second, which synchronises once: the check is on steady-state steps)."""
    out = {}
    for name, make in makers.items():
        opt = make(make_params(shapes, device))
        for _ in range(warmup):
            opt.step()
        torch.cuda.synchronize(device)
        try:
            torch.cuda.set_sync_debug_mode("error")
            opt.step()
            opt.step()
            out[name] = "no sync"
        except RuntimeError as err:
            out[name] = f"syncs: {str(err).splitlines()[0]}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize(device)
    return out


# --- the kernels behind the statistics ------------------------------------------------------------------


def kernels(shape: tuple[int, int], device: torch.device, rounds: int) -> dict:
    """Column statistics and the RMS of a whole tensor, the old way against the way functional.py does it.

    * column means of G²: ``vector_norm(dim=-2)`` (no temporary) against ``square().sum(dim=-2)`` (the
      reference path);
    * RMS: one float32 ``vector_norm`` over the tensor against row norms then their norm, each
      compared with float64.
    """
    from .optim import functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device)
    ops = {
        "col stats: vector_norm(dim=-2)": lambda: torch.linalg.vector_norm(x, 2, dim=-2).square_().div_(shape[0]),
        "col stats: square().sum(dim=-2)": lambda: F.col_mean_sq(x),
        "rms: one vector_norm": lambda: torch.linalg.vector_norm(x).div_(math.sqrt(x.numel())),
        "rms: row norms, then their norm": lambda: F.rms(x),
    }
    times: dict[str, list[float]] = {k: [] for k in ops}
    for op in ops.values():
        op()
    for _ in range(rounds):
        for name, op in ops.items():
            _sync(device)
            t0 = time.perf_counter()
            op()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    exact = x.double().square().mean().sqrt().item()
    return {
        "shape": list(shape),
        "time": {k: summarize(v) for k, v in times.items()},
        "rms_relative_error": {
            "rms: one vector_norm": ops["rms: one vector_norm"]().item() / exact - 1,
            "rms: row norms, then their norm": ops["rms: row norms, then their norm"]().item() / exact - 1,
        },
    }


# --- the trainer against a bare loop ---------------------------------------------------------------------


def trainer_overhead(scale: str, *, steps: int, rounds: int, threads: int, checkpoint_every: int,
                     cache_dir: str | None = None, extra: list[str] | None = None,
                     log: Callable[[str], None] = print) -> dict:
    """tokens/s of a cell (``run_cell``, evaluation excluded) against a bare loop, alternating runs.

    The bare loop builds the model, optimizer and schedule with the trainer's ``build_parts`` and runs the
    trainer's own ``train_step`` (forward, backward, ``step()``, the scheduler) and nothing else: no
    gradient norm, logging, metrics, checkpoints or evaluation. Its training losses must equal the cell's
    (same work, checked). The cell's evaluation time is counted by a subclass of the trainer's Hooks.
    """
    from . import train as T
    from .data import TrainBatches, load_corpus

    overrides = [f"scale={scale}", "logger=none", "train.progress=false", f"train.steps={steps}",
                 f"train.threads={threads}", f"train.checkpoint_every={checkpoint_every}",
                 f"train.eval_every={max(steps, 1)}", "train.device=cpu", *(extra or [])]
    if cache_dir:
        overrides.append(f"data.cache_dir={cache_dir}")
    previous_threads = torch.get_num_threads()
    cfg0 = T.compose(overrides)
    d = cfg0.data
    cache = Path(d.cache_dir) if Path(d.cache_dir).is_absolute() else REPO_ROOT / d.cache_dir
    corpus = load_corpus(d.source, vocab_size=d.vocab_size, model_type=d.model_type, cache_dir=cache,
                         train_file=d.train_file, validation_file=d.validation_file, test_file=d.test_file)

    def bare(n_steps: int = steps) -> tuple[float, list[float]]:
        cfg = T.compose(overrides)
        torch.set_num_threads(threads)
        batches = TrainBatches(corpus.train, cfg.model.context_length, cfg.train.batch_size, cfg.train.seed)
        parts = T.build_parts(cfg, corpus.vocab_size, torch.device("cpu"), None)
        parts.model.train()
        losses: list[float] = []
        pending: list[torch.Tensor] = []
        t0 = time.perf_counter()
        for step in range(1, n_steps + 1):
            loss, _, _ = T.train_step(parts, *next(batches))  # the trainer's own step
            # The losses are read to the host as the trainer reads them, at its log steps: holding a
            # whole run's loss tensors until the end slowed this loop by a quarter on CPU (measured).
            pending.append(loss)
            if step % cfg.train.log_every == 0 or step == n_steps:
                losses += torch.stack(pending).tolist()
                pending.clear()
        wall = time.perf_counter() - t0
        return n_steps * batches.tokens_per_batch / wall, losses

    class TimedEvaluation(T.Hooks):
        """The trainer's hooks, with the time spent evaluating counted apart."""

        seconds = 0.0

        def evaluate(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                TimedEvaluation.seconds += time.perf_counter() - t0

    def cell(run_dir: Path) -> tuple[float, dict, list[float]]:
        from .runlog import read_metrics

        cfg = T.compose([*overrides, f"run_dir={run_dir}"])
        cfg.cell = "bench"
        TimedEvaluation.seconds = 0.0
        summary = T.run_cell(cfg, hooks=TimedEvaluation)
        eval_s = TimedEvaluation.seconds
        train_wall = summary["wall_time_s"] - eval_s
        window_losses = [r[RF.TRAIN_LOSS] for r in read_metrics(run_dir / RF.METRICS) if RF.TRAIN_LOSS in r]
        return summary["tokens"] / train_wall, {"wall_time_s": summary["wall_time_s"], "eval_s": eval_s,
                                                "status": summary["status"]}, window_losses

    bare_tps, cell_tps, cell_info = [], [], []
    same_losses = None
    with tempfile.TemporaryDirectory(prefix="factorial-bench-") as tmp:
        try:
            bare(min(steps, 3))  # untimed: the process's first steps pay one-off costs
            for r in range(rounds):
                # Alternate which of the two goes first, so neither always follows the other.
                if r % 2 == 0:
                    tps, losses = bare()
                    ctps, info, window_losses = cell(Path(tmp) / f"cell{r}")
                else:
                    ctps, info, window_losses = cell(Path(tmp) / f"cell{r}")
                    tps, losses = bare()
                bare_tps.append(tps)
                cell_tps.append(ctps)
                cell_info.append(info)
                log(f"  round {r + 1}: bare {tps:,.0f} tokens/s, cell {ctps:,.0f} tokens/s")
                if r == 0:
                    log_every = cfg0.train.log_every
                    windows = [losses[i:i + log_every] for i in range(0, steps, log_every)]
                    bare_windows = [sum(w) / len(w) for w in windows if w]
                    same_losses = len(bare_windows) == len(window_losses) and all(
                        math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(bare_windows, window_losses))
        finally:
            torch.set_num_threads(previous_threads)
    bare_med, cell_med = statistics.median(bare_tps), statistics.median(cell_tps)
    return {
        "scale": scale, "steps": steps, "rounds": rounds, "threads": threads, "checkpoint_every": checkpoint_every,
        "tokens_per_step": cfg0.train.batch_size * cfg0.model.context_length,
        "bare_tokens_per_s": bare_tps, "cell_tokens_per_s": cell_tps, "cell_runs": cell_info,
        "bare_median": bare_med, "cell_median": cell_med, "overhead": 1.0 - cell_med / bare_med,
        "same_losses": same_losses,
    }


# --- CUDA: model FLOP utilisation of a bf16 cell -----------------------------------------------------------


def model_flops_per_token(preset: str, vocab: int) -> float:
    """6·N (N with the tied softmax matrix) + 6·L·T·d for the causal attention scores and values."""
    return flops_per_token(dataclasses.replace(PRESETS[preset], vocab_size=vocab))  # the trainer's MFU, the same


def cuda_mfu(steps: int, cache_dir: str | None, log: Callable[[str], None] = print, extra: list[str] | None = None) -> dict:
    """tokens/s, model FLOP/s and the step time of a bf16 cell of the base preset (``extra``: more overrides,
    e.g. ``optim.compile=true``, whose CUDA graphs' counts are kept: did the trainer's gradients stay at their
    addresses?); the first logging window (warm-up, compilation) is left out."""
    from . import train as T
    from .runlog import read_metrics

    overrides = ["model=base", "data=shakespeare", "logger=none", "train.progress=false", f"train.steps={steps}",
                 "train.batch_size=32", "train.precision=bf16", "train.device=cuda", f"train.eval_every={steps}",
                 f"train.log_every={max(1, steps // 5)}", f"train.checkpoint_every={steps}", *(extra or [])]
    if cache_dir:
        overrides.append(f"data.cache_dir={cache_dir}")
    built = []

    class KeepOptimizer(T.Hooks):
        """The trainer's hooks, keeping the optimizer it built (for its CUDA-graph counts)."""

        def start(self, parts):
            built.append(parts.optimizer)

    with tempfile.TemporaryDirectory(prefix="factorial-mfu-") as tmp:
        cfg = T.compose([*overrides, f"run_dir={tmp}/cell"])
        cfg.cell = "mfu"
        summary = T.run_cell(cfg, hooks=KeepOptimizer)
        rates = [r[RF.TOKENS_PER_S] for r in read_metrics(Path(tmp) / "cell" / RF.METRICS) if RF.TOKENS_PER_S in r]
    tps = statistics.median(rates[1:] or rates)  # the first window holds the warm-up steps
    vocab = cfg.model.vocab_size
    flops = model_flops_per_token("base", vocab) * tps
    name = torch.cuda.get_device_name()
    peak = peak_bf16_tflops(name)
    out = {"tokens_per_s": tps, "model_tflops": flops / 1e12, "peak_bf16_tflops": peak,
           "mfu": flops / (peak * 1e12) if peak else None, "vocab": vocab, "status": summary["status"],
           "step_ms": 1e3 * cfg.train.batch_size * cfg.model.context_length / tps, "overrides": list(extra or [])}
    graphs = getattr(built[-1], "_graphs", None) if built else None
    if graphs is not None:
        out["cuda_graphs"] = graphs.stats()
    log(f"  base bf16{' ' + ' '.join(extra) if extra else ''}: {tps:,.0f} tokens/s, {out['step_ms']:.2f} ms a step, "
        f"{flops / 1e12:.1f} TFLOP/s" + (f", MFU {out['mfu']:.1%}" if peak else ""))
    return out


# --- the run and its report ----------------------------------------------------------------------------


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab = dict(VOCAB)
    for item in args.vocab or []:
        preset, _, value = item.partition("=")
        vocab[preset] = int(value)
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
    result: dict[str, Any] = {"machine": machine(device), "command": "python -m factorial.bench " + " ".join(args.argv),
                              "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "settings": {}, "presets": {}}
    try:
        _measure(args, device, vocab, result, log)
    except KeyboardInterrupt:  # e.g. scripts/gpu_check.sh's time limit (SIGINT): keep what was measured
        result["interrupted"] = True
        log("interrupted: the results below hold what was measured before")
    result["machine"]["load_average_end"] = _loadavg()
    result["machine"]["other_processes_cpu_share"] = other_cpu_share(cpu_start, time.perf_counter() - wall_start)
    result["under_load"] = is_under_load(result["machine"])
    result["targets"] = targets(result)
    return result


def _measure(args: argparse.Namespace, device: torch.device, vocab: dict, result: dict,
             log: Callable[[str], None]) -> None:
    """Every measurement ``args`` asks for, into ``result`` as each finishes."""
    compiled = args.compiled if args.compiled is not None else device.type == "cuda"
    # First, in a process that has not yet run anything else (no large heap, no compiled kernels).
    if args.overhead:
        log(f"trainer overhead ({args.overhead_scale} scale, {args.overhead_steps} steps, {args.overhead_rounds} rounds):")
        result["overhead"] = trainer_overhead(
            args.overhead_scale, steps=args.overhead_steps, rounds=args.overhead_rounds,
            threads=args.overhead_threads or (1 if device.type == "cpu" else torch.get_num_threads()), checkpoint_every=args.overhead_checkpoint_every,
            cache_dir=args.cache_dir, log=log)
    if args.parity if args.parity is not None else device.type == "cuda":
        log(f"the compiled path against the reference on {device.type} (largest relative differences):")
        result["parity"] = compiled_parity(device, args.parity_cases, log=log)
        result["large_matrix"] = large_matrix_accuracy(device)
        log("  8192×512, relative errors against float64: " + "; ".join(
            f"{path}: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
            for path, errs in result["large_matrix"].items()))
    catalogue = settings(device, compiled)
    result["settings"] = {name: s["note"] for name, s in catalogue.items()}
    makers = {name: s["make"] for name, s in catalogue.items()}
    for preset in args.presets:
        shapes = preset_shapes(preset, vocab[preset])
        numel = sum(math.prod(s) for s in shapes)
        log(f"{preset}: {len(shapes)} tensors, {numel / 1e6:.2f} M parameters (vocab {vocab[preset]}), "
            f"{args.rounds} rounds x {args.steps} steps")
        times, opts = time_optimizers(makers, shapes, device, rounds=args.rounds, steps=args.steps, warmup=args.warmup, log=log)
        entry = {"vocab": vocab[preset], "params": numel, "tensors": len(shapes), "time": times,
                 "state_bytes": {name: state_bytes(o) for name, o in opts.items()}}
        if device.type == "cuda":  # how often the compiled path ran directly, captured and replayed
            entry["cuda_graphs"] = {name: o._graphs.stats() for name, o in opts.items()
                                    if getattr(o, "_graphs", None) is not None}
        del opts
        entry["ratios"] = ratios(entry)
        if device.type == "cuda":
            entry["sync_check"] = check_no_sync({n: s["make"] for n, s in catalogue.items() if s["ours"]}, shapes, device)
        result["presets"][preset] = entry
    if args.kernels:
        shape = max((s for p in args.presets for s in preset_shapes(p, vocab[p]) if len(s) == 2), key=math.prod)
        log(f"kernels on {shape}:")
        result["kernels"] = kernels(shape, device, args.rounds)
        for k, v in result["kernels"]["time"].items():
            log(f"  {k:34s} {v['median_ms']:8.2f} ms")
    if args.variants:
        result["variants"] = {}
        variant_makers = {
            name: makers[name] for name in ("ours alg6", "ours alg6 reference", "torch Adam fused", "transformers Adafactor")
            if name in makers
        }
        variant_makers["whole step compiled"] = lambda ps: CompiledAlg6(ps)
        threads_before = torch.get_num_threads()
        for preset in args.variants_presets:
            shapes = preset_shapes(preset, vocab[preset])
            result["variants"][preset] = {}
            for threads in args.variants_threads or sorted({1, threads_before}):
                torch.set_num_threads(threads)
                log(f"{preset} variants, {threads} threads:")
                try:
                    times, opts = time_optimizers(variant_makers, shapes, device, rounds=args.rounds, steps=args.steps,
                                                  warmup=args.warmup, log=log)
                    if "ours alg6" in opts:  # every optimizer took the same steps on the same gradients
                        times["whole step compiled"]["agrees_with_ours"] = variant_agrees(
                            opts["whole step compiled"].params, opts["ours alg6"].param_groups[0]["params"])
                        if not times["whole step compiled"]["agrees_with_ours"]:
                            log("  whole step compiled: its parameters differ from ours alg6's after the same steps")
                except Exception as err:  # e.g. no C++ compiler for inductor: keep the rest of the benchmark
                    times = {"error": f"{type(err).__name__}: {err}"}
                    log(f"  failed: {err}")
                result["variants"][preset][f"{threads} threads"] = times
        torch.set_num_threads(threads_before)
    if device.type == "cuda" and args.mfu_steps:
        result["mfu"] = cuda_mfu(args.mfu_steps, args.cache_dir, log=log)
        if compiled:
            result["mfu_compiled"] = cuda_mfu(args.mfu_steps, args.cache_dir, log=log, extra=["optim.compile=true"])


def is_under_load(m: dict) -> bool:
    """Other processes used more than 5% of the machine's CPU time while the benchmark ran (from
    /proc/stat; where that is unavailable, a 1-minute load above half the cores at the start)."""
    share = m.get("other_processes_cpu_share")
    if share is not None:
        return share > 0.05
    start = m.get("load_average_start")
    return bool(start and start[0] > (m.get("cpu_count") or 1) / 2)


def ratios(entry: dict) -> dict:
    t = {k: v["median_ms"] for k, v in entry["time"].items()}
    ours = t["ours alg6"]
    out = {f"ours alg6 / {k}": ours / v for k, v in t.items() if not k.startswith("ours") and v > 0}
    raw = {k: v["raw_ms"] for k, v in entry["time"].items()}
    for path in ("ours alg6", "ours alg6 reference", COMPILED):
        for peer in ("torch Adam fused", "transformers Adafactor"):
            if path in raw and peer in raw:  # the same rounds: robust to a machine that changes state
                out[f"paired median {path} / {peer}"] = statistics.median(a / b for a, b in zip(raw[path], raw[peer]))
    out["ours alg6 reference / ours alg6"] = t["ours alg6 reference"] / ours
    for name in (COMPILED, COMPILED_NO_GRAPHS):
        if name in t:
            out[f"{name} / ours alg6"] = t[name] / ours
    adam = entry["state_bytes"].get("torch Adam fused")
    if adam:
        out.update({f"state {k} / torch Adam": v / adam for k, v in entry["state_bytes"].items()})
    return out


def targets(result: dict) -> dict:
    out: dict[str, Any] = {}
    preset = "base" if "base" in result["presets"] else next(iter(result["presets"]), None)
    if preset:
        r = result["presets"][preset]["ratios"]
        out["preset"] = preset
        t = {k: v["median_ms"] for k, v in result["presets"][preset]["time"].items()}
        for path, suffix in (("ours alg6", ""), ("ours alg6 reference", "_reference")):
            for key, peer in (("alg6_over_transformers", "transformers Adafactor"), ("alg6_over_adam_fused", "torch Adam fused")):
                if path in t and peer in t:
                    v = t[path] / t[peer]
                    out[f"{key}{suffix}"] = {
                        "value": v, "target": TARGETS[key], "met": v <= TARGETS[key]}
        name = "state ours alg6 / torch Adam"
        if name in r:
            out["state_over_adam"] = {"value": r[name], "target": TARGETS["state_over_adam"], "met": r[name] <= TARGETS["state_over_adam"]}
        if COMPILED in t and "torch Adam fused" in t:
            v = t[COMPILED] / t["torch Adam fused"]
            for key in ("compiled_over_adam_fused", "compiled_over_adam_fused_stretch"):
                out[key] = {"value": v, "target": TARGETS[key], "met": v <= TARGETS[key]}
        # The optimizer's share of a base cell's step: its step on the base shapes over the cell's step time
        # (from the bf16 cell run with the same path).
        if preset == "base":
            for key, path, cell in (("optimizer_share_of_cell", COMPILED, "mfu_compiled"),
                                    ("optimizer_share_of_cell_default", "ours alg6", "mfu")):
                if path in t and result.get(cell, {}).get("step_ms"):
                    v = t[path] / result[cell]["step_ms"]
                    out[key] = {"value": v, "target": TARGETS["optimizer_share_of_cell"],
                                "met": v <= TARGETS["optimizer_share_of_cell"]}
    if "overhead" in result:
        v = result["overhead"]["overhead"]
        out["overhead"] = {"value": v, "target": TARGETS["overhead"], "met": v <= TARGETS["overhead"]}
    return out


def parity_markdown(result: dict) -> list[str]:
    """The compiled path against the reference on the benchmark's device (``compiled_parity``)."""
    lines = [f"## The compiled path against the reference on {result['machine']['device']}", "",
             "`Adafactor(compile=True)` (CUDA graphs on CUDA) against the reference path (`foreach=False`), 6 steps "
             "on the same parameters and gradients with a learning rate that changes every step and gradients 30× "
             "larger at the last step: the largest relative difference (max |new − ref| / max |ref| per tensor) of "
             "the parameters, the state tensors and each step's RMS(U). Met: every float32 difference and, for bf16 "
             f"parameters, the float32 state and RMS(U) within {PARITY_TOLERANCE:g}, the bf16 parameters within one "
             "unit in their last place.", "",
             "| case | dtype | parameters | state | RMS(U) | clipping acted | met |", "|---|---|---|---|---|---|---|"]
    for name, r in result["parity"].items():
        met = r["max"] <= PARITY_TOLERANCE and r.get("params_bf16_ulps", 0.0) <= 1.0
        params = f"{r['params']:.1e}" + (f" ({r['params_bf16_ulps']:.0f} ulp)" if "params_bf16_ulps" in r else "")
        lines.append(f"| {name} | {r['dtype']} | {params} | {r['states']:.1e} | {r['update_rms']:.1e} | "
                     f"{'–' if r['clipped'] is None else 'yes' if r['clipped'] else 'no'} | {'yes' if met else '**no**'} |")
    lines.append("")
    if "large_matrix" in result:
        lines += ["One step of the factored mode with a relative step on an 8192×512 matrix, relative errors against "
                  "float64:", "", "| path | R | C | RMS(U) | ρ·RMS(X) |", "|---|---|---|---|---|"]
        for path, e in result["large_matrix"].items():
            lines.append(f"| {path} | {e['row']:.1e} | {e['col']:.1e} | {e['update_rms']:.1e} | {e['step_scale']:.1e} |")
        lines.append("")
    return lines


def to_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Benchmark: {m['device_name']} ({m['device']})", ""]
    if result.get("under_load"):
        share = m.get("other_processes_cpu_share")
        lines += ["**Taken under load**: other processes used "
                  + (f"{share:.0%} of the machine's CPU time" if share is not None else "the CPU")
                  + f" while this ran (load average {m['load_average_start']} at the start, "
                  f"{m.get('load_average_end')} at the end, {m['cpu_count']} cores). "
                  "Absolute times are inflated and noisy; ratios measured in the same rounds are less affected.", ""]
    lines += [f"Command: `{result['command']}` ({result['time_utc']}).", "",
              f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads; "
              f"memory management {m.get('memory_management') or 'unknown'}; torch {m['torch']}, "
              f"Python {m['python']}, transformers {m['transformers'] or 'not installed'}; {m['platform']}; "
              f"C kernel of the fused path: {m.get('c_kernel', 'not used on this device')}"
              + (f" (compiled from nothing in {m['c_kernel_cold_build_s']:.2f} s, once per machine)"
                 if m.get("c_kernel_cold_build_s") is not None else "") + ". "
              f"Load average (1, 5, 15 min) {m['load_average_start']} at the start, {m.get('load_average_end')} at the end; "
              + (f"other processes used {m['other_processes_cpu_share']:.1%} of the CPU time during the run."
                 if m.get("other_processes_cpu_share") is not None else "CPU use of other processes unknown."), ""]
    if result.get("interrupted"):
        lines += ["**Interrupted** (a time limit): the sections below hold what was measured before.", ""]
    tg = result.get("targets", {})
    if tg:
        lines += ["## Targets", "", "| target | measured | limit | met |", "|---|---|---|---|"]
        names = {"alg6_over_transformers": "Alg. 6 step time (default path) / transformers' Adafactor",
                 "alg6_over_adam_fused": "Alg. 6 step time (default path) / fused Adam",
                 "alg6_over_transformers_reference": "Alg. 6 step time (foreach=False: the reference path, what CPU "
                                                     "matrices run without a C compiler) / transformers' Adafactor",
                 "alg6_over_adam_fused_reference": "Alg. 6 step time (foreach=False: the reference path, what CPU "
                                                   "matrices run without a C compiler) / fused Adam",
                 "compiled_over_adam_fused": "Alg. 6 step time (compile=True) / fused Adam",
                 "compiled_over_adam_fused_stretch": "Alg. 6 step time (compile=True) / fused Adam, stretch",
                 "optimizer_share_of_cell": "Alg. 6 step (compile=True) / the step of a bf16 base cell with "
                                            "optim.compile=true",
                 "optimizer_share_of_cell_default": "Alg. 6 step (default path) / the step of a bf16 base cell "
                                                    "with the default path",
                 "state_over_adam": "state bytes, factored β1 = 0 / Adam",
                 "overhead": "trainer overhead (1 − cell / bare tokens/s)"}
        for key, label in names.items():
            if key in tg:
                v = tg[key]
                fmt = (lambda x: f"{x:.2%}") if key in ("state_over_adam", "overhead") or key.startswith(  # noqa: E731
                    "optimizer_share") else (lambda x: f"{x:.2f}×")
                where = "" if key == "overhead" or key.startswith("optimizer_share") else f" ({tg.get('preset')} shapes)"
                lines.append(f"| {label}{where} | {fmt(v['value'])} | {fmt(v['target'])} | {'yes' if v['met'] else '**no**'} |")
        lines.append("")
    if "parity" in result:
        lines += parity_markdown(result)
    for preset, e in result["presets"].items():
        adam = e["time"].get("torch Adam fused", {}).get("median_ms")
        adam_state = e["state_bytes"].get("torch Adam fused")
        lines += [f"## `{preset}` preset: {e['params'] / 1e6:.2f} M parameters in {e['tensors']} tensors (vocab {e['vocab']})", "",
                  "| optimizer | ms/step (median) | IQR | × fused Adam | state MB | % of Adam's state |",
                  "|---|---|---|---|---|---|"]
        for name, t in e["time"].items():
            sb = e["state_bytes"][name]
            lines.append(f"| {name} | {t['median_ms']:.2f} | {t['p25_ms']:.2f}–{t['p75_ms']:.2f} | "
                         f"{t['median_ms'] / adam:.2f} | {sb / 1e6:.3f} | "
                         f"{(f'{sb / adam_state:.2%}' if adam_state else '–')} |" if adam else
                         f"| {name} | {t['median_ms']:.2f} | {t['p25_ms']:.2f}–{t['p75_ms']:.2f} | – | {sb / 1e6:.3f} | – |")
        lines.append("")
        r = e["ratios"]
        peers = [k for k in r if k.startswith("ours alg6 / ")]
        paired = [k for k in r if k.startswith("paired median ")]
        lines += ["Ratios of our Alg. 6 step (default path) to: " + ", ".join(
            f"{k.removeprefix('ours alg6 / ')} {r[k]:.2f}" for k in peers) +
            f"; reference path / default path {r['ours alg6 reference / ours alg6']:.2f}." +
            (" Median over rounds of the ratio within a round: " + ", ".join(
                f"{k.removeprefix('paired median ')} {r[k]:.2f}" for k in paired) + "." if paired else ""), ""]
        if "sync_check" in e:
            lines += ["Host-device synchronisation in `step()` after 3 steps (`set_sync_debug_mode('error')`): "
                      + ", ".join(f"{k}: {v}" for k, v in e["sync_check"].items()), ""]
        for name, g in e.get("cuda_graphs", {}).items():
            lines += [f"CUDA graphs of `{name}` over its {e['time'][name]['rounds']} rounds: {g['direct']} steps ran "
                      f"the compiled function directly, {g['captures']} captured a graph, {g['replays']} replayed one"
                      + (f"; without graphs: {'; '.join(g['without_graphs'])}" if g["without_graphs"] else "") + ".", ""]
    for preset, by_threads in result.get("variants", {}).items():
        lines += [f"## Variants on `{preset}` (Alg. 6 setting), by torch threads", "",
                  "`whole step compiled` is one torch.compile'd function per tensor for the whole step "
                  "(`factorial.bench.CompiledAlg6`), measured to compare (the optimizer's own compiled path, "
                  "`compile=True`, is in the tables above with `--compiled`). "
                  "First step: state creation plus compilation (inductor's on-disk cache may shorten it). "
                  "This section is timed minutes after the tables above. On the project's 2-core VM the machine "
                  "switches, within a run, between two states that move 2-thread timings in opposite directions: "
                  "in one, fused Adam is faster and any op that reads what the other thread wrote is slower "
                  "(as if the two vCPUs stopped sharing a cache). Compare rows within one table; `raw_ms` in the "
                  ".json has every round.", "",
                  "| variant | threads | ms/step (median) | IQR | × fused Adam | first step ms |", "|---|---|---|---|---|---|"]
        for label, v in by_threads.items():
            if "error" in v:
                lines.append(f"| failed | {label} | `{v['error']}` | | | |")
                continue
            adam = v.get("torch Adam fused", {}).get("median_ms")
            for name, t in v.items():
                ratio = f"{t['median_ms'] / adam:.2f}" if adam else "–"
                if "agrees_with_ours" in t:
                    name += (" (same parameters as ours alg6 after the run)" if t["agrees_with_ours"]
                             else " (**parameters differ from ours alg6**)")
                lines.append(f"| {name} | {label.split()[0]} | {t['median_ms']:.2f} | {t['p25_ms']:.2f}–{t['p75_ms']:.2f} | "
                             f"{ratio} | {t['first_step_ms']:.0f} |")
        lines.append("")
    if "kernels" in result:
        k = result["kernels"]
        lines += [f"## Kernels of the statistics on a {k['shape'][0]}×{k['shape'][1]} matrix", "",
                  "| kernel | ms (median) | IQR | relative error against float64 |", "|---|---|---|---|"]
        for name, t in k["time"].items():
            err = k["rms_relative_error"].get(name)
            lines.append(f"| {name} | {t['median_ms']:.3f} | {t['p25_ms']:.3f}–{t['p75_ms']:.3f} | "
                         f"{'' if err is None else f'{err:.1e}'} |")
        lines.append("")
    if "overhead" in result:
        o = result["overhead"]
        lines += ["## Trainer overhead", "",
                  f"`{o['scale']}` scale, {o['steps']} steps of {o['tokens_per_step']} tokens, {o['threads']} thread{'' if o['threads'] == 1 else 's'}, "
                  f"a checkpoint every {o['checkpoint_every']} steps, {o['rounds']} rounds alternating a bare loop and a cell "
                  "(`run_cell`, evaluation time subtracted). Same training losses in both: "
                  f"{'yes' if o['same_losses'] else 'NO'}.", "",
                  "| | tokens/s (median) | runs |", "|---|---|---|",
                  f"| bare loop | {o['bare_median']:,.0f} | {', '.join(f'{x:,.0f}' for x in o['bare_tokens_per_s'])} |",
                  f"| cell | {o['cell_median']:,.0f} | {', '.join(f'{x:,.0f}' for x in o['cell_tokens_per_s'])} |", "",
                  f"Overhead: {o['overhead']:.1%} of the bare loop's throughput.", ""]
    if "mfu" in result:
        lines += ["## Model FLOP utilisation (base preset, bf16)", ""]
        for key, label in (("mfu", "default optimizer path"), ("mfu_compiled", "optim.compile=true")):
            if key in result:
                u = result[key]
                g = u.get("cuda_graphs")
                lines += [f"{label}: {u['tokens_per_s']:,.0f} tokens/s"
                          + (f", {u['step_ms']:.2f} ms a step" if u.get("step_ms") else "")
                          + f", {u['model_tflops']:.1f} TFLOP/s of model FLOPs"
                          + (f", {u['mfu']:.1%} of {u['peak_bf16_tflops']} TFLOP/s" if u.get("mfu") else "") + "."
                          + (f" Its optimizer's CUDA graphs: {g['direct']} direct steps, {g['captures']} captures, "
                             f"{g['replays']} replays" + (f"; without graphs: {'; '.join(g['without_graphs'])}"
                                                          if g["without_graphs"] else "") + "." if g else ""), ""]
    return "\n".join(lines)


def write(result: dict, out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{name}.json", out_dir / f"{name}.md"
    js.write_text(json.dumps(result, indent=1) + "\n")
    md.write_text(to_markdown(result) + "\n")
    return js, md


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m factorial.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "cpu", "base"], choices=list(PRESETS))
    p.add_argument("--vocab", nargs="*", metavar="PRESET=V", help="vocabulary per preset (default tiny=512 cpu=4096 base=8192)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    p.add_argument("--steps", type=int, default=2, help="steps per optimizer per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the rounds")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True, help="the torch.compile variant")
    p.add_argument("--variants-presets", nargs="+", default=["base"])
    p.add_argument("--variants-threads", nargs="+", type=int, default=None, help="default: 1 and torch's threads")
    p.add_argument("--kernels", action=argparse.BooleanOptionalAction, default=True,
                   help="column statistics and RMS kernels on the largest matrix")
    p.add_argument("--overhead", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--overhead-scale", default="cpu")
    p.add_argument("--overhead-steps", type=int, default=100)
    p.add_argument("--overhead-rounds", type=int, default=3)
    p.add_argument("--overhead-threads", type=int, default=None,
                   help="default: 1 on CPU (what a study's cell gets: JOBS=auto runs one cell per core, one thread each; "
                        "2-thread timings on a 2-core VM swing by half between runs), the benchmark's threads on CUDA")
    p.add_argument("--overhead-checkpoint-every", type=int, default=50)
    p.add_argument("--mfu-steps", type=int, default=60, help="CUDA only: steps of the bf16 base cell (0: skip)")
    p.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=None,
                   help="time Adafactor(compile=True) too (and on CUDA a bf16 base cell with optim.compile=true); "
                        "default: on CUDA only (on CPU each preset compiles for tens of seconds)")
    p.add_argument("--parity", action=argparse.BooleanOptionalAction, default=None,
                   help="the compiled path against the reference on this device, every case of parity_cases, and "
                        "an 8192x512 matrix against float64; default: on CUDA only")
    p.add_argument("--parity-cases", nargs="+", default=None, choices=list(parity_cases()), metavar="CASE",
                   help="only these cases (names as in the output, e.g. 'row O')")
    p.add_argument("--cache-dir", default=None, help="data cache (default: the config's, cache/)")
    p.add_argument("--quick", action="store_true", help="tiny preset, 3 rounds, a 6-step smoke-scale overhead check")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"))
    p.add_argument("--name", default=None,
                   help="file name (default: the device type; <device>-quick for --quick and <device>-partial for a run "
                        "with fewer measurements than the full one, so that neither replaces results/bench/<device>.*)")
    p.add_argument("--render", default=None, metavar="JSON", help="only rewrite the .md beside a saved .json")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.presets, args.rounds, args.steps, args.warmup = ["tiny"], 3, 1, 1
        args.variants = False
        args.kernels = False
        args.overhead_scale, args.overhead_steps, args.overhead_rounds, args.overhead_checkpoint_every = "smoke", 6, 1, 3
        args.mfu_steps = 0
    return args


# What a full run measures: a run that changes any of these measures less (or differently), so it is
# written beside the full results, never over them.
_FULL_RUN_KEYS = ("presets", "vocab", "rounds", "steps", "warmup", "variants", "variants_presets", "variants_threads",
                  "kernels", "overhead", "overhead_scale", "overhead_steps", "overhead_rounds",
                  "overhead_checkpoint_every", "mfu_steps")


def output_name(args: argparse.Namespace, device: str) -> str:
    """The file name of a run's results: ``<device>`` only for a full run (``--name`` wins)."""
    if args.name:
        return args.name
    if args.quick:
        return f"{device}-quick"
    full = parse_args([])
    if any(getattr(args, k) != getattr(full, k) for k in _FULL_RUN_KEYS):
        return f"{device}-partial"
    return device


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:  # rewrite the .md of a saved run (no measurement)
        path = Path(args.render)
        path.with_suffix(".md").write_text(to_markdown(json.loads(path.read_text())) + "\n")
        print(f"wrote {path.with_suffix('.md')}")
        return 0
    result = run(args)
    name = output_name(args, result["machine"]["device"])
    js, md = write(result, Path(args.out), name)
    print(to_markdown(result))
    print(f"wrote {js} and {md}")
    if name != result["machine"]["device"] and not args.name:
        print(f"(a {name.rsplit('-', 1)[1]} run: results/bench/{result['machine']['device']}.* of a full run are left as they were)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
