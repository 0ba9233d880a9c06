"""The signature of the paper's no-warmup pattern, as a study's rules state it (``signature:``).

Table 2's pattern, seen from A with warmup: without warmup, A fails and so do the rows the paper has at
BLEU ≤ 0.5 (``fails``), while the rows the paper has training (``stable``) do not. Every row X without warmup
is compared with **A with warmup** by the rules' ``fails`` test (factorial.report.rules: most seeds diverged,
or the whole interval of the paired log difference above the fail margin → fails; no divergence and the
upper end below it → stable; else undetermined). The signature **holds** when A without warmup fails and
every listed row behaves as the paper's; it **does not hold** when A does not fail or any listed row does the
opposite; otherwise it is undetermined. Written into the rules file before the runs, it is fingerprinted with
them (factorial.report.prereg).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import claims as CL
from . import rules as R
from .tables import section_title


@dataclass(frozen=True)
class RowCheck:
    row: str
    expected: str  # "fails" | "stable"
    judgement: R.Judgement  # of "X without warmup fails against A with warmup"
    has_runs: bool = True  # whether the context has a cell of row X at all (deep_lr runs 4 of the 16 rows)

    @property
    def matches(self) -> bool | None:
        v = self.judgement.value
        return None if v is None else (v if self.expected == "fails" else not v)


@dataclass(frozen=True)
class SignatureResult:
    context: dict
    checks: list[RowCheck]  # A first

    @property
    def verdict(self) -> str:
        a, rest = self.checks[0], self.checks[1:]
        if a.matches is False or any(c.matches is False for c in rest):
            return "does not hold"
        if a.matches is True and all(c.matches is True for c in rest):
            return "holds"
        return "undetermined"


def evaluate(cells: pd.DataFrame) -> list[SignatureResult]:
    """One result per context of the cells (the knobs that are not Table 2's row or the warmup switch)."""
    sig = R.ACTIVE.data.get("signature")
    if sig is None or cells.empty:
        return []
    c4 = next(c for c in CL.CLAIMS if c.id == "C4")  # its free knobs: the row and the warmup switch
    ref = CL.row("A", True)
    out = []
    for ctx_values, ctx in CL.contexts(cells, c4):
        if not ctx.has(ref) or not ctx.has(CL.row("A", False)):
            continue
        a_ref = ctx.stats(ref)
        checks = [RowCheck("A", "fails", R.fails(ctx.stats(CL.row("A", False)), a_ref, ctx.noise, ctx.metric))]
        for expected in ("fails", "stable"):
            for letter in sig[expected]:
                if letter == "A":
                    continue
                checks.append(RowCheck(letter, expected, R.fails(ctx.stats(CL.row(letter, False)), a_ref, ctx.noise,
                                                                 ctx.metric),
                                       has_runs=ctx.has(CL.row(letter, False)) or ctx.has(CL.row(letter, True))))
        out.append(SignatureResult(ctx_values, checks))
    return out


def frame(results: list[tuple[str, SignatureResult]]) -> pd.DataFrame:
    """signature.csv: one row per (pass, context, row)."""
    rows = []
    for label, r in results:
        for c in r.checks:
            d = c.judgement.diff
            rows.append({"runs judged": label, "context": section_title(r.context),
                         "signature": r.verdict, "row": c.row, "paper without warmup": c.expected,
                         "matches": {True: "yes", False: "no", None: "undetermined"}[c.matches],
                         "has_runs": c.has_runs,
                         # unrounded: CLAIMS-<scale>.md formats these to one decimal as REPORT.md does, and a
                         # value rounded twice (0.7468 -> 0.75 -> 0.8) would print differently from the report
                         "ratio_pct": R.pct(d.estimate) if d else None,
                         "ci_low_pct": R.pct(d.lo) if d and d.lo is not None else None,
                         "ci_high_pct": R.pct(d.hi) if d and d.hi is not None else None,
                         "reason": c.judgement.reason})
    return pd.DataFrame(rows)


def markdown(results: list[tuple[str, SignatureResult]]) -> str:
    if not results:
        return ""
    sig = R.ACTIVE.data["signature"]
    lines = [f"Stated in the rules `{R.ACTIVE.name}` before the runs: without warmup, A and "
             f"{', '.join(r for r in sig['fails'] if r != 'A') or 'no other row'} fail against A with warmup, and "
             f"{', '.join(sig['stable']) or 'no row'} do not (the rules' fails test: the whole "
             f"{R.CONFIDENCE:.0%} interval above +{R.pct(R.FAIL_MARGIN):.0f} % or most seeds diverged; stable: no "
             f"divergence and the upper end below it). Ratios are each row without warmup over A with warmup.", ""]
    for label, r in results:
        ctx = section_title(r.context)  # as the claims and the table sections write it: multiplier=2, not 2.0
        lines += [f"**{label}{' @ ' + ctx if ctx else ''}: the signature {r.verdict}.**", "",
                  "| row | paper without warmup | ours vs A with warmup | matches |", "|---|---|---|---|"]
        for c in r.checks:
            if not c.has_runs:
                continue
            d = c.judgement.diff
            ours = d.text() if d is not None else c.judgement.reason
            lines.append(f"| {c.row} | {c.expected} | {ours.replace('|', '/')} | "
                         f"{ {True: 'yes', False: '**no**', None: 'undetermined'}[c.matches]} |")
        absent = [c.row for c in r.checks if not c.has_runs]
        if absent:  # undetermined (signature.csv lists them): the signature cannot hold without them
            lines += ["", f"No runs of these rows here, so undetermined: {', '.join(absent)} (listed in signature.csv); "
                          f"the signature can hold only where every listed row has runs."]
        lines.append("")
    return "\n".join(lines)
