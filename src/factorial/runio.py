"""Files of a run that must survive crashes: atomic writes, checkpoints, and a lock per cell.

Nothing already written is ever lost: every file is written to a temporary name in the same
directory, flushed to disk and renamed over the old one (rename is atomic on POSIX), so a crash or a
full disk leaves either the old file or the new one, never half of one. A checkpoint that does not
load is set aside under ``*.corrupt`` (never deleted) and the previous one is used.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .runfiles import CHECKPOINTS, LOCK

log = logging.getLogger("factorial.runio")

KEEP_CHECKPOINTS = 2


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; a file the run writes gets the mode any new file would
        # (0644 under the usual umask 022), so colleagues on a shared cluster can read it.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _json_safe(value: Any) -> Any:
    """NaN and ±inf are not JSON: write them as null, which pandas and W&B read as missing."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


# --- checkpoints -----------------------------------------------------------------------------------


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def _checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, newest first (names carry the zero-padded step)."""
    return sorted(checkpoint_dir(run_dir).glob("step-*.pt"), reverse=True)


def save_checkpoint(run_dir: Path, step: int, state: dict) -> Path:
    """Write ``state`` atomically as checkpoints/step-<step>.pt and keep the newest KEEP_CHECKPOINTS."""
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    import torch  # here, so that reading a run's files (make table) never imports torch

    buf = io.BytesIO()
    torch.save(state, buf)
    path = d / f"step-{step:09d}.pt"
    atomic_write_bytes(path, buf.getvalue())
    for old in _checkpoints(run_dir)[KEEP_CHECKPOINTS:]:
        old.unlink()
    return path


def load_latest_checkpoint(run_dir: Path, map_location=None) -> dict | None:
    """The newest checkpoint that loads; unreadable ones are renamed *.corrupt with a warning."""
    import torch

    for path in _checkpoints(run_dir):
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as err:  # truncated zip, bad pickle, ...: all mean "not a usable checkpoint"
            aside = path.with_name(path.name + ".corrupt")
            os.replace(path, aside)
            log.warning("checkpoint %s does not load (%s); set aside as %s, trying the previous one", path, err, aside.name)
    return None


# --- one trainer per cell ----------------------------------------------------------------------------


class CellBusyError(RuntimeError):
    pass


class CellLock:
    """An exclusive lock on <run_dir>/.lock while a cell trains (``filelock``: ``flock`` on POSIX,
    ``LockFileEx`` on Windows), taken without waiting.

    The operating system drops the lock when the holding process dies (even by SIGKILL), so a crashed
    run never leaves a cell locked; a second live process on the same cell is refused with
    :class:`CellBusyError`. The holder writes its pid into the file after one newline: Windows locks
    byte 0 only, so another process can still read the pid for the error message. The file is never
    committed (``.gitignore``) and is not a run file: resuming never reads it.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        # No soft fallback (a lock file's mere existence) where the filesystem has no flock: a file
        # left by a killed trainer would lock the cell for ever; the OSError says what is wrong.
        self._lock = FileLock(self.path, blocking=False, fallback_to_soft=False, on_acquired=_write_pid)

    def __enter__(self) -> "CellLock":
        try:
            self._lock.acquire()
        except Timeout:
            raise CellBusyError(f"cell {self.path.parent} is being trained by another process (pid {lock_holder(self.path) or '?'})") from None
        remove_stale_temporaries(self.path.parent)
        return self

    def __exit__(self, *exc) -> None:
        if self._lock.is_locked:
            self._lock.release()


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete what atomic writes of a killed trainer left (``.<name>.<random>.tmp`` in the run directory
    and its checkpoints/: a SIGKILL during a checkpoint write leaves a whole checkpoint's bytes there).
    Called by the holder of the cell's lock, the only process that writes there."""
    for d in (Path(run_dir), checkpoint_dir(run_dir)):
        for p in d.glob(".*.tmp"):
            p.unlink(missing_ok=True)


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"\n{os.getpid()}".encode())


def lock_holder(path: Path) -> str:
    """The pid written by the process holding the lock file ``path``, or '' when none can be read."""
    try:
        with open(path, "rb") as f:
            f.seek(1)
            return f.read(64).decode(errors="replace").strip()
    except OSError:
        return ""

