"""A study's table: which cells go where (the layout its study file declares in ``report.table``; see
factorial.report.spec), and the table as Markdown, CSV and LaTeX.

Every layout is a pivot of the aggregated cells: index fields (the table's rows) and column fields (its
column groups), each a function of a cell's knob values. Knobs that the layout does not explain — that
take more than one value among cells landing in the same place — split the table into sections, one
per combination, so two different cells are never merged into one entry.

Table 2 has its own layout: its 22 rows in the paper's order with the paper's columns (from
``factorial.rows``, the single definition of the rows), our perplexity beside the paper's BLEU, and "—"
for a cell not run. Table 3 adds the paper's BLEU to its pivot; Figure 1's table gives each cell's RMS(U).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..rows import DIVERGED, TABLE2, TABLE3
from .. import runfiles as RF
from . import rules as R
from . import spec as S
from .data import ROW_ORDER, embedding_labels, identity_keys, stats_of

# PAPER.md §5, Table 3 (BLEU, Adam | Adafactor) by (embedding init σ, multiplier). factorial.rows holds
# Table 2 only; this is the one place the report keeps Table 3's numbers.
PAPER_TABLE3 = TABLE3
TABLE3_ORDER = list(PAPER_TABLE3)


@dataclass(frozen=True)
class Field:
    """One dimension of a layout: a header and (sort key, label) of a cell."""

    header: str
    of: Callable[[dict], tuple[Any, str]]
    covers: tuple[str, ...] = ()  # the knobs it explains ("optim.*" for all optimizer knobs)
    numeric: str | None = None  # the knob, when the field is a number to sweep over


def _nullable_sort(v):
    return (0, 0.0) if v is None else (1, v)


def knob_field(key: str, header: str, none: str = "–", fmt: Callable[[Any], str] | None = None) -> Field:
    def of(c):
        v = c.get(key)
        if v is None:
            return _nullable_sort(None), none
        return _nullable_sort(v), (fmt(v) if fmt else (f"{v:g}" if isinstance(v, float) else str(v)))
    return Field(header, of, (key,), numeric=key)


def _row_of(c):
    letter = c.get("row_match")
    if letter:
        return (0, ROW_ORDER.index(letter), ""), letter
    return (1, 0, c.get("opt") or ""), c.get("opt") or "?"


ROW_FIELD = Field("row", _row_of, ("optim.*",))
WARMUP_FIELD = Field("warmup", lambda c: ((0, "") if c.get("schedule.warmup") else (1, ""),
                                          "warmup" if c.get("schedule.warmup") else "no warmup"), ("schedule.warmup",))
OPT_NAMES = {"adam": "Adam", "adafactor": "Adafactor", "sgd": "SGD"}
OPTNAME_FIELD = Field("optimizer", lambda c: ((c.get("optim.name") != "adam", c.get("optim.name") or ""),
                                              OPT_NAMES.get(c.get("optim.name"), str(c.get("optim.name")))), ("optim.*",))


def _emb_index(c, i):
    labels = embedding_labels(c)
    order = TABLE3_ORDER.index(labels) if labels in TABLE3_ORDER else len(TABLE3_ORDER)
    return (order, labels), labels[i]


EMB_STD_FIELD = Field("embedding init σ", lambda c: _emb_index(c, 0), ("model.embedding_init_std", "model.embedding_multiplier"))
EMB_MULT_FIELD = Field("embedding multiplier", lambda c: _emb_index(c, 1), ("model.embedding_init_std", "model.embedding_multiplier"))
SECOND_MOMENT_NAMES = {"full": "full", "factored": "factored", "row": "row means only", "col": "column means only"}
SECOND_MOMENT_ORDER = list(SECOND_MOMENT_NAMES)
SECOND_MOMENT_FIELD = Field("second moment", lambda c: (
    (SECOND_MOMENT_ORDER.index(c["optim.second_moment"]) if c.get("optim.second_moment") in SECOND_MOMENT_ORDER else 9,
     str(c.get("optim.second_moment"))),
    SECOND_MOMENT_NAMES.get(c.get("optim.second_moment"), str(c.get("optim.second_moment")))), ("optim.second_moment",))
TIED_FIELD = Field("embeddings", lambda c: ((not c.get("model.tie_embeddings"),), "tied" if c.get("model.tie_embeddings") else "untied"),
                   ("model.tie_embeddings",))
C_FIELD = knob_field("optim.beta2_exponent", "c (β2 at step t = 1 − t^−c)", none="const β2")
D_FIELD = knob_field("optim.clip_threshold", "clipping d", none="off")
MULT_FIELD = knob_field("schedule.multiplier", "lr multiplier")


@dataclass(frozen=True)
class Layout:
    index: list[Field]
    columns: list[Field]
    title: str
    sweep: Field | None = None  # plot final perplexity against this number, one line per column group


# The fields a study's pivot table (``report.table`` in its study file) may name with their own header and
# order (factorial.report.spec.NAMED_FIELDS); any other knob is a field headed by its key.
NAMED_FIELDS: dict[str, Field] = {
    "row": ROW_FIELD, "optimizer": OPTNAME_FIELD, "schedule.warmup": WARMUP_FIELD,
    "optim.second_moment": SECOND_MOMENT_FIELD, "model.tie_embeddings": TIED_FIELD,
    "model.embedding_init_std": EMB_STD_FIELD, "model.embedding_multiplier": EMB_MULT_FIELD,
    "optim.beta2_exponent": C_FIELD, "optim.clip_threshold": D_FIELD, "schedule.multiplier": MULT_FIELD,
}
TABLE3_LAYOUT = Layout([EMB_STD_FIELD, EMB_MULT_FIELD], [OPTNAME_FIELD, WARMUP_FIELD],
                       "Table 3 — embedding scaling (untied embeddings): final validation perplexity")


def field_of(name: str, columns=None) -> Field:
    """A pivot's field by name; a knob the cells do not have is an error naming the knobs they have."""
    if name in NAMED_FIELDS:
        return NAMED_FIELDS[name]
    if columns is not None and name not in columns:
        raise S.ReportSpecError(f"invalid report.table field {name!r}: the study's cells have no such knob; allowed: "
                                f"row, optimizer, or one of {', '.join(identity_keys(columns))}")
    return knob_field(name, name)


def layout_of(report: S.ReportSpec, columns=None) -> Layout | None:
    """The pivot layout of a study's table (Table 3's for ``table: table3``); None for the other presets."""
    if report.table == "table3":
        return TABLE3_LAYOUT
    if not isinstance(report.table, S.Pivot):
        return None
    p = report.table
    rows = [field_of(n, columns) for n in p.rows]
    return Layout(rows, [field_of(n, columns) for n in p.columns], p.title,
                  rows[p.rows.index(p.sweep)] if p.sweep else None)


# --- sections -------------------------------------------------------------------------------------


def _enc(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def section_keys(cells: pd.DataFrame, fields: list[Field]) -> list[str]:
    """Identity knobs that differ between cells landing on the same (index, column) place."""
    keys = identity_keys(cells.columns)
    groups: dict[tuple, list[dict]] = {}
    for c in cells.to_dict("records"):
        groups.setdefault(tuple(f.of(c)[1] for f in fields), []).append(c)
    out = []
    for k in keys:
        if any(len({_enc(c.get(k)) for c in g}) > 1 for g in groups.values()):
            out.append(k)
    return out


def sections(cells: pd.DataFrame, fields: list[Field]) -> list[tuple[dict, pd.DataFrame]]:
    """[(the section's knob values, its cells)] — one section when nothing is left unexplained."""
    keys = section_keys(cells, fields)
    if not keys:
        return [({}, cells)]
    out: dict[str, tuple[dict, list[int]]] = {}
    for i, c in enumerate(cells.to_dict("records")):
        vals = {k: c.get(k) for k in keys}
        out.setdefault(_enc(vals), (vals, []))[1].append(i)
    return [(vals, cells.iloc[idx].reset_index(drop=True)) for _, (vals, idx) in sorted(out.items())]


def section_title(values: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


# --- the table object -------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    section: dict  # the knob values of this section ({} if the study has one)
    display: pd.DataFrame  # strings, as shown in table.md / table.tex
    data: pd.DataFrame  # numbers, as written to table.csv
    notes: list[str] = field(default_factory=list)


def _stat_columns(prefix: str, cell: dict | None) -> dict[str, Any]:
    s = stats_of(cell, prefix)
    return {
        f"{prefix} ppl_mean": s.mean, f"{prefix} ppl_std": s.std, f"{prefix} n": s.n,
        f"{prefix} n_diverged": s.n_diverged, f"{prefix} display": R.format_stats(s),
    }


def _bleu(x) -> str:
    if x == DIVERGED:
        return "diverged"
    return f"{x:.1f}"


def _one_decimal(x: float) -> str:
    """0.5 → "0.5", 1 → "1.0" (as the paper prints the exponents)."""
    text = f"{x:g}"
    return text if "." in text or "e" in text else text + ".0"


def table2_paper_columns(letter: str) -> dict[str, str]:
    """The paper's description of a row (second moment, β1, β2, d, step), from factorial.rows."""
    r = TABLE2[letter]
    o = r.optim
    if r.is_sgd:
        return {"second moment": "SGD", "β1": "", "β2": "", "d": "", "step": f"lr = {o['lr_scale']:g}·s_t"}
    exp = o.get("beta2_exponent")
    return {
        "second moment": SECOND_MOMENT_NAMES[o["second_moment"]],
        "β1": f"{o['beta1']:g}",
        "β2": f"1 − t^−{_one_decimal(exp)}" if exp is not None else f"β2 = {o['beta2']:g}",
        "d": f"{o['clip_threshold']:.1f}" if o.get("clip_threshold") is not None else "",
        "step": "ρ = s_t" if o["relative_step"] else f"α = {o['lr_scale']:g}·s_t",
    }


def _table2(cells: pd.DataFrame) -> list[Table]:
    matched = cells[[c is not None for c in cells["row_match"]]].reset_index(drop=True)
    other = cells[[c is None for c in cells["row_match"]]].reset_index(drop=True)
    tables = []
    for sec, sub in (sections(matched, [ROW_FIELD, WARMUP_FIELD]) if len(matched) else [({}, matched)]):
        recs = sub.to_dict("records")
        disp, data = [], []
        for letter in ROW_ORDER:
            paper = table2_paper_columns(letter)
            d_row = {"row": letter, **paper}
            n_row = {"row": letter, **paper}
            for warmup, name, bleu in ((True, "warmup", TABLE2[letter].bleu_warmup),
                                       (False, "no warmup", TABLE2[letter].bleu_no_warmup)):
                cell = next((c for c in recs if c["row_match"] == letter and bool(c["schedule.warmup"]) == warmup), None)
                s = stats_of(cell, name)
                d_row[f"{name}: val ppl"] = R.format_stats(s)
                d_row[f"{name}: paper BLEU"] = _bleu(bleu)
                n_row.update(_stat_columns(name, cell))
                n_row[f"{name} paper_bleu"] = bleu if bleu != DIVERGED else None
                n_row[f"{name} paper_diverged"] = bleu == DIVERGED
            disp.append(d_row)
            data.append(n_row)
        notes = ["val ppl: final validation perplexity, mean ± sample std over seeds (n = finished seeds); "
                 "“diverged (k/n)”: k of n seeds diverged; “—”: cell not run. Paper BLEU: PAPER.md §4 (higher is better)."]
        mults = sorted({m for m in sub["schedule.multiplier"] if m is not None}) if len(sub) else []
        if mults and mults != [1.0]:
            notes.append("The step column is the paper's; our steps are those times the scale's learning-rate multiplier "
                         f"schedule.multiplier = {', '.join(f'{m:g}' for m in mults)}.")
        tables.append(Table("Table 2 — Adafactor ablations: our validation perplexity (lower is better) beside the paper's BLEU",
                            sec, pd.DataFrame(disp), pd.DataFrame(data), notes))
    if len(other):
        tables += [t for t in _generic(other, "Other cells of the study (optimizer settings that match no Table 2 row)")]
    return tables


def _pivot(cells: pd.DataFrame, layout: Layout) -> list[Table]:
    tables = []
    fields = layout.index + layout.columns
    for sec, sub in sections(cells, fields):
        recs = sub.to_dict("records")
        rows = sorted({tuple(f.of(c) for f in layout.index) for c in recs}, key=lambda t: tuple(x[0] for x in t))
        cols = sorted({tuple(f.of(c) for f in layout.columns) for c in recs}, key=lambda t: tuple(x[0] for x in t))
        disp, data = [], []
        for r in rows:
            d_row = {f.header: lab for f, (_, lab) in zip(layout.index, r)}
            n_row = dict(d_row)
            for col in cols:
                name = ", ".join(lab for _, lab in col) if col else "val ppl"
                cell = next((c for c in recs if tuple(f.of(c) for f in layout.index) == r
                             and tuple(f.of(c) for f in layout.columns) == col), None)
                d_row[name] = R.format_stats(stats_of(cell, name))
                n_row.update(_stat_columns(name, cell))
            disp.append(d_row)
            data.append(n_row)
        notes = ["Final validation perplexity, mean ± sample std over seeds (n = finished seeds); "
                 "“diverged (k/n)”: k of n seeds diverged; “—”: cell not run."]
        t = Table(layout.title, sec, pd.DataFrame(disp), pd.DataFrame(data), notes)
        tables.append(t)
    return tables


def _table3(cells: pd.DataFrame) -> list[Table]:
    tables = _pivot(cells, TABLE3_LAYOUT)
    for t in tables:
        for frame in (t.display, t.data):
            labels = list(zip(frame["embedding init σ"], frame["embedding multiplier"]))
            frame["paper BLEU: Adam"] = [_bleu(PAPER_TABLE3[k][0]) if k in PAPER_TABLE3 else "" for k in labels]
            frame["paper BLEU: Adafactor"] = [_bleu(PAPER_TABLE3[k][1]) if k in PAPER_TABLE3 else "" for k in labels]
        t.notes.append("Paper BLEU: PAPER.md §5 (Adam with the Vaswani et al. schedule, Adafactor = Alg. 6; higher is better). "
                       "d = d_model.")
    return tables


def _fig1(cells: pd.DataFrame) -> list[Table]:
    disp, data = [], []
    recs = sorted(cells.to_dict("records"), key=lambda c: (_row_of(c)[0], not c.get("schedule.warmup")))
    for c in recs:
        s = stats_of(c, "")
        beta2 = (f"1 − t^−{c['optim.beta2_exponent']:g}" if c.get("optim.beta2_exponent") is not None
                 else f"{c.get('optim.beta2'):g}")
        d_row = {"row": _row_of(c)[1], "β2": beta2, "warmup": "warmup" if c.get("schedule.warmup") else "no warmup",
                 "val ppl": R.format_stats(s)}
        n_row = {"row": d_row["row"], "beta2": beta2, "warmup": bool(c.get("schedule.warmup")),
                 "ppl_mean": s.mean, "ppl_std": s.std, "n": s.n, "n_diverged": s.n_diverged, "rms_every": c.get("rms_every")}
        for m in R.FIG1_MATRICES:
            lo = [x for x in c.get(f"rmsmin_{m}") or [] if x is not None]
            hi = [x for x in c.get(f"rmsmax_{m}") or [] if x is not None]
            ex = [x for x in c.get(f"rms_{m}") or [] if x is not None]
            d_row[f"RMS(U) {m}: range"] = f"[{min(lo):.2f}, {max(hi):.2f}]" if lo else "—"
            d_row[f"{m}: exp(max|ln|)"] = f"{math.exp(max(ex)):.2f}" if ex else "—"
            out = [x for x in c.get(f"rmsout_{m}") or [] if x is not None]
            d_row[f"{m}: outside band"] = f"{sum(out) / len(out):.1%}" if out else "—"
            n_row[f"{RF.rms_key(m)} frac_out"] = sum(out) / len(out) if out else None
            n_row[f"{RF.rms_key(m)} min"] = min(lo) if lo else None
            n_row[f"{RF.rms_key(m)} max"] = max(hi) if hi else None
            n_row[f"{RF.rms_key(m)} excursion"] = max(ex) if ex else None
        disp.append(d_row)
        data.append(n_row)
    every = sorted({str(c.get("rms_every")) for c in recs})
    notes = [f"RMS(U) over logged steps after step {R.RMS_SKIP_STEPS} (every {', '.join(every)} step(s)), over all seeds; "
             "exp(max|ln RMS(U)|) is the largest factor by which RMS(U) left 1; 'outside band' is the fraction of logged "
             f"steps outside [{1 / R.RMS_FAR:.2f}, {R.RMS_FAR:g}] (mean over seeds) that C13 is judged on, pooled over the "
             f"three matrices: ≥ {R.RMS_FRAC_FAR:.1%} strays far, ≤ {R.RMS_FRAC_NEAR:.1%} stays near."]
    return [Table("Figure 1 — RMS of the unscaled update U = G/√V̂ with warmup", {}, pd.DataFrame(disp), pd.DataFrame(data), notes)]


def generic_fields(cells: pd.DataFrame) -> list[Field]:
    """One field per knob that varies among the cells (all optimizer knobs as one: the row or the settings)."""
    keys = identity_keys(cells.columns)
    vary = [k for k in keys if len({_enc(v) for v in cells[k]}) > 1]
    fields: list[Field] = []
    if any(k.startswith("optim.") for k in vary):
        fields.append(Field("optimizer", lambda c: ((_row_of(c)[0]), c.get("opt") or "?"), ("optim.*",)))
    if "schedule.warmup" in vary:
        fields.append(WARMUP_FIELD)
    for k in vary:
        if not k.startswith("optim.") and k != "schedule.warmup":
            fields.append(knob_field(k, k))
    return fields


def _generic(cells: pd.DataFrame, title: str = "Final validation perplexity, one row per cell") -> list[Table]:
    fields = generic_fields(cells)
    disp, data = [], []
    recs = sorted(cells.to_dict("records"), key=lambda c: tuple(f.of(c)[0] for f in fields))
    for c in recs:
        s = stats_of(c, "")
        labels = {f.header: f.of(c)[1] for f in fields}
        disp.append({**labels, "val ppl": R.format_stats(s), "best val ppl": R.format_ppl(c.get("best_ppl_mean")),
                     "test ppl": R.format_ppl(c.get("test_ppl_mean")), "cell": c.get("cells") or ""})
        data.append({**labels, "ppl_mean": s.mean, "ppl_std": s.std, "n": s.n, "n_diverged": s.n_diverged,
                     "best_ppl_mean": c.get("best_ppl_mean"), "test_ppl_mean": c.get("test_ppl_mean"), "cell": c.get("cells") or ""})
    notes = ["Final validation perplexity, mean ± sample std over seeds (n = finished seeds); best/test: means over "
             "seeds that did not diverge."]
    return [Table(title, {}, pd.DataFrame(disp), pd.DataFrame(data), notes)]


# The tables with code of their own (``report.table`` of a study file; "cells" and pivots are generic).
PRESET_TABLES: dict[str, Callable[[pd.DataFrame], list[Table]]] = {"table2": _table2, "table3": _table3, "fig1": _fig1}


def build_tables(study: str | S.ReportSpec, cells: pd.DataFrame) -> list[Table]:
    """The study's table(s), in the layout its study file declares (``report.table``; factorial.report.spec):
    Table 2's, Table 3's, Figure 1's, a pivot, or one row per cell."""
    report = S.report_of(study) if isinstance(study, str) else study
    if report.table in PRESET_TABLES:
        return PRESET_TABLES[report.table](cells)
    layout = layout_of(report, cells.columns)
    if layout is not None:
        return _pivot(cells, layout)
    return _generic(cells)


# --- writers ---------------------------------------------------------------------------------------


def _md_escape(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(_md_escape(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_md_escape(v) for v in rec) + " |")
    return "\n".join(lines)


def to_markdown(tables: list[Table], heading: str = "###") -> str:
    parts = []
    for t in tables:
        title = t.title + (f" — {section_title(t.section)}" if t.section else "")
        parts.append(f"{heading} {title}\n\n{markdown_table(t.display)}\n")
        parts += [f"{n}\n" for n in t.notes]
    return "\n".join(parts)


def to_csv_frame(tables: list[Table]) -> pd.DataFrame:
    frames = []
    for i, t in enumerate(tables):
        f = t.data.copy()
        f.insert(0, "table", t.title)
        f.insert(1, "section", section_title(t.section))
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\^{}"}
_TEX_MATH = {"±": r"$\pm$", "β": r"$\beta$", "σ": r"$\sigma$", "ρ": r"$\rho$", "α": r"$\alpha$", "√": r"$\surd$",
             "−": r"$-$", "–": "--", "—": "---", "×": r"$\times$", "·": r"$\cdot$", "≈": r"$\approx$", "≤": r"$\le$",
             "≥": r"$\ge$", "“": "``", "”": "''", "\u0302": ""}
# Whole tokens typeset as math before the character-by-character escape.
_TEX_TOKENS = re.compile(r"t\^−([0-9.]+)|β̂2t|β([12])|s_t|1/√d|√d")


def _tex_token(m: re.Match) -> str:
    text = m.group(0)
    if m.group(1):
        return f"$t^{{-{m.group(1)}}}$"
    if text == "β̂2t":
        return r"$\hat\beta_{2t}$"
    if m.group(2):
        return f"$\\beta_{m.group(2)}$"
    return {"s_t": r"$s_t$", "1/√d": r"$1/\sqrt{d}$", "√d": r"$\sqrt{d}$"}[text]


def tex_escape(x: Any) -> str:
    text, out, pos = str(x), [], 0
    for m in _TEX_TOKENS.finditer(text):
        out += [_TEX.get(ch) or _TEX_MATH.get(ch, ch) for ch in text[pos:m.start()]]
        out.append(_tex_token(m))
        pos = m.end()
    out += [_TEX.get(ch) or _TEX_MATH.get(ch, ch) for ch in text[pos:]]
    return "".join(out).replace("$$", " ")  # adjacent math pieces merge


def to_latex(tables: list[Table]) -> str:
    """booktabs tables, one per section; needs \\usepackage{booktabs}."""
    parts = ["% generated by `python -m factorial.table`; needs \\usepackage{booktabs}"]
    for t in tables:
        cols = list(t.display.columns)
        title = t.title + (f" — {section_title(t.section)}" if t.section else "")
        parts += [r"\begin{table}[t]", r"\centering", r"\small",
                  rf"\caption{{{tex_escape(title)}}}",
                  r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
                  " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule"]
        for rec in t.display.itertuples(index=False):
            parts.append(" & ".join(tex_escape(v) for v in rec) + r" \\")
        parts += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(parts)
