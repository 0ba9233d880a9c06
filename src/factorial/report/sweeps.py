"""Learning-rate sweeps as evidence: a study that varies ``schedule.multiplier`` gets, per row × warmup
setting, the best multiplier, the learning-rate sensitivity of Wortsman et al. (2023) and the largest
multiplier that trains, and the stability claims get a verdict from the sweep (rules.sweep_fails).

A *sweep* is the set of cells that differ only in the multiplier: same row (optimizer knobs), same warmup,
same everything else. Seeds are paired across the grid and between warmup and no warmup.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import rules as R
from .data import identity_keys

KEY = "schedule.multiplier"


@dataclass
class Sweep:
    context: dict  # the knobs (other than row, warmup and multiplier) that differ between sweeps of the study
    row: str  # the Table 2 row its optimizer knobs match (or the opt label)
    warmup: bool
    cells: dict[float, dict]  # multiplier → aggregated cell
    l0: float

    @property
    def label(self) -> str:
        return f"{self.row}, {'warmup' if self.warmup else 'no warmup'}"

    def losses(self) -> dict[int, dict[float, float | None]]:
        """seed → multiplier → final validation loss (nats); None where that seed diverged."""
        out: dict[int, dict[float, float | None]] = {}
        for m, c in self.cells.items():
            ok = c.get("ppl_by_seed") or {}
            for s in c.get("seeds") or []:
                v = ok.get(s)
                out.setdefault(int(s), {})[m] = math.log(v) if v is not None and v > 0 else None
        # a seed counts only where it finished at every multiplier of the grid
        grid = set(self.cells)
        return {s: g for s, g in out.items() if set(g) == grid}

    def row_result(self) -> R.SweepRow:
        return R.SweepRow(self.label, self.losses(), self.l0)


def _ctx_keys(cells: pd.DataFrame) -> list[str]:
    keys = identity_keys(cells.columns)
    return [k for k in keys if k != KEY and k != "schedule.warmup" and not k.startswith("optim.")]


def sweeps(cells: pd.DataFrame) -> list[Sweep]:
    """The study's sweeps with ≥ 3 multipliers; [] when the study does not sweep the multiplier."""
    if cells is None or cells.empty or KEY not in cells or cells[KEY].nunique(dropna=True) < 3:
        return []
    ctx_keys = _ctx_keys(cells)
    groups: dict[str, Sweep] = {}
    values: dict[str, dict] = {}
    for c in cells.to_dict("records"):
        if c.get(KEY) is None or c.get("n", 0) == 0:
            continue
        row = c.get("row_match") or c.get("opt") or "?"
        ctx = {k: c.get(k) for k in ctx_keys}
        key = json.dumps([ctx, row, bool(c.get("schedule.warmup"))], sort_keys=True, default=str)
        vocab = c.get("vocab_size") or c.get("data.vocab_size") or c.get("model.vocab_size")
        l0 = math.log(float(vocab)) if vocab else math.inf
        sw = groups.setdefault(key, Sweep(ctx, row, bool(c.get("schedule.warmup")), {}, l0))
        sw.cells[float(c[KEY])] = c
        values[key] = ctx
    out = [s for s in groups.values() if len(s.cells) >= 3]
    differ = [k for k in ctx_keys if len({json.dumps(s.context.get(k), default=str) for s in out}) > 1]
    for s in out:
        s.context = {k: s.context.get(k) for k in differ}
    order = list(dict.fromkeys(c for c in cells.get("row_match", []) if c))
    out.sort(key=lambda s: (json.dumps(s.context, sort_keys=True, default=str),
                            order.index(s.row) if s.row in order else 99, s.row, not s.warmup))
    return out


def _mean_ci(xs: list[float]) -> tuple[float, float | None, float | None]:
    m = float(np.mean(xs))
    if len(xs) < 2:
        return m, None, None
    ci = sps.ttest_1samp(np.asarray(xs), 0.0).confidence_interval(R.CONFIDENCE)
    return m, float(ci.low), float(ci.high)


def sweep_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep: best multiplier and its perplexity (with CI), sensitivity (with CI), largest trainable."""
    rows = []
    for s in sweeps(cells):
        losses = s.losses()
        best_m, best = None, None
        for m, c in s.cells.items():
            ok = [math.log(v) for v in (c.get("ppl_by_seed") or {}).values()]
            if c.get("n_diverged"):
                continue
            if ok and (best is None or np.mean(ok) < np.mean(best)):
                best_m, best = m, ok
        sens = [v for v in s.row_result().sensitivity.values()]
        rec = {**{k: v for k, v in s.context.items()}, "row": s.row, "warmup": s.warmup, "seeds": len(losses),
               "multipliers": ", ".join(f"{m:g}" for m in sorted(s.cells))}
        if best is not None:
            m, lo, hi = _mean_ci(best)
            rec.update({"best multiplier": best_m, "best ppl": math.exp(m),
                        "best ppl CI": f"[{math.exp(lo):.1f}, {math.exp(hi):.1f}]" if lo is not None else "–"})
        else:
            rec.update({"best multiplier": None, "best ppl": None, "best ppl CI": "–"})
        if sens:
            m, lo, hi = _mean_ci(sens)
            rec.update({"sensitivity (nats)": m,
                        "sensitivity CI": f"[{lo:.3f}, {hi:.3f}]" if lo is not None else "–"})
        else:
            rec.update({"sensitivity (nats)": None, "sensitivity CI": "–"})
        big = s.row_result().largest
        rec["largest trainable multiplier"] = big
        rows.append(rec)
    return pd.DataFrame(rows)


def sweep_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return ""
    shown = frame.copy()
    shown["warmup"] = shown["warmup"].map({True: "yes", False: "no"})
    for col, fmt in (("best ppl", "{:.1f}"), ("sensitivity (nats)", "{:.3f}")):
        shown[col] = [fmt.format(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else "–"
                      for v in shown[col]]
    for col in ("best multiplier", "largest trainable multiplier"):
        shown[col] = [f"{v:g}" if v is not None and not (isinstance(v, float) and math.isnan(v)) else "none"
                      for v in shown[col]]
    head = "| " + " | ".join(shown.columns) + " |"
    lines = [head, "|" + "---|" * len(shown.columns)]
    for r in shown.to_dict("records"):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in r.values()) + " |")
    return "\n".join(lines)


# The stability claims' parts judged by the sweep: (claim, row, expected "fails" (True) or "stable" (False)).
SWEEP_PARTS = {
    "C4": [("A", True), ("B", False)],
    "C5": [("G", False)],
    "C6": [("F", True)],
    "C7": [("H", False), ("I", True)],
    "C9": [("K", False), ("L", True), ("M", True)],
    "C11": [("O", False)],
    "C12": [("Q100", True), ("Q150", True), ("Q200", True)],
}


def sweep_judgements(cells: pd.DataFrame) -> list[tuple[dict, str, str, bool, R.Judgement]]:
    """(context, claim, row, expected, judgement) for every stability part the study's sweeps hold."""
    found = sweeps(cells)
    by = {(json.dumps(s.context, sort_keys=True, default=str), s.row, s.warmup): s for s in found}
    out = []
    contexts = list(dict.fromkeys(json.dumps(s.context, sort_keys=True, default=str) for s in found))
    for ctx in contexts:
        a_nw, a_w = by.get((ctx, "A", False)), by.get((ctx, "A", True))
        a_fails = R.sweep_fails(a_nw.row_result(), a_w.row_result()) if a_nw and a_w else None
        for claim, parts in SWEEP_PARTS.items():
            for row, expected in parts:
                nw = by.get((ctx, row, False))
                if nw is None:
                    continue
                w = by.get((ctx, row, True)) or a_w
                if w is None:
                    continue
                j = R.sweep_fails(nw.row_result(), w.row_result())
                if not by.get((ctx, row, True)):
                    j = R.Judgement(j.value, f"against A with warmup (no {row} with warmup): {j.reason}", j.diff)
                if not expected:
                    j = R.negate(j)
                # the rules' preconditions.a_fails, as for the claims' own parts (C4 states A's failure itself)
                if claim in R.A_FAILS_CLAIMS and row != "A" and (a_fails is None or a_fails.value is not True):
                    why = "no A sweep" if a_fails is None else a_fails.reason
                    if a_fails is not None and a_fails.value is False:
                        j = R.untestable(f"needs A without warmup to fail by the sweep, which it does not ({why})")
                    else:
                        j = R.Judgement(None, f"rests on A failing by the sweep, which is undetermined ({why}); "
                                              f"on its own: {j.reason}", j.diff)
                out.append((json.loads(ctx), claim, row, expected, j))
    return out
