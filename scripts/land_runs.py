"""Copy the small files of the finished runs of a clone's studies into this checkout's runs/, so that they
can be committed and a fresh clone's sweep skips them. Never replaces a run directory that exists here.

    .venv/bin/python scripts/land_runs.py /path/to/clone table2 fig1 table3 --scale cpu [--seeds 3,4,5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from factorial.runfiles import FINISHED, KEPT as SMALL


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clone", type=Path, help="the repository clone whose runs/ holds the finished runs")
    p.add_argument("studies", nargs="+")
    p.add_argument("--scale", default="cpu")
    p.add_argument("--seeds", default=None, help="comma-separated seeds to copy (default: all)")
    args = p.parse_args(argv)
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    here = Path(__file__).resolve().parents[1] / "runs"
    copied = skipped = 0
    for study in args.studies:
        for summary in sorted((args.clone / "runs" / study / args.scale).glob("*/seed*/summary.json")):
            run = summary.parent
            seed = int(run.name.removeprefix("seed"))
            if seeds is not None and seed not in seeds:
                continue
            if json.loads(summary.read_text()).get("status") not in FINISHED:
                continue
            target = here / study / args.scale / run.parent.name / run.name
            if target.exists():
                skipped += 1
                continue
            target.mkdir(parents=True)
            for name in SMALL:
                if (run / name).is_file():
                    shutil.copy2(run / name, target / name)
            copied += 1
    print(f"copied {copied} finished runs, {skipped} already here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
