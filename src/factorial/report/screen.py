"""The no-warmup screen: for every setting (context) of a study that holds A with warmup, A without warmup
and the rows the paper says survive without warmup (B: momentum, H: clipping at d = 1), how much worse
each no-warmup cell is than A with warmup, how often its RMS(U) ran above 1.5, and whether the setting
shows the paper's pattern by the screen's signature (rules.SCREEN_*; stated in experiments/regime.yaml
before the screen ran).

Any study whose contexts hold those cells gets the section; nothing here names a study.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..rows import TABLE2  # noqa: E402
from . import rules as R  # noqa: E402
from .data import _finite as _num  # noqa: E402  (a finite number or None: NaN from a frame, ∞)
from .data import identity_keys, knob_equal, varying  # noqa: E402

SURVIVORS = ("B", "H")  # the paper's rows that train without warmup (C4, C7)
ROLES = ("A", *SURVIVORS)
# The optimizer knobs that tell A, B and H apart (β1, clipping, …). Every other knob — β2 included — is
# part of a screened point, so "A with β2 = 0.975" is row A's role at the point optim.beta2=0.975.
ROLE_KEYS = sorted({k for r in ROLES for k in TABLE2[r].optim
                    if len({json.dumps(TABLE2[x].optim.get(k), default=str) for x in ROLES}) > 1})


def _role(c: dict) -> str | None:
    """A, B or H: the row whose distinguishing knobs the cell has (whatever the point's other knobs)."""
    def value(k):  # a frame's NaN is a missing knob
        v = c.get(f"optim.{k}")
        return None if isinstance(v, float) and math.isnan(v) else v

    for r in ROLES:
        if all(knob_equal(value(k), TABLE2[r].optim.get(k)) for k in ROLE_KEYS):
            return r
    return None


def _context_keys(cells: pd.DataFrame) -> list[str]:
    keys = identity_keys(cells.columns)
    return varying(cells, [k for k in keys if k != "schedule.warmup" and k not in {f"optim.{r}" for r in ROLE_KEYS}])


def _mean(xs) -> float | None:
    xs = [x for x in (xs or []) if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _rms_gt15(cell: dict) -> float | None:
    """Fraction of logged steps with RMS(U) > 1.5, pooled over the Figure-1 matrices, mean over seeds."""
    vals = [_mean(cell.get(f"rmsgt1.5_{m}")) for m in R.FIG1_MATRICES]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def _overridden(group: list[dict]) -> dict[str, str] | None:
    """The keys the cells' own overrides set, with the values as the overrides wrote them (a cell's name is
    its overrides, ``k=v`` joined by commas; a cell's ``cells`` lists the names its runs had, joined by ", "),
    or None where a cell has no name: then a point is named against the value most points share."""
    names = [n for c in group for n in str(c.get("cells") or "").split(", ")]
    if not names or not all(names):
        return None
    return {k: v for n in names for k, eq, v in (part.partition("=") for part in n.split(",")) if eq}


def screen_points(cells: pd.DataFrame) -> list[dict]:
    """One record per context holding A with and without warmup (and any of B, H without warmup)."""
    if cells is None or cells.empty or "row_match" not in cells:
        return []
    keys = _context_keys(cells)
    groups: dict[str, list[dict]] = {}
    for c in cells.to_dict("records"):
        groups.setdefault(json.dumps({k: c.get(k) for k in keys}, sort_keys=True, default=str), []).append(c)
    def screened(group: list[dict]) -> bool:  # A with and without warmup, B and H without
        roles = {(_role(c), bool(c.get("schedule.warmup"))) for c in group}
        return {("A", True), ("A", False), *((r, False) for r in SURVIVORS)} <= roles

    groups = {k: g for k, g in groups.items() if screened(g)}
    differ = [k for k in keys if len({json.dumps(json.loads(g)[k], default=str) for g in groups}) > 1]

    def order(key: str):
        ctx = json.loads(key)
        return tuple((ctx[k] is None, str(type(ctx[k])), ctx[k] if isinstance(ctx[k], (int, float)) else str(ctx[k]))
                     for k in differ)

    # A point is named by what it changes: the keys whose value differs from the value most points share
    # (one lever at a time: the baseline is the point that changes nothing).
    from collections import Counter

    def usual_value(k: str) -> str | None:  # the value most points share, if more than one point and no tie
        top = Counter(json.dumps(json.loads(g)[k], default=str) for g in groups).most_common(2)
        return top[0][0] if top[0][1] > 1 and (len(top) == 1 or top[0][1] > top[1][1]) else None

    usual = {k: usual_value(k) for k in differ}

    out = []
    for key in sorted(groups, key=order):
        group = groups[key]
        find = {(_role(c), bool(c.get("schedule.warmup"))): c for c in group}
        ref = find.get(("A", True))
        a_nw = find.get(("A", False))
        if _num(ref.get("ppl_mean")) is None:
            continue
        ctx = json.loads(key)
        base = _num(ref["ppl_mean"])
        overridden = _overridden(group)
        if overridden is not None:  # what the study's overrides set at this point, among the keys that vary
            changed = {k: overridden[k] for k in differ if k in overridden}
        else:
            changed = {k: ctx[k] for k in differ if json.dumps(ctx[k], default=str) != usual[k]}
        rec = {"point": ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "(the scale itself)", "A, warmup": base}
        for row in ("A", *SURVIVORS):
            c = find.get((row, False))
            if c is None:
                continue
            div = int(c.get("n_diverged") or 0)
            ppl = _num(c.get("ppl_mean"))
            rec[f"{row}, no warmup"] = ppl
            # a majority of diverged seeds counts as a failure whatever the others reached
            rec[f"{row} / A warmup"] = math.inf if div * 2 > int(c.get("n") or 0) else (ppl / base if ppl else None)
            rec[f"{row} diverged"] = f"{div}/{c.get('n')}"
        rec["RMS>1.5, A no warmup"] = _rms_gt15(a_nw)
        rec["RMS>1.5, A warmup"] = _rms_gt15(ref)
        s1 = rec["A / A warmup"] is not None and rec["A / A warmup"] >= R.SCREEN_FAIL
        s2 = all(rec.get(f"{r} / A warmup") is not None and rec[f"{r} / A warmup"] < R.SCREEN_OK
                 and rec.get(f"{r} diverged", "").startswith("0/") for r in SURVIVORS)
        ra, rw = rec["RMS>1.5, A no warmup"], rec["RMS>1.5, A warmup"]
        s3 = ra is not None and rw is not None and ra >= R.SCREEN_RMS and ra > rw
        rec.update({"S1": s1, "S2": s2, "S3": s3, "pattern": s1 and s2})
        out.append(rec)
    return out


def screen_markdown(points: list[dict]) -> str:
    if not points:
        return ""
    head = ["point", "A, warmup", "A / A warmup", "B / A warmup", "H / A warmup", "RMS>1.5: A no warmup / warmup",
            "S1", "S2", "S3", "pattern"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ratio(p, r):
        v = p.get(f"{r} / A warmup")
        if v is None:
            return "–"
        div = p.get(f"{r} diverged", "0/0")
        return ("diverged" if math.isinf(v) else f"{v:.2f}") + (f" ({div} div.)" if not div.startswith("0/") else "")

    def frac(v):
        return "–" if v is None else f"{v:.1%}"

    for p in points:
        yes = {True: "yes", False: "no"}
        lines.append("| " + " | ".join([
            p["point"], R.format_ppl(p["A, warmup"]), ratio(p, "A"), ratio(p, "B"), ratio(p, "H"),
            f"{frac(p['RMS>1.5, A no warmup'])} / {frac(p['RMS>1.5, A warmup'])}",
            yes[p["S1"]], yes[p["S2"]], yes[p["S3"]], f"**{yes[p['pattern']]}**"]) + " |")
    return "\n".join(lines)


def screen_plot(points: list[dict], out: Path, name: str = "screen.png") -> list[tuple[str, str]]:
    """No-warmup perplexity / A with warmup's, per screened point, for A, B and H; and RMS(U) > 1.5."""
    if len(points) < 2:
        return []
    labels = [p["point"] for p in points]
    y = np.arange(len(points))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12.5, 0.55 * len(points) + 2.8), sharey=True,
                                  gridspec_kw={"width_ratios": [2, 1]})
    colors = {"A": "#d62728", "B": "#ff7f0e", "H": "#2ca02c"}
    top = max([v for p in points for r in ("A", *SURVIVORS) if (v := p.get(f"{r} / A warmup")) is not None
               and math.isfinite(v)] + [R.SCREEN_FAIL * 1.1])
    for i, row in enumerate(("A", *SURVIVORS)):
        fin = [(x, yy) for x, yy in zip([p.get(f"{row} / A warmup") for p in points], y + (i - 1) * 0.22)
               if x is not None and math.isfinite(x)]
        ax.scatter([x for x, _ in fin], [yy for _, yy in fin], color=colors[row], s=36,
                   label=f"{row} without warmup" + (" (β1 = 0, β2 = 0.999)" if row == "A" else ""))
        dv = [(yy) for x, yy in zip([p.get(f"{row} / A warmup") for p in points], y + (i - 1) * 0.22)
              if x is not None and math.isinf(x)]
        if dv:
            ax.scatter([top * 1.05] * len(dv), dv, color=colors[row], marker=">", s=60, clip_on=False)
    ax.axvline(1.0, color="k", lw=1)
    ax.axvline(R.SCREEN_FAIL, color="#d62728", ls="--", lw=1, label=f"S1: A fails at ≥ {R.SCREEN_FAIL:g}×")
    ax.axvline(R.SCREEN_OK, color="#2ca02c", ls=":", lw=1, label=f"S2: B, H below {R.SCREEN_OK:g}×")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("final validation perplexity / A with warmup's at the same point (▶: diverged)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    for j, p in enumerate(points):
        for k, (key, col) in enumerate((("RMS>1.5, A no warmup", "#d62728"), ("RMS>1.5, A warmup", "#1f77b4"))):
            v = p.get(key)
            if v is not None:
                ax2.barh(j + (k - 0.5) * 0.35, v * 100, height=0.33, color=col,
                         label=("A without warmup" if k == 0 else "A with warmup") if j == 0 else None)
    ax2.axvline(R.SCREEN_RMS * 100, color="k", ls="--", lw=1, label=f"S3: {R.SCREEN_RMS:.0%}")
    ax2.set_xlabel("% of logged steps with RMS(U) > 1.5")
    ax2.grid(True, axis="x", alpha=0.3)
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.suptitle("No-warmup screen: does a point show the paper's pattern (A fails, B and H do not)?", x=0.01,
                 ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return [(name, "Per screened point: final validation perplexity of A, B and H without warmup over A with warmup's "
                   "(the signature's bars dashed and dotted; ▶ a diverged cell), and the share of logged steps with "
                   "RMS(U) > 1.5 for A without and with warmup.")]


def control_results(cells: pd.DataFrame, controls) -> list[dict]:
    """Each declared positive control (report.controls: (cell, reference) cell names): it passes when the cell
    fails against the reference by the screen's rule S1 — most seeds diverged, or final validation perplexity
    ≥ rules.SCREEN_FAIL × the reference's. A control whose cells have not finished is "not run yet"."""
    if not controls:
        return []
    records = [] if cells is None or cells.empty else cells.to_dict("records")

    def find(name: str) -> dict | None:
        return next((c for c in records if name in str(c.get("cells") or "").split(", ")), None)

    out = []
    for name, ref_name in controls:
        c, ref = find(name), find(ref_name)
        rec = {"cell": name, "reference": ref_name, "ppl": None, "ref_ppl": None, "ratio": None, "diverged": "–",
               "passes": None}
        if c is not None and ref is not None and int(c.get("n") or 0) and _num(ref.get("ppl_mean")) is not None:
            div, n = int(c.get("n_diverged") or 0), int(c.get("n") or 0)
            ppl, base = _num(c.get("ppl_mean")), _num(ref["ppl_mean"])
            ratio = math.inf if div * 2 > n else (ppl / base if ppl else None)
            rec.update({"ppl": ppl, "ref_ppl": base, "ratio": ratio, "diverged": f"{div}/{n}",
                        "passes": ratio is not None and ratio >= R.SCREEN_FAIL})
        out.append(rec)
    return out


def control_markdown(results: list[dict]) -> str:
    if not results:
        return ""
    lines = ["| control cell | reference | control ppl | reference ppl | ratio | diverged | fails, as it must |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = "–" if r["ratio"] is None else ("diverged" if math.isinf(r["ratio"]) else f"{r['ratio']:.2f}")
        verdict = {None: "not run yet", True: "**yes**: the harness sees a failure",
                   False: "**no**: the control did not fail"}[r["passes"]]
        lines.append(f"| `{r['cell']}` | `{r['reference']}` | {R.format_ppl(r['ppl'])} | {R.format_ppl(r['ref_ppl'])} "
                     f"| {ratio} | {r['diverged']} | {verdict} |")
    return "\n".join(lines)
