"""The C kernel of the optimizer's fused CPU path (kernels.c): built at first use, loaded through ctypes.

``kernel()`` returns the kernel's functions, or None when they cannot be had; the optimizer then runs
those matrices on its reference path, which computes the same numbers. Building takes well under a second: one C file,
no PyTorch headers. The shared object is cached under ``$FACTORIAL_KERNEL_CACHE`` (default
``~/.cache/factorial/kernels``) by a hash of the source, the compiler command and version and this
CPU's flags, so a cache shared between machines never loads a binary built for another CPU. It is
written to a temporary name and renamed, so processes starting together (a sweep's parallel jobs)
never load a half-written file.

``FACTORIAL_NATIVE=0`` turns the kernel off for a process; ``CC`` picks the compiler (default ``cc``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC"]
MODES = {"factored": 0, "row": 1, "col": 2}

_P, _L, _I, _F = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
_ARGTYPES = [_P, _P, _P, _F, _P, _P, _L, _L, _L, _I, _F, _F, _F, _I, _F, _F, _F, _I, _P]
_FULL_ARGTYPES = [_P, _P, _P, _F, _P, _L, _F, _F, _F, _I, _F, _F, _F, _I, _P]

_state: dict[str, object] = {}  # "fn": the loaded library's functions or None, "why": why not


def enabled_by_env() -> bool:
    return os.environ.get("FACTORIAL_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    return Path(os.environ.get("FACTORIAL_KERNEL_CACHE") or Path.home() / ".cache" / "factorial" / "kernels")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    import platform

    return platform.processor() + platform.machine()


def _build(cc: str, directory: Path | None = None) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), cc, *FLAGS, version, _cpu_flags()]).encode()).hexdigest()[:16]
    target = (directory or cache_dir()) / f"factorial_kernels_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def cold_build_seconds() -> float | None:
    """Seconds to compile the kernel from nothing, into a temporary directory (the cache is left alone);
    None without a C compiler. The benchmark reports it: the first step of a process on a new machine
    (or after the source changes) pays it once."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="factorial-kernel-") as d:
        began = time.perf_counter()
        _build(cc, Path(d))
        return time.perf_counter() - began


def _load():
    if not enabled_by_env():
        return None, "FACTORIAL_NATIVE=0"
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return None, f"no C compiler {cc!r} on PATH (set CC)"
    try:
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return None, str(e)
    fns = {"broadcast": lib.factorial_broadcast_step, "full": lib.factorial_full_step}
    for fn, argtypes in ((fns["broadcast"], _ARGTYPES), (fns["full"], _FULL_ARGTYPES)):
        fn.argtypes = argtypes
        fn.restype = _I
    return fns, ""


def kernel():
    """The kernels ({"broadcast": …, "full": …}), built and loaded once per process; None (with one
    warning) when unavailable."""
    if "fn" not in _state:
        fn, why = _load()
        _state["fn"], _state["why"] = fn, why
        if fn is None and why != "FACTORIAL_NATIVE=0":
            warnings.warn(f"factorial: the C kernel of the fused CPU path is unavailable ({why}); "
                          "using the reference path (same numbers, slower)", RuntimeWarning, stacklevel=3)
    return _state["fn"]


def status() -> str:
    """"loaded", or "unavailable: <why>" (for run metadata and the benchmark's machine line)."""
    why = why_unavailable()
    return "loaded" if not why else f"unavailable: {why}"


def why_unavailable() -> str:
    """Empty when the kernel loaded; otherwise the reason (after ``kernel()`` has been called)."""
    kernel()
    return str(_state["why"])


def reset() -> None:
    """Forget the loaded kernel (tests), so that the next ``kernel()`` looks again."""
    _state.clear()


def _ptr(t: torch.Tensor | None):
    return t.data_ptr() if t is not None else None


def _run(fn, *args, threshold: float | None, decay: float) -> torch.Tensor:
    """Call a kernel; its last arguments are always (threshold, decay, threads, output). Returns RMS(U) as a
    new 0-d float32 tensor (callers may keep each step's to read later)."""
    out = torch.empty((), dtype=torch.float32)
    if fn(*args, threshold if threshold is not None else 0.0, decay, torch.get_num_threads(), out.data_ptr()) != 0:
        raise MemoryError("factorial's C kernel could not allocate its per-thread, per-row or per-column sums")
    return out


def step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor | None, momentum_weight: float,
         exp_avg_sq: torch.Tensor | None, row: torch.Tensor | None, col: torch.Tensor | None, mode: str, *,
         rate: float, eps1: float, lr: float, relative: bool, eps2: float, threshold: float | None,
         decay: float) -> torch.Tensor:
    """One step of one contiguous float32 CPU tensor (callers check ``supports``) in ``mode``: "full"
    (V̂ = V, ``exp_avg_sq``; ``factorial_full_step``) or "factored", "row", "col" (``row`` and/or ``col``;
    ``factorial_broadcast_step``, which needs a matrix). Updates ``param``, the accumulators and
    ``exp_avg`` (m̂ ← lerp(m̂, G, momentum_weight), the direction; None: the direction is G) in place;
    returns RMS(U) as a new 0-d float32 tensor."""
    if mode == "full":
        return _run(kernel()["full"], param.data_ptr(), grad.data_ptr(), _ptr(exp_avg), momentum_weight,
                    exp_avg_sq.data_ptr(), param.numel(), rate, eps1, lr, int(relative), eps2,
                    threshold=threshold, decay=decay)
    n, m = param.shape[-2], param.shape[-1]
    return _run(kernel()["broadcast"], param.data_ptr(), grad.data_ptr(), _ptr(exp_avg), momentum_weight, _ptr(row),
                _ptr(col), param.numel() // (n * m), n, m, MODES[mode], rate, eps1, lr, int(relative), eps2,
                threshold=threshold, decay=decay)


def supports(*tensors: torch.Tensor | None) -> bool:
    """Whether the kernel can take these tensors: float32, contiguous, on the CPU, non-empty."""
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
                             and t.numel() > 0) for t in tensors)
