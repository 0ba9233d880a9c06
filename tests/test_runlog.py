"""Tests for factorial.runlog: local metrics.jsonl, W&B mode resolution, offline W&B, failures.

No test needs the network: W&B runs are offline (wandb-core writes the .wandb transaction
log locally) or wandb.init is replaced. HOME/NETRC point into tmp dirs so the developer's
real credentials can't change a decision or get used.
"""

from __future__ import annotations

import json
import logging
import math
import random
import struct
from pathlib import Path

import pytest
import torch

from factorial import runlog
from factorial.runlog import (
    RunLogger,
    WandbSettings,
    flatten,
    read_metrics,
    resolve_wandb_mode,
)
from wandb_offline import iter_records, offline_run_order, read_offline_wandb_history, run_complete

LOGGER = "factorial.runlog"
KEY40 = "0123456789abcdef0123456789abcdef01234567"  # wandb's format check wants 40+ chars


@pytest.fixture(autouse=True)
def wandb_env(tmp_path_factory, monkeypatch):
    """Isolated, quiet W&B environment with no credentials."""
    home = tmp_path_factory.mktemp("home")
    netrc = home / ".netrc"
    netrc.write_text("")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in (
        "WANDB_API_KEY",
        "WANDB_MODE",
        "WANDB_DISABLED",
        "WANDB_BASE_URL",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_DIR",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


def runlog_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def write_steps(path: Path, steps) -> None:
    path.write_text("".join(json.dumps({"step": s, "train/loss": 1.0 / s}) + "\n" for s in steps))


# ----------------------------------------------------------------------------- mode resolution


@pytest.mark.parametrize("mode", ["online", "offline", "disabled"])
def test_explicit_mode_is_taken_as_given(mode, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # only overrides "auto"
    assert resolve_wandb_mode(mode)[0] == mode


@pytest.mark.parametrize(("env", "expected"), [("offline", "offline"), ("disabled", "disabled"),
                                                ("online", "online"), ("dryrun", "offline")])
def test_env_wandb_mode_wins_over_auto(env, expected, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY40)
    monkeypatch.setenv("WANDB_MODE", env)
    mode, reason = resolve_wandb_mode("auto")
    assert mode == expected
    assert "WANDB_MODE" in reason


def test_auto_without_credentials_is_offline():
    mode, reason = resolve_wandb_mode("auto")
    assert mode == "offline"
    assert "wandb login" in reason


def test_auto_without_any_netrc_file_is_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    assert resolve_wandb_mode("auto")[0] == "offline"


def test_auto_with_api_key_is_online(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY40)
    mode, reason = resolve_wandb_mode("auto")
    assert mode == "online"
    assert "WANDB_API_KEY" in reason


def test_auto_with_netrc_entry_is_online(wandb_env):
    # `wandb login` writes an api.wandb.ai entry; wandb 0.31 (default host
    # api.forge.coreweave.com) still accepts it, and so must we.
    (wandb_env / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {KEY40}\n")
    mode, reason = resolve_wandb_mode("auto")
    assert mode == "online"
    assert "netrc" in reason


def test_auto_with_malformed_netrc_key_is_offline(wandb_env):
    (wandb_env / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password short\n")
    assert resolve_wandb_mode("auto")[0] == "offline"


def test_bad_mode_names_the_key():
    with pytest.raises(ValueError, match=r"logger\.mode='x' is invalid; allowed: auto \| online"):
        resolve_wandb_mode("x")


def test_bad_env_mode_names_the_variable(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE='sometimes' is invalid"):
        resolve_wandb_mode("auto")


def test_run_id_is_stable_and_wandb_safe(tmp_path):
    a = runlog.run_id_for(tmp_path)
    assert a == runlog.run_id_for(tmp_path / "sub" / "..") and len(a) == 16
    assert set(a) <= set("0123456789abcdef")
    assert a != runlog.run_id_for(tmp_path / "other")


def test_flatten():
    cfg = {"optim": {"beta1": 0.9, "decay": {"rate": -0.8}}, "seed": 1, "tags": ["a"], "e": {}}
    assert flatten(cfg) == {
        "optim.beta1": 0.9, "optim.decay.rate": -0.8, "seed": 1, "tags": ["a"], "e": {},
    }
    assert flatten({"b": 1}, prefix="a") == {"a.b": 1}


# ----------------------------------------------------------------------------- local metrics


def test_disabled_mode_roundtrips_floats_exactly_and_nonfinite(tmp_path):
    rng = random.Random(0)
    values = [rng.uniform(-1e6, 1e6) for _ in range(50)]
    values += [0.1 + 0.2, 5e-324, 1.7976931348623157e308, -0.0, 1 / 3]
    with RunLogger(tmp_path, WandbSettings(mode="disabled"), {}) as rl:
        assert rl.wandb_mode == "disabled" and rl.wandb_dir is None
        for i, v in enumerate(values, start=1):
            rl.log({"x": v, "i": i}, step=i)
        rl.log({"nan": math.nan, "inf": math.inf, "ninf": -math.inf}, step=len(values) + 1)
        rl.log({"t": torch.tensor(0.25), "t32": torch.tensor(0.1, dtype=torch.float32)}, step=99)

    # The file is standard JSON (no bare NaN/Infinity tokens).
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    for line in lines:
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert '"nan": "NaN"' in lines[-2] and '"ninf": "-Infinity"' in lines[-2]

    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["x"] for r in recs[: len(values)]] == values  # bit-exact
    assert math.copysign(1, recs[len(values) - 2]["x"]) == -1  # -0.0 kept
    assert [r["step"] for r in recs[: len(values)]] == list(range(1, len(values) + 1))
    nonfinite = recs[len(values)]
    assert math.isnan(nonfinite["nan"]) and nonfinite["inf"] == math.inf
    assert nonfinite["ninf"] == -math.inf
    assert recs[-1] == {"step": 99, "t": 0.25, "t32": float(torch.tensor(0.1, dtype=torch.float32))}


def test_step_key_is_reserved(tmp_path):
    with RunLogger(tmp_path, WandbSettings(mode="disabled"), {}) as rl:
        with pytest.raises(ValueError, match="reserved"):
            rl.log({"step": 3.0}, step=3)


def test_resume_truncates_to_checkpoint_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_steps(path, range(1, 11))
    with RunLogger(tmp_path, WandbSettings(mode="disabled"), {}, resume_step=6) as rl:
        assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5, 6]
        rl.log({"train/loss": 0.5}, step=7)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5, 6, 7]
    assert not list(tmp_path.glob(".metrics.jsonl.*"))  # no temp file left behind


def test_resume_keeps_records_sharing_the_checkpoint_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 5, "train/loss": 1.0}\n{"step": 5, "val/ppl": 9.0}\n{"step": 6, "a": 1}\n'
    )
    RunLogger(tmp_path, WandbSettings(mode="disabled"), {}, resume_step=5).finish()
    assert read_metrics(path) == [{"step": 5, "train/loss": 1.0}, {"step": 5, "val/ppl": 9.0}]


def test_partial_trailing_line_is_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_steps(path, range(1, 5))
    with open(path, "a") as f:
        f.write('{"step": 5, "train/lo')  # crash mid-write
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]

    # Resuming repairs the file, so the next record starts on a fresh line.
    with RunLogger(tmp_path, WandbSettings(mode="disabled"), {}, resume_step=4) as rl:
        rl.log({"train/loss": 0.2}, step=5)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    assert path.read_text().count("\n") == 5


def test_partial_line_repaired_even_without_resume_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a"')
    with RunLogger(tmp_path, WandbSettings(mode="disabled"), {}) as rl:
        rl.log({"a": 3.0}, step=3)
    assert read_metrics(path) == [{"step": 1, "a": 1.0}, {"step": 3, "a": 3.0}]


def test_corrupt_line_in_the_middle_raises(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, oops\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2 is corrupt"):
        read_metrics(path)


def test_read_metrics_of_missing_file_is_empty(tmp_path):
    assert read_metrics(tmp_path / "metrics.jsonl") == []


def test_context_manager_finishes_once_and_passes_exceptions(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with RunLogger(tmp_path, WandbSettings(mode="disabled"), {}) as rl:
            rl.log({"a": 1.0}, step=1)
            raise RuntimeError("boom")
    rl.finish()  # idempotent
    with pytest.raises(RuntimeError, match="finished"):
        rl.log({"a": 2.0}, step=2)
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "a": 1.0}]


# ----------------------------------------------------------------------------- offline W&B


def _wandb_records(run_dir: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    for file in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        for payload in iter_records(file):
            rec = pb.Record()
            rec.ParseFromString(payload)
            yield rec


def test_offline_wandb_end_to_end(tmp_path):
    cfg = {"optim": {"name": "adafactor", "beta1": 0.0}, "run_dir": tmp_path}  # a Path value too
    settings = WandbSettings(mode="offline", group="table2/cpu", name="cell-A", tags=["t"])
    ppl = {100: 31.25, 200: 17.0000001, 300: 12.5}
    with RunLogger(tmp_path, settings, cfg) as rl:
        assert rl.wandb_mode == "offline"
        assert rl.wandb_dir is not None and rl.wandb_dir.parent == tmp_path / "wandb"
        assert rl.wandb_dir.name.startswith("offline-run-")
        for step in range(1, 301):
            rl.log({"train/loss": 3.0 / step}, step)
            if step in ppl:
                rl.log({"val/ppl": ppl[step], "val/loss": math.log(ppl[step])}, step)
        rl.log({"train/loss": math.nan}, 301)
        rl.log_summary({"final/val_ppl": 12.5})

    # Local log complete regardless of W&B.
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 304

    rows = read_offline_wandb_history(tmp_path)
    assert len(rows) == 304
    got = {r["step"]: r["val/ppl"] for r in rows if "val/ppl" in r}
    assert got == ppl  # wandb-core writes 17.0000001 back exactly; 31.25 may come back as int
    assert math.isnan(rows[-1]["train/loss"]) and rows[-1]["step"] == 301

    # What wandb recorded about the run itself: id, config, custom x-axis, min+last summary.
    recs = list(_wandb_records(tmp_path))
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    assert run.run_id == runlog.run_id_for(tmp_path)
    assert run.run_group == "table2/cpu" and run.display_name == "cell-A"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["optim.beta1"] == 0.0 and config["run_dir"] == str(tmp_path)
    metrics = {m.metric.name or m.metric.glob_name: m.metric for m in recs
               if m.WhichOneof("record_type") == "metric"}
    assert metrics["*"].step_metric == "step"
    for name in ("val/ppl", "val/loss"):
        assert metrics[name].step_metric == "step"
        assert metrics[name].summary.min and metrics[name].summary.last
    summary = {}
    for r in recs:
        if r.WhichOneof("record_type") == "summary":
            for u in r.summary.update:
                summary[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
    assert summary["val/ppl"] == {"min": 12.5, "last": 12.5}
    assert summary["final/val_ppl"] == 12.5


def test_offline_resume_continues_the_same_run(tmp_path):
    settings = WandbSettings(mode="offline")
    with RunLogger(tmp_path, settings, {}) as rl:
        for step in range(1, 6):
            rl.log({"val/ppl": 10.0 + step}, step)
    with RunLogger(tmp_path, settings, {}, resume_step=3) as rl:
        rl.log({"val/ppl": 99.0}, 4)

    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(runlog.run_id_for(tmp_path) in p.name for p in runs)
    # Both processes' rows, in order; W&B keeps the re-logged step 4 (the local file doesn't).
    assert [(r["step"], r["val/ppl"]) for r in read_offline_wandb_history(tmp_path)] == [
        (1, 11), (2, 12), (3, 13), (4, 14), (5, 15), (4, 99)
    ]


def test_offline_history_survives_a_torn_tail(tmp_path):
    # A crash can leave the .wandb file cut anywhere: read what is complete, never raise.
    with RunLogger(tmp_path, WandbSettings(mode="offline"), {}) as rl:
        for step in range(1, 4):
            rl.log({"val/ppl": float(step)}, step)
    file = next((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    data = file.read_bytes()
    full = read_offline_wandb_history(tmp_path)
    assert [r["val/ppl"] for r in full] == [1, 2, 3]

    torn = tmp_path / "crashed" / "wandb" / file.parent.name / file.name
    torn.parent.mkdir(parents=True)
    seen = set()
    for cut in range(7, len(data), 13):
        torn.write_bytes(data[:cut])
        rows = read_offline_wandb_history(tmp_path / "crashed")
        assert rows == full[: len(rows)]
        seen.add(len(rows))
    assert seen == {0, 1, 2, 3}


def test_wandb_file_format_is_what_the_reader_expects(tmp_path):
    # Guards the hand-written reader against a format change in a future wandb-core.
    with RunLogger(tmp_path, WandbSettings(mode="offline"), {}) as rl:
        rl.log({"a": 1.0}, 1)
    data = next((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    assert data[:7] == b":W&B" + struct.pack("<HB", 0xBEE1, 0)


def test_offline_run_order_handles_same_second_suffixes():
    names = ["offline-run-20260101_000000-cell-3-10", "offline-run-20251231_235959-cell-3-4",
             "offline-run-20260101_000000-cell-3", "offline-run-20260101_000000-cell-3-2"]
    files = [Path("w", n, "run-cell-3.wandb") for n in names]
    assert [f.parent.name for f in sorted(files, key=offline_run_order)] == [
        names[1], names[2], names[3], names[0]
    ]


# ----------------------------------------------------------------------------- W&B failures


def test_wandb_log_failure_mid_run_is_one_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    rl = RunLogger(tmp_path, WandbSettings(mode="offline"), {})
    assert rl.wandb_mode == "offline"
    calls = {"n": 0}
    real_log = rl._run.log

    def flaky_log(data, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise ConnectionError("wandb-core went away")
        return real_log(data, *args, **kwargs)

    rl._run.log = flaky_log
    for step in range(1, 11):  # a training loop: must not notice anything
        rl.log({"train/loss": 1.0 / step}, step)
    rl.log_summary({"best": 1.0})
    rl.finish()

    warns = runlog_warnings(caplog)
    assert len(warns) == 1
    msg = warns[0].getMessage()
    assert "wandb.log at step 3" in msg and "ConnectionError" in msg and "wandb sync" in msg
    assert calls["n"] == 3  # switched off after the failure
    assert rl.wandb_mode == "disabled"
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 11))
    # The two rows W&B did get are on disk for `wandb sync`.
    assert [r["step"] for r in read_offline_wandb_history(tmp_path)] == [1, 2]


def test_wandb_init_failure_is_one_warning(tmp_path, caplog, monkeypatch):
    import wandb

    def failing_init(*args, **kwargs):
        raise wandb.errors.CommError("invalid API key / network unreachable")

    monkeypatch.setattr(wandb, "init", failing_init)
    monkeypatch.setattr(runlog, "wandb_server_reachable", lambda: (True, "api.wandb.ai:443"))
    with RunLogger(tmp_path, WandbSettings(mode="online"), {"a": {"b": 1}}) as rl:
        assert rl.wandb_mode == "disabled" and rl.wandb_dir is None
        rl.log({"train/loss": 2.0}, 1)
        rl.log_summary({"x": 1})
    warns = runlog_warnings(caplog)
    assert len(warns) == 1  # online, then offline, failed: still one warning
    assert "wandb.init" in warns[0].getMessage() and "invalid API key" in warns[0].getMessage()
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "train/loss": 2.0}]


def test_a_failed_online_start_falls_back_to_an_offline_run_once(tmp_path, caplog, monkeypatch):
    """A key but no network: wandb.init online raises; the run is recorded offline, with one warning."""
    import wandb

    real_init = wandb.init
    modes = []

    def init(*args, **kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("dial tcp: lookup api.wandb.ai: no such host")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(runlog, "wandb_server_reachable", lambda: (True, "api.wandb.ai:443"))
    monkeypatch.setenv("WANDB_API_KEY", KEY40)
    with caplog.at_level(logging.INFO, logger=LOGGER), \
            RunLogger(tmp_path, WandbSettings(mode="auto"), {"a": 1}) as rl:
        assert rl.wandb_mode == "offline"
        assert rl.wandb_dir is not None and rl.wandb_dir.name.startswith("offline-run-")
        for step in (1, 2, 3):
            rl.log({"train/loss": 1.0 / step}, step)
    assert modes == ["online", "offline"]
    warns = runlog_warnings(caplog)
    assert len(warns) == 1, [w.getMessage() for w in warns]
    assert "no such host" in warns[0].getMessage() and "wandb sync" in warns[0].getMessage()
    assert [r["step"] for r in read_offline_wandb_history(tmp_path)] == [1, 2, 3]  # syncable later


def test_an_unreachable_server_goes_offline_without_trying_online(tmp_path, caplog, monkeypatch):
    """No route to the server: offline at once (no wandb.init timeout per cell), one warning."""
    import socket

    import wandb

    with socket.socket() as s:  # a local port nobody listens on: connecting is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    real_init = wandb.init
    modes = []

    def init(*args, **kwargs):
        modes.append(kwargs["mode"])
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    with RunLogger(tmp_path, WandbSettings(mode="online"), {"a": 1}) as rl:
        assert rl.wandb_mode == "offline"
        rl.log({"train/loss": 1.0}, 1)
    assert modes == ["offline"]
    warns = runlog_warnings(caplog)
    assert len(warns) == 1 and "out of reach" in warns[0].getMessage()
    assert [r["step"] for r in read_offline_wandb_history(tmp_path)] == [1]


class _BrokenRun:
    """Stands in for a wandb Run whose service died."""

    def __init__(self, fail_on: str):
        self.fail_on = fail_on
        self.finished_with: list[int] = []
        self.summary = self

    def _maybe_fail(self, what):
        if what == self.fail_on:
            raise BrokenPipeError(f"{what}: service connection lost")

    def log(self, data):
        self._maybe_fail("log")

    def update(self, data):
        self._maybe_fail("summary")

    def finish(self, exit_code=None):
        self.finished_with.append(exit_code)
        self._maybe_fail("finish")


@pytest.mark.parametrize("fail_on", ["summary", "finish"])
def test_wandb_summary_or_finish_failure_is_one_warning(tmp_path, caplog, fail_on):
    rl = RunLogger(tmp_path, WandbSettings(mode="disabled"), {})
    rl._run, rl._mode = _BrokenRun(fail_on), "online"
    rl.log({"a": 1.0}, 1)
    rl.log_summary({"best": 1.0})
    rl.finish()
    rl.finish()
    assert len(runlog_warnings(caplog)) == 1
    assert rl.wandb_mode == "disabled"
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "a": 1.0}]


# ----------------------------------------------------------------------------- public W&B API only


def test_production_code_uses_only_wandbs_public_api():
    """A private wandb module (wandb.sdk..., wandb.proto...) can move in any release; the W&B mode
    and the wait for an offline run must not depend on one."""
    import ast

    from factorial.config import REPO_ROOT

    private = []
    for path in sorted((REPO_ROOT / "src" / "factorial").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            private += [f"{path.name}: {n}" for n in names if n.startswith(("wandb.sdk", "wandb.proto", "wandb.apis."))]
    assert private == []


def test_auto_with_a_key_in_wandbs_settings_file_is_online(wandb_env, monkeypatch):
    """W&B's own sources decide, not a copy of them: here the api_key setting of W&B's settings file."""
    config = wandb_env / "wandb-config"
    config.mkdir()
    (config / "settings").write_text(f"[default]\napi_key = {KEY40}\n")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(config))
    mode, reason = resolve_wandb_mode("auto")
    assert mode == "online", reason


def test_auto_looks_up_credentials_without_contacting_the_server(wandb_env, monkeypatch):
    """A found key is not verified or greeted: on a node without network the check must not wait for the server."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.5)
    host, port = server.getsockname()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://{host}:{port}")
    monkeypatch.delenv("WANDB_SILENT")
    (wandb_env / ".netrc").write_text(f"machine {host}\n  login user\n  password {KEY40}\n"
                                      f"machine {host}:{port}\n  login user\n  password {KEY40}\n")
    try:
        assert resolve_wandb_mode("auto")[0] == "online"
        with pytest.raises(TimeoutError):
            server.accept()[0].close()
    finally:
        server.close()


def test_an_offline_run_is_on_disk_when_the_logger_finishes(tmp_path):
    with RunLogger(tmp_path, WandbSettings(mode="offline"), {}) as rl:
        for step in range(1, 51):
            rl.log({"train/loss": 1.0 / step}, step)
    (file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    assert run_complete(file)
