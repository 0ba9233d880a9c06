"""Nothing lost under crashes, bad input and flaky services (one cell; the sweep has its own tests)."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import types
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factorial import config as C
from factorial import runio
from factorial import train as T
from factorial.model import ModelConfig, Transformer
from factorial.runlog import read_metrics

from cells import VOLATILE_SUMMARY, run, smoke, stable, stable_summary


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """An uninterrupted smoke cell to compare every recovered run against."""
    root = tmp_path_factory.mktemp("ref")
    summary = run(smoke(root / "ref", cache_dir))
    return summary, stable(read_metrics(root / "ref/metrics.jsonl"))


# --- bad input: every field of the schema, generated -------------------------------------------------

SCHEMAS = {
    "model": ModelConfig,
    "data": C.DataSchema,
    "optim": C.OptimSchema,
    "schedule": C.ScheduleSchema,
    "train": C.TrainSchema,
    "logger": C.LoggerSchema,
}
# Fields that accept any value of their type (names, paths, free choices) have no wrong range.
FREE = {"data.train_file", "data.validation_file", "data.test_file", "data.cache_dir", "logger.project",
        "logger.entity", "logger.tags", "model.vocab_size"}


def _fields():
    out = []
    for group, schema in SCHEMAS.items():
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            key = f"{group}.{f.name}"
            if key not in FREE:
                out.append((key, hints[f.name]))
    return out


FIELDS = _fields()


def _invalid_values(hint) -> st.SearchStrategy[str]:
    """Values no field of this type accepts in range (as command-line text)."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = typing.get_args(hint)[0] if optional else hint
    words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=8).filter(
        lambda w: w not in ("true", "false", "null", "none", "nan", "inf", "yes", "off", "on")
    )
    if base is int:
        return st.one_of(st.integers(max_value=-1).map(str), words, st.just("1.5"))
    if base is float:
        return st.one_of(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False).map(repr), words,
                         st.just("nan"), st.just("inf"), st.just("-inf"))
    if base is bool:
        return words
    # enumerated words: anything outside the allowed set
    return words.map(lambda w: "zz" + w)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_wrong_value_of_any_field_exits_2_before_work(tmp_path, capsys, data):
    key, hint = data.draw(st.sampled_from(FIELDS), label="field")
    value = data.draw(_invalid_values(hint), label="value")
    run_dir = tmp_path / "never"
    code = T.main(["scale=smoke", f"run_dir={run_dir}", f"{key}={value}"])
    err = capsys.readouterr().err
    assert code == 2, (key, value, err)
    assert key.split(".")[-1] in err, err
    assert not run_dir.exists()


@pytest.mark.parametrize("override,expected", [
    ("unknown_key=1", "unknown_key"),
    ("optim.nonsense=1", "nonsense"),
    ("row=Z", "row/Z"),
    ("scale=galactic", "scale/galactic"),
    ("model=huge", "model/huge"),
])
def test_unknown_keys_and_choices_exit_2(tmp_path, capsys, override, expected):
    assert T.main(["scale=smoke", f"run_dir={tmp_path / 'never'}", override]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_missing_and_empty_corpus_files_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    full = tmp_path / "full.txt"
    full.write_text("to be or not to be\n" * 10)
    for files, expected in [
        ((tmp_path / "missing.txt", full, full), "data.train_file"),
        ((full, empty, full), "data.validation_file"),
    ]:
        args = [f"data.train_file={files[0]}", f"data.validation_file={files[1]}", f"data.test_file={files[2]}"]
        assert T.main(["scale=smoke", "data=text", f"run_dir={tmp_path / 'never'}", *args]) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_vocabulary_larger_than_the_corpus_supports_exits_2(tmp_path, capsys):
    text = tmp_path / "small.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    args = [f"data.{k}_file={text}" for k in ("train", "validation", "test")]
    code = T.main(["scale=smoke", "data=text", "data.vocab_size=5000", f"data.cache_dir={tmp_path / 'c'}",
                   f"run_dir={tmp_path / 'never'}", *args])
    assert code == 2
    assert "data.vocab_size" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_context_longer_than_a_split_exits_2(tmp_path, capsys):
    text = tmp_path / "small.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 20)
    args = [f"data.{k}_file={text}" for k in ("train", "validation", "test")]
    code = T.main(["scale=smoke", "data=text", "data.vocab_size=40", "model.context_length=4096",
                   f"data.cache_dir={tmp_path / 'c'}", f"run_dir={tmp_path / 'never'}", *args])
    assert code == 2
    assert "model.context_length" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


# --- W&B failures: the cell completes with whole local logs and one warning ----------------------------


@pytest.mark.parametrize("where", ["init", "log"])
def test_wandb_failure_never_stops_a_cell(tmp_path, cache_dir, reference, monkeypatch, caplog, where):
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    if where == "init":
        def broken_init(*a, **k):
            raise wandb.errors.AuthenticationError("API key is invalid")  # what a bad key gives online

        monkeypatch.setattr(wandb, "init", broken_init)
    else:
        real_init = wandb.init

        def init_then_fail(*a, **k):
            w_run = real_init(*a, **k)
            calls = {"n": 0}
            real_log = w_run.log

            def flaky_log(*la, **lk):
                calls["n"] += 1
                if calls["n"] > 2:
                    raise ConnectionError("service unavailable")
                return real_log(*la, **lk)

            w_run.log = flaky_log
            return w_run

        monkeypatch.setattr(wandb, "init", init_then_fail)
    with caplog.at_level(logging.WARNING, logger="factorial.runlog"):
        summary = run(["scale=smoke", "logger.mode=offline", f"run_dir={tmp_path / 'w'}", f"data.cache_dir={cache_dir}"])
    assert stable_summary(summary) == stable_summary(reference[0])
    assert stable(read_metrics(tmp_path / "w/metrics.jsonl")) == reference[1]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "factorial.runlog"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "sync" in warnings[0].getMessage() or "W&B" in warnings[0].getMessage()


# --- a full disk ----------------------------------------------------------------------------------------


def _fsync_fails_for(monkeypatch, fragment: str):
    real = os.fsync

    def fsync(fd):
        if fragment in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(runio.os, "fsync", fsync)


def test_full_disk_during_a_checkpoint_keeps_the_previous_one_and_fails_the_cell(tmp_path, cache_dir, reference,
                                                                                  monkeypatch):
    _fsync_fails_for(monkeypatch, "step-000000020")
    with pytest.raises(OSError, match="No space left"):
        run(smoke(tmp_path / "c", cache_dir))
    ckpts = sorted(p.name for p in (tmp_path / "c/checkpoints").iterdir())
    assert ckpts == ["step-000000010.pt"]  # no temporary file left behind, the previous one whole
    summary = json.loads((tmp_path / "c/summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    monkeypatch.undo()
    resumed = run(smoke(tmp_path / "c", cache_dir))
    assert stable_summary(resumed) == stable_summary(reference[0])
    # It resumed from the kept checkpoint (a restart from step 0 would give the same numbers).
    assert [s["from_step"] for s in json.loads((tmp_path / "c/meta.json").read_text())["starts"]] == [0, 10]


def test_full_disk_while_writing_the_summary_leaves_no_half_file(tmp_path, cache_dir, reference, monkeypatch):
    _fsync_fails_for(monkeypatch, "summary.json")
    with pytest.raises(OSError, match="No space left"):
        run(smoke(tmp_path / "s", cache_dir))
    assert not (tmp_path / "s/summary.json").exists()
    assert not list((tmp_path / "s").glob(".summary.json*"))
    monkeypatch.undo()
    assert stable_summary(run(smoke(tmp_path / "s", cache_dir))) == stable_summary(reference[0])


# --- out of memory is a result ---------------------------------------------------------------------------


def test_out_of_memory_is_recorded_with_what_was_logged(tmp_path, cache_dir, monkeypatch):
    real_forward = Transformer.forward
    calls = {"n": 0}

    def forward(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 12:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, *a, **k)

    monkeypatch.setattr(Transformer, "forward", forward)
    with pytest.raises(torch.OutOfMemoryError):
        run(smoke(tmp_path / "o", cache_dir))
    summary = json.loads((tmp_path / "o/summary.json").read_text())
    assert summary == {"status": "failed", "error": "out of memory"}
    assert max(r["step"] for r in read_metrics(tmp_path / "o/metrics.jsonl")) == 10


# --- SIGKILL at random points ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_gives_the_uninterrupted_numbers(tmp_path, cache_dir, reference):
    """Kill a cell's process at random moments (during steps, checkpoint writes, the summary write)
    until a run finishes on its own; the final summary and metrics equal an uninterrupted run's."""
    overrides = ["scale=smoke", "logger=none", f"data.cache_dir={cache_dir}", "train.steps=300",
                 "train.checkpoint_every=7", "train.eval_every=20"]
    env = {**os.environ, "WANDB_MODE": "disabled"}

    def start(run_dir):
        return subprocess.Popen([sys.executable, "-m", "factorial.train", *overrides, f"run_dir={run_dir}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=C.REPO_ROOT)

    began = time.perf_counter()  # the data cache is warm (reference fixture)
    ref = start(tmp_path / "ref")
    assert ref.wait(timeout=600) == 0
    duration = time.perf_counter() - began  # imports included, so early kills land in start-up too
    rng = random.Random(1234)
    # The first kill lands once the first checkpoint exists, so the cell is surely cut mid-run
    # whatever the machine's speed; the later ones land at random moments.
    first = start(tmp_path / "cut")
    deadline = time.monotonic() + 300
    while not list(runio.checkpoint_dir(tmp_path / "cut").glob("step-*.pt")):
        assert first.poll() is None, "the cell finished before its first checkpoint could be cut"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kills = 1

    def newest() -> int:
        return max((int(p.stem.split("-")[1]) for p in runio.checkpoint_dir(tmp_path / "cut").glob("step-*.pt")), default=0)

    # Every other restart is killed only after it has saved a checkpoint past the one it resumed from, so
    # the loop ends on a slow machine too (at most one such restart per checkpoint); the others are killed
    # at a random moment, start-up included. No kill depends on how fast the machine is.
    while True:
        proc = start(tmp_path / "cut")
        if kills % 2 == 0:
            before, deadline = newest(), time.monotonic() + 600
            while proc.poll() is None and newest() <= before:
                assert time.monotonic() < deadline, "a restarted cell saved no checkpoint in 10 minutes"
                time.sleep(0.02)
        try:
            code = proc.wait(timeout=rng.uniform(0.0, 0.6) * duration)
            assert code == 0
            break
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        assert kills <= 2 * (300 // 7 + 2)
    ref_summary = json.loads((tmp_path / "ref/summary.json").read_text())
    cut_summary = json.loads((tmp_path / "cut/summary.json").read_text())
    drop = set(VOLATILE_SUMMARY)
    assert {k: v for k, v in cut_summary.items() if k not in drop} == {k: v for k, v in ref_summary.items() if k not in drop}
    assert stable(read_metrics(tmp_path / "cut/metrics.jsonl")) == stable(read_metrics(tmp_path / "ref/metrics.jsonl"))
    assert kills >= 1
    leftovers = [p for p in (tmp_path / "cut").rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers
