"""The pooled seed noise of a study's runs (the fit the verdicts' intervals use: ln perplexity = cell + seed
over every cell with two or more finished seeds), on chosen seeds and without chosen Table-2 rows: to see
which cells a study's noise comes from. An explanation beside the verdicts, never an input to them.

    .venv/bin/python scripts/pooled_noise.py table2 cpu --seeds 3,4,5 [--drop-rows E]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from factorial import store as ST
from factorial.report import data as D


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study")
    p.add_argument("scale")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: all)")
    p.add_argument("--drop-rows", default="", help="comma-separated Table-2 rows whose cells to leave out")
    args = p.parse_args(argv)
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    drop = {r for r in args.drop_rows.split(",") if r}
    path = ST.store_path(Path(__file__).resolve().parents[1] / "results", args.study, args.scale)
    records = {k: r for k, r in ST.load(path).items()
               if (seeds is None or int(k.rsplit("seed", 1)[1]) in seeds) and r["config"].get("row") not in drop}
    if not records:
        print(f"pooled_noise: no stored run of {args.study}/{args.scale} on those seeds", file=sys.stderr)
        return 2
    runs, _ = D.frames(records)
    noise = D.study_noise(D.aggregate(runs))
    print(f"{args.study}/{args.scale}: {noise.runs} runs in {noise.cells} cells, pooled seed noise sigma = "
          f"{noise.sigma:.4f} in ln ppl (df {noise.df})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
