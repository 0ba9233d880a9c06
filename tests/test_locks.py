"""One trainer per cell: the lock works across processes and needs no POSIX-only module."""

from __future__ import annotations

import subprocess
import sys

import pytest

from factorial import sweep as S
from factorial.runio import CellBusyError, CellLock

HOLD = """
import sys
from factorial.runio import CellLock
with CellLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_the_trainer_and_the_sweep_import_without_fcntl():
    """fcntl does not exist on Windows: importing the trainer and the sweep must not need it."""
    code = "import sys; sys.modules['fcntl'] = None\nimport factorial.runio, factorial.sweep, factorial.train\nprint('ok')"
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


@pytest.fixture
def holder(tmp_path):
    """A second process holding the cell's lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=60)


def test_a_cell_held_by_another_process_is_refused_with_its_pid(tmp_path, holder):
    assert S.cell_locked(tmp_path)
    with pytest.raises(CellBusyError, match=rf"is being trained by another process \(pid {holder.pid}\)"):
        with CellLock(tmp_path):
            pass
    assert S.cell_locked(tmp_path), "a refused attempt must not break the holder's lock"
    holder.kill()  # the operating system drops the lock of a killed holder
    holder.wait(timeout=60)
    assert not S.cell_locked(tmp_path)
    with CellLock(tmp_path):
        assert S.cell_locked(tmp_path)
    assert not S.cell_locked(tmp_path)


def test_two_locks_in_one_process_exclude_each_other_and_release(tmp_path):
    assert not S.cell_locked(tmp_path)  # no lock file yet
    with CellLock(tmp_path):
        with pytest.raises(CellBusyError):
            with CellLock(tmp_path):
                pass
    with CellLock(tmp_path):  # released on exit
        pass
    # Only the lock file itself (gitignored; Windows removes it on release): nothing for resume or git to see.
    assert {p.name for p in tmp_path.iterdir()} <= {".lock"}


def test_taking_a_cells_lock_removes_what_a_killed_writer_left(tmp_path):
    """A SIGKILL during an atomic write leaves its temporary (``.<name>.<random>.tmp``); the next trainer
    of the cell, once it holds the lock, removes those in the run directory and checkpoints/ and nothing else."""
    run = tmp_path / "cell" / "seed0"
    (run / "checkpoints").mkdir(parents=True)
    stale = [run / "checkpoints" / ".step-000000098.pt.av4j8e5d.tmp", run / ".summary.json.k2x9.tmp"]
    kept = [run / "checkpoints" / "step-000000091.pt", run / "metrics.jsonl", run / "notes.tmp"]
    for p in stale + kept:
        p.write_bytes(b"x")
    with CellLock(run):
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in kept)
