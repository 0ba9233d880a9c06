"""Helpers for tests that train tiny cells (the `smoke` scale) or run sweeps; the shared data cache is
the ``cache_dir`` fixture of conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from factorial import sweep as S
from factorial import train as T
from factorial.config import REPO_ROOT

VOLATILE = ("perf/tokens_per_s",)  # metrics that depend on the machine's speed
VOLATILE_SUMMARY = ("wall_time_s", "tokens_per_s")
ENV = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}


def committed_runs() -> dict[tuple[str, str], dict[str, dict]]:
    """The runs committed in the results stores (results/<exp>/<scale>/runs.jsonl.gz), by (study, scale):
    run id ('<cell>/seed<k>') → its record (factorial.store)."""
    from factorial import store

    return {(p.parent.parent.name, p.parent.name): store.load(p)
            for p in sorted((REPO_ROOT / "results").glob("*/*/runs.jsonl.gz"))}


def smoke(run_dir: Path, cache_dir: str, *extra: str) -> list[str]:
    """The overrides of a smoke-scale cell in run_dir (no W&B)."""
    return ["scale=smoke", "logger=none", f"run_dir={run_dir}", f"data.cache_dir={cache_dir}", *extra]


def run(overrides: list[str]) -> dict:
    """Train one cell in this process; its summary."""
    cfg = T.compose(overrides)
    cfg.cell = T.cell_name(overrides)
    return T.run_cell(cfg)


def stable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def stable_summary(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in VOLATILE_SUMMARY}


class Crash(BaseException):
    """Like SIGKILL for the trainer: not an Exception, so no summary is written."""


def pair_study(directory: Path, name: str = "pair") -> str:
    """A two-cell study file (Adafactor O and Adam-like A, both without warmup) for the sweep tests whose
    subject is the sweep's machinery, not the number of cells: half the processes of the smoke study.
    The study is named after its file (``name``), and so are its run directories and SLURM jobs."""
    path = directory / f"{name}.yaml"
    path.write_text("description: two cells for the sweep's tests\nseeds: [0]\n"
                    "cells:\n  - {row: O, schedule.warmup: false}\n  - {row: A, schedule.warmup: false}\n")
    return str(path)


def sweep_cli(*args: str, root: Path, cache: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "factorial.sweep", "--runs-root", str(root), *(["--cache-dir", cache] if cache else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def sweep_here(*args: str, root: Path, cache: str | None = None) -> subprocess.CompletedProcess:
    """``factorial.sweep`` run in this process (its cells are still subprocesses): what sweep_cli does,
    without a Python start and the imports, for tests that neither signal nor race the sweep itself."""
    import contextlib
    import io

    argv = ["--runs-root", str(root), *(["--cache-dir", cache] if cache else []), *args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = S.main(argv)
    return subprocess.CompletedProcess(["factorial.sweep", *argv], code, out.getvalue(), err.getvalue())


def summaries(root: Path) -> dict[str, dict]:
    """run id → its summary without the machine-dependent fields, for every run under root."""
    out = {}
    for path in sorted(root.rglob("summary.json")):
        s = json.loads(path.read_text())
        out[str(path.parent.relative_to(root))] = {k: v for k, v in s.items() if k not in VOLATILE_SUMMARY}
    return out


def locked(run_dir: Path) -> bool:
    """Whether a live trainer holds the run's lock."""
    return S.cell_locked(run_dir)


def run_dirs(root: Path) -> list[Path]:
    return [p for p in root.rglob("seed*") if p.is_dir()]


def wait_for(condition, what: str, timeout: float = 180) -> None:
    """Poll until condition() holds (a liveness guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
