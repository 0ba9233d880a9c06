"""Where a checkout keeps its studies and scales, and what a config key looks like. The bottom layer:
imports nothing of factorial (and not torch), so every other module, the sweep's job processes included,
may use it."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
SCALES_DIR = REPO_ROOT / "conf" / "scale"
RUNS_ENV = "FACTORIAL_RUNS"  # where run directories go, for the sweep, the table, the dashboard and a cell
KEY_RE = re.compile(r"[+~]{0,2}[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")  # a config key (with +/~)


def available_studies() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def available_scales() -> list[str]:
    return sorted(p.stem for p in SCALES_DIR.glob("*.yaml"))


def is_path(exp: str) -> bool:
    """Whether ``--exp`` names a study file by its path (else it is a study's name: experiments/<name>.yaml)."""
    return exp.endswith((".yaml", ".yml")) or "/" in exp


def study_name(exp: str) -> str:
    """A study's name: ``--exp`` itself, or the stem of a study file given as a path."""
    return Path(exp).stem if is_path(exp) else exp


def study_file(exp: str) -> Path:
    """The study file ``--exp`` means (it may not exist): the path it names, or experiments/<name>.yaml."""
    return Path(exp) if is_path(exp) else EXPERIMENTS_DIR / f"{exp}.yaml"


def runs_root(given: str | os.PathLike | None = None) -> Path:
    """The runs root: ``--runs-root`` when given, else ``$FACTORIAL_RUNS``, else runs/ of the repository."""
    return Path(given or os.environ.get(RUNS_ENV) or REPO_ROOT / "runs")


def runs_root_help() -> str:
    """How a command's --help names the runs root and where it comes from."""
    return f"where the run directories are (default: ${RUNS_ENV} when set, else runs/ of the repository)"
