"""One cell end to end on the Shakespeare corpus: run directory, determinism, resume, W&B, bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factorial import cli as CLI
from factorial import runfiles as RF
from factorial import train as T
from factorial.config import REPO_ROOT
from factorial.runlog import read_metrics
from wandb_offline import read_offline_wandb_history

from cells import Crash, run, smoke, stable, stable_summary


def test_cell_writes_its_run_directory(tmp_path, cache_dir):
    summary = run(smoke(tmp_path / "a", cache_dir, "row=H"))
    d = tmp_path / "a"
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "summary.json"):
        assert (d / name).is_file(), name
    assert summary["status"] == "completed" and summary["step"] == 30
    assert summary["tokens"] == 30 * 8 * 32
    assert math.isfinite(summary["val_ppl"]) and math.isfinite(summary["test_ppl"])
    assert summary["val_ppl"] == pytest.approx(math.exp(summary["val_loss"]))
    assert summary["state_bytes"] > 0 and summary["params"] > 0
    meta = json.loads((d / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["device"] == "cpu"
    assert set(meta["data"]) >= {"corpus_sha256", "tokenizer_sha256", "tokens_sha256"}
    assert meta["packages"]["torch"].startswith("2.13.0")
    assert "commit" in meta["git"] and "dirty" in meta["git"]
    kernel = meta["starts"][0]["adafactor_c_kernel"]  # which implementation of the same math ran
    assert kernel == "loaded" or kernel.startswith("unavailable: ")
    records = read_metrics(d / "metrics.jsonl")
    logged = {k for r in records for k in r}
    assert {"train/loss", "train/lr", "train/grad_norm", "opt/beta2_t", "opt/clip_frac", "val/ppl", "test/ppl"} <= logged
    assert {"rms_u/tok_emb", "rms_u/attn_proj.0", "rms_u/ff1.0", "perf/tokens_per_s"} <= logged
    # the run-file schema (factorial.runfiles) names every file, metric and summary key a run writes
    metric_names = {v for k, v in vars(RF).items() if k.isupper() and isinstance(v, str) and "/" in v}
    assert logged == {RF.STEP} | metric_names | set(RF.RMS_KEYS)
    assert tuple(summary) == RF.SUMMARY_KEYS and summary["status"] in RF.STATUSES
    assert sorted(p.name for p in d.iterdir()) == sorted([*RF.KEPT, RF.LOCK, RF.CHECKPOINTS])
    assert set(T.Transformer(T.C.PRESETS["tiny"]).figure1_matrices()) == set(RF.FIG1_MATRICES)
    # one record per logged step (docs/METRICS.md): the test split is in the last step's record
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)
    assert {"test/ppl", "val/ppl", "train/loss"} <= set(records[-1]) and records[-1]["step"] == 30
    # The schedule: row H is an absolute step, α_t = 0.1·s_t with W = 3 (a tenth of 30 steps).
    lr5 = next(r["train/lr"] for r in records if r["step"] == 5)
    assert lr5 == pytest.approx(0.1 * 1e-2 * min(5 / 3, math.sqrt(3 / 5)))


def test_same_seed_gives_the_same_losses_and_another_seed_does_not(tmp_path, cache_dir):
    a = run(smoke(tmp_path / "a", cache_dir))
    b = run(smoke(tmp_path / "b", cache_dir))
    c = run(smoke(tmp_path / "c", cache_dir, "train.seed=1"))
    ma, mb = stable(read_metrics(tmp_path / "a/metrics.jsonl")), stable(read_metrics(tmp_path / "b/metrics.jsonl"))
    assert ma == mb
    assert stable_summary(a) == stable_summary(b)
    assert c["val_loss"] != a["val_loss"]


def test_a_finished_cell_is_not_trained_again(tmp_path, cache_dir, monkeypatch):
    first = run(smoke(tmp_path / "a", cache_dir))

    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(T, "_train", boom)
    assert run(smoke(tmp_path / "a", cache_dir)) == first


def test_interrupted_cell_resumes_to_the_same_numbers(tmp_path, cache_dir, monkeypatch):
    reference = run(smoke(tmp_path / "ref", cache_dir, "row=P", "model.dropout=0.1"))

    real_save = T.save_checkpoint
    calls = {"n": 0}

    def crash_on_second_checkpoint(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # step 20: the step-10 checkpoint exists, metrics up to 20 are logged
            raise Crash()
        return real_save(*args, **kwargs)

    monkeypatch.setattr(T, "save_checkpoint", crash_on_second_checkpoint)
    with pytest.raises(Crash):
        run(smoke(tmp_path / "cut", cache_dir, "row=P", "model.dropout=0.1"))
    assert not (tmp_path / "cut/summary.json").exists()
    assert max(r["step"] for r in read_metrics(tmp_path / "cut/metrics.jsonl")) == 20
    monkeypatch.setattr(T, "save_checkpoint", real_save)

    resumed = run(smoke(tmp_path / "cut", cache_dir, "row=P", "model.dropout=0.1"))
    assert stable_summary(resumed) == stable_summary(reference)
    assert stable(read_metrics(tmp_path / "cut/metrics.jsonl")) == stable(read_metrics(tmp_path / "ref/metrics.jsonl"))
    meta = json.loads((tmp_path / "cut/meta.json").read_text())
    assert [s["from_step"] for s in meta["starts"]] == [0, 10]


def test_a_different_config_in_an_existing_run_dir_is_refused(tmp_path, cache_dir):
    run(smoke(tmp_path / "a", cache_dir, "row=A"))
    before = (tmp_path / "a/summary.json").read_text()
    with pytest.raises(T.ConfigError, match="different config.*optim"):
        run(smoke(tmp_path / "a", cache_dir, "row=B"))
    assert (tmp_path / "a/summary.json").read_text() == before


def test_divergence_is_a_result(tmp_path, cache_dir):
    summary = run(smoke(tmp_path / "d", cache_dir, "row=Q300", "schedule.warmup=false", "schedule.multiplier=1000"))
    assert summary["status"] == "diverged"
    assert summary["diverged_at"] is not None and summary["val_ppl"] is None
    saved = json.loads((tmp_path / "d/summary.json").read_text())
    assert saved["status"] == "diverged" and saved["steps"] == 30


@pytest.mark.parametrize("row", ["A", "Q300"])
def test_the_trainer_reads_from_the_device_only_at_steps_that_log(tmp_path, cache_dir, monkeypatch, row):
    """Reading a tensor to the host waits for the GPU: between the steps that log, evaluate or save,
    a training step never does (on the CPU the same calls are counted). The gradient norm that is
    logged is measured without clipping, i.e. without rewriting every gradient."""
    import torch

    steps_done = {"n": 0}
    reads: list[tuple[int, str]] = []
    real_backward = torch.Tensor.backward

    def backward(self, *args, **kwargs):  # once per training step; evaluation never calls it
        steps_done["n"] += 1
        return real_backward(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", backward)
    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        real = getattr(torch.Tensor, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            reads.append((steps_done["n"], _name))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)

    def no_clipping(*args, **kwargs):
        raise AssertionError("clip_grad_norm_ rewrites every gradient to measure their norm")

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", no_clipping)
    every = ["train.steps=30", "train.log_every=10", "train.rms_every=10", "train.eval_every=15", "train.checkpoint_every=20"]
    summary = run(smoke(tmp_path / "r", cache_dir, f"row={row}", *every))
    assert summary["status"] == "completed"
    at = {s for s, _ in reads if 0 < s <= 30}
    assert at <= {1, 10, 15, 20, 30}, sorted(reads)


def test_a_divergence_between_log_steps_is_dated_at_the_step_it_happened(tmp_path, cache_dir):
    """Losses are read at the steps that log; the first diverged loss still names the step, and
    nothing after it is logged or counted: as when every step is read (log_every=1)."""
    cell = ["row=Q300", "schedule.multiplier=1.5"]  # diverges at step 6 at smoke scale
    each = run(smoke(tmp_path / "each", cache_dir, *cell, "train.log_every=1", "train.rms_every=1"))
    sparse = run(smoke(tmp_path / "sparse", cache_dir, *cell, "train.log_every=7", "train.rms_every=9"))
    assert each["status"] == sparse["status"] == "diverged"
    assert 1 < each["diverged_at"] < 7  # between two log steps of the sparse run
    for key in ("diverged_at", "step", "tokens"):
        assert sparse[key] == each[key], key
    last = read_metrics(tmp_path / "sparse/metrics.jsonl")[-1]
    assert last == read_metrics(tmp_path / "each/metrics.jsonl")[-1] == {"step": each["diverged_at"], "train/loss": last["train/loss"]}


def test_offline_wandb_run_records_the_perplexity(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = ["scale=smoke", "logger.mode=offline", f"run_dir={tmp_path / 'w'}", f"data.cache_dir={cache_dir}"]
    summary = run(overrides)
    history = read_offline_wandb_history(tmp_path / "w")
    ppl = [row["val/ppl"] for row in history if row.get("val/ppl") is not None]
    local = [r["val/ppl"] for r in read_metrics(tmp_path / "w/metrics.jsonl") if "val/ppl" in r]
    assert ppl == pytest.approx(local)
    assert ppl[-1] == pytest.approx(summary["val_ppl"])


def _cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "factorial.train", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


def test_command_line_trains_a_tiny_cell(tmp_path, cache_dir):
    proc = _cli("model=tiny", "scale=smoke", f"run_dir={tmp_path / 'cli'}", f"data.cache_dir={cache_dir}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["status"] == "completed"


@pytest.mark.parametrize(
    "override,expected",
    [
        ("optim.beta1=1.5", "optim.beta1=1.5"),
        ("optim.second_moment=diag", "optim.second_moment='diag'"),
        ("optim.clip_threshold=-1", "optim.clip_threshold=-1.0"),
        ("row=Z", "row/Z"),
        ("optim.beta1=abc", "optim.beta1"),
        ("nonsense=1", "nonsense"),
        ("train.steps=0", "train.steps=0"),
        ("model.n_heads=3", "model.n_heads=3"),
        ("data=text", "data.train_file"),
    ],
)
def test_bad_input_exits_2_before_any_work(tmp_path, capsys, override, expected):
    run_dir = tmp_path / "never"
    assert T.main(["scale=smoke", f"run_dir={run_dir}", override]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not run_dir.exists()


def test_bad_input_from_the_command_line_exits_2(tmp_path):
    proc = _cli("scale=smoke", f"run_dir={tmp_path / 'never'}", "optim.beta1=1.5")
    assert proc.returncode == 2
    assert "invalid optim.beta1=1.5; allowed: 0 <= beta1 < 1" in proc.stderr
    assert not (tmp_path / "never").exists()


def test_a_cell_being_trained_elsewhere_is_not_started(tmp_path, cache_dir):
    from factorial.runio import CellLock

    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    with CellLock(run_dir):
        assert T.main(smoke(run_dir, cache_dir)) == T.EXIT_BUSY
    assert not (run_dir / "summary.json").exists()
    assert T.main(smoke(run_dir, cache_dir)) == 0  # the lock died with its holder


def test_a_corrupt_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, cache_dir, monkeypatch):
    reference = run(smoke(tmp_path / "ref", cache_dir))
    real_save = T.save_checkpoint
    calls = {"n": 0}

    def crash_after_second_checkpoint(*args, **kwargs):
        calls["n"] += 1
        path = real_save(*args, **kwargs)
        if calls["n"] == 2:
            raise Crash()
        return path

    monkeypatch.setattr(T, "save_checkpoint", crash_after_second_checkpoint)
    with pytest.raises(Crash):
        run(smoke(tmp_path / "cut", cache_dir))
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    newest = sorted((tmp_path / "cut/checkpoints").glob("step-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated by a crash mid-write

    resumed = run(smoke(tmp_path / "cut", cache_dir))
    assert (newest.parent / (newest.name + ".corrupt")).exists()
    assert stable_summary(resumed) == stable_summary(reference)
    meta = json.loads((tmp_path / "cut/meta.json").read_text())
    assert [s["from_step"] for s in meta["starts"]] == [0, 10]


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["optim.compile=true", "optim.foreach=false"], "optim.foreach=False; allowed: null with compile=true"),
        (["optim=adam", "optim.compile=true"], "optim.compile=True"),
        (["optim.compile=maybe"], "optim.compile"),
    ],
)
def test_optim_compile_is_checked_before_any_work(tmp_path, capsys, overrides, expected):
    """optim.compile selects Adafactor's compiled step (true or false): with a foreach, with another optimizer
    or with another value it stops before any work."""
    run_dir = tmp_path / "never"
    assert T.main(["scale=smoke", f"run_dir={run_dir}", *overrides]) == 2
    assert expected in capsys.readouterr().err
    assert not run_dir.exists()


# --- an interrupt before the first checkpoint ----------------------------------------------------------


def test_a_start_from_step_0_replaces_what_an_earlier_start_logged(tmp_path, cache_dir, monkeypatch):
    """A cell cut before its first checkpoint starts again from step 0: its metrics must not hold the
    first start's steps twice, and the first start's offline W&B run is set aside (not uploaded twice)."""
    overrides = smoke(tmp_path / "cut", cache_dir, "train.checkpoint_every=20")
    reference = run(smoke(tmp_path / "ref", cache_dir, "train.checkpoint_every=20"))

    def crash(*args, **kwargs):  # step 20, the first checkpoint: metrics up to step 20 are logged
        raise Crash()

    monkeypatch.setattr(T, "save_checkpoint", crash)
    with pytest.raises(Crash):
        run(overrides)
    assert max(r["step"] for r in read_metrics(tmp_path / "cut/metrics.jsonl")) == 20
    earlier = tmp_path / "cut/wandb/offline-run-20261201_000000-abc"  # what an earlier offline start left
    earlier.mkdir(parents=True)
    monkeypatch.undo()

    again = run(overrides)
    assert stable_summary(again) == stable_summary(reference)
    records = read_metrics(tmp_path / "cut/metrics.jsonl")
    assert [r["step"] for r in records] == [r["step"] for r in read_metrics(tmp_path / "ref/metrics.jsonl")]
    assert stable(records) == stable(read_metrics(tmp_path / "ref/metrics.jsonl"))
    assert not list((tmp_path / "cut/wandb").glob("offline-run-*"))
    assert (tmp_path / "cut/wandb/superseded" / earlier.name).is_dir()  # set aside, not deleted


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_at_its_step_and_the_cell_resumes_from_it(tmp_path, cache_dir, signum):
    """A real trainer process gets SIGINT/SIGTERM long before its first checkpoint; it saves one at the
    step it reached, exits 128+signum, and the same command then resumes to an uninterrupted run's numbers."""
    common = ["train.steps=400", "train.checkpoint_every=300", "train.eval_every=100", "train.log_every=5"]
    reference = run(smoke(tmp_path / "ref", cache_dir, *common))
    cut = tmp_path / "cut"
    argv = [sys.executable, "-m", "factorial.train", *smoke(cut, cache_dir, *common)]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 600
        # a state, not a timer: wait until the trainer has logged step 20
        while not any(r["step"] >= 20 for r in read_metrics(cut / "metrics.jsonl")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err
    assert "interrupted at step" in err
    ckpts = sorted((cut / "checkpoints").glob("step-*.pt"))
    assert len(ckpts) == 1
    at = int(ckpts[0].stem.split("-")[1])
    assert 20 <= at < 300
    assert not (cut / "summary.json").exists()  # neither a result nor a failure

    resumed = run(smoke(cut, cache_dir, *common))
    assert stable_summary(resumed) == stable_summary(reference)
    records = read_metrics(cut / "metrics.jsonl")
    assert [r["step"] for r in records] == [r["step"] for r in read_metrics(tmp_path / "ref/metrics.jsonl")]
    assert stable(records) == stable(read_metrics(tmp_path / "ref/metrics.jsonl"))
    meta = json.loads((cut / "meta.json").read_text())
    assert [s["from_step"] for s in meta["starts"]] == [0, at]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_a_run_writes_follow_the_umask(tmp_path, umask):
    """Not 0600 (mkstemp's mode): colleagues on a shared cluster must be able to read the runs."""
    from factorial.runio import atomic_write_json, save_checkpoint

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "summary.json", {"status": "completed"})
        ckpt = save_checkpoint(tmp_path, 10, {"x": 1})
    finally:
        os.umask(old)
    for path in (tmp_path / "summary.json", ckpt):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, oct(path.stat().st_mode)


# --- the command line explains itself --------------------------------------------------------------------


def test_help_lists_every_group_option_study_and_scale():
    proc = _cli("--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for option in ("scale=smoke", "scale=cpu", "scale=paper", "row=A", "row=P", "row=Q300", "model=tiny",
                   "model=base", "optim=adafactor", "optim=sgd", "data=text", "logger=none"):
        assert option in out, option
    assert "optim.clip_threshold=1.0" in out and "schedule.warmup=true" in out  # keys with their defaults
    assert "table2" in out and "smoke" in out and "--cfg job" in out


def test_cfg_job_prints_the_resolved_config_and_runs_nothing(tmp_path, capsys):
    run_dir = tmp_path / "never"
    assert T.main(["--cfg", "job", "scale=smoke", "row=O", f"run_dir={run_dir}"]) == 0
    out = capsys.readouterr().out
    assert "second_moment: factored" in out and "steps: 30" in out and "row: O" in out
    assert not run_dir.exists()
    assert T.main(["--cfg", "hydra", "scale=smoke"]) == 2
    assert "allowed: --cfg job" in capsys.readouterr().err


def test_the_error_for_clip_threshold_suggests_what_the_command_line_accepts(tmp_path, capsys):
    assert T.main(["scale=smoke", f"run_dir={tmp_path / 'never'}", "optim.clip_threshold=0"]) == 2
    err = capsys.readouterr().err
    assert "null (no clipping)" in err and "None" not in err
    # and what it suggests works
    assert T.main(["--cfg", "job", "scale=smoke", "optim.clip_threshold=null"]) == 0
    assert "clip_threshold: null" in capsys.readouterr().out


@pytest.mark.parametrize("override,suggestion", [
    ("optim.clip_treshold=1", "did you mean optim.clip_threshold?"),
    ("trian.steps=3", "did you mean train?"),
    ("model.d_modle=64", "did you mean model.d_model?"),
    ("optim=adamm", "did you mean optim=adam?"),
    ("row=Q11", "row=Q1"),
    ("row=h", "did you mean row=H?"),
    ("row=q10", "did you mean row=Q10?"),
])
def test_a_misspelled_key_or_option_gets_a_did_you_mean(tmp_path, capsys, override, suggestion):
    assert T.main(["scale=smoke", f"run_dir={tmp_path / 'never'}", override]) == 2
    assert suggestion in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_a_single_cell_writes_its_train_log_and_a_swept_one_is_not_logged_twice(tmp_path, cache_dir):
    proc = _cli(*smoke(tmp_path / "one", cache_dir))
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "one" / "train.log").read_text()
    assert text.count("=== factorial.train") == 1 and "W&B mode: disabled" in text
    # as the sweep runs it: stdout and stderr already go to train.log, so nothing is written twice
    run_dir = tmp_path / "swept"
    run_dir.mkdir()
    with open(run_dir / "train.log", "ab") as f:
        subprocess.run([sys.executable, "-m", "factorial.train", *smoke(run_dir, cache_dir)], stdout=f,
                       stderr=subprocess.STDOUT, env={**os.environ, "WANDB_MODE": "disabled"}, cwd=REPO_ROOT,
                       timeout=600, check=True)
    text = (run_dir / "train.log").read_text()
    assert "=== factorial.train" not in text and text.count("W&B mode: disabled") == 1


# --- Hydra's multirun: -m with comma lists, range() and choice() runs an ad-hoc study through the sweep ------


def test_a_multirun_command_line_becomes_a_study(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORIAL_RUNS", str(tmp_path))
    plan = CLI.plan_multirun(["model=tiny", "scale=smoke", "logger=none", "row=A,B", "schedule.warmup=true,false",
                            "train.seed=range(2)", "optim.lr_scale=choice(0.1,1)", "hydra/launcher=submitit_slurm",
                            "hydra.launcher.partition=debug", "hydra.launcher.array_parallelism=4", "study=mine"])
    assert plan["name"] == "mine" and plan["scale"] == "smoke" and plan["runs_root"] == tmp_path.resolve()
    study = plan["study"]
    assert study["grid"] == {"model": ["tiny"], "row": ["A", "B"], "schedule.warmup": ["true", "false"],
                             "optim.lr_scale": ["0.1", "1"]}
    assert study["seeds"] == [0, 1] and study["fixed"] == ["logger=none"]
    assert plan["sweep_args"] == ["--launcher", "slurm", "--partition", "debug", "--jobs", "4"]
    assert CLI.plan_multirun(["scale=smoke", "hydra.sweep.dir=" + str(tmp_path / "elsewhere")])["runs_root"] == \
        (tmp_path / "elsewhere").resolve()
    assert CLI.plan_multirun(["scale=smoke"])["study"]["cells"] == [{}]  # one cell, "default", as a single run names it


@pytest.mark.parametrize("overrides,expected", [
    (["row=A,B"], "invalid scale=None for --multirun"),
    (["scale=smoke,cpu", "row=A,B"], "scale takes one value in a multirun"),
    (["scale=smoke", "optim.lr_scale=interval(0.1,1)"], "an interval is for an optimizing sweeper"),
    (["scale=smoke", "row=A,,B"], "Error parsing override 'row=A,,B'"),
    (["scale=smoke", "row=A,B", "run_dir=/x"], "the sweep sets run_dir"),
    (["scale=smoke", "row=A,B", "study=table2"], "invalid study='table2'"),
    (["scale=smoke", "train.threads=1,2"], "train.threads changes no result"),
    (["scale=smoke", "hydra/launcher=ray"], "allowed: hydra/launcher=basic | joblib | submitit_local | submitit_slurm"),
    (["scale=smoke", "hydra.job.chdir=true"], "allowed: hydra/launcher=, hydra.sweep.dir="),
    (["scale=smoke", "train.seed=a,b"], "allowed: integers >= 0"),
])
def test_a_multirun_that_cannot_be_a_study_exits_2_before_any_work(tmp_path, capsys, monkeypatch, overrides, expected):
    monkeypatch.setenv("FACTORIAL_RUNS", str(tmp_path / "runs"))
    assert T.main(["-m", *overrides]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (tmp_path / "runs").exists()


def test_a_comma_list_without_multirun_says_how_to_sweep(capsys):
    assert T.main(["scale=smoke", "row=A,B"]) == 2
    assert "add --multirun" in capsys.readouterr().err


@pytest.mark.slow
def test_multirun_trains_the_grid_through_the_sweep_and_make_table_builds_it(tmp_path, cache_dir):
    """The issue's command: four cells through factorial.sweep, then their report."""
    from factorial import table

    runs = tmp_path / "runs"
    env = {**os.environ, "WANDB_MODE": "disabled", "FACTORIAL_RUNS": str(runs)}
    args = ["-m", "model=tiny", "scale=smoke", "logger=none", "row=A,B", "schedule.warmup=true,false", "train.steps=4",
            f"data.cache_dir={cache_dir}", "hydra.launcher.n_jobs=2"]

    def cli(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "factorial.train", *extra], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=600)

    listed = cli("--cfg", "job", *args)  # the runs it would make; nothing written
    assert listed.returncode == 0, listed.stderr
    assert "4 runs (4 to run, 0 already finished)" in listed.stdout and not runs.exists()
    proc = cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study_file = runs / "multirun" / "multirun.yaml"
    assert f"study 'multirun' ({study_file})" in proc.stdout and "4 completed" in proc.stdout
    assert f"tables: make table EXP={study_file} SCALE=smoke" in proc.stdout
    done = sorted(p.parent.parent.name for p in (runs / "multirun" / "smoke").glob("*/seed0/summary.json"))
    assert done == [f"model=tiny,row={r},schedule.warmup={w},train.steps=4" for r in "AB" for w in ("false", "true")]
    # the same command resumes (nothing to train); another grid under the same name is refused
    again = cli(*args)
    assert again.returncode == 0 and "4 skipped" in again.stdout, again.stdout + again.stderr
    other = cli(*[a.replace("row=A,B", "row=A,C") for a in args])
    assert other.returncode == 2 and "allowed: study=NEW_NAME" in other.stderr
    # make table EXP=<the study file> SCALE=smoke
    out = tmp_path / "results"
    assert table.main(["--exp", str(study_file), "--scale", "smoke", "--runs-root", str(runs), "--out", str(out)]) == 0
    cells = (out / "multirun" / "smoke" / "cells.csv").read_text().splitlines()
    assert len(cells) == 5 and (out / "multirun" / "smoke" / "REPORT.md").is_file()


def test_shell_completion_as_hydra_offers_groups_options_and_keys(monkeypatch, capsys):
    assert "row=" in CLI.completion_choices("python -m factorial.train scale=smoke ro")
    assert {"row=H", "row=Q300"} <= set(CLI.completion_choices(".venv/bin/python -m factorial.train row="))
    assert CLI.completion_choices("python -m factorial.train -m optim.clip_t") == ["optim.clip_threshold="]
    monkeypatch.setenv("COMP_LINE", "python -m factorial.train sched")
    assert T.main(["-sc", "query=bash"]) == 0 and capsys.readouterr().out.split() == ["schedule."]
    assert T.main(["--shell-completion", "install=bash"]) == 0
    script = capsys.readouterr().out
    assert "complete -o nospace -o default -F _factorial_train_completion python" in script
    assert "-m factorial.train -sc query=bash" in script
    assert T.main(["-sc", "install=zsh"]) == 2 and "allowed: install=bash" in capsys.readouterr().err


def test_help_names_multirun_and_completion(capsys):
    assert T.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "-m, --multirun" in out and "range(" in out and "study=NAME" in out and "-sc install=bash" in out


def test_mfu_is_model_flops_per_second_over_the_gpus_bf16_peak(monkeypatch):
    """summary.json's mfu: 6·N + 6·L·T·d FLOPs per token × tokens/s over the dense bf16 peak, for bf16 runs on
    a GPU whose peak is known; None on a CPU, in fp32 and on a GPU without a known peak."""
    import dataclasses

    import torch

    from factorial.model import flops_per_token

    cfg = T.compose(["scale=smoke"])
    cfg.model.vocab_size = 512
    parts = T.Parts(cfg, None, None, None, None, torch.device("cuda"), torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert T.model_flop_utilisation(parts, 1e6) == pytest.approx(flops_per_token(cfg.model) * 1e6 / 989.4e12)
    n = sum(p.numel() for p in T.Transformer(cfg.model).parameters())
    m = cfg.model
    assert flops_per_token(m) == 6 * n + 6 * m.n_layers * m.context_length * m.d_model
    assert T.model_flop_utilisation(dataclasses.replace(parts, device=torch.device("cpu")), 1e6) is None
    assert T.model_flop_utilisation(dataclasses.replace(parts, amp_dtype=None), 1e6) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Other GPU")
    assert T.model_flop_utilisation(parts, 1e6) is None
