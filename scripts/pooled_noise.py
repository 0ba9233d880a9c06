"""The pooled seed noise of a study's runs (the fit the verdicts' intervals use: ln perplexity = cell + seed
over every cell with two or more finished seeds), on chosen seeds and without chosen Table-2 rows: to see
which cells a study's noise comes from. An explanation beside the verdicts, never an input to them.

    .venv/bin/python scripts/pooled_noise.py table2 cpu --seeds 3,4,5 [--drop-rows E]
    .venv/bin/python scripts/pooled_noise.py deep_lr cpu_deep --where schedule.multiplier=2 \
        [--drop row=B,schedule.warmup=true]

--where keeps the runs whose knobs have all the given values (one context of a study, as the claims judge
it); --drop leaves out the runs that have all the values of one of its arguments (a single cell).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from factorial import store as ST
from factorial.report import data as D


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study")
    p.add_argument("scale")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: all)")
    p.add_argument("--drop-rows", default="", help="comma-separated Table-2 rows whose cells to leave out")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep only runs with this knob value (repeatable; e.g. schedule.multiplier=2)")
    p.add_argument("--drop", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="leave out the runs with all these knob values (repeatable; e.g. row=B,schedule.warmup=true)")
    args = p.parse_args(argv)
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    try:
        where = _pairs(args.where, "--where")
        drops = [_pairs(a.split(","), "--drop") for a in args.drop]
        drops += [[("row", r)] for r in args.drop_rows.split(",") if r]  # --drop-rows E is --drop row=E
    except ValueError as e:
        print(f"pooled_noise: {e}", file=sys.stderr)
        return 2
    path = ST.store_path(Path(__file__).resolve().parents[1] / "results", args.study, args.scale)
    stored = ST.load(path)
    knobs = {k: D.flatten(r.get("config") or {}) for k, r in stored.items()}
    for key, _ in where + [kv for d in drops for kv in d]:
        if stored and not any(key in k for k in knobs.values()):
            print(f"pooled_noise: no stored run of {args.study}/{args.scale} has the knob {key!r} "
                  f"(allowed: a dotted config key such as row, schedule.warmup, schedule.multiplier)", file=sys.stderr)
            return 2

    def matches(k: str, pairs: list[tuple[str, object]]) -> bool:
        return all(D.knob_equal(knobs[k].get(key), value) for key, value in pairs)

    records = {k: r for k, r in stored.items()
               if (seeds is None or int(k.rsplit("seed", 1)[1]) in seeds) and matches(k, where)
               and not any(matches(k, d) for d in drops)}
    if not records:
        present = "; ".join(f"{key} has {sorted({str(k.get(key)) for k in knobs.values()})}" for key, _ in where)
        print(f"pooled_noise: no stored run of {args.study}/{args.scale} on those seeds"
              + (f" with {', '.join(args.where)} (allowed: {present})" if where else ""), file=sys.stderr)
        return 2
    runs, _ = D.frames(records)
    noise = D.study_noise(D.aggregate(runs))
    print(f"{args.study}/{args.scale}: {noise.runs} runs in {noise.cells} cells, pooled seed noise sigma = "
          f"{noise.sigma:.4f} in ln ppl (df {noise.df})")
    return 0


def _pairs(items: list[str], option: str) -> list[tuple[str, object]]:
    """KEY=VALUE strings as (key, value), the value read as YAML (2 -> 2, true -> True, post -> 'post')."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} {item!r}: allowed: KEY=VALUE, e.g. schedule.multiplier=2")
        out.append((key.strip(), yaml.safe_load(value)))
    return out


if __name__ == "__main__":
    sys.exit(main())
