"""The study's figures (PNG, matplotlib's Agg backend): curves, Figure 1, Table 3's bars, sweeps.

Every function takes the aggregated cells (and the curves) and writes one PNG; each returns
``(file name, caption)`` pairs, so REPORT.md can embed what was drawn. Nothing here decides a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.transforms import blended_transform_factory, offset_copy  # noqa: E402

from ..rows import TABLE2  # noqa: E402
from .. import runfiles as RF  # noqa: E402
from . import rules as R  # noqa: E402
from .data import ROW_ORDER, stats_of  # noqa: E402
from . import spec as S  # noqa: E402
from .tables import (  # noqa: E402
    ROW_FIELD, TABLE3_LAYOUT, WARMUP_FIELD, Field, Layout, _row_of, generic_fields, layout_of, section_title, sections,
    table2_paper_columns,
)

DPI = 110
WARMUP_COLORS = {True: "#1f77b4", False: "#d62728"}  # blue: warmup, red: no warmup
PALETTE = plt.get_cmap("tab10").colors


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _curves_of(curves: pd.DataFrame, run_ids: Iterable[str], key: str) -> list[tuple[str, pd.DataFrame]]:
    out = []
    if curves is None or curves.empty or key not in curves:
        return out
    for rid in run_ids:
        sub = curves[(curves["run_id"] == rid)][["step", key]].dropna()
        sub = sub[sub[key].map(lambda v: math.isfinite(float(v)))]
        if len(sub):
            out.append((rid, sub.sort_values("step")))
    return out


def _diverged_steps(runs: pd.DataFrame, run_ids: Iterable[str]) -> list[int]:
    ids = set(run_ids)
    sub = runs[runs["run_id"].isin(ids) & (runs["outcome"] == "diverged")]
    return [int(s) if s is not None else int(t or 0) for s, t in zip(sub["diverged_at"], sub["step"])]


def _log_if_wide(ax, values: list[float], axis: str = "y") -> None:
    """Log scale when the values span a factor ≥ 5, with labelled ticks even inside one decade."""
    vals = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not vals or max(vals) / min(vals) < 5:
        return
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    decades = math.log10(max(vals) / min(vals))
    subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0) if decades < 1.2 else (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(mticker.LogLocator(base=10, subs=subs))
    target.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_locator(mticker.LogLocator(base=10, subs=tuple(range(1, 10))))
    target.set_minor_formatter(mticker.NullFormatter())


def _draw_cell(ax, runs, curves, cell: dict, color, label: str, linestyle="-", key: str = RF.VAL_PPL,
               must: list[float] | None = None) -> list[float]:
    """A cell as the mean of its seeds over their common steps with a min–max band (one seed: its line);
    a diverged seed as × on the top edge of the axes, at the step it diverged. Returns every value drawn; adds
    to ``must`` the values the axes must show (the mean past the first fifth of its steps, and its last)."""
    ys = []
    drawn = False
    series = _curves_of(curves, cell["run_ids"], key)
    if series:
        wide = pd.concat([c.set_index("step")[key].astype(float).rename(rid) for rid, c in series], axis=1)
        wide = wide.dropna() if len(series) > 1 else wide
        if len(wide):
            mean = wide.mean(axis=1)
            ax.plot(mean.index, mean.values, color=color, lw=1.5, ls=linestyle, alpha=0.9,
                    marker="o" if len(mean) < 12 else None, ms=3, label=label)
            if len(series) > 1:
                ax.fill_between(mean.index, wide.min(axis=1).values, wide.max(axis=1).values, color=color, alpha=0.15, lw=0)
            drawn = True
            ys += [float(v) for v in wide.values.ravel()]
            if must is not None:
                late = mean[mean.index >= mean.index.min() + 0.2 * (mean.index.max() - mean.index.min())]
                must += [float(v) for v in late.values] + [float(mean.values[-1])]
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for step in _diverged_steps(runs, cell["run_ids"]):
        ax.plot([step], [1.0], marker="x", ms=9, mew=2.2, color=color, transform=trans, clip_on=False,
                label=None if drawn else label)
        drawn = True
    return ys


# --- validation perplexity against step --------------------------------------------------------------


def _short_row(letter: str) -> str:
    p = table2_paper_columns(letter)
    if TABLE2[letter].is_sgd:
        return f"{letter}: SGD, {p['step']}"
    bits = [p["second moment"], f"β1={p['β1']}", p["β2"].replace("β2 = ", "β2=")]
    if p["d"]:
        bits.append(f"d={p['d']}")
    if p["step"].startswith("ρ"):
        bits.append("relative step")
    return f"{letter}: " + ", ".join(bits)


def table2_curves(runs, cells: pd.DataFrame, curves, out: Path, name: str, subtitle: str = "",
                  key: str = RF.VAL_PPL) -> list[tuple[str, str]]:
    """A grid of small panels, one per Table 2 row: warmup (blue) and no warmup (red), the mean of the seeds with a
    min–max band. ``key`` RF.TRAIN_LOSS: the training loss on a log step axis from the first logged step, with the
    corpus's unigram entropy as a dotted line (a loss stuck there is a model that learned token frequencies only).
    ``key`` RF.RMS_U_MEAN: RMS(U) of the unscaled update (the mean over tensors) on log axes, with RMS(U) = 1 as a
    dashed line — the paper's account of the no-warmup failure is RMS(U) ≫ 1 from a stale second moment."""
    train = key == RF.TRAIN_LOSS
    rms = key == RF.RMS_U_MEAN
    recs = [c for c in cells.to_dict("records") if c.get("row_match")]
    letters = [r for r in ROW_ORDER if any(c["row_match"] == r for c in recs)]
    if not letters:
        return []
    n = len(letters)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    # Each panel its own y axis: a shared one clipped to the study's bulk hid rows far above it (Q1 at 591)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.1 * nrows + 0.8), sharex=True, sharey=False,
                             squeeze=False)
    for ax, letter in zip(axes.flat, letters):
        handles = []
        panel_y: list[float] = []
        must: list[float] = []
        panel_stats: list[R.CellStats] = []
        for warmup in (True, False):
            cell = next((c for c in recs if c["row_match"] == letter and bool(c["schedule.warmup"]) == warmup), None)
            if cell is None:
                continue
            s = stats_of(cell, "")
            panel_stats.append(s)
            panel_y += _draw_cell(ax, runs, curves, cell, WARMUP_COLORS[warmup], None, key=key, must=must)
            handles.append(Line2D([], [], color=WARMUP_COLORS[warmup], lw=2,
                                  label=f"{'warmup' if warmup else 'no warmup'}: {R.format_stats(s)}"))
        ax.legend(handles=handles, loc="best", fontsize=7.5, framealpha=0.85, handlelength=1.2)
        ax.set_title(_short_row(letter), fontsize=9.5, loc="left")
        ax.grid(True, alpha=0.3, which="both")
        if rms:  # every value, spikes included: clipping the axis would hide what the figure is for
            _log_if_wide(ax, panel_y + [1.0])
            ax.axhline(1.0, color="0.25", lw=1.0, ls="--", zorder=0)
        else:
            if not train:
                _log_if_wide(ax, panel_y)
            _clip_ylim(ax, panel_y, must)
        _say_if_no_curve(ax, panel_y, panel_stats)
    unigram = _unigram_entropy(runs) if train else None
    _unigram_line(axes.flat[:n], unigram)
    _hide_unused(axes, n)
    if train or rms:  # from the first logged step: a no-warmup plateau shows early (the x axis is shared)
        _log_step_axis(axes.flat[0])
    what = "training loss (nats)" if train else "RMS(U), mean over tensors" if rms else "validation perplexity"
    for ax in axes[:, 0]:
        ax.set_ylabel(what)
    handles = [Line2D([], [], color=WARMUP_COLORS[True], lw=2, label="warmup"),
               Line2D([], [], color=WARMUP_COLORS[False], lw=2, label="no warmup"),
               Line2D([], [], color="k", marker="x", ls="", ms=8, mew=2, label="diverged (at that step)")]
    narrow = ncols <= 2  # the title fills the top line: the legend goes below the panels
    fig.legend(handles=handles, loc="lower center" if narrow else "upper right", ncol=3, fontsize=10, frameon=False,
               bbox_to_anchor=(0.5, 0.0) if narrow else (1.0, 1.0))
    fig.suptitle(f"Table 2 rows: {what.split(' (')[0].split(',')[0]} against step{' (log scale)' if train or rms else ''}"
                 + (f" ({subtitle})" if subtitle else ""), x=0.01, ha="left", fontsize=13)
    fig.tight_layout(rect=(0, 0.08 / nrows if narrow else 0, 1, 0.97 if nrows > 2 else 0.93))
    _save(fig, out / name)
    return [(name, f"{what[0].upper() + what[1:]} against step"
                   f"{', on a log axis from the first logged step' if train or rms else ''}, "
                   "one panel per Table 2 row; blue: with warmup, red: without; each cell the mean of its seeds with a "
                   "min–max band (one seed: its line), × on the top edge where a seed diverged; the legend gives final "
                   "validation perplexity (mean ± std, n seeds)." + _unigram_caption(unigram) + _rms_caption(rms, curves))]


def _rms_caption(rms: bool, curves) -> str:
    if not rms:
        return ""
    steps = sorted(curves.dropna(subset=[RF.RMS_U_MEAN])["step"].unique())
    every = int(np.diff(steps).min()) if len(steps) > 1 else None
    return (" RMS(U) is that of the unscaled update U = G/√V̂ before any clipping (docs/METRICS.md), the mean over "
            "every tensor; the dashed line is RMS(U) = 1, the clipping threshold d of rows H, J, N, O and P. "
            + ("Logged every step. " if every == 1 else
               f"Logged every {every} steps: a burst between two logged steps is not seen. " if every else "")
            + "Descriptive: no rule reads this figure.")


def _unigram_line(axes, unigram: float | None) -> None:
    """The unigram entropy as a dotted line in each of ``axes``, kept in view."""
    if unigram is None:
        return
    for ax in axes:
        lo, hi = ax.get_ylim()
        pad = 0.03 * (hi - lo)
        ax.set_ylim(min(lo, unigram - pad), max(hi, unigram + pad))
        ax.axhline(unigram, color="0.35", lw=1.0, ls=":", zorder=0)
        ax.annotate(f"unigram entropy {unigram:.2f}", (1.0, unigram), xycoords=("axes fraction", "data"),
                    xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom", fontsize=7.5, color="0.3")


def _unigram_caption(unigram: float | None) -> str:
    if unigram is None:
        return ""
    return (f" The dotted line is the unigram entropy of the training split ({unigram:.3f} nats per token): the "
            "training loss of a model that knows only token frequencies.")


def _log_step_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))


def _hide_unused(axes, n: int, xlabel: str = "step") -> None:
    """Hide the panels past n; the lowest visible panel of each column gets the x axis's labels."""
    nrows, ncols = axes.shape
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
    for col in range(ncols):
        visible = [r for r in range(nrows) if r * ncols + col < n]
        if visible:
            ax = axes[visible[-1], col]
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(xlabel)


def _say_if_no_curve(ax, ys: list[float], stats: list[R.CellStats] = ()) -> None:
    """A panel whose cells logged no point says why (its seeds diverged before their first evaluation, or have
    not finished or crashed: a table built while a sweep runs), instead of an empty axis with meaningless ticks."""
    if ys:
        return
    ax.set_yticks([])
    diverged, unfinished, crashed = (sum(getattr(s, k) for s in stats) for k in ("n_diverged", "n_incomplete", "n_failed"))
    why = [w for k, w in ((diverged, f"{diverged} diverged (× at its step)"), (unfinished, f"{unfinished} unfinished"),
                          (crashed, f"{crashed} crashed")) if k]
    total = sum(s.n + s.n_incomplete + s.n_failed for s in stats)
    text = f"no point logged:\nof {total} run{'s' * (total != 1)}, " + ", ".join(why) if why else "no point logged"
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8.5, color="0.35")


def _clip_ylim(ax, ys: list[float], must: list[float] = ()) -> None:
    """Keep the first evaluations (perplexity ≈ vocabulary size) from flattening the interesting part, but never
    below what ``must`` be seen (each curve past its first fifth, and its end): no curve leaves its panel."""
    ys = sorted(y for y in ys if math.isfinite(y) and y > 0)
    if len(ys) < 4:
        return
    lo, hi = ys[0], ys[-1]
    cap = ys[int(0.9 * (len(ys) - 1))] * 1.5  # the 90th percentile, with room
    top = min(hi * 1.05, max(cap, lo * 1.2))
    seen = [y for y in must if math.isfinite(y) and y > 0]
    if seen:
        top = max(top, min(hi, max(seen)) * 1.05)
    if ax.get_yscale() == "log":
        ax.set_ylim(lo / 1.05, top)
    else:
        ax.set_ylim(lo - 0.05 * (top - lo), top)


MAX_LINES_PER_PANEL = 8


def generic_curves(runs, cells: pd.DataFrame, curves, layout: Layout | None, out: Path, name: str,
                   title: str, key: str = RF.VAL_PPL) -> list[tuple[str, str]]:
    """One panel per column group of the layout (or one panel), one colour per table row."""
    recs = cells.to_dict("records")
    if not recs:
        return []
    if layout is not None:
        panel_fields, line_fields = list(layout.columns), list(layout.index)
    else:
        fields = generic_fields(cells) or [Field("cell", lambda c: ((), c.get("cells") or c.get("opt") or "?"))]
        # Many cells: one panel per setting of the other knobs (model, multiplier, …), the optimizer and
        # warmup as lines within it — a single legend of 20 lines would cover the curves.
        line_fields = [f for f in fields if f.header in ("optimizer", "warmup")]
        panel_fields = [f for f in fields if f not in line_fields]
        if len(recs) <= MAX_LINES_PER_PANEL or not line_fields or not panel_fields:
            line_fields, panel_fields = fields, []

    def panel_of(c):
        return tuple(f.of(c) for f in panel_fields)

    def line_of(c):
        return tuple(f.of(c) for f in line_fields)

    panels = sorted({panel_of(c) for c in recs}, key=lambda t: tuple(x[0] for x in t))
    lines = sorted({line_of(c) for c in recs}, key=lambda t: tuple(x[0] for x in t))
    cmap = plt.get_cmap("tab10" if len(lines) <= 10 else "tab20")
    colors = {ln: cmap(i % cmap.N) for i, ln in enumerate(lines)}
    # More lines than a legend inside the axes can hold without covering the curves: the legend goes to
    # the right of its panel, and the panels into one column.
    outside = len(lines) > MAX_LINES_PER_PANEL
    ncols = 1 if outside else min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width = 5.6 * ncols + (5.0 if outside else 0.0)
    # Each panel its own y axis: a shared one, clipped to the bulk of the study, left panels empty
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 4.0 * nrows + 0.6), sharex=True, sharey=False, squeeze=False)
    train = key == RF.TRAIN_LOSS
    for ax, panel in zip(axes.flat, panels):
        panel_y: list[float] = []
        must: list[float] = []
        panel_stats: list[R.CellStats] = []
        for ln in lines:
            for c in recs:
                if panel_of(c) == panel and line_of(c) == ln:
                    lab = ", ".join(x[1] for x in ln)
                    panel_stats.append(stats_of(c, ""))
                    panel_y += _draw_cell(ax, runs, curves, c, colors[ln], f"{lab}: {R.format_stats(panel_stats[-1])}",
                                          key=key, must=must)
        ax.set_title(", ".join(f"{f.header}={x[1]}" if f.header.count(".") else x[1] for f, x in zip(panel_fields, panel))
                     if panel else title, fontsize=10, loc="left")
        ax.grid(True, alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:  # a panel with nothing drawn says why below, without an empty legend
            ax.legend(fontsize=7.5, title=", ".join(f.header for f in line_fields), title_fontsize=8, framealpha=0.85,
                      **(dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0) if outside
                         else dict(loc="best")))
        if not train:
            _log_if_wide(ax, panel_y)
        _clip_ylim(ax, panel_y, must)
        _say_if_no_curve(ax, panel_y, panel_stats)
    unigram = _unigram_entropy(runs) if train else None
    _unigram_line(axes.flat[:len(panels)], unigram)  # a loss at this line is what token frequencies alone achieve
    _hide_unused(axes, len(panels))
    if train:  # from the first logged step: a no-warmup failure shows early (the x axis is shared)
        _log_step_axis(axes.flat[0])
    what = "training loss (nats)" if train else "validation perplexity"
    for ax in axes[:, 0]:
        ax.set_ylabel(what)
    fig.suptitle(f"{title}: {what} against step{' (log scale)' if train else ''} (× = diverged)", x=0.01, ha="left",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, out / name)
    return [(name, f"{what[0].upper() + what[1:]} against step{', on a log axis from the first logged step' if train else ''}; "
                   "each cell the mean of its seeds with a min–max band, × on the top edge where a seed diverged; the "
                   "legend gives final validation perplexity (mean ± std, n seeds)." + _unigram_caption(unigram))]


def _unigram_entropy(runs) -> float | None:
    """The training split's unigram entropy the runs recorded (one corpus: one value), or None."""
    if runs is None or "train_unigram_entropy" not in getattr(runs, "columns", ()):
        return None
    values = {round(float(v), 9) for v in runs["train_unigram_entropy"] if v is not None and v == v}
    return values.pop() if len(values) == 1 else None


# --- Figure 1 -----------------------------------------------------------------------------------------


def fig1_cells(cells: pd.DataFrame, every: bool) -> list[dict]:
    """The cells Figure 1 shows: every cell that logged RMS(U) (plot ``fig1``), or A and G with warmup when both
    did (plot ``fig1_ag``)."""
    recs = [c for c in cells.to_dict("records") if any(x is not None for x in c.get(f"rms_{R.FIG1_MATRIX}") or [])]
    if not every:
        recs = [c for c in recs if c.get("row_match") in ("A", "G") and c.get("schedule.warmup")]
        if len(recs) < 2:
            return []
    return sorted(recs, key=lambda c: (_row_of(c)[0], not c.get("schedule.warmup")))


def _beta2_label(c: dict) -> str:
    if c.get("optim.beta2_exponent") is not None:
        b = f"β̂2t = 1 − t^−{c['optim.beta2_exponent']:g}"
    else:
        b = f"β2 = {c.get('optim.beta2'):g}"
    w = "" if c.get("schedule.warmup") else ", no warmup"
    return f"{_row_of(c)[1]}: {b}{w}"


def figure1(runs, cells: pd.DataFrame, curves, every: bool, out: Path, name: str = "fig1_rms_u.png") -> list[tuple[str, str]]:
    recs = fig1_cells(cells, every)
    if not recs:
        return []
    fig, axes = plt.subplots(1, len(R.FIG1_MATRICES), figsize=(5.4 * len(R.FIG1_MATRICES), 4.4), sharey=True)
    colors = {id(c): PALETTE[i % 10] for i, c in enumerate(recs)}
    titles = {"tok_emb": "token embedding (shared with softmax when tied)",
              "attn_proj.0": "attention output projection, block 0", "ff1.0": "first feed-forward matrix, block 0"}
    ys = []
    for ax, m in zip(axes, R.FIG1_MATRICES):
        ax.axhspan(1 / R.RMS_FAR, R.RMS_FAR, color="#2ca02c", alpha=0.10, lw=0)
        for y in (R.RMS_FAR, 1 / R.RMS_FAR):
            ax.axhline(y, color="0.4", ls=":", lw=1)
        ax.axhline(1.0, color="k", ls="--", lw=1.2)
        ax.axvspan(0, R.RMS_SKIP_STEPS + 0.5, color="0.5", alpha=0.12, lw=0)
        for c in recs:
            first = True
            for _, cur in _curves_of(curves, c["run_ids"], RF.rms_key(m)):
                cur = cur[cur[RF.rms_key(m)] > 0]
                ax.plot(cur["step"], cur[RF.rms_key(m)], color=colors[id(c)], lw=1.1, alpha=0.9,
                        label=_beta2_label(c) if first else None)
                ys += [float(v) for v in cur[RF.rms_key(m)]]
                first = False
        ax.set_yscale("log")
        ax.set_title(f"RMS(U) — {titles.get(m, m)}", fontsize=10, loc="left")
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3, which="major")
    if ys:
        lo, hi = min(ys), max(ys)
        axes[0].set_ylim(min(lo, 1 / R.RMS_FAR) / 1.15, max(hi, R.RMS_FAR) * 1.15)
    ticks = [t for t in (0.1, 0.2, 0.33, 0.5, 0.67, 0.77, 1, 1.3, 1.5, 2, 3, 5, 10)]
    axes[0].yaxis.set_major_locator(mticker.FixedLocator(ticks))
    axes[0].yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].yaxis.set_minor_formatter(mticker.NullFormatter())
    axes[0].set_ylabel("RMS(U),  U = G / √V̂  (log scale)")
    extra = [Line2D([], [], color="k", ls="--", label="RMS(U) = 1"),
             plt.Rectangle((0, 0), 1, 1, color="#2ca02c", alpha=0.2, label=f"C13 band {1 / R.RMS_FAR:.2f}–{R.RMS_FAR:g}"),
             plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.25, label=f"steps ≤ {R.RMS_SKIP_STEPS} (ignored by C13)")]
    handles, _ = axes[0].get_legend_handles_labels()
    fig.legend(handles=handles + extra, loc="lower center", ncol=min(6, len(handles) + 4), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    every = sorted({str(c.get("rms_every")) for c in recs})
    fig.suptitle(f"Figure 1: RMS of the unscaled update over training (logged every {', '.join(every)} step(s))",
                 x=0.01, ha="left", fontsize=12)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    _save(fig, out / name)
    return [(name, f"RMS(U) of three weight matrices against step (the paper's Figure 1 uses one and does not say which; "
                   f"C13 is judged on the fraction of logged steps of all three outside the green band "
                   f"[{1 / R.RMS_FAR:.2f}, {R.RMS_FAR:g}]: ≥ {R.RMS_FRAC_FAR:.1%} strays far, ≤ {R.RMS_FRAC_NEAR:.1%} stays near). "
                   "Dashed: 1.")]


# --- Table 3 ------------------------------------------------------------------------------------------


def table3_bars(cells: pd.DataFrame, out: Path, name: str = "table3_bars.png") -> list[tuple[str, str]]:
    layout = TABLE3_LAYOUT
    recs = cells.to_dict("records")
    if not recs:
        return []
    groups = sorted({tuple(f.of(c) for f in layout.index) for c in recs}, key=lambda t: tuple(x[0] for x in t))
    bars = sorted({tuple(f.of(c) for f in layout.columns) for c in recs}, key=lambda t: tuple(x[0] for x in t))
    width = 0.8 / max(1, len(bars))
    fig, ax = plt.subplots(figsize=(2.2 + 2.4 * len(groups), 4.6))
    top = 0.0
    found = []
    for j, bar in enumerate(bars):
        for i, grp in enumerate(groups):
            c = next((c for c in recs if tuple(f.of(c) for f in layout.index) == grp
                      and tuple(f.of(c) for f in layout.columns) == bar), None)
            found.append((i, j, stats_of(c, "")))
            if c is not None and c.get("ppl_mean") is not None:
                top = max(top, c["ppl_mean"] + (c.get("ppl_std") or 0))
    top = top or 1.0
    for i, j, s in found:
        x = i - 0.4 + width * (j + 0.5)
        color = PALETTE[j % 10]
        if s.missing:
            ax.text(x, top * 0.02, "not run", ha="center", va="bottom", rotation=90, fontsize=8, color="0.4")
        elif s.all_diverged:
            ax.bar(x, top * 1.05, width, color="white", edgecolor=color, hatch="//")
            ax.text(x, top * 0.5, f"diverged ({s.n_diverged}/{s.n})", ha="center", va="center", rotation=90, fontsize=9,
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.9))
        else:
            ax.bar(x, s.mean, width, color=color, yerr=s.std if s.std else None, capsize=4)
            note = f"{R.format_ppl(s.mean)}" + (f"\n{s.n_diverged}/{s.n} div." if s.n_diverged else "")
            ax.text(x, s.mean + (s.std or 0) + top * 0.025, note, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"init σ = {g[0][1]}\nmultiplier = {g[1][1]}" for g in groups])
    ax.set_ylabel("final validation perplexity (lower is better)")
    ax.set_ylim(0, top * 1.18)
    handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[j % 10], label=", ".join(x[1] for x in bar)) for j, bar in enumerate(bars)]
    ax.legend(handles=handles, fontsize=9, loc="upper left")
    ax.set_title("Table 3: embedding scaling (untied embeddings), mean ± std over seeds", fontsize=11, loc="left")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, out / name)
    return [(name, "Final validation perplexity for the three embedding settings of Table 3; error bars: std over seeds.")]


# --- sweeps over a number -----------------------------------------------------------------------------


def sweep(cells: pd.DataFrame, index: list, columns: list, xkey: str, xlabel: str, title: str, out: Path, name: str,
          log_x: bool | None = None) -> list[tuple[str, str]]:
    """Final perplexity against a number, one line per column group; × for diverged, dashed for x = None."""
    recs = cells.to_dict("records")
    series = sorted({tuple(f.of(c) for f in columns) for c in recs}, key=lambda t: tuple(x[0] for x in t))
    xs_all = sorted({c.get(xkey) for c in recs if c.get(xkey) is not None})
    if not xs_all:
        return []
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    ys = []
    any_div = False
    off_handles: list[Line2D] = []
    for j, ser in enumerate(series):
        color = PALETTE[j % 10]
        label = ", ".join(x[1] for x in ser) or "val ppl"
        pts = sorted(((c[xkey], stats_of(c, "")) for c in recs if tuple(f.of(c) for f in columns) == ser
                      and c.get(xkey) is not None), key=lambda p: p[0])
        fin = [(x, s) for x, s in pts if not s.all_diverged and s.mean is not None]
        if fin:
            ax.errorbar([x for x, _ in fin], [s.mean for _, s in fin], yerr=[s.std or 0 for _, s in fin], color=color,
                        marker="o", capsize=3, lw=1.6, label=label)
            ys += [s.mean for _, s in fin]
            for x, s in fin:
                if s.n_diverged:
                    ax.annotate(f"{s.n_diverged}/{s.n} div.", (x, s.mean), textcoords="offset points", xytext=(4, 6),
                                fontsize=8, color=color)
        for x, s in pts:
            if s.all_diverged:
                any_div = True
                ax.plot([x], [1.0], marker="x", ms=10, mew=2.4, color=color, transform=trans, clip_on=False,
                        label=None if fin else label)
        none = [stats_of(c, "") for c in recs if tuple(f.of(c) for f in columns) == ser and c.get(xkey) is None]
        for s in none:
            if s.mean is not None and not s.all_diverged:
                ax.axhline(s.mean, color=color, ls="--", lw=1, alpha=0.8)
                ys.append(s.mean)
                off_handles.append(Line2D([], [], color=color, ls="--", lw=1,
                                          label=f"{label}, {xlabel.split(' (')[0]} off: {R.format_ppl(s.mean)}"))
    _log_if_wide(ax, ys)
    if any_div and ys:  # room above the data for the × row
        lo, hi = min(ys), max(ys)
        if ax.get_yscale() == "log":
            ax.set_ylim(lo / 1.1, hi * (hi / lo) ** 0.25 * 1.1)
        else:
            span = (hi - lo) or hi * 0.1
            ax.set_ylim(lo - 0.08 * span, hi + 0.3 * span)
    if log_x is None:
        log_x = all(x > 0 for x in xs_all) and max(xs_all) / min(xs_all) >= 20
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xticks(xs_all)
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    if log_x and len(xs_all) > 4:
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final validation perplexity")
    handles, labels = ax.get_legend_handles_labels()
    if any_div:
        handles.append(Line2D([], [], color="k", marker="x", ls="", ms=8, mew=2, label="all seeds diverged (top edge)"))
    handles += off_handles  # each dashed reference named by its own series (e.g. "d off, warmup")
    ax.legend(handles=handles, fontsize=8.5, loc="best", title=", ".join(f.header for f in columns) or None,
              title_fontsize=8.5)
    ax.grid(True, alpha=0.3, which="both")
    ax.set_title(title, fontsize=11, loc="left")
    fig.tight_layout()
    _save(fig, out / name)
    return [(name, f"Final validation perplexity against {xlabel}; mean ± std over seeds; × marks a cell whose seeds all "
                   "diverged; a dashed line is the same series with the knob off.")]


def lr_sensitivity(cells: pd.DataFrame, out: Path, name: str = "lr_sensitivity.png") -> list[tuple[str, str]]:
    """Final validation loss against the multiplier (log x), one panel per row, warmup solid and no warmup dashed,
    a band over the seeds (min–max), every seed as a dot; a diverged seed drawn at the top edge as a triangle."""
    from .sweeps import sweeps as _sweeps

    found = _sweeps(cells)
    if not found:
        return []
    panels = list(dict.fromkeys((tuple(sorted((k, str(v)) for k, v in s.context.items())), s.row) for s in found))
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.9 * nrow + 0.6), sharey=True, squeeze=False)
    l0 = min(s.l0 for s in found)
    any_div = False
    for ax, (ctx, row) in zip(axes.flat, panels):
        for s in found:
            if (tuple(sorted((k, str(v)) for k, v in s.context.items())), s.row) != (ctx, row):
                continue
            color = WARMUP_COLORS[s.warmup]
            ls = "-" if s.warmup else "--"
            losses = s.losses()
            ms = sorted(s.cells)
            per_m = {m: [g[m] for g in losses.values() if g.get(m) is not None] for m in ms}
            xs = [m for m in ms if per_m[m]]
            if xs:
                mean = [float(np.mean(per_m[m])) for m in xs]
                ax.plot(xs, mean, ls=ls, color=color, marker="o", ms=3.5, lw=1.6)
                ax.fill_between(xs, [min(per_m[m]) for m in xs], [max(per_m[m]) for m in xs], color=color, alpha=0.18, lw=0)
            for m in ms:
                n_div = sum(1 for g in losses.values() if g.get(m) is None)
                if n_div:
                    any_div = True
                    # warmup's marker left of the multiplier, no warmup's right: both show where both diverged
                    dx = -4.5 if s.warmup else 4.5
                    top = blended_transform_factory(ax.transData, ax.transAxes)
                    ax.plot([m], [1.0], marker="^", ms=8, color=color, clip_on=False, ls="",
                            transform=offset_copy(top, fig=fig, x=dx, units="points"))
                    ax.annotate(f"{n_div}", (m, 1.0), xycoords=top, textcoords="offset points", xytext=(dx * 2.2, -11),
                                fontsize=7, color=color, ha="right" if s.warmup else "left")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
        ax.set_xticks(sorted({m for s in found for m in s.cells}))
        ax.grid(True, alpha=0.3, which="both")
        title = f"row {row}" + (" — " + ", ".join(f"{k}={v}" for k, v in ctx) if ctx else "")
        ax.set_title(title, fontsize=9, loc="left")
    _hide_unused(axes, len(panels), xlabel="learning-rate multiplier")
    for ax in axes[:, 0]:
        ax.set_ylabel("final validation loss (nats)")
    ys = [v for s in found for g in s.losses().values() for v in g.values() if v is not None]
    if ys:
        lo, hi = min(ys), min(max(ys), l0)
        axes[0, 0].set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.08 * (hi - lo + 1e-9))
    handles = [Line2D([], [], color=WARMUP_COLORS[True], ls="-", lw=1.6, label="warmup"),
               Line2D([], [], color=WARMUP_COLORS[False], ls="--", lw=1.6, label="no warmup"),
               Patch(color="gray", alpha=0.3, label="min–max over seeds")]
    if any_div:
        handles.append(Line2D([], [], color="k", marker="^", ls="", ms=7, label="diverged seeds (count), at the top edge"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("Learning-rate sensitivity: final loss against the multiplier", fontsize=11, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    _save(fig, out / name)
    return [(name, "Final validation loss (nats) against the learning-rate multiplier (log scale), one panel per row: "
                   "warmup solid, no warmup dashed, the mean over seeds with a min–max band; a triangle at the top edge "
                   "marks diverged seeds (their count beside it). The table above gives each setting's sensitivity.")]


def _slug(values: dict) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", section_title(values))[:80]


def _table2_sections(cells: pd.DataFrame) -> list[tuple[str, dict, pd.DataFrame]]:
    """(file suffix, section, its cells) of the cells that match a Table 2 row, as Table 2's table splits them."""
    matched = cells[[c is not None for c in cells["row_match"]]].reset_index(drop=True)
    secs = sections(matched, [ROW_FIELD, WARMUP_FIELD]) if len(matched) else []
    return [("" if i == 0 else f"_{_slug(sec)}", sec, sub) for i, (sec, sub) in enumerate(secs)]


def _sgd_lr(cells: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    made = []
    for suffix, _, sub in _table2_sections(cells):
        sgd = sub[[str(c).startswith("Q") for c in sub["row_match"]]]
        sgd = sgd.assign(**{"sgd_k": [TABLE2[c].optim["lr_scale"] for c in sgd["row_match"]]}) if len(sgd) else sgd
        if len(sgd) >= 2:
            made += sweep(sgd, [], [WARMUP_FIELD], "sgd_k", "k (SGD lr = k·s_t)", "Row Q: SGD, final perplexity against k",
                          out, f"sgd_lr{suffix}.png", log_x=True)
    return made


def make_plots(study: str | S.ReportSpec, runs: pd.DataFrame, cells: pd.DataFrame, curves: pd.DataFrame, out: Path,
               title: str = "") -> list[tuple[str, str]]:
    """The figures the study's file declares (``report.plots``; factorial.report.spec), in that order; each is
    drawn when the cells hold what it shows. Returns (file name, caption) for REPORT.md."""
    report = S.report_of(study) if isinstance(study, str) else study
    title = title or (study if isinstance(study, str) else "")
    made: list[tuple[str, str]] = []
    if cells.empty:
        return made
    has_curves = curves is not None and RF.VAL_PPL in curves and curves[RF.VAL_PPL].notna().any()
    has_loss = curves is not None and RF.TRAIN_LOSS in curves and curves[RF.TRAIN_LOSS].notna().any()
    has_rms = curves is not None and RF.RMS_U_MEAN in curves and curves[RF.RMS_U_MEAN].notna().any()
    layout = layout_of(report, cells.columns)
    for plot in report.plots:
        if plot == "curves" and has_curves:
            made += generic_curves(runs, cells, curves, layout, out, "curves.png", title)
        elif plot == "row_curves" and has_curves:
            for suffix, sec, sub in _table2_sections(cells):
                made += table2_curves(runs, sub, curves, out, f"curves{suffix}.png", section_title(sec))
        elif plot == "train_loss" and has_loss and "row_curves" in report.plots:
            # a study of Table 2 rows: one panel per row, as its validation curves (32 lines in one panel hide them)
            for suffix, sec, sub in _table2_sections(cells):
                made += table2_curves(runs, sub, curves, out, f"train_loss{suffix}.png", section_title(sec),
                                      key=RF.TRAIN_LOSS)
        elif plot == "rms_rows" and has_rms:
            for suffix, sec, sub in _table2_sections(cells):
                made += table2_curves(runs, sub, curves, out, f"rms_u_rows{suffix}.png", section_title(sec),
                                      key=RF.RMS_U_MEAN)
        elif plot == "train_loss" and has_loss:
            made += generic_curves(runs, cells, curves, layout, out, "train_loss.png", title, key=RF.TRAIN_LOSS)
        elif plot == "sgd_lr":
            made += _sgd_lr(cells, out)
        elif plot in ("fig1", "fig1_ag"):
            made += figure1(runs, cells, curves, plot == "fig1", out)
        elif plot == "table3_bars":
            made += table3_bars(cells, out)
        elif plot == "lr_sensitivity":
            made += lr_sensitivity(cells, out)
        elif plot == "sweep" and layout is not None and layout.sweep is not None:
            f = layout.sweep
            for i, (sec, sub) in enumerate(sections(cells, layout.index + layout.columns)):
                suffix = "" if i == 0 else f"_{_slug(sec)}"
                made += sweep(sub, layout.index, layout.columns, f.numeric, f.header,
                              f"{layout.title}" + (f" ({section_title(sec)})" if sec else ""), out,
                              f"sweep_{f.numeric.split('.')[-1]}{suffix}.png")
    return made
