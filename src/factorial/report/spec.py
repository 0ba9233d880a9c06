"""What a study reports: the ``report:`` section of its study file (experiments/<name>.yaml).

    report:
      table: table2                 # the table's layout: cells (default) | table2 | table3 | fig1 | a pivot (below)
      plots: [row_curves, sgd_lr, fig1_ag]   # the figures, in this order (default: by the table, below)
      claims: [C1, C2, C3]          # claims this study is home to
      backup_claims: [C4]           # claims it is a further home to
      controls:                     # positive controls: cells that must fail against a reference cell
        - {cell: "row=A,schedule.multiplier=100,schedule.warmup=false", reference: "row=A,schedule.warmup=true"}

A *pivot* table is a mapping: one row per combination of the ``rows`` fields, one column group per
combination of the ``columns`` fields, and optionally the ``sweep``: a number among the rows to plot final
perplexity against (the ``sweep`` plot)::

      table:
        title: Final validation perplexity by clipping threshold d
        rows: [optim.clip_threshold]
        columns: [schedule.warmup]
        sweep: optim.clip_threshold

A field is a knob (a config key such as ``optim.beta1`` or ``model.d_model``), ``row`` (the Table 2 row
the optimizer settings match, else the optimizer) or ``optimizer`` (Adam, Adafactor or SGD). Knobs a
layout does not explain split the table into sections (``factorial.report.tables``).

A study that is *home* to a claim has every part of it judged, even a part whose cells it lacks (a
missing cell makes the claim inconclusive); any other study speaks to a claim only through the parts
whose cells it holds. ``CLAIMS-<scale>.md`` takes a claim's verdict from a study that lists it under
``claims`` (the first by name that has results at that scale), else from one that lists it under
``backup_claims``; the study files in experiments/ say which (``claim_homes``).

A *control* names two cells of the study by their cell names (``make sweep`` checks that the study has
them): the control passes when the cell fails against the reference by the no-warmup screen's rule (most
seeds diverged, or final validation perplexity ≥ ``rules.SCREEN_FAIL`` × the reference's), which shows the
harness can see a failure at all. REPORT.md lists each control with its verdict.

The learning-rate-sweep and no-warmup-screen sections of REPORT.md (with ``lr_sensitivity.csv`` and
``screen.png``) need no declaration: they appear in any study whose cells hold such a sweep or screen.

Every key and value is checked when the study file is read, by ``make sweep`` before any cell runs and by
``make table`` before anything is built; a study without a ``report:`` section gets the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..layout import is_path, study_file, study_name  # noqa: F401 (study_name: re-exported)
from .data import ReportError

REPORT_KEYS = ("table", "plots", "claims", "backup_claims", "controls")
CONTROL_KEYS = ("cell", "reference")
# table: the presets (each with its own code in factorial.report.tables), or a pivot (a mapping)
TABLES = {
    "cells": "one row per cell (the default)",
    "table2": "Table 2's 22 rows with the paper's columns and BLEU, warmup and no warmup",
    "table3": "Table 3: embedding init σ × multiplier against Adam / Adafactor, with the paper's BLEU",
    "fig1": "Figure 1: per cell, the range of RMS(U) and the fraction of steps outside the C13 band",
}
PIVOT_KEYS = ("title", "rows", "columns", "sweep")
# Fields with their own header and order (factorial.report.tables.NAMED_FIELDS); any other knob is a field
# too, headed by its key. The value: whether the field is a number (may be a pivot's sweep).
NAMED_FIELDS = {
    "row": False, "optimizer": False, "schedule.warmup": False, "optim.second_moment": False,
    "model.tie_embeddings": False, "model.embedding_init_std": False, "model.embedding_multiplier": False,
    "optim.beta2_exponent": True, "optim.clip_threshold": True, "schedule.multiplier": True,
}
PLOTS = {
    "curves": "validation perplexity against step, one panel per column group of the table",
    "row_curves": "validation perplexity against step, one panel per Table 2 row (warmup and no warmup)",
    "train_loss": "training loss against step (log step axis)",
    "rms_rows": "RMS(U) (mean over tensors) against step, one panel per Table 2 row (warmup and no warmup)",
    "sgd_lr": "rows Q (SGD): final perplexity against k",
    "fig1": "Figure 1: RMS(U) against step of every cell that logged it",
    "fig1_ag": "Figure 1 for rows A and G with warmup, when both logged RMS(U)",
    "table3_bars": "Table 3 as bars",
    "lr_sensitivity": "final loss against the learning-rate multiplier, when the study sweeps it",
    "sweep": "final perplexity against the pivot table's sweep number",
}
# Two plots that write the same file.
EXCLUSIVE = (("curves", "row_curves"), ("fig1", "fig1_ag"))
DEFAULT_PLOTS = {
    "cells": ("curves", "train_loss", "fig1_ag", "lr_sensitivity"),
    "table2": ("row_curves", "sgd_lr", "fig1_ag"),
    "table3": ("curves", "train_loss", "fig1_ag", "table3_bars", "lr_sensitivity"),
    "fig1": ("curves", "train_loss", "fig1", "lr_sensitivity"),
    "pivot": ("curves", "train_loss", "fig1_ag", "lr_sensitivity"),  # + sweep when the pivot has one
}


class ReportSpecError(ReportError):
    """A bad ``report:`` section: the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Pivot:
    title: str
    rows: tuple[str, ...]
    columns: tuple[str, ...] = ()
    sweep: str | None = None


@dataclass(frozen=True)
class ReportSpec:
    table: str | Pivot = "cells"
    plots: tuple[str, ...] = DEFAULT_PLOTS["cells"]
    claims: tuple[str, ...] = ()
    backup_claims: tuple[str, ...] = ()
    controls: tuple[tuple[str, str], ...] = ()  # (cell, reference): cell names

    @property
    def home(self) -> frozenset[str]:
        """The claims every part of which this study judges."""
        return frozenset(self.claims) | frozenset(self.backup_claims)


def default_plots(table: str | Pivot) -> tuple[str, ...]:
    if isinstance(table, Pivot):
        return DEFAULT_PLOTS["pivot"] + (("sweep",) if table.sweep else ())
    return DEFAULT_PLOTS[table]


def _names(value: Any, where: str, allowed: str, check=None, empty: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value) or (not empty and not value):
        raise ReportSpecError(f"invalid {where}={value!r}; allowed: a {'' if empty else 'non-empty '}list of {allowed}")
    seen = set()
    for x in value:
        if x in seen:
            raise ReportSpecError(f"invalid {where}={value!r}: {x!r} is listed twice; allowed: each once")
        seen.add(x)
        if check is not None:
            check(x)
    return tuple(value)


def _field(where: str):
    from ..layout import KEY_RE

    def check(name: str) -> None:
        if name not in NAMED_FIELDS and (not KEY_RE.fullmatch(name) or name.startswith(("+", "~"))):
            raise ReportSpecError(f"invalid {where} field {name!r}; allowed: row, optimizer, or a config key such as "
                                  f"{', '.join(k for k in NAMED_FIELDS if '.' in k)} or model.d_model")
    return check


def _pivot(raw: dict, where: str) -> Pivot:
    unknown = sorted(set(raw) - set(PIVOT_KEYS), key=str)
    if unknown:
        raise ReportSpecError(f"invalid key {unknown[0]!r} in {where}; allowed: {', '.join(PIVOT_KEYS)}")
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ReportSpecError(f"invalid {where}.title={title!r}; allowed: the table's title (a non-empty string)")
    rows = _names(raw.get("rows"), f"{where}.rows", "fields", _field(f"{where}.rows"), empty=False)
    columns = _names(raw.get("columns", []), f"{where}.columns", "fields", _field(f"{where}.columns"))
    both = sorted(set(rows) & set(columns))
    if both:
        raise ReportSpecError(f"invalid {where}: field {both[0]!r} is in both rows and columns; allowed: each field once")
    sweep = raw.get("sweep")
    if sweep is not None:
        numbers = [r for r in rows if NAMED_FIELDS.get(r, True)]
        if sweep not in numbers:
            raise ReportSpecError(f"invalid {where}.sweep={sweep!r}; allowed: a number among the rows "
                                  f"({', '.join(numbers) or 'none here'}), or no sweep")
    return Pivot(title.strip(), rows, columns, sweep)


def parse_report(raw: Any, where: str = "report") -> ReportSpec:
    """The ``report:`` section of a study file (None: the defaults)."""
    from .rules import CLAIM_IDS

    if raw is None:
        return ReportSpec()
    if not isinstance(raw, dict):
        raise ReportSpecError(f"invalid {where}={raw!r}; allowed: a mapping with keys {', '.join(REPORT_KEYS)}")
    unknown = sorted(set(raw) - set(REPORT_KEYS), key=str)
    if unknown:
        raise ReportSpecError(f"invalid key {unknown[0]!r} in {where}; allowed: {', '.join(REPORT_KEYS)}")

    table = raw.get("table", "cells")
    if isinstance(table, dict):
        table = _pivot(table, f"{where}.table")
    elif table not in TABLES:
        raise ReportSpecError(f"invalid {where}.table={table!r}; allowed: {' | '.join(TABLES)}, or a pivot "
                              f"(a mapping with keys {', '.join(PIVOT_KEYS)})")

    def plot(name: str) -> None:
        if name not in PLOTS:
            raise ReportSpecError(f"invalid {where}.plots entry {name!r}; allowed: {', '.join(PLOTS)}")
        if name == "sweep" and not (isinstance(table, Pivot) and table.sweep):
            raise ReportSpecError(f"invalid {where}.plots entry 'sweep': {where}.table has no sweep; allowed: a pivot "
                                  "table with a sweep field")

    if "plots" in raw:
        plots = _names(raw["plots"], f"{where}.plots", f"plots ({', '.join(PLOTS)})", plot)
        for a, b in EXCLUSIVE:
            if a in plots and b in plots:
                raise ReportSpecError(f"invalid {where}.plots={list(plots)!r}: {a} and {b} draw the same file; "
                                      "allowed: one of them")
    else:
        plots = default_plots(table)

    def claim(key: str):
        def check(name: str) -> None:
            if name not in CLAIM_IDS:
                raise ReportSpecError(f"invalid {where}.{key} entry {name!r}; allowed: {', '.join(CLAIM_IDS)}")
        return check

    claims = _names(raw.get("claims", []), f"{where}.claims", "claim ids", claim("claims"))
    backup = _names(raw.get("backup_claims", []), f"{where}.backup_claims", "claim ids", claim("backup_claims"))
    both = [c for c in claims if c in backup]
    if both:
        raise ReportSpecError(f"invalid {where}: claim {both[0]!r} is in both claims and backup_claims; allowed: one of them")
    return ReportSpec(table, plots, claims, backup, _controls(raw.get("controls", []), f"{where}.controls"))


def _controls(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list):
        raise ReportSpecError(f"invalid {where}={raw!r}; allowed: a list of mappings with keys "
                              f"{', '.join(CONTROL_KEYS)} (cell names)")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ReportSpecError(f"invalid {where}[{i}]={entry!r}; allowed: a mapping with keys {', '.join(CONTROL_KEYS)}")
        unknown = sorted(set(entry) - set(CONTROL_KEYS), key=str)
        if unknown:
            raise ReportSpecError(f"invalid key {unknown[0]!r} in {where}[{i}]; allowed: {', '.join(CONTROL_KEYS)}")
        for key in CONTROL_KEYS:
            value = entry.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ReportSpecError(f"invalid {where}[{i}].{key}={value!r}; allowed: a cell name of the study "
                                      "(e.g. 'row=A,schedule.warmup=true')")
        if entry["cell"] == entry["reference"]:
            raise ReportSpecError(f"invalid {where}[{i}]: cell and reference are both {entry['cell']!r}; allowed: two "
                                  "different cells")
        out.append((entry["cell"].strip(), entry["reference"].strip()))
    return tuple(out)


def read_report(path: Path) -> ReportSpec:
    """The report section of the study file at path."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ReportSpecError(f"cannot read study file {path}: {err}") from None
    if not isinstance(raw, dict):
        raise ReportSpecError(f"invalid study file {path}: {raw!r}; allowed: a mapping")
    try:
        return parse_report(raw.get("report"))
    except ReportSpecError as err:
        raise ReportSpecError(f"study file {path}: {err}") from None


def report_of(exp: str) -> ReportSpec:
    """The report a study declares: its study file's ``report:`` section (experiments/<exp>.yaml or the file
    ``exp`` names); the defaults for a study without a file (results rebuilt from a cells.csv)."""
    path = study_file(exp)
    if not path.is_file():
        if is_path(exp):
            raise ReportSpecError(f"invalid --exp={exp!r}; allowed: an existing study file, or a study name")
        return ReportSpec()
    return read_report(path)


def claim_homes(experiments: Path | None = None) -> dict[str, list[str]]:
    """claim id → the studies of experiments/ home to it: those that list it under ``claims`` (by name),
    then those that list it under ``backup_claims`` (by name)."""
    from ..layout import EXPERIMENTS_DIR

    primary: dict[str, list[str]] = {}
    backup: dict[str, list[str]] = {}
    for path in sorted(Path(experiments or EXPERIMENTS_DIR).glob("*.yaml")):
        spec = read_report(path)
        for c in spec.claims:
            primary.setdefault(c, []).append(path.stem)
        for c in spec.backup_claims:
            backup.setdefault(c, []).append(path.stem)
    return {c: primary.get(c, []) + backup.get(c, []) for c in {*primary, *backup}}
