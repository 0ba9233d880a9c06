"""The SLURM launcher: the request checked against the partition, and real sweeps on a running cluster.

The tests marked ``slurm`` run against real daemons (``bash scripts/slurm_cluster.sh start``, as root,
starts a single-node cluster; CI does so before the suite) and skip, saying why, where no cluster
answers. The parsing and checking of what ``sinfo`` says need no cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cells import ENV, locked, pair_study, run_dirs, summaries, wait_for

from factorial import slurm as SL
from factorial import sweep as S
from factorial.config import REPO_ROOT

# Long enough (a few seconds of training) that a sweep can be cancelled while a cell trains, short enough for CI.
EXTRA = ["--", "logger=none", "train.steps=600", "train.checkpoint_every=50"]


# --- what sinfo says, and what the sweep may ask (no cluster) -------------------------------------


SINFO = """\
debug*|up|1:00:00|vm|2|21695|(null)|idle
gpu|up|2-00:00:00|g1|32|257000|gpu:a100:4(S:0-1),shard:8|mixed
gpu|up|2-00:00:00|g2|64|515000|gpu:2|idle
long|up|infinite|vm|2|21695|(null)|idle
"""


def test_sinfo_is_read_into_partitions_nodes_and_limits():
    parts = SL.parse_sinfo(SINFO)
    assert sorted(parts) == ["debug", "gpu", "long"]
    assert parts["debug"].default and not parts["gpu"].default
    assert parts["debug"].max_time_min == 60 and parts["gpu"].max_time_min == 2 * 1440 and parts["long"].max_time_min is None
    assert [(n.name, n.cpus, n.mem_mb, n.gpus) for n in parts["gpu"].nodes] == [("g1", 32, 257000, 4), ("g2", 64, 515000, 2)]
    assert [SL.parse_time_min(t) for t in ("30", "30:00", "1:30:00", "1-00:00:00", "UNLIMITED")] == [30, 30, 90, 1440, None]
    assert [SL.parse_gpus(g) for g in ("(null)", "gpu:8", "gpu:v100:2,gpu:a100:1", "gpu", "shard:4")] == [0, 8, 3, 1, 0]


def test_the_request_gets_the_partitions_defaults_or_a_clear_refusal():
    parts = SL.parse_sinfo(SINFO)

    def check(partition=None, cpus=None, gpus=None, time_min=None, mem_gb=None):
        return SL.check_request(partition, cpus, gpus, time_min, mem_gb, default_cpus=8, default_time_min=240, partitions=parts)

    r = check()  # the default partition, with what it can give
    assert (r.partition.name, r.cpus, r.gpus, r.time_min, r.mem_gb) == ("debug", 2, 0, 60, None)
    r = check("gpu")
    assert (r.cpus, r.gpus, r.time_min) == (8, 1, 240)
    assert check("long").time_min == 240
    assert check("gpu", cpus=64, gpus=2, mem_gb=400).partition.name == "gpu"

    refusals = [
        (dict(cpus=8), "invalid --cpus-per-cell=8 (make sweep CPUS=): no node can give a job 8 CPUs; allowed: 1..2 (partition 'debug'"),
        (dict(gpus=1), "invalid --gpus-per-cell=1 (make sweep GPUS=): no node can give a job 1 GPUs; allowed: 0..0"),
        (dict(mem_gb=30), "invalid --mem-per-cell=30 (make sweep MEM=, GB): no node can give a job 30 GB; allowed: at most 21.2"),
        (dict(time_min=61), "invalid --time-min=61 (make sweep TIME=, minutes): the partition's time limit is 60 min; allowed: 1..60"),
        (dict(partition="cpu"), "invalid --partition='cpu' (make sweep PARTITION=): SLURM has no such partition; "
                                "allowed: debug | gpu | long (default: debug)"),
        (dict(partition="gpu", cpus=64, gpus=4), "invalid combination --cpus-per-cell=64 --gpus-per-cell=4"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(SL.SlurmError) as err:
            check(**kwargs)
        assert message in str(err.value), (kwargs, str(err.value))
    parts["debug"].default = False
    with pytest.raises(SL.SlurmError, match=r"--partition \(make sweep PARTITION=\) is needed: SLURM has no default partition"):
        check()


def test_make_sweep_passes_the_slurm_knobs():
    proc = subprocess.run(["make", "-n", "-C", str(REPO_ROOT), "sweep", "EXP=fig1", "SCALE=smoke", "LAUNCHER=slurm", "PARTITION=gpu",
                           "TIME=30", "JOBS=4", "CPUS=2", "GPUS=1", "MEM=16", "ARGS=logger=none"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert ("-m factorial.sweep --exp fig1 --scale smoke --jobs 4 --launcher slurm --partition gpu --time-min 30 "
            "--cpus-per-cell 2 --gpus-per-cell 1 --mem-per-cell 16 -- logger=none") in proc.stdout, proc.stdout


def test_pending_reasons_that_never_resolve():
    for reason in ("PartitionConfig", "PartitionTimeLimit", "JobHeldAdmin", "QOSMaxCpuPerJobLimit", "AssocMaxWallDurationPerJobLimit"):
        assert SL.stuck_reason(reason), reason
    for reason in ("Resources", "Priority", "BeginTime", "JobArrayTaskLimit", "Dependency", "QOSGrpCpuLimit", "None", ""):
        assert SL.stuck_reason(reason) is None, reason


# --- a real cluster -------------------------------------------------------------------------------


def cluster_problem() -> str | None:
    """Why no SLURM cluster can run the tests here, or None."""
    start = "`bash scripts/slurm_cluster.sh start` (root) starts a single-node cluster"
    missing = [c for c in ("sinfo", "sbatch", "squeue", "scancel", "scontrol") if shutil.which(c) is None]
    if missing:
        return f"no SLURM here ({', '.join(missing)} not on PATH); {start}"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        last = [x.strip() for x in proc.stderr.splitlines() if x.strip()][-1:] or [f"exit status {proc.returncode}"]
        return f"no SLURM controller answers (sinfo: {last[0]}); {start}"
    if not any(s.startswith(("idle", "mixed", "allocated", "completing")) for s in proc.stdout.split()):
        return f"no SLURM node is up (sinfo: {' '.join(proc.stdout.split()) or 'no nodes'}); {start}"
    return None


@pytest.fixture(scope="module")
def partition() -> SL.Partition:
    """The cluster's default partition (the tests' jobs go there), or a skip saying why there is none."""
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)
    part = next((p for p in SL.read_partitions().values() if p.default), None)
    if part is None:
        pytest.skip("the SLURM cluster has no default partition")
    return part


def jobs(name: str) -> dict[str, tuple[str, str]]:
    """The user's live jobs of that name: id -> (state, reason)."""
    proc = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i|%T|%r"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return {i: (t, r) for i, t, r in (line.split("|") for line in proc.stdout.splitlines() if line.strip())}


@pytest.fixture
def cluster(partition) -> SL.Partition:
    """A test on the cluster (the partition its jobs go to)."""
    return partition


@dataclass
class OwnStudy:
    path: str  # the study file
    job: str  # the name of its SLURM jobs at the smoke scale


@pytest.fixture
def own(cluster, tmp_path, request) -> OwnStudy:
    """A test's own two-cell study (tests/cells.py's pair study, under a name of the test's), so that its
    SLURM jobs have a name no other test's have: tests on other pytest-xdist workers share the cluster,
    and a test sees, waits for and cancels only its own jobs. Those it leaves behind are cancelled."""
    name = request.node.name.removeprefix("test_")[:24].strip("_")
    study = OwnStudy(pair_study(tmp_path, name), f"factorial-{name}-smoke")
    yield study
    left = jobs(study.job)
    if left:
        subprocess.run(["scancel", *sorted(left)], timeout=30)


def slurm_sweep(root: Path, cache: str, exp: str, *args: str, cpus: str | None = "1", timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "factorial.sweep", "--exp", exp, "--scale", "smoke", "--launcher", "slurm",
           *(["--cpus-per-cell", cpus] if cpus else []), "--runs-root", str(root), "--cache-dir", cache, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def popen_sweep(root: Path, cache: str, exp: str, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "factorial.sweep", "--exp", exp, "--scale", "smoke", "--launcher", "slurm",
           "--cpus-per-cell", "1", "--runs-root", str(root), "--cache-dir", cache, *args]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def cells(found: dict[str, dict]) -> dict[str, dict]:
    """Summaries keyed by <cell>/seed<k> (without the runs root's study/scale prefix)."""
    return {key.split("/", 2)[2]: s for key, s in found.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir) -> dict[str, dict]:
    """The pair study with EXTRA through the local launcher: what every SLURM sweep must end with.

    Swept once for the whole session: the first pytest-xdist worker to need it sweeps under a lock in the
    workers' common temporary directory, the others read its runs."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # this session's: every worker's base directory is under it
    root = shared / "slurm-reference"
    with FileLock(str(shared / "slurm-reference.lock")):
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            cmd = [sys.executable, "-m", "factorial.sweep", "--exp", pair_study(root), "--scale", "smoke", "--jobs", "2",
                   "--runs-root", str(root / "runs"), "--cache-dir", cache_dir, *EXTRA]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            (root / "done").touch()
    found = cells(summaries(root / "runs"))
    assert len(found) == 2
    return found


@pytest.mark.slurm
@pytest.mark.parametrize("knob", ["cpus", "gpus", "mem", "time", "partition"])
def test_a_request_no_node_can_satisfy_exits_2_before_anything_runs(cluster, tmp_path, capsys, knob):
    part = cluster
    args = {
        "cpus": ["--cpus-per-cell", str(max(n.cpus for n in part.nodes) + 1)],
        "gpus": ["--gpus-per-cell", str(max(n.gpus for n in part.nodes) + 1)],
        "mem": ["--mem-per-cell", str(max(n.mem_mb for n in part.nodes) // 1024 + 2)],
        "time": ["--time-min", str(int(part.max_time_min or 0) + 1)],
        "partition": ["--partition", "no-such-partition"],
    }[knob]
    if knob == "time" and part.max_time_min is None:
        pytest.skip(f"partition {part.name} has no time limit")
    flag = {"cpus": "--cpus-per-cell", "gpus": "--gpus-per-cell", "mem": "--mem-per-cell", "time": "--time-min", "partition": "--partition"}[knob]
    root = tmp_path / "runs"
    rc = S.main(["--exp", "smoke", "--scale", "smoke", "--launcher", "slurm", "--jobs", "2", "--runs-root", str(root), *args,
                 "--", "logger=none"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"invalid {flag}=" in err and "allowed: " in err and "make sweep " in err, err
    if knob != "partition":
        assert f"partition '{part.name}'" in err, err  # what the partition offers
    assert not root.exists()
    assert jobs("factorial-smoke-smoke") == {}  # nothing was submitted (SLURM lists a finished job for minutes)


@pytest.mark.slurm
def test_the_issues_make_sweep_asking_more_cpus_than_a_node_has_exits_2(cluster, tmp_path):
    cpus = max(n.cpus for n in cluster.nodes) + 1
    proc = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "sweep", "EXP=smoke", "SCALE=smoke", "LAUNCHER=slurm",
                           f"PARTITION={cluster.name}", "JOBS=2", f"CPUS={cpus}", "ARGS=logger=none"],
                          capture_output=True, text=True, env={**ENV, "FACTORIAL_RUNS": str(tmp_path / "runs")}, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"invalid --cpus-per-cell={cpus} (make sweep CPUS=): no node can give a job {cpus} CPUs" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slurm
def test_a_job_that_can_never_start_is_cancelled_and_its_cell_reported(cluster, own, tmp_path, cache_dir):
    """Submitted past the check (as if the partition changed after it): SLURM leaves the job pending
    for PartitionConfig; the sweep cancels it and reports the cell failed instead of waiting forever."""
    import argparse

    study = S.load_study(own.path, ["logger=none"])
    runs, errors = S.plan_runs(study, "smoke", tmp_path / "runs", cache_dir=cache_dir)
    assert errors == [] and len(runs) == 2
    args = argparse.Namespace(time_min=10, gpus_per_cell=0, exp_name=study.name, scale="smoke", jobs=1, partition=cluster.name,
                              mem_per_cell=None)
    too_many = max(n.cpus for n in cluster.nodes) + 1
    executor = S.make_executor("slurm", tmp_path / ".submitit", args, cpus=too_many)
    reported, notes = [], []
    S.launch_submitit(runs[:2], executor, "slurm", 1, [], lambda run, summary, s: reported.append((run, summary)),
                      note=notes.append, slurm_poll_s=2)
    assert [r.seed for r, _ in reported] == [0, 0] and len(reported) == 2
    for _, summary in reported:
        assert summary["status"] == "failed"
        assert "can never start: pending for PartitionConfig" in summary["error"] and "was cancelled" in summary["error"], summary
    assert any(n.startswith("SLURM job array ") for n in notes), notes
    wait_for(lambda: not any(state == "PENDING" for state, _ in jobs(own.job).values()), "the stuck jobs to be cancelled", timeout=60)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_slurm_job_signalled_before_its_time_limit_is_requeued_and_its_cell_resumes(own, tmp_path, cache_dir):
    """SLURM's pre-timeout signal (USR2, what --signal=USR2@90 sends) reaches the job once its cell has a
    checkpoint: the job checkpoints and is requeued, and the cell resumes from its checkpoint.

    A requeued job starts again once its old credential has expired (scripts/slurm_cluster.sh sets
    20 s, SLURM's default is 120 s)."""
    study = Path(own.path)  # one cell: one job to signal
    study.write_text("description: one cell\ncells:\n  - {row: O, schedule.warmup: false}\n")
    root = tmp_path / "runs"
    sweep = popen_sweep(root, cache_dir, str(study), "--", "logger=none", "train.steps=1500", "train.checkpoint_every=100")
    try:
        wait_for(lambda: sweep.poll() is not None or any(root.rglob("checkpoints/step-*.pt")), "the cell's first checkpoint")
        assert sweep.poll() is None, sweep.communicate()[0][-3000:]
        (job_id,) = jobs(own.job)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        requeued = {}

        def back() -> bool:
            state = jobs(own.job).get(job_id)
            if state and state[0] == "PENDING":
                requeued["reason"] = state[1]
            return sweep.poll() is not None or bool(requeued)

        wait_for(back, "the job to be requeued", timeout=120)
        out = sweep.communicate(timeout=600)[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, out[-3000:]
    assert requeued, "the job was not requeued"
    (run_dir,) = run_dirs(root)
    assert S.read_summary(run_dir)["status"] == "completed"
    starts = json.loads((run_dir / "meta.json").read_text())["starts"]
    assert len(starts) == 2 and starts[0]["from_step"] == 0 and starts[1]["from_step"] >= 100, starts


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_of_a_running_array_ends_the_sweep_and_the_same_sweep_resumes(own, tmp_path, cache_dir, reference):
    root = tmp_path / "runs"
    sweep = popen_sweep(root, cache_dir, own.path, "--jobs", "1", *EXTRA)  # one cell trains, the other is pending
    try:
        def training_early() -> bool:  # a cell with a checkpoint and at least 400 steps to go
            for d in run_dirs(root):
                steps = [int(p.stem.split("-")[1]) for p in (d / "checkpoints").glob("step-*.pt")]
                if locked(d) and steps and max(steps) <= 200:
                    return True
            return sweep.poll() is not None

        wait_for(training_early, "a cell training with a checkpoint")
        assert sweep.poll() is None, sweep.communicate()[0][-3000:]
        arrays = {i.split("_")[0] for i in jobs(own.job)}
        assert len(arrays) == 1, arrays
        subprocess.run(["scancel", *arrays], check=True, timeout=30)
        out = sweep.communicate(timeout=180)[0]  # it ends by itself
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 1, out[-3000:]
    assert "ended CANCELLED before its cell finished" in out and "the same sweep again resumes" in out, out[-3000:]
    assert not any(locked(d) for d in run_dirs(root))

    again = slurm_sweep(root, cache_dir, own.path, "--jobs", "2", *EXTRA)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert cells(summaries(root)) == reference
    starts = [json.loads((d / "meta.json").read_text())["starts"] for d in run_dirs(root)]
    assert any(s[-1]["from_step"] > 0 for s in starts), starts  # resumed from a checkpoint, not started over


@pytest.mark.slurm
@pytest.mark.slow
def test_two_slurm_sweeps_of_one_study_at_once_train_each_cell_once(own, tmp_path, cache_dir, reference):
    """Two SLURM sweeps of one study at once end with the local launcher's results, each cell trained
    by one job; a third sweep submits nothing."""
    root = tmp_path / "runs"
    sweeps = [popen_sweep(root, cache_dir, own.path, "--jobs", "1", *EXTRA) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=600)[0] for p in sweeps]
    finally:
        for p in sweeps:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in sweeps] == [0, 0], [o[-2000:] for o in outs]
    assert cells(summaries(root)) == reference
    for d in run_dirs(root):
        starts = json.loads((d / "meta.json").read_text())["starts"]
        assert [s["from_step"] for s in starts] == [0], (d, starts)  # trained once, never by two jobs
    for out in outs:  # each says how to watch and cancel its array, and nothing about accounting
        assert "SLURM job array " in out and "scancel " in out, out[-3000:]
        assert "sacct" not in out, out[-3000:]  # no accounting on the test cluster, and no warning about it
    again = slurm_sweep(root, cache_dir, own.path, "--jobs", "2", *EXTRA)
    assert again.returncode == 0 and "2 skipped" in again.stdout, again.stdout[-3000:]
    assert "SLURM job" not in again.stdout  # nothing submitted


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failed_cell_is_reported_and_retried_by_the_next_slurm_sweep(cluster, own, tmp_path, cache_dir, reference):
    root = tmp_path / "runs"
    plan, _ = S.plan_runs(S.load_study(own.path, EXTRA[1:]), "smoke", root)
    victim = plan[0].run_dir
    victim.mkdir(parents=True)
    (victim / "checkpoints").write_text("not a directory")  # the trainer cannot save: the cell fails
    proc = slurm_sweep(root, cache_dir, own.path, "--jobs", "2", *EXTRA)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "1 failed" in proc.stdout and plan[0].cell.name in proc.stdout, proc.stdout[-3000:]
    (victim / "checkpoints").unlink()
    again = slurm_sweep(root, cache_dir, own.path, "--jobs", "2", *EXTRA, cpus=None)  # the CPUs the partition can give
    assert again.returncode == 0, again.stdout[-3000:]
    assert "1 completed" in again.stdout and "1 skipped" in again.stdout, again.stdout[-3000:]
    cpus = min(S.DEFAULT_SLURM_CPUS, max(n.cpus for n in cluster.nodes))
    assert f"SLURM: partition {cluster.name}, per cell {cpus} CPU(s)" in again.stdout, again.stdout[-3000:]
    assert cells(summaries(root)) == reference
