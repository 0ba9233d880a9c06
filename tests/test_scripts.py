"""The probe scripts of results/bench: their logic on synthetic data, and one short real run."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rounds(adam_times: list[float]) -> list[dict]:
    return [{"t": i, "own rows": 1.0, "other's rows": 1.0, "torch Adam fused": a, "ours alg6": a}
            for i, a in enumerate(adam_times)]


def test_locality_probe_splits_two_states_and_keeps_one_together():
    probe = load("locality_probe")
    rng = random.Random(0)
    two = [rng.gauss(8.7, 0.4) for _ in range(300)] + [rng.gauss(12.4, 0.6) for _ in range(700)]
    fast, slow, cut = probe.split_by_adam(rounds(two))
    assert cut is not None and 9.5 < cut < 11.5 and 280 <= len(fast) <= 320 and len(fast) + len(slow) == 1000
    one = [rng.gauss(12.0, 0.8) for _ in range(1000)]
    fast, slow, cut = probe.split_by_adam(rounds(one))
    assert cut is None and len(fast) == 1000 and slow == []


def test_locality_probe_runs_and_renders(tmp_path):
    probe = load("locality_probe")
    assert probe.main(["--seconds", "1", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "locality-cpu.json").read_text())
    assert saved["rounds"] and all(r["own rows"] > 0 and r["torch Adam fused"] > 0 for r in saved["rounds"])
    md = (tmp_path / "locality-cpu.md").read_text()
    (tmp_path / "locality-cpu.md").unlink()
    assert probe.main(["--render", str(tmp_path / "locality-cpu.json")]) == 0
    assert (tmp_path / "locality-cpu.md").read_text() == md


@pytest.mark.parametrize("argv, message", [(["--seconds", "0"], "--seconds=0.0"), (["--threads", "0"], "--threads=0")])
def test_locality_probe_refuses_bad_arguments(argv, message, capsys):
    probe = load("locality_probe")
    with pytest.raises(SystemExit):
        probe.main(argv)
    assert message in capsys.readouterr().err
