"""Does the OpenMP wait policy explain the swings of 2-thread step times on this VM?

results/bench/cpu.md records that on the project's 2-core VM the ratio of our Alg. 6 step to fused
Adam swings between runs (1.9x to 4.0x), and that 2 threads can be slower than 1. A guess written there:
how fast an idle vCPU wakes for a parallel region. This probe tests it. Each measurement is a fresh
process (libgomp reads OMP_WAIT_POLICY once, at start) that times, interleaved as `make bench` does,
our Alg. 6 step and torch's fused and foreach Adam on one preset's parameter list, with 1 and with 2
threads; the processes alternate the policies (unset = libgomp's default: spin a while, then sleep;
ACTIVE = spin; PASSIVE = sleep at once) in rotated order, several times, so that a drift of the machine
hits every policy alike. The CPU time the hypervisor gave to others (steal, /proc/stat) is recorded per
process.

    .venv/bin/python scripts/omp_wait_probe.py                 # base preset, 4 repeats: a few minutes
    .venv/bin/python scripts/omp_wait_probe.py --preset cpu --repeats 2 --seconds 5

Writes results/bench/omp-wait-<device>.{json,md} (``--out`` to change the folder). Run it on a quiet
machine: it records the load average, and the numbers mean little under load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

POLICIES = ("default", "ACTIVE", "PASSIVE")
OPTIMIZERS = ("ours alg6", "torch Adam fused", "torch Adam foreach")


def _steal() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs from /proc/stat; None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(x) for x in fields]
    return (values[7] if len(values) > 7 else 0), sum(values[:8])


def child(preset: str, threads: int, seconds: float) -> dict:
    import torch

    from factorial import bench as B

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    shapes = B.preset_shapes(preset, B.VOCAB[preset])
    makers = {name: s["make"] for name, s in B.settings(device).items() if name in OPTIMIZERS}
    # Rounds sized from one quick round so that each process takes about `seconds`.
    probe, _ = B.time_optimizers(makers, shapes, device, rounds=1, steps=2, warmup=1, log=lambda _: None)
    per_round = sum(v["median_ms"] for v in probe.values()) * 5 / 1e3
    rounds = max(5, int(seconds / max(per_round, 1e-3)))
    s0 = _steal()
    out, _ = B.time_optimizers(makers, shapes, device, rounds=rounds, steps=5, warmup=2, log=lambda _: None)
    s1 = _steal()
    steal = None if s0 is None or s1 is None or s1[1] == s0[1] else (s1[0] - s0[0]) / (s1[1] - s0[1])
    return {"rounds": rounds, "steal_share": steal,
            "median_ms": {k: v["median_ms"] for k, v in out.items()},
            "p25_ms": {k: v["p25_ms"] for k, v in out.items()}, "p75_ms": {k: v["p75_ms"] for k, v in out.items()}}


def run_child(policy: str, preset: str, threads: int, seconds: float) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--child", "--preset", preset, "--threads", str(threads), "--seconds", str(seconds)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"probe process failed ({policy}, {threads} threads): {res.stderr.strip()[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def to_markdown(result: dict) -> str:
    lines = [f"# OpenMP wait policy and 2-thread step times ({result['device']})", "",
             f"Command: `{result['command']}` ({result['time_utc']}). Preset `{result['preset']}`, "
             f"{result['repeats']} repeats of every (policy, threads) process in rotated order, about "
             f"{result['seconds']:g} s each; torch {result['torch']}. Load average {result['load_start']} at the start, "
             f"{result['load_end']} at the end.", "",
             "Per process: the median over interleaved rounds (ms/step). Columns: the median over processes, then "
             "every process's value in run order; `steal` is the share of CPU time the hypervisor gave to others "
             "while the process timed.", ""]
    lines += ["| policy | threads | optimizer | ms/step (median of processes) | per process | steal % per process |",
              "|---|---|---|---|---|---|"]
    for key, runs in result["runs"].items():
        policy, threads = key.split("/")
        steal = ", ".join("–" if r["steal_share"] is None else f"{100 * r['steal_share']:.1f}" for r in runs)
        for name in OPTIMIZERS:
            vals = [r["median_ms"][name] for r in runs]
            lines.append(f"| {policy} | {threads} | {name} | {statistics.median(vals):.2f} | "
                         f"{', '.join(f'{v:.2f}' for v in vals)} | {steal} |")
    lines += ["", "Ratio ours alg6 / torch Adam fused, per process:", ""]
    for key, runs in result["runs"].items():
        r = [x["median_ms"]["ours alg6"] / x["median_ms"]["torch Adam fused"] for x in runs]
        lines.append(f"- {key}: {', '.join(f'{v:.2f}' for v in r)} (median {statistics.median(r):.2f})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="base", choices=("tiny", "cpu", "base"))
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--seconds", type=float, default=12.0, help="timing seconds per process")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "bench")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.preset, args.threads[0], args.seconds)))
        return 0
    for name, value, ok in (("--repeats", args.repeats, args.repeats >= 1), ("--seconds", args.seconds, args.seconds > 0),
                            ("--threads", args.threads, all(t >= 1 for t in args.threads))):
        if not ok:
            p.error(f"invalid {name}={value!r}; allowed: positive values")
    import torch

    runs: dict[str, list[dict]] = {f"{pol}/{t}": [] for pol in POLICIES for t in args.threads}
    order = [(pol, t) for pol in POLICIES for t in args.threads]
    load_start = list(os.getloadavg())
    for i in range(args.repeats):
        k = i % len(order)
        for pol, t in order[k:] + order[:k]:
            r = run_child(pol, args.preset, t, args.seconds)
            runs[f"{pol}/{t}"].append(r)
            print(f"repeat {i} {pol:8s} {t} threads: " + ", ".join(f"{n} {v:.2f} ms" for n, v in r["median_ms"].items())
                  + ("" if r["steal_share"] is None else f"; steal {100 * r['steal_share']:.1f}%"), flush=True)
    result = {"device": "cpu", "preset": args.preset, "repeats": args.repeats, "seconds": args.seconds,
              "command": "python scripts/omp_wait_probe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
              "load_start": [round(x, 2) for x in load_start], "load_end": [round(x, 2) for x in os.getloadavg()],
              "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "omp-wait-cpu.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "omp-wait-cpu.md").write_text(to_markdown(result))
    print(f"wrote {args.out / 'omp-wait-cpu.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
