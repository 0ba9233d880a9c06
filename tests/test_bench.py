"""The benchmark's plumbing: it runs end to end on the tiny preset and writes valid files, the state
memory claim holds on the base shapes, and the overhead measurement compares like with like.

No assertion here is about time: the timing targets are read from the benchmark's output.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from factorial import bench as B
from factorial.optim import Adafactor

# Importing transformers (for its Adafactor) warns about torch.jit deprecations; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_quick_run_writes_json_and_markdown(tmp_path):
    assert B.main(["--quick", "--no-overhead", "--out", str(tmp_path), "--name", "t"]) == 0
    result = json.loads((tmp_path / "t.json").read_text())
    md = (tmp_path / "t.md").read_text()
    assert set(result) >= {"machine", "command", "presets", "targets", "under_load", "settings"}
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["cpu_count"] >= 1
    tiny = result["presets"]["tiny"]
    assert tiny["params"] == sum(math.prod(s) for s in B.preset_shapes("tiny", 512))
    expected = {"ours alg6", "ours alg6 reference", "ours alg6 foreach", "torch Adafactor",
                "torch Adafactor foreach",
                "torch Adam foreach", "torch Adam fused", "torch SGD"}
    expected |= {f"ours {m} b1={b:g}" for m in ("factored", "row", "col", "full") for b in (0, 0.9)} - {"ours factored b1=0"}
    assert expected <= set(tiny["time"])
    for name, t in tiny["time"].items():
        assert t["rounds"] == 3 and 0 < t["min_ms"] <= t["median_ms"], name
        assert t["p25_ms"] <= t["p75_ms"], name
    assert tiny["state_bytes"]["torch SGD"] == 0
    assert tiny["state_bytes"]["ours full b1=0.9"] == tiny["state_bytes"]["torch Adam fused"]
    assert "ours alg6 / torch Adam fused" in tiny["ratios"]
    assert result["targets"]["preset"] == "tiny" and "alg6_over_adam_fused_reference" in result["targets"]
    # Only the optimizer's paths are timed (the removed eager fused and compiled paths are not).
    assert {n for n in tiny["time"] if n.startswith("ours alg6")} == {"ours alg6", "ours alg6 reference",
                                                                       "ours alg6 foreach"}
    assert result["machine"]["c_kernel"] == "loaded" or result["machine"]["c_kernel"].startswith("unavailable: ")
    assert "C kernel of the fused path: " in md
    if result["machine"]["c_kernel"] == "loaded":
        assert 0 < result["machine"]["c_kernel_cold_build_s"] < 120  # the compiler's own time limit
        assert "compiled from nothing in " in md
    assert "## `tiny` preset" in md and "| ours alg6 |" in md and "Command: `python -m factorial.bench --quick" in md
    # --render rewrites the .md from the .json alone.
    (tmp_path / "t.md").unlink()
    assert B.main(["--render", str(tmp_path / "t.json")]) == 0
    assert (tmp_path / "t.md").read_text() == md
    # The markdown says when the numbers were taken on a busy machine.
    busy = dict(result, under_load=True)
    assert "under load" in B.to_markdown(busy)
    assert "under load" not in B.to_markdown(dict(result, under_load=False))


def test_a_quick_or_partial_run_never_writes_over_the_full_results(tmp_path):
    """`make bench BENCH_ARGS=--quick` must leave results/bench/<device>.{json,md} as they were."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    full = {tmp_path / f"{device}.json": b"{\"full\": 1}\n", tmp_path / f"{device}.md": b"# full run\n"}
    for path, data in full.items():
        path.write_bytes(data)
    assert B.main(["--quick", "--no-overhead", "--out", str(tmp_path)]) == 0
    for path, data in full.items():
        assert path.read_bytes() == data
    assert (tmp_path / f"{device}-quick.json").is_file() and (tmp_path / f"{device}-quick.md").is_file()
    # fewer measurements than a full run: a partial run, also written beside it
    assert B.output_name(B.parse_args(["--presets", "tiny"]), device) == f"{device}-partial"
    assert B.output_name(B.parse_args(["--no-overhead"]), device) == f"{device}-partial"
    assert B.output_name(B.parse_args(["--threads", "2"]), device) == device
    assert B.output_name(B.parse_args(["--quick", "--name", "mine"]), device) == "mine"


def test_factored_state_is_under_half_a_percent_of_adams_on_base_shapes():
    """C15 on the real base parameter list, from the state tensors (no timing)."""
    shapes = B.preset_shapes("base", B.VOCAB["base"])
    assert sum(math.prod(s) for s in shapes) == pytest.approx(23.1e6, rel=0.01)  # the shapes of NOTES.md
    params = B.make_params(shapes, torch.device("cpu"))
    ours = Adafactor(params, **B.ALG6)
    ours.step()
    ours_bytes = B.state_bytes(ours)
    del ours
    adam = torch.optim.Adam(params, lr=1e-3, fused=True)
    adam.step()
    adam_bytes = B.state_bytes(adam)
    assert adam_bytes == 2 * 4 * sum(math.prod(s) for s in shapes)
    # Rows + columns of each matrix and the full accumulator of each vector, in float32.
    expected = 4 * sum((s[0] + s[1]) if len(s) == 2 else s[0] for s in shapes)
    assert ours_bytes == expected
    assert ours_bytes / adam_bytes <= 0.005


def test_overhead_measurement_compares_the_same_training(cache_dir):
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not the measurement's 1 thread, so a leaked setting shows
    try:
        out = B.trainer_overhead("smoke", steps=4, rounds=2, threads=1, checkpoint_every=2, cache_dir=cache_dir,
                                 log=lambda _: None)
        threads_after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert out["same_losses"] is True  # the bare loop trains exactly what the cell trains
    assert len(out["bare_tokens_per_s"]) == len(out["cell_tokens_per_s"]) == 2
    assert all(x > 0 for x in out["bare_tokens_per_s"] + out["cell_tokens_per_s"])
    assert all(r["status"] == "completed" and 0 < r["eval_s"] < r["wall_time_s"] for r in out["cell_runs"])
    assert out["overhead"] == pytest.approx(1 - out["cell_median"] / out["bare_median"])
    assert threads_after == 2  # the measurement's own thread count was undone


def test_compiled_variant_matches_the_optimizer():
    """The measured torch.compile variant computes Alg. 6 (so its timing is a fair comparison): its
    function, traced by dynamo (backend "eager": the graph without inductor's code generation, which
    takes a minute here), gives our optimizer's parameters. What inductor generates is checked where it
    is timed: `make bench` compares the variant's parameters with ours after the run (variant_agrees)."""
    shapes = [(6, 5), (5,)]
    a, b = B.make_params(shapes, torch.device("cpu")), B.make_params(shapes, torch.device("cpu"))
    ours, compiled = Adafactor(a, **B.ALG6), B.CompiledAlg6(b, backend="eager")
    for _ in range(3):
        ours.step()
        compiled.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    assert B.variant_agrees(b, a)
    b[0].data.mul_(1.001)  # a 0.1 % error is not agreement
    assert not B.variant_agrees(b, a)
