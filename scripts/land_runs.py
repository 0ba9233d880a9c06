"""Add the finished runs of a clone's studies to this checkout's results stores
(results/<study>/<scale>/runs.jsonl.gz, factorial.store), so that they can be committed and a fresh clone's
sweep skips them. A run the store already holds is kept; one with the same cell and seed but other numbers is
reported and not added (exit 1). Then `make table EXP=<study> SCALE=<scale>` rebuilds the report.

    .venv/bin/python scripts/land_runs.py /path/to/clone table2 fig1 table3 --scale cpu [--seeds 3,4,5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from factorial import store as ST


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clone", type=Path, help="the repository clone whose runs/ holds the finished runs")
    p.add_argument("studies", nargs="+")
    p.add_argument("--scale", default="cpu")
    p.add_argument("--seeds", default=None, help="comma-separated seeds to add (default: all)")
    args = p.parse_args(argv)
    seeds = {f"seed{int(s)}" for s in args.seeds.split(",")} if args.seeds else None
    results = Path(__file__).resolve().parents[1] / "results"
    status = 0
    for study in args.studies:
        path = ST.store_path(results, study, args.scale)
        stored = ST.load(path)
        found, conflicts, notes = ST.collect({}, args.clone / "runs" / study / args.scale)
        for note in notes:
            print(f"{study}: {note}", file=sys.stderr)
        new = [r for rid, r in found.items() if seeds is None or rid.rsplit("/", 1)[1] in seeds]
        merged, conflicts, added = ST.merge(stored, new, path)
        for conflict in conflicts:
            print(f"{study}: not added: {conflict}", file=sys.stderr)
            status = 1
        if added:
            ST.save(path, merged)
        finished = sum(ST.is_finished(r) for r in new)
        print(f"{study}/{args.scale}: added {added} finished runs to {path.relative_to(results.parent)} "
              f"({finished - added - len(conflicts)} already there, {len(new) - finished} unfinished left out; "
              f"{len(merged)} stored)")
    return status


if __name__ == "__main__":
    sys.exit(main())
