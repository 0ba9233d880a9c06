"""Why do 2-thread step times on this VM come in two states? A test of one explanation.

results/bench/omp-wait-cpu.md showed that a 2-thread process on the project's 2-core VM is in one of two
states: in one, fused Adam is faster (7 ms instead of 11–12 ms on the base shapes) and our eager step
slower; the OpenMP wait policy is not the cause. The explanation tested here: in that state the two vCPUs
do not share a cache, so reading data the *other* thread has just written costs a transfer between
caches, while work on data a thread wrote itself gets faster (each thread has a cache of its own).

Each round times, in one process, on six distinct 8192×512 float32 gradients (the base preset's
embedding shape, 100 MB in all, so nothing stays in cache between rounds):

* ``own rows``: ``mul(G, G, out=T)`` then the column sums of T by blocks of rows (each thread sums rows
  it wrote itself: ``col_sum_by_row_blocks`` below, the way of the eager fused path that the optimizer had
  when this was measured, and of its C kernel's loops);
* ``other's rows``: the same square, then ``T.sum(dim=-2)``, which splits the *columns* between threads,
  so each thread reads half of its rows from what the other one wrote (the old way);

and a step of fused Adam and our default step (C kernel) on the base preset. The
rounds are then split in two by fused Adam's time (the threshold of least within-group variance); the
table gives each group's medians.
If the explanation holds, ``other's rows`` / ``own rows`` is clearly larger in the group where Adam is
faster, and the C kernel (every loop keeps each thread on its own rows) keeps its ratio to Adam in both.

    .venv/bin/python scripts/locality_probe.py                 # 8 minutes (the states last minutes)
    .venv/bin/python scripts/locality_probe.py --seconds 60    # a look
    .venv/bin/python scripts/locality_probe.py --render results/bench/locality-cpu.json   # the .md again

Writes results/bench/locality-<device>.{json,md} (``--out`` to change the folder). Which states a run
sees is up to the machine: a run that stays in one state says so and proves nothing either way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def _time(fn, repeats: int = 3) -> float:
    """Best of ``repeats`` calls, in ms."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


ROW_BLOCKS = 16


def col_sum_by_row_blocks(sq):
    """Σᵢ sq[i, :] as ``ROW_BLOCKS`` blocks of rows summed first, then the blocks: each thread sums rows of
    its own (``sq.sum(dim=-2)`` lets each thread sum a range of columns over all rows instead)."""
    n = sq.shape[-2]
    if n < 2 * ROW_BLOCKS:
        return sq.sum(dim=-2)
    head = n - n % ROW_BLOCKS
    out = sq[..., :head, :].unflatten(-2, (ROW_BLOCKS, head // ROW_BLOCKS)).sum(dim=-2).sum(dim=-2)
    if head < n:
        out.add_(sq[..., head:, :].sum(dim=-2))
    return out


def measure(seconds: float, threads: int) -> list[dict]:
    import torch

    from factorial import bench as B
    from factorial.optim import Adafactor
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(8192, 512, generator=g) for _ in range(6)]
    scratch = torch.empty(8192, 512)

    def squares_then(reduce):
        def run():
            for x in grads:
                reduce(torch.mul(x, x, out=scratch))
        return run

    own = squares_then(col_sum_by_row_blocks)
    other = squares_then(lambda t: t.sum(dim=-2))
    shapes = B.preset_shapes("base", B.VOCAB["base"])
    opts = {
        "torch Adam fused": torch.optim.Adam(B.make_params(shapes, torch.device("cpu")), lr=1e-3, fused=True),
        "ours alg6": Adafactor(B.make_params(shapes, torch.device("cpu")), **B.ALG6),
    }
    for o in opts.values():
        o.step()
    rounds = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = {"t": round(time.monotonic() - end + seconds, 2), "own rows": _time(own) / len(grads),
             "other's rows": _time(other) / len(grads)}
        for name, o in opts.items():
            r[name] = _time(o.step)
        rounds.append({k: round(v, 3) for k, v in r.items()})  # 1 µs: what the .json keeps
    return rounds


def split_by_adam(rounds: list[dict]) -> tuple[list[dict], list[dict], float | None]:
    """Rounds with fused Adam below / above the threshold that best splits its times in two (least
    within-group variance, each group at least 5 % of the rounds); one group when the two means are
    less than 20 % of the median apart (one state)."""
    times = sorted(r["torch Adam fused"] for r in rounds)
    n = len(times)
    if n < 20:
        return rounds, [], None
    prefix, prefix_sq = [0.0], [0.0]
    for t in times:
        prefix.append(prefix[-1] + t)
        prefix_sq.append(prefix_sq[-1] + t * t)

    def sse(i: int, j: int) -> float:  # sum of squared deviations of times[i:j]
        s, q = prefix[j] - prefix[i], prefix_sq[j] - prefix_sq[i]
        return q - s * s / (j - i)

    lo = max(1, n // 20)
    k = min(range(lo, n - lo + 1), key=lambda k: sse(0, k) + sse(k, n))
    mean_fast, mean_slow = prefix[k] / k, (prefix[n] - prefix[k]) / (n - k)
    if mean_slow - mean_fast < 0.2 * statistics.median(times):
        return rounds, [], None
    cut = (times[k - 1] + times[k]) / 2
    return [r for r in rounds if r["torch Adam fused"] < cut], [r for r in rounds if r["torch Adam fused"] >= cut], cut


KEYS = ("own rows", "other's rows", "torch Adam fused", "ours alg6")
EAGER = "ours alg6 eager"  # the optimizer's eager fused path, since removed: only in runs saved before that


def summary(group: list[dict]) -> dict:
    if not group:
        return {}
    med = {k: statistics.median(r[k] for r in group) for k in KEYS}
    med["rounds"] = len(group)
    med["other's / own"] = med["other's rows"] / med["own rows"]
    med["ours alg6 / Adam"] = statistics.median(r["ours alg6"] / r["torch Adam fused"] for r in group)
    if EAGER in group[0]:
        med[EAGER] = statistics.median(r[EAGER] for r in group)
        med["ours alg6 eager / Adam"] = statistics.median(r[EAGER] / r["torch Adam fused"] for r in group)
    return med


def to_markdown(result: dict) -> str:
    lines = ["# Thread locality and the two 2-thread states", "",
             f"Command: `{result['command']}` ({result['time_utc']}); {result['threads']} threads, "
             f"{len(result['rounds'])} rounds over {result['seconds']:.0f} s; torch {result['torch']}; "
             f"load average {result['load_start']} at the start, {result['load_end']} at the end.", ""]
    groups = {k: v for k, v in result["groups"].items() if v}
    if result["cut_ms"] is None:
        lines += ["Fused Adam's times show no gap: the machine stayed in one state during this run, so it "
                  "cannot test the explanation.", ""]
    else:
        lines += [f"Rounds split at fused Adam = {result['cut_ms']:.2f} ms (least within-group variance).", ""]
    if groups:
        eager = all(EAGER in s for s in groups.values())
        lines += ["Medians per group; `own rows` / `other's rows`: ms per 8192×512 matrix (square, then column "
                  "sums); the ratios to Adam are medians of each round's ratio.", "",
                  "| group | rounds | own rows | other's rows | other's / own | fused Adam | ours (C kernel) | "
                  "ours / Adam |" + (" ours eager | eager / Adam |" if eager else ""),
                  "|---|---|---|---|---|---|---|---|" + ("---|---|" if eager else "")]
        for name, s in groups.items():
            other, ratio = s["other's rows"], s["other's / own"]
            lines.append(f"| {name} | {s['rounds']} | {s['own rows']:.2f} | {other:.2f} | {ratio:.2f} | "
                         f"{s['torch Adam fused']:.2f} | {s['ours alg6']:.2f} | {s['ours alg6 / Adam']:.2f} |"
                         + (f" {s[EAGER]:.2f} | {s['ours alg6 eager / Adam']:.2f} |" if eager else ""))
        lines.append("")
    lines += ["Every round (ms; `t` in seconds from the start) is in the .json.", ""]
    return "\n".join(lines)


def dump(result: dict) -> str:
    """JSON with one round per line (the file stays small)."""
    rounds = [json.dumps(r) for r in result["rounds"]]
    head = json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1)
    return head[:-2] + ',\n "rounds": [\n  ' + ",\n  ".join(rounds) + "\n ]\n}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=480.0, help="how long to measure (default 480)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/bench", help="folder for locality-cpu.{json,md}")
    p.add_argument("--render", metavar="JSON", help="only rewrite the .md (beside it) from a saved .json")
    args = p.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        fast, slow, cut = split_by_adam(saved["rounds"])
        saved["cut_ms"] = cut
        saved["groups"] = {"fast Adam": summary(fast), "slow Adam": summary(slow)} if cut else {"one state": summary(fast)}
        Path(args.render).write_text(dump(saved))
        Path(args.render).with_suffix(".md").write_text(to_markdown(saved))
        print(to_markdown(saved))
        return 0
    if args.seconds <= 0:
        p.error(f"--seconds={args.seconds}; allowed: a number > 0")
    if args.threads < 1:
        p.error(f"--threads={args.threads}; allowed: an integer >= 1")
    import torch

    load_start = list(os.getloadavg())
    t_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rounds = measure(args.seconds, args.threads)
    fast, slow, cut = split_by_adam(rounds)
    groups = {"fast Adam": summary(fast), "slow Adam": summary(slow)} if cut else {"one state": summary(fast)}
    result = {"command": "python scripts/locality_probe.py " + " ".join(argv), "time_utc": t_utc,
              "threads": args.threads, "seconds": args.seconds, "torch": torch.__version__,
              "load_start": [round(x, 2) for x in load_start], "load_end": [round(x, 2) for x in os.getloadavg()],
              "cut_ms": cut, "groups": groups, "rounds": rounds}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "locality-cpu.json.tmp"
    tmp.write_text(dump(result))
    tmp.replace(out / "locality-cpu.json")
    tmp = out / "locality-cpu.md.tmp"
    tmp.write_text(to_markdown(result))
    tmp.replace(out / "locality-cpu.md")
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
