"""Rebuild every committed report into a scratch folder with the command its REPORT.md names, and compare
the files with the committed ones. A refactor of the report code, or a move of the runs it reads, must
change none of them.

    .venv/bin/python scripts/check_rebuild.py                 # every results/<study>/<scale>/
    .venv/bin/python scripts/check_rebuild.py table2 fig1     # these studies only

Exit 0 when every file rebuilds byte-identical (the CLAIMS-<scale>.md summaries are rebuilt too, but they
are written per scale from every study's claims and are compared once, after the last study of the scale);
1 with the list of files that differ or are missing.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORE = "runs.jsonl.gz"  # factorial.runfiles.STORE
BUILT_BY = re.compile(r"Built by `python -m factorial\.table ([^`]*)`")


def build_command(report: Path) -> list[str] | None:
    """The arguments of ``python -m factorial.table`` that built a committed report (None: not found)."""
    found = BUILT_BY.search(report.read_text(encoding="utf-8"))
    return shlex.split(found.group(1)) if found else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("studies", nargs="*", help="studies to rebuild (default: every folder of results/ with a REPORT.md)")
    args = p.parse_args(argv)
    reports = sorted((ROOT / "results").glob("*/*/REPORT.md"))
    if args.studies:
        unknown = sorted(set(args.studies) - {r.parent.parent.name for r in reports})
        if unknown:
            print(f"check_rebuild: invalid study {unknown[0]!r}; allowed: "
                  f"{', '.join(sorted({r.parent.parent.name for r in reports}))}", file=sys.stderr)
            return 2
        reports = [r for r in reports if r.parent.parent.name in args.studies]
    differ: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for report in reports:
            folder = report.parent
            command = build_command(report)
            if command is None:
                differ.append(f"{folder.relative_to(ROOT)}: its REPORT.md names no build command")
                continue
            rel = folder.relative_to(ROOT / "results")
            if (folder / STORE).is_file():  # the runs it was built from travel with it (factorial.store)
                (out / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / STORE, out / rel / STORE)
            done = subprocess.run([sys.executable, "-m", "factorial.table", *command, "--out", str(out)], cwd=ROOT,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                differ.append(f"{rel}: the build failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode})")
                continue
            new = out / rel
            names = sorted({p.name for p in folder.iterdir() if p.is_file()} | {p.name for p in new.iterdir() if p.is_file()})
            changed = [n for n in names if not ((folder / n).is_file() and (new / n).is_file()
                                                and filecmp.cmp(folder / n, new / n, shallow=False))]
            print(f"{rel}: {'identical' if not changed else 'differs: ' + ', '.join(changed)}", flush=True)
            differ += [f"{rel}/{n}" for n in changed]
        scales = {r.parent.name for r in reports}
        for summary in sorted([*out.glob("CLAIMS-*.md"), *out.glob("claims-*.csv")]):
            committed = ROOT / "results" / summary.name
            if summary.stem.split("-", 1)[1] in scales and not args.studies:
                same = committed.is_file() and filecmp.cmp(committed, summary, shallow=False)
                print(f"{summary.name}: {'identical' if same else 'differs'}")
                if not same:
                    differ.append(summary.name)
    if differ:
        print(f"{len(differ)} file(s) differ or are missing:\n  " + "\n  ".join(differ), file=sys.stderr)
        return 1
    print(f"every one of the {len(reports)} reports rebuilds byte-identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
