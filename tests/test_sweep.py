"""Studies and the sweep: expansion, names, bad input, resumability, launchers, interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factorial import sweep as S
from factorial import train as T
from factorial.config import REPO_ROOT

from cells import ENV, committed_runs, locked, pair_study, run_dirs, summaries, sweep_cli, sweep_here, wait_for

STABILITY_ROWS = ("A", "B", "C", "F", "H", "I", "J", "K", "L", "M", "N", "O")


# --- expansion and names (no training) -----------------------------------------------------------


def test_table2_has_44_cells_and_more_seeds_for_the_stability_cells():
    study = S.load_study("table2")
    assert len(study.cells) == 44
    by_name = {c.name: c for c in study.cells}
    assert len(by_name) == 44
    # three seeds: the 12 stability cells without warmup, G without warmup (C5), and with warmup the
    # reference A and both sides of every "≈" (B, C, D, H, J; N for C10, O and P for C11)
    # and every cell also runs on the confirmatory seeds of the rules the study names (experiments/rules/paper.yaml)
    with_warmup_refs = {"A", "B", "C", "D", "H", "J", "N", "O"}
    confirm = [3, 4, 5]
    assert list(study.rules.confirmatory_seeds) == confirm
    for row in STABILITY_ROWS:
        assert by_name[f"row={row},schedule.warmup=false"].seeds == [0, 1, 2, *confirm]
        assert by_name[f"row={row},schedule.warmup=true"].seeds == ([0, 1, 2] if row in with_warmup_refs else [0]) + confirm
    assert by_name["row=Q300,schedule.warmup=false"].seeds == [0, *confirm]
    assert by_name["row=G,schedule.warmup=false"].seeds == [0, 1, 2, *confirm]
    assert by_name["row=D,schedule.warmup=true"].seeds == [0, 1, 2, *confirm]
    assert by_name["row=D,schedule.warmup=false"].seeds == [0, *confirm]
    assert by_name["row=P,schedule.warmup=true"].seeds == [0, 1, 2, *confirm]
    assert sum(len(c.seeds) for c in study.cells) == 44 + 2 * (12 + 1 + 9) + 44 * 3
    # Names are deterministic, and --seeds replaces every cell's seeds.
    assert [c.name for c in S.load_study("table2").cells] == [c.name for c in study.cells]
    assert sum(len(c.seeds) for c in S.load_study("table2", seeds=[0]).cells) == 44
    assert all(c.seeds == [3, 4] for c in S.load_study("table2", seeds=[3, 4]).cells)


def test_fixed_and_non_semantic_overrides_are_not_in_the_names(tmp_path):
    study = S.load_study("fig1", ["logger=none", "train.threads=1", "train.steps=50"], seeds=[0])
    assert sorted(c.name for c in study.cells) == ["row=A,schedule.warmup=true,train.steps=50", "row=G,schedule.warmup=true,train.steps=50"]
    assert study.fixed == ["train.rms_every=1", "logger=none", "train.threads=1"]
    runs, errors = S.plan_runs(study, "smoke", tmp_path, cache_dir=str(tmp_path / "cache"), threads=2)
    assert errors == [] and len(runs) == 2
    run = runs[0]
    assert run.run_dir == tmp_path / "fig1" / "smoke" / run.cell.name / "seed0"
    assert "train.rms_every=1" in run.command and "train.progress=false" in run.command
    assert f'data.cache_dir="{tmp_path / "cache"}"' in run.command
    assert "train.threads=2" not in run.command  # given by the user
    # The run directory is the trainer's own: run_dir_for(cfg) with exp, scale, cell and seed.
    cfg = T.compose([o for o in run.command if not o.startswith("run_dir=")])
    assert cfg.cell == run.cell.name and cfg.train.rms_every == 1 and cfg.train.steps == 50
    assert T.run_dir_for(cfg) == REPO_ROOT / "runs" / "fig1" / "smoke" / run.cell.name / "seed0"
    # train.threads is cpu_count // jobs unless the config sets it (the smoke scale does: 1).
    unset = next(s for s in S.available_scales() if T.compose([f"scale={s}"]).train.threads is None)
    runs, _ = S.plan_runs(S.load_study("fig1"), unset, tmp_path, threads=3)
    assert all("train.threads=3" in r.command for r in runs)
    runs, _ = S.plan_runs(S.load_study("fig1"), "smoke", tmp_path, threads=3)
    assert all(not any(o.startswith("train.threads") for o in r.command) for r in runs)
    assert not (tmp_path / "fig1").exists()


def test_linked_axes_nulls_and_duplicate_cells():
    table3 = S.load_study("table3")
    assert len(table3.cells) == 6
    names = {c.name for c in table3.cells}
    assert ("model.embedding_init_std=null,model.embedding_multiplier=null,model.tie_embeddings=false,"
            "optim.beta2=0.98,optim=adam,schedule.warmup=true") in names
    assert ("model.embedding_init_std=1.0,model.embedding_multiplier=1.0,model.tie_embeddings=false,"
            "optim=adafactor,schedule.warmup=false") in names
    assert ("model.embedding_init_std=null,model.embedding_multiplier=1.0,model.tie_embeddings=false,"
            "optim.beta2=0.98,optim=adam,schedule.warmup=true") in names
    questions = {c.name: c for c in S.load_study("questions").cells}
    # Row O without warmup is in three groups: one cell, with the union of their seeds.
    assert questions["row=O,schedule.warmup=false"].seeds == [0, 1, 2]
    assert questions["optim.beta2_exponent=null,row=O,schedule.warmup=false"].seeds == [0]
    calibrate = S.load_study("calibrate")  # 10 rows × warmup on/off × 6 multipliers, 3 seeds each
    assert len(calibrate.cells) == 120 and {tuple(c.seeds) for c in calibrate.cells} == {(0, 1, 2)}
    assert {len(S.load_study(n).cells) for n in ("beta2_exponent", "clipping", "factoring", "smoke")} == {17, 12, 8, 4}


@pytest.mark.slow
@pytest.mark.parametrize("name", S.available_studies())  # one test a study: the workers share the ~1,000 cells
def test_every_study_composes_at_every_scale(tmp_path, name):
    """A value a scale's config refuses fails here, not at run time. Every cell, except that of cells
    that differ only in schedule.multiplier (a learning-rate sweep) only the smallest and the largest
    multiplier are composed: the config checks a multiplier against a range, so the values between
    cannot fail where both ends pass. The cells with runs committed at a scale are planned there by
    test_cell_identity.py's check of those runs (the same plan_runs), not twice."""
    study = S.load_study(name)
    committed = committed_runs()
    for scale in S.available_scales():
        done = {rid.rsplit("/", 1)[0] for rid in committed.get((name, scale), {})}
        cells = [c for c in _multiplier_extremes(study.cells) if c.name not in done]
        runs, errors = S.plan_runs(S.Study(study.name, study.path, study.description, cells, study.fixed), scale, tmp_path)
        assert errors == [], (name, scale, errors[:3])
        assert len(runs) == sum(len(c.seeds) for c in cells)
    assert not any(tmp_path.iterdir())


def _multiplier_extremes(cells: list) -> list:
    groups: dict[tuple, list] = {}
    for cell in cells:
        rest = tuple(sorted(o for o in cell.overrides if not o.startswith("schedule.multiplier=")))
        groups.setdefault(rest, []).append(cell)
    kept = []
    for group in groups.values():
        by_multiplier = sorted(group, key=lambda c: float(c.values.get("schedule.multiplier") or 0))
        kept += [by_multiplier[0]] + ([by_multiplier[-1]] if len(by_multiplier) > 1 else [])
    return kept


def test_multiplier_extremes_keep_every_other_cell():
    calibrate = S.load_study("calibrate").cells  # 20 row x warmup groups, 6 multipliers each
    kept = _multiplier_extremes(calibrate)
    assert len(kept) == 40
    multipliers = [float(c.values["schedule.multiplier"]) for c in calibrate]
    assert sorted({float(c.values["schedule.multiplier"]) for c in kept}) == [min(multipliers), max(multipliers)]
    table2 = S.load_study("table2").cells
    assert _multiplier_extremes(table2) == table2


def test_worker_slots_share_the_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    gpus = S.gpu_ids()
    assert gpus == ["4", "6"]
    assert [S.slot_env(i, gpus) for i in range(3)] == [{"CUDA_VISIBLE_DEVICES": g} for g in ("4", "6", "4")]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert S.gpu_ids() == ["0", "1"]
    assert S.slot_env(5, ["0"]) == {}  # one GPU: every cell on it, as the trainer picks it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert S.gpu_ids() == [] and S.slot_env(1, []) == {}


def test_dry_run_lists_the_runs_and_writes_nothing(tmp_path, capsys):
    assert S.main(["--exp", "smoke", "--scale", "smoke", "--runs-root", str(tmp_path / "runs"), "--dry-run", "--", "logger=none"]) == 0
    out = capsys.readouterr().out
    assert "pending   row=A,schedule.warmup=true/seed0" in out
    assert "4 runs (4 to run, 0 already finished)" in out
    assert not (tmp_path / "runs").exists()
    assert "extra overrides" not in out  # logger=none changes no result
    assert S.main(["--exp", "smoke", "--scale", "smoke", "--runs-root", str(tmp_path / "runs"), "--dry-run", "--",
                   "logger=none", "train.steps=3000"]) == 0
    assert "extra overrides train.steps=3000 change what every cell computes" in capsys.readouterr().out


def test_a_ctrl_c_after_the_last_cell_ends_the_sweep_as_finished(tmp_path, cache_dir, monkeypatch):
    """Nothing was stopped: the sweep says so and exits as a finished one (0), so `make sweep` builds the tables."""
    def every_cell_then_ctrl_c(runs, jobs, gpus, report, progress=None):
        for r in runs:
            r.run_dir.mkdir(parents=True, exist_ok=True)
            summary = {"status": "completed", "val_ppl": 100.0}
            (r.run_dir / "summary.json").write_text(json.dumps(summary))
            report(r, summary, 0.0)
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "launch_local", every_cell_then_ctrl_c)
    proc = sweep_here("--exp", pair_study(tmp_path), "--scale", "smoke", "--jobs", "1", "--", "logger=none",
                      root=tmp_path / "runs", cache=cache_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SIGINT after every cell had finished: nothing was stopped" in proc.stdout
    assert "the running cells were stopped" not in proc.stdout and "tables: make table" in proc.stdout


# --- bad input: exit 2, nothing written --------------------------------------------------------


def _bad_study(tmp_path: Path, text: str) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--exp", "nope"], "invalid --exp='nope'; allowed: beta2_exponent | calibrate"),
        (["--exp", "smoke", "--scale", "huge"], "invalid --scale='huge'; allowed: "),
        (["--exp", "smoke", "--scale", "smoke", "--", "optim.beta1=2"], "invalid optim.beta1=2.0; allowed: 0 <= beta1 < 1"),
        (["--exp", "smoke", "--scale", "smoke", "--", "nonsense=1"], "Could not override 'nonsense'"),
        (["--exp", "smoke", "--scale", "smoke", "--", "train.seed=1"], "invalid key 'train.seed' in extra overrides"),
        (["--exp", "smoke", "--scale", "smoke", "--", "row=B"], "the study sets row"),
        (["--exp", "smoke", "--scale", "smoke", "--seeds", "x"], "invalid --seeds='x'"),
        (["--exp", "smoke", "--scale", "smoke", "--jobs", "0"], "invalid --jobs=0"),
        (["--exp", "smoke", "--scale", "smoke", "--launcher", "pbs"], "invalid --launcher='pbs'; allowed: local | submitit_local | slurm"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, expected):
    root = tmp_path / "runs"
    assert S.main(["--runs-root", str(root), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not root.exists()


def test_unknown_scale_lists_the_scales(capsys, tmp_path):
    assert S.main(["--exp", "smoke", "--scale", "huge", "--runs-root", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    for scale in S.available_scales():
        assert scale in err


@pytest.mark.parametrize(
    "text,expected",
    [
        ("grid:\n  row: [A, Z]\n", "Could not find 'row/Z'"),
        ("grid:\n  row: [A]\nbogus: 1\n", "invalid key 'bogus' in study file"),
        ("grid:\n  row: [A]\nmore_seeds:\n  - when: {row: B}\n    seeds: [1]\n", "matches no cell"),
        ("grid:\n  row: [A]\n  scale: [smoke]\n", "invalid key 'scale' in grid"),
        ("grid:\n  row: [A]\nseeds: [-1]\n", "invalid seeds=[-1]"),
        ("cells:\n  - {row: A, optim.clip_threshold: -1}\n", "optim.clip_threshold=-1"),
        ("description: nothing\n", "defines no cells"),
    ],
)
def test_bad_study_file_exits_2_and_writes_nothing(tmp_path, capsys, text, expected):
    root = tmp_path / "runs"
    assert S.main(["--exp", _bad_study(tmp_path, text), "--scale", "smoke", "--runs-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not root.exists()


def test_a_run_dir_with_another_config_is_refused_before_anything_runs(tmp_path, capsys):
    root = tmp_path / "runs"
    study = S.load_study("smoke")
    runs, _ = S.plan_runs(study, "smoke", root)
    # A run directory left by an older version of the study (another step count).
    from omegaconf import OmegaConf

    from factorial import config as C

    cfg = T.compose([*runs[0].command, "train.steps=31"])
    runs[0].run_dir.mkdir(parents=True)
    (runs[0].run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(C.to_dict(cfg))))
    before = sorted(p.name for p in root.rglob("*"))
    assert S.main(["--exp", "smoke", "--scale", "smoke", "--runs-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "holds a run with a different config (train.steps: 31 -> 30)" in err, err
    assert sorted(p.name for p in root.rglob("*")) == before


def test_stored_runs_are_finished_and_a_stored_run_with_another_config_is_refused(tmp_path, capsys):
    """A run the study's results store holds is finished (the sweep plans nothing for it); one stored under
    another config (the scale or study file changed after it was stored) stops the sweep before anything runs."""
    from factorial import config as C
    from factorial import store as ST

    root, results = tmp_path / "runs", tmp_path / "results"
    study = S.load_study("smoke")
    runs, _ = S.plan_runs(study, "smoke", root)
    records = {}
    for r, steps in zip(runs[:2], (30, 31)):
        cfg = C.to_dict(T.compose([*r.command, f"train.steps={steps}"]))
        records[f"{r.cell.name}/seed{r.seed}"] = {"run": f"{r.cell.name}/seed{r.seed}", "config": cfg, "meta": None,
                                                  "summary": {"status": "completed", "val_ppl": 99.0},
                                                  "metrics": [{"step": 0}], "log": None}
    ST.save(ST.store_path(results, "smoke", "smoke"), records)
    planned, errors = S.plan_runs(study, "smoke", root, results=results)
    assert [S.status_of(r) for r in planned][:1] == ["completed"] and planned[0].stored is not None
    assert len(errors) == 1 and "stored in" in errors[0] and "(train.steps: 31 -> 30)" in errors[0], errors
    assert "a study or scale file changed after its runs were stored" in errors[0]
    assert S.main(["--exp", "smoke", "--scale", "smoke", "--runs-root", str(root), "--results", str(results)]) == 2
    assert "holds a run with a different config" in capsys.readouterr().err
    assert not root.exists()


def test_slurm_launcher_without_slurm_fails_clearly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch, no srun, whatever this machine has
    root = tmp_path / "runs"
    rc = S.main(["--exp", "smoke", "--scale", "smoke", "--launcher", "slurm", "--partition", "gpu", "--time-min", "30",
                 "--runs-root", str(root), "--", "logger=none"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "invalid --launcher=slurm: SLURM is not available on this machine (`sbatch` is not on PATH" in err, err
    assert not root.exists()


def test_slurm_executor_parameters(tmp_path, monkeypatch):
    """The executor the slurm launcher builds (submitit's own check of the parameters, no cluster)."""
    import argparse

    import submitit

    built = {}

    class FakeAuto:
        def __init__(self, folder, cluster):
            built.update(folder=folder, cluster=cluster)

        def update_parameters(self, **params):
            built.update(params)

    monkeypatch.setattr(submitit, "AutoExecutor", FakeAuto)
    monkeypatch.setattr(S.shutil, "which", lambda name: f"/usr/bin/{name}")
    args = argparse.Namespace(time_min=90, gpus_per_cell=1, exp_name="table2", scale="paper", jobs=8, partition="gpu")
    S.make_executor("slurm", tmp_path / ".submitit", args, cpus=8)
    assert built == dict(folder=tmp_path / ".submitit", cluster="slurm", timeout_min=90, gpus_per_node=1, cpus_per_task=8,
                         name="factorial-table2-paper", slurm_array_parallelism=8, slurm_partition="gpu")
    # And the real AutoExecutor accepts exactly these parameters (local cluster: no SLURM needed).
    monkeypatch.undo()
    real = submitit.AutoExecutor(folder=tmp_path / ".submitit", cluster="local")
    real.update_parameters(**{k: v for k, v in built.items() if k not in ("folder", "cluster")})


def test_makefile_has_a_sweep_target():
    proc = subprocess.run(["make", "-n", "-C", str(REPO_ROOT), "sweep", "EXP=fig1", "SCALE=smoke", "JOBS=2", "ARGS=logger=none",
                           "PARTITION=gpu", "TIME=30", "LAUNCHER=slurm"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert ("-m factorial.sweep --exp fig1 --scale smoke --jobs 2 --launcher slurm --partition gpu --time-min 30 -- logger=none"
            in proc.stdout), proc.stdout


# --- real sweeps ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_finishes_and_a_second_run_trains_nothing(tmp_path, cache_dir):
    """The command line's sweep of a small study (the pair; the smoke study's four cells are Table 2's,
    which test_every_table2_cell_trains trains) ends with every run finished; the same sweep again
    starts no process."""
    root, study = tmp_path / "runs", pair_study(tmp_path)
    proc = sweep_cli("--exp", study, "--scale", "smoke", "--jobs", "2", "--", "logger=none", root=root, cache=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = summaries(root)
    planned = {f"pair/smoke/{c.name}/seed{k}" for c in S.load_study(study).cells for k in c.seeds}
    assert set(found) == planned and len(found) == 2
    assert {s["status"] for s in found.values()} <= {"completed", "diverged"}
    assert "0 failed, 0 skipped" in proc.stdout and f"make table EXP={study} SCALE=smoke" in proc.stdout
    logs = {p: p.read_text() for p in root.rglob("train.log")}
    assert len(logs) == 2

    again = sweep_here("--exp", study, "--scale", "smoke", "--jobs", "2", "--", "logger=none", root=root, cache=cache_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 completed, 0 diverged, 0 failed, 2 skipped" in again.stdout
    assert {p: p.read_text() for p in root.rglob("train.log")} == logs  # no process was started
    assert summaries(root) == found

    # A fresh clone has no runs/, only the results store that make table wrote: its sweep trains nothing and
    # writes the stored runs into the new runs root, file for file as they were trained.
    results = tmp_path / "results"
    from factorial import table as TBL

    assert TBL.main(["--exp", study, "--scale", "smoke", "--runs-root", str(root), "--out", str(results)]) == 0
    assert (results / "pair" / "smoke" / "runs.jsonl.gz").is_file()
    fresh = tmp_path / "fresh"
    dry = sweep_here("--exp", study, "--scale", "smoke", "--results", str(results), "--dry-run", root=fresh)
    assert dry.returncode == 0 and dry.stdout.count("\nstored ") == 2 and "(0 to run" in dry.stdout, dry.stdout
    assert not fresh.exists()
    clone = sweep_here("--exp", study, "--scale", "smoke", "--jobs", "2", "--results", str(results), "--", "logger=none",
                       root=fresh, cache=cache_dir)
    assert clone.returncode == 0, clone.stderr[-3000:]
    assert "2 runs finished in" in clone.stdout and "0 completed, 0 diverged, 0 failed, 2 skipped" in clone.stdout
    for old in (root / "pair" / "smoke").glob("*/seed0"):
        new = fresh / "pair" / "smoke" / old.parent.name / "seed0"
        for name in ("config.yaml", "meta.json", "summary.json", "metrics.jsonl", "train.log"):
            assert (new / name).read_bytes() == (old / name).read_bytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("part", range(4))  # a quarter of the cells a test: the workers share them
def test_every_table2_cell_trains(tmp_path, cache_dir, part):
    """Each of Table 2's 44 cells (every row, with and without warmup) composes at the smoke scale and
    trains a few steps to a finished summary: no row's optimizer or schedule crashes the trainer."""
    from cells import run, smoke

    cells = S.load_study("table2").cells
    assert len(cells) == 44
    for i, cell in list(enumerate(cells))[part::4]:
        summary = run(smoke(tmp_path / f"cell{i}", cache_dir, *cell.overrides, "train.steps=4", "train.eval_every=4",
                            "train.log_every=2", "train.rms_every=2", "train.checkpoint_every=4", "train.eval_tokens=512"))
        assert summary["status"] in ("completed", "diverged"), (cell.name, summary)
        assert summary["step"] == 4 or summary["status"] == "diverged", (cell.name, summary)
        assert (tmp_path / f"cell{i}" / "metrics.jsonl").is_file()


@pytest.mark.slow
def test_smoke_study_with_the_submitit_local_launcher(tmp_path, cache_dir):
    root = tmp_path / "runs"
    proc = sweep_here("--exp", pair_study(tmp_path), "--scale", "smoke", "--launcher", "submitit_local", "--jobs", "2", "--",
                     "logger=none", root=root, cache=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = summaries(root)
    assert len(found) == 2 and {s["status"] for s in found.values()} <= {"completed", "diverged"}
    assert (root / "pair" / "smoke" / ".submitit").is_dir()
    assert "2 completed" in proc.stdout or "diverged" in proc.stdout


@pytest.mark.slow
def test_killed_and_terminated_sweeps_resume_to_the_same_summaries(tmp_path, cache_dir):
    study = pair_study(tmp_path)
    extra = ["--", "logger=none", "train.steps=200", "train.checkpoint_every=50"]
    reference = tmp_path / "reference"
    proc = sweep_here("--exp", study, "--scale", "smoke", "--jobs", "2", *extra, root=reference, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = summaries(reference)
    assert len(expected) == 2

    root = tmp_path / "cut"
    # One cell at a time, so that one has finished while the other trains when the kill comes.
    cmd = [sys.executable, "-m", "factorial.sweep", "--exp", study, "--scale", "smoke", "--runs-root", str(root),
           "--cache-dir", cache_dir, "--jobs", "1", *extra]

    def start() -> subprocess.Popen:
        # Its own process group (session), as a shell job would be: killpg reaches the cells too.
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def finished() -> list[Path]:
        return [d for d in run_dirs(root) if (d / "summary.json").exists()]

    # 1. SIGKILL of the whole process group once a cell has finished and another has saved a checkpoint.
    sweep = start()
    wait_for(lambda: finished() and any(locked(d) and any((d / "checkpoints").glob("step-*.pt"))
                                        for d in run_dirs(root) if d not in finished()),
             "one finished cell and one training past its first checkpoint")
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=30)
    time.sleep(0.2)
    assert not any(locked(d) for d in run_dirs(root)), "a cell survived the killed process group"
    n_done = len(finished())
    assert n_done < 2

    # 2. SIGTERM of the sweep alone: it stops its running cell and exits 143.
    sweep = start()
    wait_for(lambda: any(locked(d) for d in run_dirs(root)), "a cell training")
    sweep.send_signal(signal.SIGTERM)
    out, _ = sweep.communicate(timeout=60)
    assert sweep.returncode == 128 + signal.SIGTERM, out
    assert "interrupted" in out
    assert not any(locked(d) for d in run_dirs(root)), "SIGTERM left a cell running"

    # 3. Run to the end: the same summaries as the sweep that was never interrupted.
    proc = sweep_here("--exp", study, "--scale", "smoke", "--jobs", "2", *extra, root=root, cache=cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = summaries(root)
    assert got == expected
    # The killed cell was resumed from its checkpoint rather than started over.
    starts = [json.loads((d / "meta.json").read_text())["starts"] for d in run_dirs(root)]
    assert sum(len(s) for s in starts) > 2 and any(st["from_step"] > 0 for s in starts for st in s), starts


def parent_pid(pid: int) -> int:
    """The parent of a live process, from /proc/<pid>/stat (the field after the parenthesised name)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


@pytest.mark.slow
def test_a_submitit_job_at_its_time_limit_is_requeued_and_its_cell_resumes(tmp_path, cache_dir):
    """What SLURM does at a time limit, with submitit's local executor: SIGUSR2 -> CellJob.checkpoint.

    The signal is sent by the test once the cell has written its first checkpoint, rather than by
    the executor's clock: a timer would make the test depend on how fast this machine trains.
    """
    import submitit

    study = S.load_study("smoke", ["logger=none", "train.steps=1000", "train.checkpoint_every=100"])
    runs, errors = S.plan_runs(study, "smoke", tmp_path / "runs", cache_dir=cache_dir)
    assert errors == []
    run = next(r for r in runs if r.cell.values["row"] == "O")
    executor = submitit.LocalExecutor(folder=tmp_path / ".submitit", max_num_timeout=3)
    executor.update_parameters(timeout_min=60)  # the executor's own time limit never comes
    run.run_dir.mkdir(parents=True)
    job = executor.submit(S.CellJob(), run.command, str(run.run_dir), dict(ENV))

    checkpoints = run.run_dir / "checkpoints"
    wait_for(lambda: job.done() or any(checkpoints.glob("step-*.pt")), "the cell's first checkpoint")
    assert not job.done(), job.result()
    trainer = int((run.run_dir / ".lock").read_text())
    controller = job._process.pid  # submitit's local controller: it requeues a job whose task exits for a timeout
    task = trainer
    while parent_pid(task) != controller:  # the submitit task that runs CellJob, an ancestor of the trainer
        task = parent_pid(task)
        assert task > 1, "the trainer is not a descendant of the submitit job"
    os.kill(task, submitit.JobEnvironment._usr_sig())  # what SLURM sends before the time limit

    assert job.result() == 0
    assert S.read_summary(run.run_dir)["status"] == "completed"
    starts = json.loads((run.run_dir / "meta.json").read_text())["starts"]
    assert len(starts) == 2 and starts[0]["from_step"] == 0 and starts[1]["from_step"] >= 100, starts


@pytest.mark.slow
def test_two_sweeps_on_the_same_study_train_each_cell_once(tmp_path, cache_dir):
    """Started together on one runs root: both finish, no cell is trained twice or by both at once."""
    extra = ["--", "logger=none", "train.steps=150", "train.checkpoint_every=50"]
    root = tmp_path / "runs"
    cmd = [sys.executable, "-m", "factorial.sweep", "--exp", pair_study(tmp_path), "--scale", "smoke", "--runs-root",
           str(root), "--cache-dir", cache_dir, "--jobs", "1", *extra]
    sweeps = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in sweeps]
    assert [p.returncode for p in sweeps] == [0, 0], outs
    dirs = run_dirs(root)
    assert len(dirs) == 2
    for d in dirs:
        assert json.loads((d / "summary.json").read_text())["status"] in ("completed", "diverged")
        starts = json.loads((d / "meta.json").read_text())["starts"]
        assert [s["from_step"] for s in starts] == [0], (d, starts)  # trained once, never by two processes
        records = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in records]
        assert steps == sorted(steps)
        logged = [r["step"] for r in records if "train/loss" in r]
        assert len(logged) == len(set(logged))  # no step logged by two trainers


@pytest.mark.slow
def test_a_failed_cell_does_not_stop_the_sweep_and_is_retried(tmp_path, cache_dir):
    """One cell crashes (its checkpoint directory is a file, so it cannot save); the others finish, the
    sweep exits 1 and says so; once the cause is gone the next sweep retries only that cell."""
    extra = ["--", "logger=none"]
    study, root = pair_study(tmp_path), tmp_path / "runs"
    plan, _ = S.plan_runs(S.load_study(study), "smoke", root)
    victim = plan[0].run_dir
    victim.mkdir(parents=True)
    (victim / "checkpoints").write_text("not a directory")
    proc = sweep_here("--exp", study, "--scale", "smoke", *extra, root=root, cache=cache_dir)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "1 failed" in proc.stdout
    statuses = {d.parent.name: json.loads((d / "summary.json").read_text())["status"] for d in run_dirs(root)}
    assert sorted(statuses.values()) == ["completed", "failed"]
    (victim / "checkpoints").unlink()
    proc = sweep_here("--exp", study, "--scale", "smoke", *extra, root=root, cache=cache_dir)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 completed" in proc.stdout and "1 skipped" in proc.stdout


# --- the first hour: help, jobs, progress ------------------------------------------------------------------


def test_sweep_help_lists_the_studies_and_scales(tmp_path):
    proc = sweep_cli("--help", root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in S.available_studies() + S.available_scales():
        assert name in proc.stdout, name
    assert "Table 2 — rows A–P" in proc.stdout  # the study's description


def test_make_help_lists_targets_studies_and_scales():
    proc = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    for word in ("make smoke", "make sweep", "make table", "make bench", "make test", "table2", "smoke", "paper",
                 "factorial.train --help"):
        assert word in proc.stdout, word


def test_jobs_auto_is_one_cell_per_core_or_per_gpu(tmp_path):
    import os

    assert 1 <= S.auto_jobs([]) <= (os.cpu_count() or 1)
    assert S.auto_jobs(["0", "1", "2"]) == 3
    args = S.parse_args(["--exp", "smoke", "--scale", "smoke"])
    assert args.jobs == "auto"
    S.check_args(args)
    assert args.jobs == "auto"
    args = S.parse_args(["--exp", "smoke", "--scale", "smoke", "--jobs", "3"])
    S.check_args(args)
    assert args.jobs == 3
    with pytest.raises(S.SweepError, match="invalid --jobs=many; allowed: an integer >= 1, or auto"):
        S.check_args(S.parse_args(["--jobs", "many"]))


def test_progress_line_shows_a_running_cells_step_and_loss(tmp_path):
    cell = S.Cell("row=A,schedule.warmup=true", ["row=A", "schedule.warmup=true"], {}, [0])
    run = S.Run(cell, 0, tmp_path, [], steps=1200)
    assert S.latest_progress(run) == "row=A,schedule.warmup=true/seed0 starting"
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 0, "model/params": 10}) + "\n")
        f.write(json.dumps({"step": 20, "train/loss": 4.25, "train/lr": 1e-3}) + "\n")
        f.write(json.dumps({"step": 20, "rms_u/tok_emb": 1.0}) + "\n")
        f.write('{"step": 40, "train/lo')  # a line being written
    assert S.latest_progress(run) == "row=A,schedule.warmup=true/seed0 step 20/1200 loss 4.250"


def test_a_run_two_studies_share_is_trained_once(tmp_path, cache_dir):
    """The same cell (identity and seed) in a second study is not trained again: its run directory becomes
    a view of the first study's finished run (same numbers, config.yaml naming its own study, meta.json
    saying where it was trained); a cell of its own is trained; nothing existing is replaced."""
    root = tmp_path / "runs"
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("description: one\ngrid:\n  row: [A]\n  schedule.warmup: [true]\nfixed: [train.steps=8]\n")
    # the shared cell spelled differently (β1 = 0 is row A's and the default) and a cell of its own
    two.write_text("description: two\ncells:\n  - {row: A, schedule.warmup: true}\n"
                   "  - {row: B, schedule.warmup: true}\nfixed: [train.steps=8]\n")
    first = sweep_here("--exp", str(one), "--scale", "smoke", "--jobs", "1", "--", "logger=none", "train.threads=1",
                      root=root, cache=cache_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    dry = sweep_here("--exp", str(two), "--scale", "smoke", "--dry-run", "--", "train.threads=1", root=root, cache=cache_dir)
    assert "1 to run, 1 shared with another study's finished runs" in dry.stdout, dry.stdout
    # a study that asks for more than the finished run logged (RMS(U) every step; smoke logs it every 5) gets
    # its own run: reuse must not change what the report can read
    finer = sweep_here("--exp", str(two), "--scale", "smoke", "--dry-run", "--", "train.threads=1", "train.rms_every=1",
                       root=root, cache=cache_dir)
    assert "(2 to run, 0 already finished)" in finer.stdout, finer.stdout
    coarser = sweep_here("--exp", str(two), "--scale", "smoke", "--dry-run", "--", "train.threads=1", "train.rms_every=20",
                         root=root, cache=cache_dir)
    assert "1 to run, 1 shared with another study's finished runs" in coarser.stdout, coarser.stdout
    # another thread count rounds differently, so it would not compute the same numbers: not shared
    other = sweep_here("--exp", str(two), "--scale", "smoke", "--dry-run", "--", "train.threads=2", root=root, cache=cache_dir)
    assert "(2 to run, 0 already finished)" in other.stdout, other.stdout
    assert not (root / "two").exists()  # a dry run writes nothing
    second = sweep_here("--exp", str(two), "--scale", "smoke", "--jobs", "1", "--", "logger=none", "train.threads=1",
                       root=root, cache=cache_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 runs shared with other studies' finished runs" in second.stdout and "1 completed" in second.stdout
    src = root / "one/smoke/row=A,schedule.warmup=true/seed0"
    view = root / "two/smoke/row=A,schedule.warmup=true/seed0"
    found = summaries(root)
    assert found["two/smoke/row=A,schedule.warmup=true/seed0"] == found["one/smoke/row=A,schedule.warmup=true/seed0"]
    assert (view / "metrics.jsonl").read_bytes() == (src / "metrics.jsonl").read_bytes()
    assert json.loads((view / "meta.json").read_text())["shared_from"] == "one/smoke/row=A,schedule.warmup=true/seed0"
    assert not (view / "checkpoints").exists()
    import yaml

    cfg = yaml.safe_load((view / "config.yaml").read_text())
    assert cfg["exp"] == "two" and cfg["run_dir"] == str(view)
    assert "two/smoke/row=B,schedule.warmup=true/seed0" in found  # its own cell was trained
    # a third sweep of either study trains nothing and leaves both runs as they are
    again = sweep_here("--exp", str(two), "--scale", "smoke", "--jobs", "1", "--", "logger=none", "train.threads=1",
                      root=root, cache=cache_dir)
    assert "0 completed, 0 diverged, 0 failed, 2 skipped" in again.stdout, again.stdout
    assert summaries(root) == found
