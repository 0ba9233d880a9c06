"""Build a study's results folder from what its runs wrote: ``make table EXP=table2 SCALE=cpu``.

    python -m factorial.table --exp EXP --scale SCALE [--runs-root DIR] [--out results]
                              [--source local|wandb] [--from-csv results/EXP/SCALE/cells.csv]
                              [--project factorial] [--entity ENTITY] [--wandb [MODE]] [--force]
    python -m factorial.table --summary --scale SCALE [--out results]

Reads ``<runs-root>/<exp>/<scale>/<cell>/seed<k>/`` (``--runs-root``, else ``$FACTORIAL_RUNS``, else runs/ of
the repository, as for the sweep; or the W&B group ``<exp>/<scale>``, or a cells.csv written earlier) and writes
``<out>/<exp>/<scale>/``:

    cells.csv    one row per run: every knob, seed, status, perplexities, steps, tokens, time, state bytes
    curves.csv   the logged curves (validation perplexity, train loss, RMS(U)) — with cells.csv, enough to
                 rebuild everything here without the runs (--from-csv)
    table.md / table.csv / table.tex    the study's table
    *.png        the figures
    claims.csv   one row per claim verdict
    REPORT.md    provenance, the table, the figures, and each claim of docs/PAPER.md §8 the study speaks to
                 with the cells compared, the numbers, the rule and the verdict

The table's layout, the figures and the claims the study is home to are what its study file declares in
``report:`` (``factorial.report.spec``); a study file without one gets one row per cell and the default
figures. ``--exp`` may be a path to a study file: its runs are then ``<runs-root>/<file stem>/<scale>/``.

and then ``<out>/CLAIMS-<scale>.md`` (+ ``claims-<scale>.csv``): one headline verdict per claim C1–C15
from the claims.csv of every study at that scale, each from the claim's home study
(``factorial.report.summary``). ``--summary`` writes only that.

A build never replaces results made from runs it does not have: when ``<out>/<exp>/<scale>/cells.csv``
holds finished runs that are not finished in this build (an interrupted sweep, a partial copy of the
runs), nothing is written and the exit code is 2; ``--force`` replaces them anyway, ``--out`` writes
elsewhere. A build with fewer finished runs than the study file plans says so ("partial").

Every file is written to a temporary folder first and moved into place (never half written). With
``--wandb`` (or FACTORIAL_TABLE_WANDB=auto|online|offline) the tables are also logged to a W&B run
``<exp>/<scale>/summary`` (job_type "table") in the study's group; a W&B failure only warns.
Exit codes: 0 written, 2 nothing to report on (no runs dir, no runs, no csv), a refused overwrite or a bad argument.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from .layout import REPO_ROOT, is_path, runs_root, runs_root_help, study_file, study_name
from . import runfiles as RF
from . import store as ST
from .report import claims as CL
from .report import data as D
from .report import document, output, plots, screen, summary, sweeps
from .report import evidence as EV
from .report import rules as R
from .report import signature as SG
from .report import spec as S
from .report import tables as TB
from .study import StudyError, load_study

log = logging.getLogger("factorial.table")
ENV_WANDB = "FACTORIAL_TABLE_WANDB"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m factorial.table", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", help="the study (experiments/<exp>.yaml, or a path to a study file), e.g. table2 "
                                 "(required unless --summary)")
    p.add_argument("--summary", action="store_true",
                   help="only rebuild <out>/CLAIMS-<scale>.md from the studies' claims.csv at that scale")
    p.add_argument("--scale", required=True, help="the scale it ran at, e.g. cpu")
    p.add_argument("--runs-root", type=Path, default=None, help=runs_root_help())
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results", help="results root (default: results/)")
    p.add_argument("--source", choices=("local", "wandb"), default="local", help="run dirs (default) or the W&B API")
    p.add_argument("--from-csv", type=Path, default=None, help="rebuild from a cells.csv (and curves.csv beside it)")
    p.add_argument("--project", default=None, help="W&B project (default: the runs' logger.project, else factorial)")
    p.add_argument("--entity", default=None, help="W&B entity (default: the runs' logger.entity, else yours)")
    p.add_argument("--all-cells", action="store_true",
                   help="judge the claims on every run, also those whose cell the study file does not define (cells "
                        "renamed by extra overrides of the sweep: make sweep ARGS=...); by default they are marked "
                        "and left out of the verdicts")
    p.add_argument("--force", action="store_true",
                   help="replace the results folder even when this build has fewer finished runs than it holds")
    p.add_argument("--wandb", nargs="?", const="auto", default=os.environ.get(ENV_WANDB) or None,
                   choices=("auto", "online", "offline", "disabled"),
                   help=f"also log the tables to a W&B summary run (mode; default auto; env {ENV_WANDB})")
    args = p.parse_args(argv)
    args.runs_root = runs_root(args.runs_root)
    if not args.summary and not args.exp:
        p.error("the following arguments are required: --exp (or --summary)")
    return args


def load(args) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    name = study_name(args.exp)
    if args.from_csv is not None:
        runs, curves = D.load_csv(args.from_csv)
        return runs, curves, f"`{args.from_csv}`"
    if args.source == "wandb":
        runs, curves = D.load_wandb(name, args.scale, project=args.project or "factorial", entity=args.entity)
        where = f"{args.entity + '/' if args.entity else ''}{args.project or 'factorial'}"
        return runs, curves, f"W&B project `{where}`, group `{name}/{args.scale}`"
    store_file = ST.store_path(args.out, name, args.scale)
    check_study_known(args.exp, args.runs_root, args.scale, store_file)
    args.records = D.local_records(args.runs_root, name, args.scale, store_file)
    runs, curves = D.frames(args.records)
    unfinished = sum(not ST.is_finished(r) for r in args.records.values())
    source = f"[`{RF.STORE}`]({RF.STORE}) (this folder's store of the finished runs)"
    if unfinished:
        where = Path(D.study_dir(args.runs_root, name, args.scale)).resolve()
        with contextlib.suppress(ValueError):  # a committed report names the repository's own paths relatively
            where = where.relative_to(REPO_ROOT)
        source += f" and {unfinished} unfinished run{'s' if unfinished > 1 else ''} in `{where}`"
    return runs, curves, source


def check_study_known(exp: str, runs_root: Path, scale: str, store_file: Path | None = None) -> None:
    """A study or scale with neither a file nor runs is a typo: the error lists the studies or scales (the
    suggestion `make sweep EXP=<typo>` would fail too). Runs without a study file (cells trained with
    exp=NAME) are a study all the same."""
    import difflib

    from .layout import available_scales, available_studies

    if D.study_dir(runs_root, study_name(exp), scale).is_dir() or (store_file is not None and store_file.is_file()):
        return
    if scale not in available_scales():  # `make sweep ... SCALE=<typo>` would fail too
        close = difflib.get_close_matches(scale, available_scales(), n=1, cutoff=0.6)
        raise D.ReportError(f"invalid --scale={scale!r}: no runs in {D.study_dir(runs_root, study_name(exp), scale)}; "
                            + (f"did you mean {close[0]}? " if close else "")
                            + f"allowed: {' | '.join(available_scales())} (files in conf/scale/)")
    if is_path(exp) or study_file(exp).is_file():
        return
    names = available_studies()
    close = difflib.get_close_matches(exp, names, n=1, cutoff=0.6)
    raise D.ReportError(
        f"invalid --exp={exp!r}: no study file {study_file(exp)} and no runs in "
        f"{D.study_dir(runs_root, exp, scale)}; " + (f"did you mean {close[0]}? " if close else "")
        + f"allowed: a study ({', '.join(names)}), a path to a study file, or a name with runs under {runs_root}")


def cells_csv(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.drop(columns=["cell_key"], errors="ignore")


def _interval_columns(j) -> dict:
    d = getattr(j, "diff", None)
    sides = getattr(j, "sides", None) or ()
    n_sides = {"n_x": sides[0] if len(sides) > 0 else None, "n_ref": sides[1] if len(sides) > 1 else None}
    empty = {"estimate_pct": None, "ci_low_pct": None, "ci_high_pct": None}
    if d is None:
        return {**empty, "n": None, **n_sides, "paired": None, "method": None, "estimate_nats": None,
                "ci_low_nats": None, "ci_high_nats": None}
    if d.unit == "nats":  # a learning-rate sweep's sensitivity difference: a loss difference, not a ratio
        return {**empty, "n": d.n, **n_sides, "paired": d.paired, "method": d.method,
                "estimate_nats": round(d.estimate, 4), "ci_low_nats": round(d.lo, 4) if d.lo is not None else None,
                "ci_high_nats": round(d.hi, 4) if d.hi is not None else None}
    from .report.rules import pct

    return {"estimate_pct": round(pct(d.estimate), 3), "ci_low_pct": round(pct(d.lo), 3) if d.lo is not None else None,
            "ci_high_pct": round(pct(d.hi), 3) if d.hi is not None else None, "n": d.n, **n_sides, "paired": d.paired,
            "method": d.method, "estimate_nats": None, "ci_low_nats": None, "ci_high_nats": None}


def claims_frame(results: list[CL.ClaimResult], skipped) -> pd.DataFrame:
    """One row per part of each claim verdict: the claim's verdict, the part's, and the interval it rests on
    (estimate and 90 % CI in % of the reference, n, whether paired, how the interval was computed)."""
    rows = []
    for r in results:
        base = {"claim": r.claim.id, "context": TB.section_title(r.context), "pass": r.pass_name,
                "seeds": r.pass_label, "registration": r.registration, "registration_note": r.registration_note,
                "paper": r.claim.where, "statement": r.claim.text, "verdict": r.verdict, "reason": r.reason}
        for p in r.parts:
            rows.append({**base, "part": p.text, "part_verdict": p.verdict, **_interval_columns(p.judgement),
                         "rule": p.rule, "evidence": p.judgement.reason})
        for u in r.uncovered:
            rows.append({**base, "part": u, "part_verdict": "not covered", **_interval_columns(None), "rule": "",
                         "evidence": "its cells are not in this study"})
    rows += [{"claim": c.id, "context": "", "pass": "", "seeds": "", "registration": "", "registration_note": "",
              "paper": c.where, "statement": c.text, "verdict": "not covered", "reason": why,
              "part": "", "part_verdict": "not covered", **_interval_columns(None), "rule": "", "evidence": ""}
             for c, why in skipped]
    return pd.DataFrame(rows)


def finished_runs(frame: pd.DataFrame) -> set[str]:
    """The runs of a cells.csv-like frame that completed or diverged, as '<cell>/seed<k>'."""
    if frame is None or frame.empty or "status" not in frame.columns:
        return set()
    done = frame[frame["status"].isin(RF.FINISHED)]
    if {"cell", "seed"} <= set(done.columns):
        return {f"{c}/seed{str(s).removesuffix('.0')}" for c, s in zip(done["cell"], done["seed"])}
    return {str(r) for r in done.get("run_id", [])}


def planned_runs(exp: str, seeds=None) -> int | None:
    """How many (cell, seed) runs the study file plans, on ``seeds`` only when given (None for a study
    without a file here)."""
    try:
        study = load_study(exp)
    except (StudyError, OSError):
        return None
    return sum(len([k for k in c.seeds if seeds is None or k in seeds]) for c in study.cells)


class WouldLoseResults(D.ReportError):
    """A build that would replace a results folder with fewer finished runs than it holds."""


def check_not_losing(final: Path, runs: pd.DataFrame, args, own: pd.DataFrame | None = None) -> str | None:
    """Refuse to replace results built from more finished runs than this build has (unless --force).

    Returns a note to print when the build is partial (counted on ``own``, the study's own runs) but replaces
    nothing it would lose."""
    new = finished_runs(runs)
    planned = planned_runs(args.exp)
    done = len(finished_runs(own if own is not None else runs))
    of_plan = f"{done} of the study's {planned} planned runs" if planned else f"{done} runs"
    old_csv = final / "cells.csv"
    if old_csv.is_file():
        try:
            old = finished_runs(pd.read_csv(old_csv, keep_default_na=False))
        except (OSError, ValueError, pd.errors.ParserError):
            old = set()
        missing = sorted(old - new)
        if missing and not args.force:
            examples = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise WouldLoseResults(
                f"refused to overwrite {final}: it was built from {len(old)} finished runs, and {len(missing)} of them "
                f"are not finished in this build ({examples}); this build has {of_plan} finished. Nothing was written "
                f"(neither {final} nor CLAIMS-{args.scale}.md). To proceed: finish the runs (`make sweep EXP={args.exp} "
                f"SCALE={args.scale}` resumes them), or write this build elsewhere with --out DIR, or replace the "
                f"results anyway with --force (make table ... TABLE_ARGS=--force)"
            )
    if planned and done < planned:
        return f"partial: {of_plan} finished; the verdicts use only those"
    return None


def study_rules(exp: str):
    """The pre-registered rules the study file names (None: none; the default rules judge it)."""
    return EV.study_rules(study_file(exp))


def judge(runs: pd.DataFrame, report, exp: str) -> tuple[list[CL.ClaimResult], list, list]:
    """The claims judged on each pass of the study's runs (factorial.report.evidence: its confirmation on the
    rules' confirmatory seeds, its exploration on the others), each pass with its own cells and seed noise;
    every verdict labelled confirmatory, exploratory or incomplete, with the reason."""
    rules = study_rules(exp)
    planned = planned_runs(exp, rules.confirmatory_seeds) if rules is not None else None
    results, skipped, signatures = [], None, []
    for p in EV.passes(runs, rules, planned):
        cells = D.aggregate(p.runs)
        got, skip = CL.evaluate(cells, report)  # each context with its own seed noise
        for r in got:
            r.pass_name, r.pass_label, r.registration, r.registration_note = p.name, p.label, p.status, p.note
        results += got
        skipped = skip if skipped is None else [s for s in skipped if s[0].id in {c.id for c, _ in skip}]
        signatures += [(f"{p.label}, {p.status}", r) for r in SG.evaluate(cells)]
    return results, skipped or [], signatures


def build(args, command: str) -> Path:
    report = S.report_of(args.exp)  # what the study file declares (checked before anything is read)
    if report.controls:  # the controls name cells of the study: checked against its grid
        try:
            load_study(args.exp)
        except StudyError as err:
            raise S.ReportSpecError(str(err)) from None
    with R.using(study_rules(args.exp)):  # the study's rules judge it and print in its report
        return _build(args, command, report)


def pass_tables(report, runs: pd.DataFrame, exp: str) -> list:
    """A study that names pre-registered rules gets its tables per pass, each from its own seeds: the
    confirmation's (the rules' seeds) first, then the exploration's, so that no table mixes seeds read before
    the rules with those run after them. [] for a study without rules (its one table pools every seed)."""
    import dataclasses

    rules = study_rules(exp)
    if rules is None or not len(runs):
        return []
    return [dataclasses.replace(t, title=f"{t.title} — {p.label}")
            for p in EV.passes(runs, rules) for t in TB.build_tables(report, D.aggregate(p.runs))]


def pass_plots(report, runs: pd.DataFrame, curves: pd.DataFrame, exp: str, out: Path, title: str) -> list | None:
    """A study that names pre-registered rules and holds both passes gets its figures per pass, as its tables:
    each figure once from the confirmation's runs (``<name>_confirmation.png``) and once from the exploration's
    (``<name>_exploration.png``), the caption saying which seeds it shows. None otherwise (one set of figures
    from every run: a study without rules, or one pass only)."""
    import tempfile

    rules = study_rules(exp)
    if rules is None or not len(runs):
        return None
    passes = EV.passes(runs, rules)
    if len(passes) < 2:
        return None
    made = []
    for p in passes:
        ids = set(p.runs["run_id"])
        sub = curves[curves["run_id"].isin(ids)] if curves is not None and "run_id" in curves else curves
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            for name, caption in plots.make_plots(report, p.runs, D.aggregate(p.runs), sub, Path(tmp), title):
                stem, dot, ext = name.rpartition(".")
                renamed = f"{stem}_{p.name}{dot}{ext}"
                os.replace(Path(tmp) / name, out / renamed)
                made.append((renamed, f"{p.label[0].upper()}{p.label[1:]}: {caption}"))
    return made


def study_cell_names(exp: str) -> set[str] | None:
    """The names of the cells the study file defines (None without a study file: every run is the study's)."""
    if not study_file(exp).is_file():
        return None
    try:
        return {c.name for c in load_study(exp).cells}
    except (StudyError, OSError):
        return None


def mark_extra(runs: pd.DataFrame, exp: str) -> pd.DataFrame:
    """The runs whose cell the study file does not define (a sweep given extra named overrides after --,
    `make sweep ARGS=...`, renames every cell it runs): a boolean column ``in_study``, only when there are any."""
    own = study_cell_names(exp)
    if own is None or "cell" not in runs.columns:
        return runs
    inside = runs["cell"].isin(own)
    return runs if inside.all() else runs.assign(in_study=inside.to_numpy())


def extra_note(runs: pd.DataFrame, exp: str, judged_all: bool) -> str:
    """REPORT.md's paragraph on the runs that are not the study's cells ("" when there are none)."""
    if "in_study" not in runs.columns:
        return ""
    extra = runs[~runs["in_study"].astype(bool)]
    names = sorted(set(extra["cell"]))
    shown = ", ".join(f"`{n}`" for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    use = ("The verdicts use them too (`--all-cells`)." if judged_all else
           "The verdicts use only the study's own cells; `make table ... TABLE_ARGS=--all-cells` judges these too.")
    return (f"> **Not the study's cells:** {len(extra)} runs in {len(names)} cells were trained with extra overrides "
            f"(after `--` of the sweep, `make sweep ARGS=...`) and are not cells of the study file `{exp}`: {shown}. "
            f"They are in the tables and figures, and `cells.csv` marks them (`in_study` false). {use}")


def _build(args, command: str, report) -> Path:
    name = study_name(args.exp)
    runs, curves, source = load(args)
    runs = mark_extra(runs, args.exp)
    own = runs if "in_study" not in runs.columns or args.all_cells else runs[runs["in_study"].astype(bool)]
    final = Path(args.out) / name / args.scale
    note = check_not_losing(final, runs, args, own)
    cells = D.aggregate(runs)
    own_cells = cells if own is runs else D.aggregate(own) if len(own) else cells.iloc[0:0]
    noise = D.study_noise(own_cells)
    results, skipped, signatures = judge(own, report, args.exp) if len(own) else (
        [], [(c, "no run of the study's own cells") for c in CL.CLAIMS], [])
    sweep_frame = sweeps.sweep_table(own_cells)
    warn = document.provenance_warning(runs)
    if warn:
        print(f"factorial.table: warning: {warn}", file=sys.stderr)
    tables = pass_tables(report, own, args.exp) or TB.build_tables(report, cells)
    with output.Staging(final) as stage:
        stage.csv("cells.csv", cells_csv(runs))
        stage.csv("curves.csv", curves)
        stage.csv("claims.csv", claims_frame(results, skipped))
        stage.text("table.md", TB.to_markdown(tables, "##") + "\n")
        stage.csv("table.csv", TB.to_csv_frame(tables))
        stage.text("table.tex", TB.to_latex(tables))
        made = pass_plots(report, runs, curves, args.exp, stage.tmp, name)
        if made is None:
            made = plots.make_plots(report, runs, cells, curves, stage.tmp, name)
        points = screen.screen_points(own_cells)
        made += screen.screen_plot(points, stage.tmp)
        control_md = screen.control_markdown(screen.control_results(own_cells, report.controls))
        for name, _ in made:
            stage.written.append(name)
        if not sweep_frame.empty:
            stage.csv("lr_sensitivity.csv", sweep_frame)
        if signatures:
            stage.csv("signature.csv", SG.frame(signatures))
        stage.text("REPORT.md", document.build_report(args.exp, args.scale, source, runs, cells, tables, made,
                                                      results, skipped, command, noise,
                                                      sweeps.sweep_markdown(sweep_frame), screen.screen_markdown(points),
                                                      control_md, SG.markdown(signatures),
                                                      extra_note(runs, args.exp, args.all_cells)))
        if getattr(args, "records", None) is not None:  # the store keeps every finished run this report read
            stage.bytes(RF.STORE, ST.dumps(ST.finished(args.records).values()))
        stage.commit()
    counts = Counter(r.verdict for r in results)
    print(f"wrote {final}: {len(runs)} runs, {len(cells)} cells, {len(made)} figures; claims: "
          + (", ".join(f"{n} {v}" for v, n in counts.items()) or "none") + (f" ({note})" if note else ""))
    if len(own) < len(runs):
        print(f"factorial.table: note: {len(runs) - len(own)} runs are not cells of the study file (extra overrides "
              f"of the sweep): marked in cells.csv (in_study) and REPORT.md, left out of the verdicts "
              "(TABLE_ARGS=--all-cells judges them too)", file=sys.stderr)
    elif "in_study" in runs.columns:
        print("factorial.table: note: runs that are not cells of the study file (extra overrides of the sweep) are "
              "marked in cells.csv (in_study) and REPORT.md, and judged with the rest (--all-cells)", file=sys.stderr)
    if args.wandb and args.wandb != "disabled":
        project = args.project or next((p for p in runs.get("logger.project", []) if p), None) or "factorial"
        entity = args.entity or next((e for e in runs.get("logger.entity", []) if e), None)
        output.log_to_wandb(
            args.wandb, project, entity, name, args.scale, final,
            {"table": TB.to_csv_frame(tables), "claims": claims_frame(results, skipped), "cells": cells_csv(runs)},
            made, {f"claims/{k}": v for k, v in counts.items()} | {"runs": len(runs), "cells": len(cells)},
        )
    return final


def rebuild_command(args: argparse.Namespace) -> str:
    """The command a report names as its own: what decides its content (study, scale, where the runs are
    read from), not how this build was asked for (--force, --out, --wandb), so that the same runs rebuild
    the same report byte for byte whichever of those flags a build used."""
    parts = ["python -m factorial.table", "--exp", str(args.exp), "--scale", str(args.scale)]
    if getattr(args, "all_cells", False):
        parts.append("--all-cells")
    if args.from_csv is not None:
        parts += ["--from-csv", str(args.from_csv)]
    elif args.source != "local":
        parts += ["--source", args.source] + [x for k in ("project", "entity") if getattr(args, k)
                                              for x in (f"--{k}", getattr(args, k))]
    elif Path(args.runs_root).resolve() != (REPO_ROOT / "runs").resolve():
        parts += ["--runs-root", str(args.runs_root)]
    return " ".join(shlex.quote(p) if p != parts[0] else p for p in parts)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
    except SystemExit as err:  # argparse: --help (0) or a usage error (2)
        return int(err.code or 0)
    command = rebuild_command(args)
    try:
        if not args.summary:
            build(args, command)
    except D.ReportError as err:
        print(f"factorial.table: error: {err}", file=sys.stderr)
        return 2
    path = summary.write(args.out, args.scale)
    if path is not None:
        print(f"wrote {path}")
    elif args.summary:
        print(f"factorial.table: error: no {args.out}/*/{args.scale}/claims.csv to summarise", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
