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
    # Only the optimizer's eager paths are timed: the compiled path (compile=True) only with --compiled, which is
    # the default on CUDA alone.
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


def _timing(ms: float) -> dict:
    return {"median_ms": ms, "p25_ms": ms, "p75_ms": ms, "min_ms": ms, "rounds": 10, "raw_ms": [ms] * 10,
            "first_step_ms": ms}


def _gpu_like_result() -> dict:
    """A result as a CUDA run with --compiled --parity writes it, with made-up numbers (no timing is asserted)."""
    machine = dict(device="cuda", device_name="a GPU", cpu="a CPU", cpu_count=16, torch_threads=16, memory_management={},
                   torch="2.13.0", python="3.12.3", transformers="5.24.0", platform="Linux", host="h",
                   load_average_start=[0.1, 0.1, 0.1], load_average_end=[0.2, 0.1, 0.1], other_processes_cpu_share=0.0)
    times = {"ours alg6": _timing(6.0), "ours alg6 reference": _timing(12.0), B.COMPILED: _timing(0.5),
             B.COMPILED_NO_GRAPHS: _timing(2.0), "transformers Adafactor": _timing(13.0), "torch Adam fused": _timing(0.4)}
    entry = {"vocab": 8192, "params": 23_080_000, "tensors": 51, "time": times,
             "state_bytes": {k: 285_000 for k in times} | {"torch Adam fused": 184_656_000},
             "sync_check": {name: "no sync" for name in times if name.startswith("ours")},
             "cuda_graphs": {B.COMPILED: {"direct": 1, "captures": 1, "replays": 34, "graphs_kept": 1,
                                          "without_graphs": []}}}
    entry["ratios"] = B.ratios(entry)
    case = {"params": 1e-7, "states": 2e-7, "update_rms": 1e-7, "max": 2e-7, "clipped": True, "dtype": "float32",
            "seconds": 3.0}
    result = {"machine": machine, "command": "python -m factorial.bench --compiled --parity", "time_utc": "now",
              "settings": {}, "presets": {"base": entry}, "under_load": False,
              "parity": {"row O": case, "row A": {**case, "clipped": None},
                         "row B, bf16": {**case, "dtype": "bfloat16", "params": 0.0, "params_bf16_ulps": 0.0},
                         "row P": {**case, "max": 3e-6, "clipped": False}},
              "large_matrix": {p: {"row": 3e-7, "col": 2e-7, "update_rms": 6e-8, "step_scale": 1e-7}
                               for p in ("reference", "compiled")},
              "mfu": {"tokens_per_s": 500_000.0, "model_tflops": 60.0, "peak_bf16_tflops": 989.4, "mfu": 0.06,
                      "step_ms": 16.0},
              "mfu_compiled": {"tokens_per_s": 800_000.0, "model_tflops": 96.0, "peak_bf16_tflops": 989.4, "mfu": 0.1,
                               "step_ms": 10.0, "overrides": ["optim.compile=true"],
                               "cuda_graphs": {"direct": 1, "captures": 1, "replays": 58, "graphs_kept": 1,
                                               "without_graphs": []}}}
    result["targets"] = B.targets(result)
    return result


def test_the_compiled_paths_targets_parity_and_graphs_are_reported():
    result = _gpu_like_result()
    tg = result["targets"]
    assert tg["compiled_over_adam_fused"] == {"value": 1.25, "target": 1.5, "met": True}
    assert tg["compiled_over_adam_fused_stretch"] == {"value": 1.25, "target": 1.0, "met": False}
    assert tg["optimizer_share_of_cell"] == {"value": 0.05, "target": 0.05, "met": True}  # 0.5 ms of 10 ms
    assert tg["optimizer_share_of_cell_default"]["value"] == pytest.approx(6.0 / 16.0)
    assert result["presets"]["base"]["ratios"][f"{B.COMPILED_NO_GRAPHS} / ours alg6"] == pytest.approx(2.0 / 6.0)
    md = B.to_markdown(result)
    assert "| Alg. 6 step time (compile=True) / fused Adam (base shapes) | 1.25× | 1.50× | yes |" in md
    assert "| Alg. 6 step time (compile=True) / fused Adam, stretch (base shapes) | 1.25× | 1.00× | **no** |" in md
    assert "with optim.compile=true | 5.00% | 5.00% | yes |" in md
    assert "## The compiled path against the reference on cuda" in md
    assert "| row O | float32 | 1.0e-07 | 2.0e-07 | 1.0e-07 | yes | yes |" in md
    assert "| row A | float32 | 1.0e-07 | 2.0e-07 | 1.0e-07 | – | yes |" in md  # no clipping in row A
    assert "| row B, bf16 | bfloat16 | 0.0e+00 (0 ulp) |" in md
    assert "| row P | float32 | 1.0e-07 | 2.0e-07 | 1.0e-07 | no | **no** |" in md  # 3e-6 > 1e-6
    assert "| compiled | 3.0e-07 | 2.0e-07 | 6.0e-08 | 1.0e-07 |" in md
    assert "CUDA graphs of `ours alg6 compiled` over its 10 rounds: 1 steps ran the compiled function directly, " \
           "1 captured a graph, 34 replayed one." in md
    assert "optim.compile=true: 800,000 tokens/s, 10.00 ms a step" in md and "Interrupted" not in md
    assert "Its optimizer's CUDA graphs: 1 direct steps, 1 captures, 58 replays." in md
    assert "Interrupted" in B.to_markdown({**result, "interrupted": True})


def test_an_interrupted_run_keeps_what_it_measured(monkeypatch):
    """scripts/gpu_check.sh stops the benchmark with SIGINT at its time limit: the run still returns (and main
    writes) what was measured, marked interrupted."""
    def measure(args, device, vocab, result, log):
        result["parity"] = {"row O": {"params": 0.0, "states": 0.0, "update_rms": 0.0, "max": 0.0, "clipped": True,
                                      "dtype": "float32", "seconds": 1.0}}
        raise KeyboardInterrupt

    monkeypatch.setattr(B, "_measure", measure)
    result = B.run(B.parse_args(["--quick", "--device", "cpu"]), log=lambda _: None)
    assert result["interrupted"] is True and "row O" in result["parity"] and result["targets"] == {}
    assert "**Interrupted**" in B.to_markdown(result) and "| row O |" in B.to_markdown(result)


def test_parity_cases_are_named_on_the_command_line():
    args = B.parse_args(["--parity", "--parity-cases", "row O", "row B, bf16"])
    assert args.parity is True and args.parity_cases == ["row O", "row B, bf16"] and args.compiled is None
    with pytest.raises(SystemExit):
        B.parse_args(["--parity-cases", "row Z"])
