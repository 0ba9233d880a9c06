"""W&B dashboards as code: a saved workspace and a report for one study, ``make dashboard EXP=table2 SCALE=cpu``.

    python -m factorial.dashboard --exp EXP --scale SCALE [--results results] [--project P] [--entity E]

Both are built from what ``make table`` wrote to ``results/<exp>/<scale>/`` and from the report's own
definitions (``factorial.report``: the cells, the claims and which cells each claim compares), never from a
second list of rows or claims:

* the **workspace** (a saved view of the project, ``wandb_workspaces.workspaces``): the runs of W&B group
  ``<exp>/<scale>``, grouped by cell (config key ``cell``) so the seeds of a cell draw as their mean with a
  min–max band, cells with warmup in blues and without in reds. Sections: validation perplexity against step;
  the claims (each claims.csv row: verdict, evidence, whatever columns it has); RMS(U) of the Figure 1 matrices,
  its mean over all tensors and the fraction clipped; the knobs the study varies against the final
  perplexity (parallel coordinates, and final perplexity against each swept number); training curves.
* the **report** (``wandb_workspaces.reports.v2``): the commit and commands that reproduce the study, its table
  (``table.md``, verbatim), every claims.csv row with all its columns, then per claim the validation perplexity
  of only the cells that claim compares; final perplexity against the learning-rate multiplier where the study
  sweeps it; and every figure of the results folder (``*.png``, as ``make table TABLE_ARGS=--wandb`` logs them
  to the run ``<exp>/<scale>/summary``).

W&B draws every panel of a workspace from one run set (there is no per-panel run selection), which is why the
per-claim plots, each over its own run set, are in the report.

Online only: entity and project come from the runs' config (``logger.entity``, ``logger.project`` in
cells.csv) unless given; without a W&B login or a network the command says so in one line and exits 1.
It only reads ``results/``. Exit codes: 0 saved, 1 W&B not logged in / unreachable / refused, 2 bad argument
or no results to build from.

Runs log their config flat (``optim.beta1`` is one key, see ``runlog.flatten``), which W&B stores as
``{"optim.beta1": {"value": …}}``; the backend spelling of such a key is ``optim.beta1.value``, not the
``optim.value.beta1`` that ``wandb_workspaces`` assumes for a dotted name. Every config key here goes through
:func:`config_group`, :func:`config_filter` or :class:`FlatConfigColumn`, which spell it as the runs log it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .layout import REPO_ROOT, available_scales, is_path, runs_root, runs_root_help
from . import runfiles as RF
from .report import claims as CL
from .report import data as D
from .report import spec as S
from .report import tables as TB

log = logging.getLogger("factorial.dashboard")

# What the runs log (train.py through runlog.RunLogger), spelled exactly so; tests check each against a real run.
STEP = RF.STEP  # our optimizer step, every metric's x-axis (runlog: define_metric("*", step_metric="step"))
VAL_PPL = RF.VAL_PPL
TRAIN_METRICS = (RF.TRAIN_LOSS, RF.TRAIN_LR, RF.GRAD_NORM, RF.BETA2_T)
RMS_METRICS = RF.RMS_KEYS  # the Figure 1 matrices, every train.rms_every steps
RMS_MEAN = RF.RMS_U_MEAN
CLIP_FRAC = RF.CLIP_FRAC  # logged by Adafactor cells with update clipping
FINAL_PPL = "val_ppl"  # summary: final validation perplexity (summary.json, also in the W&B run summary)
CELL = "cell"  # config: the cell's name; the seeds of a cell share it
ROW = "row"  # config: the Table 2 row, when the cell is one
WARMUP = "schedule.warmup"
MULTIPLIER = "schedule.multiplier"

# W&B run attributes (not logged by us): the study is the run's group; `make table --wandb` adds a summary run.
GROUP = "Group"
JOB_TYPE = "JobType"
NAME = "Name"
SUMMARY_JOB_TYPE = "table"  # factorial.report.output.log_to_wandb
NOT_COVERED = "not covered"  # claims.csv's verdict for a claim the study cannot speak to (factorial.table)
PLOT_PREFIX = "plot/"  # … which logs each results/<exp>/<scale>/<name>.png as plot/<name>

WARMUP_COLORS = ("#1f77b4", "#6baed6", "#08519c", "#4292c6", "#9ecae1", "#2171b5", "#084594", "#c6dbef")
NO_WARMUP_COLORS = ("#d62728", "#fb6a4a", "#a50f15", "#ef3b2c", "#fc9272", "#cb181d", "#67000d", "#fcbba1")
OTHER_COLOR = "#7f7f7f"


class DashboardError(Exception):
    """A bad argument or nothing to build from (exit code 2)."""


class WandbUnavailable(Exception):
    """Not logged in to W&B, or W&B could not be reached (exit code 1)."""


# --- the study, from its results folder -----------------------------------------------------------------


@dataclass
class Study:
    exp: str
    scale: str
    folder: Path
    description: str
    runs: pd.DataFrame
    cells: pd.DataFrame  # aggregated over seeds (factorial.report.data.aggregate)
    claims: pd.DataFrame  # claims.csv as written by make table, every column
    table_md: str  # table.md as written by make table
    images: list[str]  # the *.png of the folder, sorted
    projects: list[str]  # the runs' logger.project values (one, normally)
    entities: list[str]  # the runs' logger.entity values (none when they logged to their default entity)
    commit: str | None = None  # the repository's commit now
    remote: str | None = None  # the repository's origin URL, for a link to the commit
    claim_cells: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (claim, context) → cell names

    @property
    def group(self) -> str:
        return f"{self.exp}/{self.scale}"


def _values(runs: pd.DataFrame, key: str) -> list[str]:
    return sorted({str(v) for v in runs.get(key, []) if v is not None and str(v).strip()})


def pick(given: str | None, values: list[str], key: str) -> str | None:
    """The --entity/--project given, else the runs' one value of ``key`` (None if they have none)."""
    if given:
        return given
    if len(values) > 1:
        raise DashboardError(f"the runs disagree on {key}: {', '.join(values)}; pass --{key.split('.')[-1]} to choose")
    return values[0] if values else None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def table_command(exp: str, scale: str, runs: Path | None = None) -> str:
    """The `make table` that writes what the dashboard reads, with the runs root when it is not the one
    the table finds by itself (--runs-root, else $FACTORIAL_RUNS, else runs/)."""
    told = f' TABLE_ARGS="--runs-root {runs}"' if runs is not None and Path(runs).resolve() != runs_root().resolve() else ""
    return f"make table EXP={exp} SCALE={scale}{told}"


def load_study(exp: str, scale: str, results: Path, runs: Path | None = None) -> Study:
    """The study as ``make table`` left it in ``<results>/<exp>/<scale>/``; reads only."""
    from .study import StudyError
    from .study import load_study as load_study_file

    if is_path(exp):
        raise DashboardError(f"invalid --exp={exp!r}; allowed: a study name (experiments/<name>.yaml), whose "
                             "results are in <results>/<name>/<scale>/")
    try:
        description = load_study_file(exp).description
    except StudyError as err:
        raise DashboardError(str(err)) from None
    if scale not in available_scales():
        raise DashboardError(f"invalid --scale={scale!r}; allowed: {' | '.join(available_scales())}")
    folder = Path(results) / exp / scale
    missing = [n for n in ("cells.csv", "claims.csv", "table.md") if not (folder / n).is_file()]
    if missing:
        raise DashboardError(f"no {', '.join(missing)} in {folder}; run `{table_command(exp, scale, runs)}` first")
    try:
        runs, _ = D.load_csv(folder / "cells.csv")
    except D.ReportError as err:
        raise DashboardError(str(err)) from None
    cells = D.aggregate(runs)
    claims = pd.read_csv(folder / "claims.csv", dtype=str, keep_default_na=False)
    if "claim" not in claims.columns:
        raise DashboardError(f"{folder / 'claims.csv'} has no 'claim' column (columns: {', '.join(claims.columns)})")
    study = Study(
        exp=exp, scale=scale, folder=folder, description=description, runs=runs, cells=cells, claims=claims,
        table_md=(folder / "table.md").read_text(encoding="utf-8"),
        images=sorted(p.name for p in folder.glob("*.png")),
        projects=_values(runs, "logger.project"), entities=_values(runs, "logger.entity"),
        commit=_git("rev-parse", "HEAD"), remote=_git("remote", "get-url", "origin"),
    )
    study.claim_cells = claim_cells(study)
    return study


def _names(study: Study, cell: dict) -> list[str]:
    """The names (config key ``cell``) of an aggregated cell's runs; names hold commas, so from its runs."""
    of_run = dict(zip(study.runs["run_id"], study.runs[CELL])) if CELL in study.runs else {}
    return sorted({str(of_run[r]) for r in cell.get("run_ids") or [] if of_run.get(r)})


def claim_cells(study: Study) -> dict[tuple[str, str], list[str]]:
    """For each (claim, context) of claims.csv: the names of the cells that claim compares there.

    From the claims' own definitions (``factorial.report.claims``: each part's cells, looked up in the context
    the report judged it in). A claim judged on something else than compared cells (C15: state bytes) has none.
    """
    by_id = {c.id: c for c in CL.CLAIMS}
    out: dict[tuple[str, str], list[str]] = {}
    for row in claim_rows(study.claims):
        claim_id, context = row["claim"], row.get("context") or ""
        claim = by_id.get(claim_id)
        if claim is None or (claim_id, context) in out:
            continue
        names: list[str] = []
        for values, ctx in CL.contexts(study.cells, claim):
            if TB.section_title(values) != context:
                continue
            for part in claim.parts:
                for need in part.needs:
                    _, cell = ctx.resolve(need)
                    if cell is not None:
                        names += _names(study, cell)
        if names:
            out[(claim_id, context)] = sorted(dict.fromkeys(names))
    return out


# --- config keys spelled as the runs log them ---------------------------------------------------------------


def _backend_config(key: str) -> str:
    """A flat config key's path in W&B: the key, then the ``value`` envelope (``optim.beta1.value``)."""
    return f"{key}.value"


def config_group(key: str):
    """A workspace run-set group-by key for the flat config key ``key`` (``wandb_workspaces.expr``)."""
    from wandb_workspaces import expr

    return expr.Config(_backend_config(key))  # ".value" present: wandb_workspaces passes it through as is


def panel_group(key: str):
    """A panel's group-by key for the flat config key ``key`` (``wandb_workspaces.reports.v2``)."""
    import wandb_workspaces.reports.v2 as wr

    return wr.Config(_backend_config(key))


def runset_group(key: str) -> str:
    """A report run set's group-by key for the flat config key ``key``."""
    return f"config.{_backend_config(key)}"


def config_filter(key: str):
    """A filter operand for the flat config key ``key`` (filters name config keys without the envelope)."""
    from wandb_workspaces import expr

    return expr.Config(key)


def _flat_column_class():
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import internal

    class FlatConfigColumn(wr.ParallelCoordinatesPlotColumn):
        """A parallel-coordinates axis on a flat config key (``config:optim.beta1.value``)."""

        def _to_model(self):
            if isinstance(self.metric, wr.Config):
                return internal.Column(accessor=f"config:{_backend_config(self.metric.name)}",
                                       display_name=self.display_name, inverted=self.inverted, log=self.log)
            return super()._to_model()

    class FlatScatterPlot(wr.ScatterPlot):
        """A scatter plot whose config axes are flat config keys."""

        def _to_model(self):
            model = super()._to_model()
            for axis in ("x", "y", "z"):
                value = getattr(self, axis)
                if isinstance(value, wr.Config):
                    setattr(model.config, f"{axis}_axis", f"config:{_backend_config(value.name)}")
            return model

    return FlatConfigColumn, FlatScatterPlot


# --- what the dashboards show ---------------------------------------------------------------------------------


def _records(cells: pd.DataFrame) -> list[dict]:
    return cells.to_dict("records")


def cell_colors(study: Study) -> dict[str, str]:
    """Cell name → colour: blues with warmup, reds without (as in the report's plots), grey if unknown."""
    colors: dict[str, str] = {}
    counts = {True: 0, False: 0}
    for cell in sorted(_records(study.cells), key=lambda c: _names(study, c)[:1]):
        warmup = cell.get(WARMUP)
        for name in _names(study, cell):
            if warmup is None:
                colors[name] = OTHER_COLOR
                continue
            palette = WARMUP_COLORS if warmup else NO_WARMUP_COLORS
            colors[name] = palette[counts[bool(warmup)] % len(palette)]
            counts[bool(warmup)] += 1
    return colors


def knobs(study: Study) -> list[str]:
    """The config keys the study varies between cells (the report's identity knobs; ``row`` when it varies)."""
    keys = D.varying(study.cells, D.identity_keys(study.cells.columns))
    rows = {str(v) for v in study.runs.get(ROW, []) if v is not None}
    return ([ROW] if len(rows) > 1 else []) + keys


def swept_numbers(study: Study) -> list[str]:
    """The numbers the study sweeps: its table's sweep (c, d, the multiplier: ``report.table`` of its study file;
    factorial.report.spec) and the learning-rate multiplier wherever it takes ≥ 3 values."""
    out = []
    layout = TB.layout_of(S.report_of(study.exp))
    if layout is not None and layout.sweep is not None and layout.sweep.numeric in study.cells:
        out.append(layout.sweep.numeric)
    if MULTIPLIER in study.cells and MULTIPLIER not in out:
        values = {v for v in study.cells[MULTIPLIER] if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if len(values) >= 3:
            out.append(MULTIPLIER)
    return out


def has_adafactor(study: Study) -> bool:
    return any(c.get("optim.name") == "adafactor" for c in _records(study.cells))


def _perplexity_plot(title: str, **kw):
    import wandb_workspaces.reports.v2 as wr

    return wr.LinePlot(title=title, x=STEP, y=[VAL_PPL], log_y=True, groupby=panel_group(CELL),
                       groupby_aggfunc="mean", groupby_rangefunc="minmax", title_x="step",
                       title_y="validation perplexity", **kw)


def _curve(metric: str, title: str, log_y: bool = False):
    import wandb_workspaces.reports.v2 as wr

    return wr.LinePlot(title=title, x=STEP, y=[metric], log_y=log_y or None, groupby=panel_group(CELL),
                       groupby_aggfunc="mean", groupby_rangefunc="minmax", title_x="step", title_y=metric)


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def claims_markdown(claims: pd.DataFrame) -> str:
    """claims.csv as a Markdown table, every column it has, in its order."""
    cols = list(claims.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for rec in claims.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(v) for v in rec) + " |")
    return "\n".join(lines)


def claim_title(row: dict) -> str:
    context = row.get("context") or ""
    return f"{row['claim']}" + (f" @ {context}" if context else "") + (f" — {row['verdict']}" if row.get("verdict") else "")


def claim_markdown(row: dict) -> str:
    """One claims.csv row: every non-empty column as a line (statement, verdict, evidence, intervals, …)."""
    lines = []
    for key, value in row.items():
        if key in ("claim", "context") or value in (None, ""):
            continue
        text = str(value)
        if key == "parts":
            lines.append(f"**{key}**:")
            lines += [f"- {p.strip()}" for p in text.split(" | ") if p.strip()]
        else:
            lines.append(f"**{key}**: {text}")
    return "\n\n".join(lines)


def claim_rows(claims: pd.DataFrame) -> list[dict]:
    """The claims.csv rows that are verdicts of this study (not the claims it cannot speak to)."""
    return [r for r in claims.to_dict("records") if r.get("verdict") != NOT_COVERED]


def run_set_filters(study: Study) -> list:
    """The study's training runs: its W&B group, less the summary run of ``make table --wandb``."""
    from wandb_workspaces import expr

    return [expr.Metric(GROUP) == study.group, expr.Metric(JOB_TYPE) != SUMMARY_JOB_TYPE]


def _all_of(filters: list):
    from wandb_workspaces import expr

    return expr.And(*filters)


def keep_filters(owner, filters, shown: str) -> None:
    """Make ``owner`` (a Runset or Workspace) send ``filters`` exactly.

    wandb_workspaces 0.4.13 keeps filters as a display string and parses that back when it saves, and the
    parser turns every "=" of the string into "==", inside quoted values too: the filter on the cell
    ``row=A,schedule.warmup=true`` would be sent as ``row==A,schedule.warmup==true`` and match no run. Its
    load → save path sends filters it stashed unparsed while the display string is unchanged; stash ours so.
    Tests check the filters in the request a save sends.
    """
    from wandb_workspaces import expr

    v2 = expr.filters_tree_to_v2(expr._filter_items_to_filters_tree([filters]))
    object.__setattr__(owner, "_stashed_filters_v2", v2)
    object.__setattr__(owner, "_stashed_filter_string", shown)


def build_workspace(study: Study, entity: str, project: str):
    """The saved workspace view of the study (not saved here)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    FlatConfigColumn, FlatScatterPlot = _flat_column_class()
    sections = [ws.Section(name="Validation perplexity", is_open=True, panels=[
        _perplexity_plot(f"{study.group}: validation perplexity, mean and min–max over seeds, by cell"),
    ])]
    rows = claim_rows(study.claims)
    if rows:
        sections.append(ws.Section(name="Claims", is_open=True, panels=[
            wr.MarkdownPanel(markdown=f"### {claim_title(r)}\n\n{claim_markdown(r)}\n\ncells compared: "
                             + (", ".join(f"`{c}`" for c in study.claim_cells.get((r["claim"], r.get("context") or ""), []))
                                or "—"))
            for r in rows
        ]))
    if has_adafactor(study):
        sections.append(ws.Section(name="Update RMS and clipping", is_open=True, panels=[
            *[_curve(m, f"RMS(U) of {m.split('/', 1)[1]} (Figure 1)", log_y=True) for m in RMS_METRICS],
            _curve(RMS_MEAN, "RMS(U), mean over all tensors"),
            _curve(CLIP_FRAC, "fraction of tensors clipped (RMS(U) > d)"),
        ]))
    columns = [FlatConfigColumn(metric=wr.Config(k), display_name=k) for k in knobs(study)]
    columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(FINAL_PPL), display_name="final val/ppl",
                                                    log=True))
    sections.append(ws.Section(name="Knobs against final perplexity", is_open=True, panels=[
        wr.ParallelCoordinatesPlot(title=f"{study.group}: the knobs the study varies against final validation "
                                   "perplexity", columns=columns),
        *[FlatScatterPlot(title=f"final validation perplexity against {k}", x=wr.Config(k),
                          y=wr.SummaryMetric(FINAL_PPL), log_y=True) for k in swept_numbers(study)],
    ]))
    sections.append(ws.Section(name="Training", is_open=False, panels=[
        _curve(m, m, log_y=m in (RF.TRAIN_LOSS, RF.GRAD_NORM)) for m in TRAIN_METRICS
    ]))
    colors = cell_colors(study)
    filters = _all_of(run_set_filters(study))
    workspace = ws.Workspace(
        entity=entity, project=project, name=f"factorial {study.group}",
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis=STEP, max_runs=max(10, len(study.runs))),
        runset_settings=ws.RunsetSettings(
            filters=filters, groupby=[config_group(CELL)], group_colors=colors,
            pinned_columns=[f"config:{_backend_config(CELL)}", f"summary:{FINAL_PPL}"],
        ),
    )
    keep_filters(workspace, filters, workspace.runset_settings.filters)
    return workspace


def commit_link(remote: str | None, commit: str | None, path: str):
    """A link to ``path`` at ``commit`` when the repository's origin is on GitHub, else the commit as code."""
    import wandb_workspaces.reports.v2 as wr

    if not commit:
        return "an unknown commit"
    m = re.match(r"^(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)([^/]+)/(.+?)(?:\.git)?/?$",
                 remote or "")
    if m:
        return wr.Link(text=commit[:12], url=f"https://github.com/{m.group(1)}/{m.group(2)}/tree/{commit}/{path}")
    return wr.InlineCode(text=commit)


def _run_commits(study: Study) -> str:
    commits = sorted({str(c)[:12] for c in study.runs.get("git_commit", []) if c})
    return ", ".join(commits) or "unknown"


def build_report(study: Study, entity: str, project: str):
    """The study's report (not saved here)."""
    import wandb_workspaces.reports.v2 as wr

    FlatConfigColumn, FlatScatterPlot = _flat_column_class()
    folder = f"results/{study.exp}/{study.scale}"
    colors = cell_colors(study)

    def runset(name: str, cells: list[str] | None = None) -> wr.Runset:
        leaves = run_set_filters(study)
        if cells is not None:
            leaves.append(config_filter(CELL).isin(list(cells)))
        filters = _all_of(leaves)
        rs = wr.Runset(entity=entity, project=project, name=name, filters=filters, groupby=[runset_group(CELL)])
        keep_filters(rs, filters, rs.filters)
        return rs

    blocks: list = [
        wr.P(text=[f"{study.description} — the runs of W&B group ", wr.InlineCode(text=study.group),
                   f": {len(study.runs)} runs in {len(study.cells)} cells, run at commit(s) {_run_commits(study)}."]),
        wr.H2(text="Reproduce"),
        wr.P(text=["Built from ", wr.InlineCode(text=folder), " at commit ",
                   commit_link(study.remote, study.commit, folder), "; the same numbers are in its REPORT.md."]),
        wr.MarkdownBlock(text="```bash\n"
                         f"make sweep EXP={study.exp} SCALE={study.scale}       # the runs (resumes; skips finished cells)\n"
                         f"make table EXP={study.exp} SCALE={study.scale}       # {folder}/: tables, figures, claims\n"
                         f"make dashboard EXP={study.exp} SCALE={study.scale}   # this report and the study's workspace\n"
                         "```"),
        wr.H2(text="Table"),
        wr.MarkdownBlock(text=study.table_md),
        wr.H2(text="Verdicts"),
        wr.MarkdownBlock(text=claims_markdown(study.claims)),
    ]
    rows = claim_rows(study.claims)
    if rows:
        blocks.append(wr.H2(text="Claims"))
    for r in rows:
        cells = study.claim_cells.get((r["claim"], r.get("context") or ""))
        blocks += [wr.H3(text=claim_title(r)), wr.MarkdownBlock(text=claim_markdown(r))]
        if cells:
            name = f"{r['claim']}: the cells compared"
            blocks.append(wr.PanelGrid(
                runsets=[runset(name, cells)],
                panels=[_perplexity_plot(f"{claim_title(r)}: validation perplexity of the cells compared",
                                         layout=wr.Layout(w=24, h=9))],
                custom_run_colors=_group_colors(name, colors, cells),
            ))
    if MULTIPLIER in swept_numbers(study):
        blocks += [
            wr.H2(text="Learning-rate sensitivity"),
            wr.P(text=["Final validation perplexity of every run against the learning-rate multiplier ",
                       wr.InlineCode(text=MULTIPLIER), " (diverged runs have none)."]),
            wr.PanelGrid(runsets=[runset("the study")], panels=[
                FlatScatterPlot(title="final validation perplexity against the learning-rate multiplier",
                                x=wr.Config(MULTIPLIER), y=wr.SummaryMetric(FINAL_PPL), log_x=True, log_y=True,
                                layout=wr.Layout(w=12, h=9)),
                wr.ParallelCoordinatesPlot(
                    title="knobs against final validation perplexity",
                    columns=[FlatConfigColumn(metric=wr.Config(k), display_name=k) for k in knobs(study)]
                    + [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(FINAL_PPL), display_name="final val/ppl",
                                                        log=True)],
                    layout=wr.Layout(x=12, w=12, h=9)),
            ]),
        ]
    if study.images:
        name_filter = _all_of([_name_filter(study)])
        summary_runset = wr.Runset(entity=entity, project=project, name="the summary run", filters=name_filter)
        keep_filters(summary_runset, name_filter, summary_runset.filters)
        blocks += [
            wr.H2(text="Figures"),
            wr.P(text=["The figures of ", wr.InlineCode(text=folder + "/"), ", from the run ",
                       wr.InlineCode(text=f"{study.group}/summary"), " that ",
                       wr.InlineCode(text=f'make table EXP={study.exp} SCALE={study.scale} TABLE_ARGS="--wandb"'),
                       " logs."]),
            wr.PanelGrid(
                runsets=[summary_runset],
                panels=[wr.MediaBrowser(title=name, media_keys=[PLOT_PREFIX + Path(name).stem],
                                        layout=wr.Layout(w=24, h=12)) for name in study.images],
            ),
        ]
    return wr.Report(entity=entity, project=project, title=f"factorial {study.group}: reproduction report"[:128],
                     description=f"Study {study.exp} at scale {study.scale}: table, verdicts and curves.",
                     blocks=blocks, width="fluid")


def _name_filter(study: Study):
    from wandb_workspaces import expr

    return expr.Metric(NAME) == f"{study.group}/summary"


def _group_colors(runset_name: str, colors: dict[str, str], cells: list[str]) -> dict:
    """Report run-set colours of the cell groups (same as the workspace's)."""
    import wandb_workspaces.reports.v2 as wr

    # an undotted key: wandb_workspaces adds the ".value" envelope itself here (config:cell.value)
    return {wr.RunsetGroup(runset_name=runset_name, keys=(wr.RunsetGroupKey(key=wr.Config(CELL), value=c),)): colors[c]
            for c in cells if c in colors}


# --- online -------------------------------------------------------------------------------------------------


def _api(timeout: int):
    """A logged-in ``wandb.Api``; WandbUnavailable (one line) without a login or a network."""
    from .runlog import _find_credentials, resolve_wandb_mode

    try:
        mode, reason = resolve_wandb_mode("auto")
    except ValueError as err:  # e.g. WANDB_MODE=sideways
        raise DashboardError(str(err)) from None
    if mode != "online":
        raise WandbUnavailable(f"W&B dashboards are online only, and W&B is {mode} here ({reason})")
    import wandb

    url = os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    problem = network_problem(url, min(timeout, NETWORK_CHECK_S))
    if problem is not None:  # before wandb.Api, which retries for half a minute and then blames its service process
        raise WandbUnavailable(f"no network: W&B at {url} cannot be reached ({problem}); dashboards are online only")
    try:
        return wandb.Api(timeout=timeout)
    except Exception as err:
        found, where = _find_credentials()
        raise WandbUnavailable(f"could not reach W&B ({where}): {type(err).__name__}: {_first_line(err)}") from None


DEFAULT_BASE_URL = "https://api.wandb.ai"
NETWORK_CHECK_S = 5  # seconds a TCP connection to W&B may take before the dashboard says there is no network


def network_problem(url: str, timeout: float) -> str | None:
    """Why a TCP connection to the host of ``url`` cannot be opened within ``timeout`` seconds (None: it opens)."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    host = parsed.hostname or url
    try:
        port = parsed.port or (80 if parsed.scheme == "http" else 443)
        socket.create_connection((host, port), timeout=timeout).close()
    except (OSError, ValueError) as err:
        return f"{host}: {type(err).__name__}: {err}"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""


def save(workspace, report) -> tuple[str, str]:
    """The online path: one save per object. Returns (workspace URL, report URL)."""
    try:
        workspace.save()
        report.save()
        return workspace.url, report.url
    except Exception as err:
        raise WandbUnavailable(f"W&B refused or could not be reached: {type(err).__name__}: {_first_line(err)}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m factorial.dashboard", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True, help="the study (experiments/<exp>.yaml), e.g. table2")
    p.add_argument("--scale", required=True, help="the scale it ran at, e.g. cpu")
    p.add_argument("--results", type=Path, default=REPO_ROOT / "results",
                   help="results root written by make table (default: results/)")
    p.add_argument("--runs-root", type=Path, default=None,
                   help=runs_root_help() + "; named in the commands this prints (make table, wandb sync)")
    p.add_argument("--project", default=None, help="W&B project (default: the runs' logger.project, else factorial)")
    p.add_argument("--entity", default=None, help="W&B entity (default: the runs' logger.entity, else your default entity)")
    p.add_argument("--timeout", type=int, default=30, help="seconds to wait for W&B to answer (default 30)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse_args(argv)
    except SystemExit as err:
        return int(err.code or 0)
    try:
        if args.timeout <= 0:
            raise DashboardError(f"invalid --timeout={args.timeout}; allowed: a positive number of seconds")
        study = load_study(args.exp, args.scale, args.results, args.runs_root)
        project = pick(args.project, study.projects, "logger.project") or "factorial"
        entity = pick(args.entity, study.entities, "logger.entity")
        api = _api(args.timeout)
        if not entity:
            try:
                entity = api.default_entity
            except Exception as err:
                raise WandbUnavailable(f"could not ask W&B for your default entity: {type(err).__name__}: "
                                       f"{_first_line(err)}") from None
            if not entity:
                raise WandbUnavailable("W&B names no default entity for this login; pass --entity")
        workspace, report = build_workspace(study, entity, project), build_report(study, entity, project)
        ws_url, report_url = save(workspace, report)
    except DashboardError as err:
        print(f"factorial.dashboard: error: {err}", file=sys.stderr)
        return 2
    except WandbUnavailable as err:
        print(f"factorial.dashboard: error: {err}", file=sys.stderr)
        return 1
    print(f"workspace: {ws_url}")
    print(f"report:    {report_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
