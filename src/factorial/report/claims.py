"""The paper's claims C1–C15 (PAPER.md §8) as checks on a study's cells.

Each claim is a list of parts; each part names the cells it compares (by knob values: the Table 2 row the
optimizer settings match, the warmup switch, the embedding setting, …) and applies one rule of
``factorial.report.rules``. A part is True when the data agree with the paper, False when they contradict
it, None when they cannot tell (a cell missing, a single seed between the thresholds, …). A claim is
``reproduced`` when all its parts are True, ``not reproduced`` when any part is False, else
``inconclusive``; a part whose precondition does not hold at the scale (``Part.requires``: e.g. "A fails
without warmup" for "clipping at d = 2 does not remove the instability") is *untestable here*, and a claim
none of whose parts is False, with every part that is not True untestable, is ``untestable here``.

Which claims a study speaks to: a study's file lists the claims it is *home* to (``report.claims``; table2:
C1–C12 and C15, fig1: C13, table3: C14, …; factorial.report.spec); there every part is evaluated and a
missing cell makes the claim inconclusive. Any other study
speaks to a claim only through the parts whose cells it fully holds (e.g. ``calibrate`` has A and B
without warmup and A with warmup, so it checks C4); the parts it does not hold are listed as not covered.

Cells are only compared with cells that share every other knob (model, data, steps, learning-rate
multiplier, …): a study with several such *contexts* (``calibrate`` has one per multiplier) gets one
verdict per context.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pandas as pd

from ..rows import TABLE2
from . import rules as R
from . import spec as S
from .data import ROW_KEYS, identity_keys, stats_of, study_noise, varying


# --- which cells ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One cell a claim needs, described by knob values."""

    label: str
    match: Callable[[dict], bool]


def _is(value, flag: bool) -> bool:
    return value is not None and bool(value) == flag


def row(letter: str, warmup: bool) -> Spec:
    label = f"{letter}, {'warmup' if warmup else 'no warmup'}"
    return Spec(label, lambda c: c.get("row_match") == letter and _is(c.get("schedule.warmup"), warmup))


def optimizer(name: str, warmup: bool, embedding: str, title: str) -> Spec:
    return Spec(f"{title}, {embedding}",
                lambda c: c.get("optim.name") == name and _is(c.get("schedule.warmup"), warmup) and c.get("embedding") == embedding)


# A need is a Spec, or a tuple of Specs meaning "the first of these that exists" (a fallback reference).
Need = Spec | tuple[Spec, ...]


def need_label(need: Need) -> str:
    if isinstance(need, Spec):
        return need.label
    return need[0].label + "".join(f" (else {s.label})" for s in need[1:])


class Context:
    """The cells of one context, looked up by Spec, with the study's seed noise and the metric compared."""

    def __init__(self, cells: list[dict], noise: R.Noise = R.NO_NOISE, metric: R.Metric = R.PPL):
        self.cells = cells
        self.noise = noise
        self.metric = metric

    def find(self, spec: Spec) -> dict | None:
        hits = [c for c in self.cells if spec.match(c)]
        if not hits:
            return None
        return max(hits, key=lambda c: c["n"])  # never two in one context; be safe anyway

    def resolve(self, need: Need) -> tuple[Spec, dict | None]:
        specs = (need,) if isinstance(need, Spec) else need
        for s in specs:
            c = self.find(s)
            if c is not None:
                return s, c
        return specs[0], None

    def stats(self, need: Need) -> R.CellStats:
        spec, cell = self.resolve(need)
        return stats_of(cell, spec.label)

    def has(self, need: Need) -> bool:
        return self.resolve(need)[1] is not None


# --- claims ----------------------------------------------------------------------------------------


@dataclass
class Part:
    text: str  # "A without warmup fails (vs A with warmup)"
    needs: Sequence[Need]
    check: Callable[[Context], tuple[R.Judgement, list[str]]]  # judgement, the numbers it used
    rule: str  # which rule, in words
    any_of: bool = False  # covered when any of needs exists (rather than all)
    covers: Callable[[Context], bool] | None = None  # a custom coverage test
    requires: "Part | None" = None  # a precondition: this part is untestable where it does not hold
    stability: bool = False  # "X without warmup is stable / fails": needs "A without warmup fails" in the claims
    # the rules file lists under preconditions.a_fails (rules.A_FAILS_CLAIMS)

    def covered(self, ctx: Context) -> bool:
        if self.covers is not None:
            return self.covers(ctx)
        present = [ctx.has(n) for n in self.needs]
        return any(present) if self.any_of else all(present)

    def touched(self, ctx: Context) -> bool:
        return any(ctx.has(n) for n in self.needs)


@dataclass
class Claim:
    id: str
    where: str  # the paper's section
    text: str
    parts: list[Part]
    free: tuple[str, ...]  # knobs the claim varies; every other identity knob is context
    whole: bool = False  # outside its home studies, speak to it only when every part is covered
    # (a claim's home studies are the ones whose study file lists it: factorial.report.spec)


@dataclass
class PartResult:
    text: str
    rule: str
    judgement: R.Judgement
    numbers: list[str]
    covered: bool

    @property
    def verdict(self) -> str:
        """yes | no | inconclusive | untestable here"""
        j = self.judgement
        return "untestable here" if j.untestable else {True: "yes", False: "no", None: "inconclusive"}[j.value]


@dataclass
class ClaimResult:
    claim: Claim
    context: dict  # the context's values of the knobs that vary between contexts ({} if one)
    parts: list[PartResult]
    uncovered: list[str] = field(default_factory=list)  # parts this (non-home) study does not hold
    verdict: str = "inconclusive"
    reason: str = ""
    pass_name: str = "exploration"  # which of the study's runs judged it (factorial.report.evidence)
    pass_label: str = ""  # e.g. "confirmation (seeds 3–5)"
    registration: str = "exploratory"  # confirmatory | exploratory | incomplete
    registration_note: str = ""  # why

    @property
    def title(self) -> str:
        ctx = ", ".join(f"{k}={_short(v)}" for k, v in self.context.items())
        part = f" (partly: {len(self.parts)} of {len(self.parts) + len(self.uncovered)} parts)" if self.uncovered else ""
        return f"{self.claim.id}" + (f" @ {ctx}" if ctx else "") + part


def _short(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


def mixed_machines(ctx: Context, a: Need, b: Need) -> str:
    """A note when the seeds paired between two cells ran on different machines or thread counts (their
    trajectories then differ by more than the seed: results/README's cross-machine repeats)."""
    ca, cb = ctx.resolve(a)[1], ctx.resolve(b)[1]
    if ca is None or cb is None:
        return ""
    ma, mb = ca.get("machine_by_seed") or {}, cb.get("machine_by_seed") or {}
    bad = sorted(k for k in set(ma) & set(mb) if ma[k] != mb[k])
    if not bad:
        return ""
    k = bad[0]
    return (f" [mixed machines: seed{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} pair runs from different "
            f"machines or thread counts, e.g. seed {k}: {ma[k]} vs {mb[k]}]")


def _cmp(rule: Callable[..., R.Judgement], a: Need, b: Need):
    def check(ctx: Context):
        sa, sb = ctx.stats(a), ctx.stats(b)
        j = rule(sa, sb, ctx.noise, ctx.metric)
        return replace(j, reason=j.reason + mixed_machines(ctx, a, b), sides=(sa.n, sb.n)), [sa.describe(), sb.describe()]
    check.kind = f"{rule.__name__}({need_label(a)}; {need_label(b)})"  # what the rule card (fingerprint) records
    return check


ROW_FREE = (*ROW_KEYS, "schedule.warmup")
W, NW = True, False
# A part's rule in words; {conf}, {eq}, {fail} and {seeds} are filled from the active rules (rule_text).
RULE_APPROX = "≈: the {conf} interval of the paired log difference inside ±{eq} (equivalence)"
RULE_FAILS = "fails: most seeds diverged, or the {conf} interval wholly above +{fail}"
RULE_STABLE = "stable: no seed diverged and the {conf} interval below +{fail}"
RULE_WORSE = "converges worse: the {conf} interval above 0"
RULE_NOT_WORSE = "as good as: the {conf} interval's upper end below +{eq} (non-inferiority)"


def rule_text(template: str) -> str:
    """A rule's words with the active rules' numbers (every comparison also needs {seeds} seeds a side)."""
    text = template.format(conf=f"{R.CONFIDENCE:.0%}".replace("%", " %"), eq=f"{R.pct(R.EQ_MARGIN):.0f} %",
                           fail=f"{R.pct(R.FAIL_MARGIN):.0f} %", sweep=f"{R.SWEEP_MARGIN:g}")
    return text


def _r(letter, warmup):
    return row(letter, warmup)


def _self_or_A(letter):  # a no-warmup row's reference: itself with warmup, else the baseline A with warmup
    return (_r(letter, W), _r("A", W))


def _vs(letter: str) -> str:
    return f"vs {letter} with warmup" + (", else A with warmup" if letter != "A" else "")


def _fails_part(letter: str) -> Part:
    return Part(f"{letter} without warmup fails ({_vs(letter)})", [_r(letter, NW), _self_or_A(letter)],
                _cmp(R.fails, _r(letter, NW), _self_or_A(letter)), RULE_FAILS, stability=True)


def _stable_part(letter: str) -> Part:
    return Part(f"{letter} without warmup is stable ({_vs(letter)})", [_r(letter, NW), _self_or_A(letter)],
                _cmp(R.stable, _r(letter, NW), _self_or_A(letter)), RULE_STABLE, stability=True)


# The precondition of the stability parts of the claims the rules list under preconditions.a_fails
# ("X removes, or does not remove, the no-warmup instability" needs an instability to remove).
A_FAILS = _fails_part("A")


def _not_worse_part(x: str, ref: str, warmup: bool) -> Part:
    when = "with warmup" if warmup else "without warmup"
    return Part(f"{x} is as good as {ref} {when}", [_r(x, warmup), _r(ref, warmup)],
                _cmp(R.not_worse, _r(x, warmup), _r(ref, warmup)), RULE_NOT_WORSE)


def _approx_part(a: str, b: str, warmup: bool) -> Part:
    when = "with warmup" if warmup else "without warmup"
    return Part(f"{a} ≈ {b} {when}", [_r(a, warmup), _r(b, warmup)], _cmp(R.approx, _r(b, warmup), _r(a, warmup)), RULE_APPROX)


# C12: the SGD rows (Q1 … Q300)
SGD_ROWS = [k for k, r in TABLE2.items() if r.is_sgd]
SGD_LARGE = ["Q100", "Q150", "Q200"]  # the paper's rows that diverge without warmup but not with it
# A row of SGD_LARGE speaks to C12 only where its cell with warmup did not diverge in every seed (rules.fails).


def _sgd_cells(ctx: Context, warmup: bool) -> list[tuple[str, R.CellStats]]:
    out = []
    for q in SGD_ROWS:
        s = ctx.stats(_r(q, warmup))
        if not s.missing:
            out.append((q, s))
    return out


def _sgd_worse(ctx: Context):
    qs = [(q, s) for q, s in _sgd_cells(ctx, W) if not s.all_diverged]
    a = ctx.stats(_r("A", W))
    if not qs:
        why = ("missing cells: no SGD row (Q1 … Q300) with warmup" if not _sgd_cells(ctx, W)
               else "every SGD row with warmup diverged")
        return R.Judgement(None, why), [a.describe()]
    q, best = min(qs, key=lambda qs_: ctx.metric.y(qs_[1].mean) if qs_[1].mean is not None else math.inf)
    j = R.worse(best, a, ctx.noise, ctx.metric)
    return R.Judgement(j.value, f"best SGD row {q}: {j.reason}"), [best.describe(), a.describe()]


def _sgd_lr_dependent(ctx: Context):
    qs = _sgd_cells(ctx, W)
    if len(qs) < 2:
        return R.Judgement(None, f"needs ≥ 2 SGD rows with warmup, found {len(qs)}"), [s.describe() for _, s in qs]
    finite = [(q, s) for q, s in qs if not s.all_diverged]
    if not finite:
        return R.Judgement(None, "every SGD row with warmup diverged"), [s.describe() for _, s in qs]
    best_q, best = min(finite, key=lambda x: ctx.metric.y(x[1].mean))
    worst_q, worst = max(qs, key=lambda x: (x[1].n_diverged > 0, ctx.metric.y(x[1].mean) if x[1].mean is not None else math.inf))
    j = R.fails(worst, best, ctx.noise, ctx.metric)
    return R.Judgement(j.value, f"worst {worst_q} vs best {best_q}: {j.reason}"), [s.describe() for _, s in qs]


def _sgd_diverges_without_warmup(ctx: Context):
    results = []
    numbers = []
    for q in SGD_LARGE:
        x, ref = ctx.stats(_r(q, NW)), ctx.stats(_r(q, W))
        if x.missing:
            continue
        j = R.fails(x, ref, ctx.noise, ctx.metric)  # None where this lr diverged with warmup too: too large either way, no contrast
        results.append((q, j))
        numbers += [x.describe(), ref.describe()]
    if not results:
        return R.Judgement(None, f"none of {', '.join(SGD_LARGE)} without warmup"), numbers
    why = "; ".join(f"{q}: {j.reason}" for q, j in results)
    values = [j.value for _, j in results]
    if True in values:
        return R.Judgement(True, why), numbers
    if all(v is False for v in values):
        return R.Judgement(False, why), numbers
    return R.Judgement(None, why), numbers


# C13: RMS(U) of the Figure-1 matrix


def _rms_part(letter: str, beta2: str, far: bool) -> Part:
    spec = _r(letter, W)

    def check(ctx: Context):
        cell = ctx.find(spec)
        if cell is None:
            return R.Judgement(None, f"missing cell: {spec.label}"), [f"{spec.label}: missing"]
        fr = list(cell.get("rms_frac_out") or [])
        label = f"{letter} (β2 = {beta2}, warmup)"
        j = R.strays_far(label, fr) if far else R.stays_near(label, fr)
        every = cell.get("rms_every")
        nums = [f"{label}: RMS(U) of {', '.join(R.FIG1_MATRICES)} logged every {every} step(s); per matrix, the "
                f"fraction of steps outside the band and the per-seed range after step {R.RMS_SKIP_STEPS}: " + "; ".join(
                    f"{m} " + ", ".join(f"{f:.1%} in [{lo:.2f}, {hi:.2f}]" for f, lo, hi in zip(
                        cell.get(f"rmsout_{m}") or [], cell.get(f"rmsmin_{m}") or [], cell.get(f"rmsmax_{m}") or [])
                        if f is not None and lo is not None)
                    for m in R.FIG1_MATRICES)]
        return j, nums

    def covers(ctx: Context) -> bool:  # outside fig1 only where RMS(U) was logged
        cell = ctx.find(spec)
        return cell is not None and any(x is not None for x in cell.get("rms_frac_out") or [])

    band = f"[{1 / R.RMS_FAR:.2f}, {R.RMS_FAR:g}]"
    word = (f"strays far from 1 (≥ {R.RMS_FRAC_FAR:.1%} of steps outside {band})" if far
            else f"stays near 1 (≤ {R.RMS_FRAC_NEAR:.1%} of steps outside {band})")
    return Part(f"RMS(U) of {letter} (β2 = {beta2}) with warmup {word}", [spec], check,
                f"fraction of logged steps > {R.RMS_SKIP_STEPS} with RMS(U) outside {band}", covers=covers)


# C14: Table 3

EMBEDDINGS = ("σ=1/√d, ×√d", "σ=1, ×1", "σ=1/√d, ×1")  # the paper's three rows
ADAM = [optimizer("adam", W, e, "Adam (warmup)") for e in EMBEDDINGS]
ADAFACTOR = [optimizer("adafactor", NW, e, "Adafactor (no warmup)") for e in EMBEDDINGS]


def _table3(ctx: Context):
    sa = [ctx.stats(s) for s in ADAM]
    sf = [ctx.stats(s) for s in ADAFACTOR]
    return R.less_sensitive(sf, sa, ctx.noise, ctx.metric), [s.describe() for s in sa + sf]


# C15: optimizer state


def _state(cells: list[dict]):
    checks = []
    for c in cells:
        if (c.get("optim.name") == "adafactor" and c.get("optim.second_moment") == "factored"
                and not (c.get("optim.beta1") or 0.0) and c.get("state_bytes") and c.get("params")):
            label = f"{c.get('row_match') or c.get('opt')}, {'warmup' if c.get('schedule.warmup') else 'no warmup'}"
            if _is(c.get("model.tie_embeddings"), False):
                label += ", untied"
            checks.append(R.StateCheck(label, float(c["state_bytes"]), float(c["params"]), c.get("model.d_model")))
    return R.state_is_sublinear(checks), [c.describe() for c in R.merge_checks(checks)]


CLAIMS: list[Claim] = [
    Claim("C1", "§3.2", "Factoring does not hurt: A ≈ C and H ≈ J.", [
        _not_worse_part("C", "A", W), _not_worse_part("J", "H", W), _not_worse_part("J", "H", NW),
    ], ROW_FREE),
    Claim("C2", "§3.2", "Row means only (D) ≈ baseline with warmup; column means only (E) is much worse, even with warmup.",
          [
              _approx_part("A", "D", W),
              Part("E with warmup is much worse than A with warmup", [_r("E", W), _r("A", W)],
                   _cmp(R.fails, _r("E", W), _r("A", W)), "much worse: " + RULE_FAILS.split(": ", 1)[1]),
          ], ROW_FREE),
    Claim("C3", "§4.1", "With warmup, dropping momentum changes little: A ≈ B.", [_approx_part("A", "B", W)], ROW_FREE),
    Claim("C4", "§4.1, §5", "Without warmup, β1 = 0 with β2 = 0.999 fails (A), while momentum (B) stays stable.",
          [_fails_part("A"), _stable_part("B")], ROW_FREE),
    Claim("C5", "§5, Table 1", "Fast decay β2 = 0.9 (G) is stable without warmup but converges worse than slow decay with warmup.",
          [
              _stable_part("G"),
              Part("G without warmup converges worse than A with warmup", [_r("G", NW), _r("A", W)],
                   _cmp(R.worse, _r("G", NW), _r("A", W)), RULE_WORSE),
          ], ROW_FREE),
    Claim("C6", "§5", "β2 = 0.99 (F) is still unstable without warmup.", [_fails_part("F")], ROW_FREE),
    Claim("C7", "§6.2", "Update clipping at d = 1 (H) removes most of the no-warmup instability; d = 2 (I) does not.",
          [_stable_part("H"), _fails_part("I")], ROW_FREE),
    Claim("C8", "§6.2", "With warmup, clipping has no significant effect (H ≈ A).", [_approx_part("A", "H", W)], ROW_FREE),
    Claim("C9", "§7.3", "Without warmup, 1 − t^−0.5 (K) is stable; 1 − t^−0.8 (L) and 1 − t^−1.0 (M) are not.",
          [_stable_part("K"), _fails_part("L"), _fails_part("M")],
          ROW_FREE),
    Claim("C10", "§7.3", "The β2 schedule plus clipping (N) is as good as constant β2 plus clipping (H).", [
        Part(f"N as good as H {w}", [_r("N", x), _r("H", x)], _cmp(R.not_worse, _r("N", x), _r("H", x)), RULE_NOT_WORSE)
        for x, w in ((W, "with warmup"), (NW, "without warmup"))
    ], ROW_FREE),
    Claim("C11", "§9.1", "Adafactor (O) works as well without warmup as with it; adding momentum (P) does not help.",
          [
              Part("O without warmup as good as O with warmup", [_r("O", NW), _r("O", W)],
                   _cmp(R.not_worse, _r("O", NW), _r("O", W)), RULE_NOT_WORSE, stability=True),
              *[Part(f"P does not help over O {w}", [_r("P", x), _r("O", x)], _cmp(R.not_worse, _r("O", x), _r("P", x)),
                     "does not help: O ≈ P or O better") for x, w in ((W, "with warmup"), (NW, "without warmup"))],
          ], ROW_FREE),
    Claim("C12", "§9.1", "SGD is worse, strongly learning-rate dependent, and diverges at large lr without warmup.",
          [
              Part("the best SGD row with warmup converges worse than A with warmup", [_r("A", W)] + [_r(q, W) for q in SGD_ROWS],
                   _sgd_worse, RULE_WORSE,
                   covers=lambda ctx: ctx.has(_r("A", W)) and any(ctx.has(_r(q, W)) for q in SGD_ROWS)),
              Part("strongly lr dependent: the worst SGD row with warmup fails relative to the best",
                   [_r(q, W) for q in SGD_ROWS], _sgd_lr_dependent, RULE_FAILS, any_of=True),
              Part(f"at large lr ({', '.join(SGD_LARGE)}) SGD without warmup fails (vs the same lr with warmup)",
                   [_r(q, NW) for q in SGD_LARGE], _sgd_diverges_without_warmup, RULE_FAILS + "; any of the rows", any_of=True),
          ], ROW_FREE),
    Claim("C13", "§5, Fig. 1", "With warmup, RMS(U) of β2 = 0.999 strays far from 1; with β2 = 0.9 it stays near 1.",
          [_rms_part("A", "0.999", True), _rms_part("G", "0.9", False)], ROW_FREE, whole=True),
    Claim("C14", "§8.1, Table 3", "Relative step size makes training less sensitive to the embedding scale than Adam.",
          [
              Part("spread (max/min perplexity over the three embedding settings) of Adafactor < Adam's",
                   [*ADAM, *ADAFACTOR], _table3,
                   "less sensitive: spread(Adam) − spread(Adafactor) of ln ppl, paired by seed, with its interval above 0"),
          ], ("optim.*", "schedule.warmup", "model.embedding_init_std", "model.embedding_multiplier")),
    Claim("C15", "§3, §4", "The optimizer state of factored Adafactor with β1 = 0 is sublinear in the parameter count.",
          [], ()),
]
CLAIM_IDS = list(R.CLAIM_IDS)  # = [c.id for c in CLAIMS] (tests/test_study_report.py)


# --- evaluation --------------------------------------------------------------------------------------


def _free(claim: Claim, keys: list[str]) -> set[str]:
    out = set()
    for f in claim.free:
        if f.endswith(".*"):
            out |= {k for k in keys if k.startswith(f[:-1])}
        else:
            out.add(f)
    return out


def contexts(cells: pd.DataFrame, claim: Claim, noise: R.Noise | None = None,
             metric: R.Metric = R.PPL) -> list[tuple[dict, Context]]:
    """The study's cells grouped by every identity knob the claim does not vary."""
    keys = identity_keys(cells.columns)
    ctx_keys = varying(cells, [k for k in keys if k not in _free(claim, keys)])
    groups: dict[str, list[dict]] = {}
    values: dict[str, dict] = {}
    for c in cells.to_dict("records"):
        key = json.dumps({k: c.get(k) for k in ctx_keys}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(c)
        values[key] = {k: c.get(k) for k in ctx_keys}
    # name a context only by the knobs that differ between contexts
    differ = [k for k in ctx_keys if len({json.dumps(v[k], default=str) for v in values.values()}) > 1]
    def order(key):
        return tuple((values[key][k] is not None, type(values[key][k]).__name__, values[key][k]) for k in differ)

    # Each context's own seed noise (the cells that share every knob the claim does not vary): a study that
    # mixes settings of very different noise (post-LN beside pre-LN) must not lend one's noise to the other.
    def noise_of(group: list[dict]) -> R.Noise:
        return noise if noise is not None else study_noise(group)

    return [({k: values[key][k] for k in differ}, Context(groups[key], noise_of(groups[key]), metric))
            for key in sorted(groups, key=order)]


def _combine(results: list[PartResult]) -> tuple[str, str]:
    vals = [p.judgement.value for p in results]
    if not results:
        return "inconclusive", "no part of the claim is covered"
    bad = [p for p in results if p.judgement.value is False]
    if bad:
        return "not reproduced", "; ".join(f"{p.text}: no — {p.judgement.reason}" for p in bad)
    if all(v is True for v in vals):
        return "reproduced", "every part holds"
    unk = [p for p in results if p.judgement.value is None]
    if all(p.judgement.untestable for p in unk):
        return "untestable here", "; ".join(f"{p.text}: {p.judgement.reason}" for p in unk)
    return "inconclusive", "; ".join(f"{p.text}: {p.judgement.reason}" for p in unk if not p.judgement.untestable)


def requirement(claim: Claim, p: Part) -> Part | None:
    """The precondition of a part: its own, or "A without warmup fails" for a stability part of a claim the
    rules list under preconditions.a_fails."""
    if p.requires is not None:
        return p.requires
    if p.stability and claim.id in R.A_FAILS_CLAIMS and p.text != A_FAILS.text:
        return A_FAILS
    return None


def _check(p: Part, ctx: Context, claim: Claim) -> tuple[R.Judgement, list[str]]:
    """A part's judgement, untestable where its precondition does not hold."""
    j, nums = p.check(ctx)
    req = requirement(claim, p)
    if req is not None:
        pre, _ = req.check(ctx)
        if pre.value is not True:
            why = pre.reason
            if pre.value is False:
                return replace(R.untestable(f"needs “{req.text}”, which does not hold ({why})"), sides=j.sides), nums
            if j.value is not None:  # the precondition is undetermined: so is what rests on it
                return R.Judgement(None, f"rests on “{req.text}”, which is undetermined ({why}); "
                                         f"on its own: {j.reason}", j.diff, sides=j.sides), nums
    return j, nums


def evaluate_claim(claim: Claim, cells: pd.DataFrame, home: bool, noise: R.Noise | None = None,
                   metric: R.Metric = R.PPL) -> list[ClaimResult]:
    """The claim's verdicts in this study (one per context); [] when the study cannot speak to it. ``home``:
    the study is home to the claim (its study file lists it: every part is judged)."""
    if claim.id == "C15":
        j, nums = _state(cells.to_dict("records"))
        if j.value is None and not home:
            return []
        part = PartResult("state_bytes ≤ (2/d_model)·4·params for every factored β1 = 0 cell", "sublinear state", j, nums, True)
        verdict, reason = _combine([part])
        return [ClaimResult(claim, {}, [part], verdict=verdict, reason=reason)]
    out = []
    for ctx_values, ctx in contexts(cells, claim, noise, metric):
        parts = claim.parts if home else [p for p in claim.parts if p.covered(ctx)]
        if not parts or (home and not any(p.touched(ctx) for p in claim.parts)):
            continue
        if not home and claim.whole and len(parts) < len(claim.parts):
            continue
        results = []
        for p in parts:
            j, nums = _check(p, ctx, claim)
            results.append(PartResult(p.text, rule_text(p.rule), j, nums, p.covered(ctx)))
        uncovered = [p.text for p in claim.parts if p not in parts]
        verdict, reason = _combine(results)
        if uncovered and verdict == "reproduced":
            reason = f"every part this study covers holds (not covered here: {'; '.join(uncovered)})"
        elif uncovered:
            reason += f" (not covered here: {'; '.join(uncovered)})"
        out.append(ClaimResult(claim, ctx_values, results, uncovered, verdict, reason))
    if home and not out:
        # the study should hold these cells and holds none of them
        ctx = Context([], noise, metric)
        results = [PartResult(p.text, rule_text(p.rule), *_check(p, ctx, claim), False) for p in claim.parts]
        verdict, reason = _combine(results)
        out.append(ClaimResult(claim, {}, results, [], verdict, reason))
    return out


def evaluate(cells: pd.DataFrame, study: str | S.ReportSpec, noise: R.Noise | None = None,
             metric: R.Metric = R.PPL) -> tuple[list[ClaimResult], list[tuple[Claim, str]]]:
    """All claims: (results, [(claim, why the study cannot speak to it)]). ``study``: the study's name (its
    study file declares the claims it is home to) or its report section."""
    home = (S.report_of(study) if isinstance(study, str) else study).home
    results, skipped = [], []
    homes = None
    for claim in CLAIMS:
        r = evaluate_claim(claim, cells, claim.id in home, noise, metric)
        if r:
            results += r
        else:
            homes = S.claim_homes() if homes is None else homes
            skipped.append((claim, _why_not(claim, homes.get(claim.id, []))))
    results += evaluate_sweeps(cells)
    return results, skipped


SWEEP_RULE = ("by the learning-rate sweep: S(no warmup) − S(warmup) of the sensitivity, paired by seed, with its "
              "{conf} t interval above {sweep} nats (or a smaller largest multiplier at which most seeds train) → fails; "
              "below → stable")
SWEEP_RULE_KIND = "sweep_fails: paired S difference against sweep_margin, or a smaller majority-trainable multiplier"


def evaluate_sweeps(cells: pd.DataFrame) -> list[ClaimResult]:
    """The stability claims judged by the study's multiplier sweeps (factorial.report.sweeps), one per
    claim and sweep context, titled "… by the learning-rate sweep"."""
    from .sweeps import sweep_judgements

    by_claim: dict[tuple[str, str], list[PartResult]] = {}
    ctxs: dict[tuple[str, str], dict] = {}
    for ctx, cid, row_, expected, j in sweep_judgements(cells):
        key = (cid, json.dumps(ctx, sort_keys=True, default=str))
        text = f"{row_} without warmup {'fails' if expected else 'is stable'} by the learning-rate sweep"
        by_claim.setdefault(key, []).append(PartResult(text, rule_text(SWEEP_RULE), j, [], True))
        ctxs[key] = ctx
    out = []
    claims = {c.id: c for c in CLAIMS}
    for (cid, _), parts in by_claim.items():
        key = (cid, _)
        verdict, reason = _combine(parts)
        ctx = {**ctxs[key], "judged by": "learning-rate sweep"}
        out.append(ClaimResult(claims[cid], ctx, parts, [], verdict, reason))
    return out


def _why_not(claim: Claim, homes: list[str]) -> str:
    if claim.id == "C15":
        return "no factored β1 = 0 Adafactor cell"
    if claim.id == "C14":
        return "needs Adam (warmup) and Adafactor (no warmup) cells in the three embedding settings of Table 3 (study table3)"
    needs = sorted({need_label(n) for p in claim.parts for n in p.needs}, key=str)
    if len(needs) > 6:
        needs = needs[:6] + ["…"]
    return f"needs the cells {'; '.join(needs)}" + (f" (study {', '.join(homes)})" if homes else "")
