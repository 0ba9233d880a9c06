"""Writing the results folder atomically, and the optional W&B summary run."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

log = logging.getLogger("factorial.report")

# Files this module owns in results/<exp>/<scale>/; a stale one (not written this time) is removed.
MANAGED = ("cells.csv", "curves.csv", "claims.csv", "lr_sensitivity.csv", "signature.csv", "table.md", "table.csv",
           "table.tex", "REPORT.md")
MANAGED_GLOBS = ("*.png",)


class Staging:
    """Write every file into a hidden sibling folder, then move each into place with os.replace.

    A reader of results/<exp>/<scale>/ sees each file either whole-old or whole-new, never half written;
    an error before ``commit`` leaves the previous results untouched.
    """

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".tmp", dir=self.final.parent))
        self.written: list[str] = []

    def path(self, name: str) -> Path:
        self.written.append(name)
        return self.tmp / name

    def text(self, name: str, text: str) -> None:
        self.path(name).write_text(text, encoding="utf-8")

    def bytes(self, name: str, data: bytes) -> None:
        self.path(name).write_bytes(data)

    def csv(self, name: str, frame: pd.DataFrame) -> None:
        frame.to_csv(self.path(name), index=False)

    def commit(self) -> list[Path]:
        self.final.mkdir(parents=True, exist_ok=True)
        for name in self.written:
            src = self.tmp / name
            if src.exists():
                with open(src, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(src, self.final / name)
        keep = set(self.written)
        stale = [p for p in self.final.iterdir() if p.is_file() and p.name not in keep
                 and (p.name in MANAGED or any(p.match(g) for g in MANAGED_GLOBS))]
        for p in stale:
            p.unlink()
        self.close()
        return [self.final / n for n in self.written]

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def log_to_wandb(mode: str, project: str, entity: str | None, exp: str, scale: str, out_dir: Path,
                 tables: dict[str, pd.DataFrame], images: list[tuple[str, str]], summary: dict,
                 init: Callable | None = None) -> bool:
    """A W&B run ``<exp>/<scale>/summary`` (job_type "table") in group ``<exp>/<scale>`` holding the tables.

    Any W&B failure is a warning: the local results are already written. Returns True if logged.
    """
    try:
        import wandb

        from ..runlog import resolve_wandb_mode

        resolved, reason = resolve_wandb_mode(mode)
        if resolved == "disabled":
            log.info("W&B summary run skipped (%s)", reason)
            return False
        wandb_dir = out_dir / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        run = (init or wandb.init)(
            project=project, entity=entity, group=f"{exp}/{scale}", name=f"{exp}/{scale}/summary", job_type="table",
            mode=resolved, dir=str(out_dir), config={"exp": exp, "scale": scale},
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_machine_info=True,
                                    init_timeout=60.0),
            reinit="create_new",
        )
        try:
            payload = {name: wandb.Table(dataframe=_wandb_safe(frame)) for name, frame in tables.items()}
            for name, caption in images:
                path = out_dir / name
                if path.exists():
                    payload[f"plot/{Path(name).stem}"] = wandb.Image(str(path), caption=caption)
            run.log(payload)
            run.summary.update(summary)
        finally:
            run.finish()
        if resolved == "offline":  # finish() returns before wandb-core has written the offline run out
            from ..runlog import flush_wandb

            flush_wandb()
        log.info("W&B: logged the tables to %s/%s/summary (%s)", exp, scale, resolved)
        return True
    except Exception as err:  # W&B is a mirror; never fail the report for it
        log.warning("W&B summary run failed (%s: %s); the results in %s are complete", type(err).__name__, err, out_dir)
        return False


def _wandb_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """W&B tables want one type per column: lists and mixed objects become text."""
    out = frame.copy()
    for col in out.columns:
        vals = [v for v in out[col] if v is not None and not (isinstance(v, float) and v != v)]
        if any(isinstance(v, (list, dict, tuple)) for v in vals) or len({type(v) for v in vals}) > 1:
            out[col] = [None if v is None else str(v) for v in out[col]]
    return out

