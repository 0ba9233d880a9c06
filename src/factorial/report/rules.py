"""The rules that turn measurements into verdicts — defined once, here, and printed into REPORT.md.

The paper's findings (PAPER.md §8) are stated in words: "≈", "fails", "much worse", "stable", "strays far
from 1". This module fixes what each word means for our measurements, so every claim is checked with the
same yardstick and a reader can see the yardstick.

What is compared
    A cell's quality is its **final validation perplexity** (summary ``val_ppl``; lower is better), one
    number per seed. Over the seeds that finished we use the mean and the sample standard deviation
    (``ddof=1``, only with ≥ 2 seeds). A seed that diverged (the trainer stopped it: NaN/inf loss or a loss
    above ``train.diverge_loss``), or that completed with a non-finite perplexity, counts as **failed**; it
    is never averaged in. Crashed (``failed``) and unfinished runs are not results and count as missing.

"≈" (``approx``)
    Two cells are equal for our purpose when the relative difference of their mean perplexities,
    |a − b| / min(a, b), is at most ``REL_APPROX`` (5%), *or* — when both cells have ≥ 2 finished seeds —
    when |a − b| ≤ ``NOISE_K``·√(s_a² + s_b²) (twice the seed noise of the difference). 5% is about the
    spread we see between seeds of one cell at CPU scale and far below the gaps the paper reports
    (a failed no-warmup run has BLEU ≈ 0). They are clearly *different* when the ratio of the means is at
    least ``FAIL_RATIO``, or — with ≥ 2 seeds each — when the difference is outside the noise band. A
    difference between 5% and 25% seen with a single seed on either side cannot be called either way:
    **inconclusive ("single seed")**. A cell with a diverged seed is never ≈ a cell without one.

"fails" / "unstable" / "much worse" (``fails``)
    Cell X fails relative to a reference R (for the no-warmup claims: the same row with warmup, or the
    baseline A with warmup where the study did not run that row with warmup) when any
    seed of X diverged, or when mean(X) ≥ ``FAIL_RATIO`` × mean(R) (25% higher perplexity — the paper's
    failures are total, BLEU 25 → 0.1, so a quarter more perplexity is a deliberately modest bar for a small
    model that may not blow up completely). X is **stable** when no seed diverged and mean(X) is ≈ R or
    better, or — with ≥ 2 seeds each — worse but by less than the factor. Between the two thresholds with
    a single seed: inconclusive.

"converges worse" (``worse``) / "as good as" (``not_worse``)
    X is worse than R when X has a diverged seed, or mean(X) > mean(R) and the two are not ≈ (by the rule
    above, including the single-seed gap). "As good as" is the negation.

RMS(U) — Figure 1 (``rms_excursion``, ``strays_far``, ``stays_near``)
    For one run, the excursion of RMS(U_t) of a matrix is max_t |ln RMS(U_t)| over the logged steps
    t > ``RMS_SKIP_STEPS`` (at t = 1 the decay rate β̂21 = 0 makes U = ±1 exactly, and the first few
    steps only show the estimator starting up). It **strays far from 1** when the excursion is
    ≥ ln ``RMS_FAR`` (RMS(U) outside [1/1.5, 1.5] at some step; the paper's β2 = 0.999 goes from 0.33 to
    2.2) and **stays near 1** when it is ≤ ln ``RMS_NEAR`` (inside [1/1.3, 1.3]; the paper's β2 = 0.9 stays
    within 0.8–1.13). With several seeds all must agree, otherwise inconclusive. The curve is only as
    fine as ``train.rms_every``; the report says which it was.

Sensitivity — Table 3 (``spread``, ``less_sensitive``)
    An optimizer's sensitivity to the embedding setting is the spread max/min of its mean perplexities
    over the settings (∞ if a setting diverged). Adafactor is less sensitive than Adam when
    spread(Adam) / spread(Adafactor) ≥ 1 + ``REL_APPROX``; not when spread(Adafactor) ≥ spread(Adam);
    in between the difference is within the ≈ threshold: inconclusive.

Sublinear state — C15 (``state_is_sublinear``)
    Optimizer state bytes (``state_bytes``, every non-scalar state tensor) of a factored, β1 = 0 cell must
    be at most ``STATE_FACTOR`` / d_model of one full fp32 moment (4 · params bytes; Adam keeps two,
    8 · params). Why this bound: factoring an n×m matrix keeps n + m numbers instead of n·m, and
    (n + m)/(n·m) = 1/n + 1/m ≤ 2/d_model when both sides are ≥ d_model, as in every matrix of a
    Transformer. A linear-memory state (full second moment, or any first moment) takes ≥ 100%. A fixed
    fraction would not do: at d_model = 128 the factored state is about 1.0% of 4 · params, at 512 about
    0.3% — both far below linear, and the bound 2/d_model (1.6%, 0.4%) says exactly that. Without a
    d_model (e.g. a W&B run with an incomplete config) the bound falls back to ``STATE_FALLBACK_FRACTION``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# --- thresholds (the report prints these) ----------------------------------------------------------

REL_APPROX = 0.05  # "≈": |a − b| / min(a, b) ≤ 5%
NOISE_K = 2.0  # "≈" also when |a − b| ≤ 2·√(s_a² + s_b²), both cells with ≥ 2 seeds
FAIL_RATIO = 1.25  # "fails" / "much worse" / clearly different: ratio of mean perplexities ≥ 1.25
MIN_SEEDS_FOR_NOISE = 2  # seeds a cell needs before its standard deviation is used
RMS_FAR = 1.5  # "strays far from 1": max |ln RMS(U)| ≥ ln 1.5
RMS_NEAR = 1.3  # "stays near 1": max |ln RMS(U)| ≤ ln 1.3
RMS_SKIP_STEPS = 5  # RMS(U) of steps 1..5 is ignored
STATE_FACTOR = 2.0  # C15: state_bytes ≤ (2 / d_model) · 4 · params
STATE_FALLBACK_FRACTION = 0.01  # C15 when d_model is unknown: state_bytes ≤ 1% of 4 · params

FIG1_MATRICES = ("tok_emb", "attn_proj.0", "ff1.0")  # what train.py logs as rms_u/<name>
FIG1_MATRIX = "tok_emb"  # the matrix C13 is judged on (the shared embedding/softmax)


def thresholds_markdown() -> str:
    """The rules as a Markdown list, for REPORT.md (generated from the constants above)."""
    r = REL_APPROX * 100
    return "\n".join([
        f"- Quality of a cell: final validation perplexity (`val_ppl`) — mean ± sample std over its finished seeds; "
        "a seed that diverged (or ended with a non-finite perplexity) counts as **failed**, never averaged in; "
        "crashed and unfinished runs count as missing.",
        f"- **≈**: |a − b| / min(a, b) ≤ {r:g}%, or (both cells with ≥ {MIN_SEEDS_FOR_NOISE} seeds) "
        f"|a − b| ≤ {NOISE_K:g}·√(s_a² + s_b²). Clearly different: ratio ≥ {FAIL_RATIO:g}, or (≥ {MIN_SEEDS_FOR_NOISE} "
        f"seeds each) outside that noise band. A gap between {r:g}% and {(FAIL_RATIO - 1) * 100:g}% with a single seed "
        "on either side is *inconclusive (single seed)*. A cell with a diverged seed is never ≈ one without.",
        f"- **fails / unstable / much worse** (X vs reference R; for no-warmup claims R = the same row with warmup, or "
        "A with warmup where that row was not run with warmup): "
        f"a seed of X diverged, or mean(X) ≥ {FAIL_RATIO:g} × mean(R). **Stable**: no seed diverged and X ≈ R or better "
        f"(or, with ≥ {MIN_SEEDS_FOR_NOISE} seeds each, worse by less than ×{FAIL_RATIO:g}); between the thresholds "
        "with a single seed: inconclusive.",
        "- **converges worse**: X has a diverged seed, or mean(X) > mean(R) and X is not ≈ R. "
        "**As good as / does not help**: the negation.",
        f"- **RMS(U)** (Figure 1): excursion = max |ln RMS(U_t)| over logged steps t > {RMS_SKIP_STEPS} of "
        f"`rms_u/{FIG1_MATRIX}`; **strays far from 1** if ≥ ln {RMS_FAR:g} (outside [{1 / RMS_FAR:.2f}, {RMS_FAR:g}]), "
        f"**stays near 1** if ≤ ln {RMS_NEAR:g} (inside [{1 / RMS_NEAR:.2f}, {RMS_NEAR:g}]); all seeds must agree.",
        f"- **less sensitive to the embedding setting** (Table 3): spread = max/min of mean perplexity over the settings "
        f"(∞ if one diverged); Adafactor is less sensitive if spread(Adam)/spread(Adafactor) ≥ {1 + REL_APPROX:g}, not if "
        f"spread(Adafactor) ≥ spread(Adam), inconclusive in between.",
        f"- **sublinear state** (C15): every factored β1 = 0 cell has state_bytes ≤ ({STATE_FACTOR:g}/d_model) · 4 · params "
        f"(factoring keeps n + m numbers of an n×m matrix, and (n + m)/nm ≤ 2/d_model); "
        f"{STATE_FALLBACK_FRACTION:.0%} of 4 · params if d_model is unknown.",
    ])


# --- the evidence a rule looks at ------------------------------------------------------------------


@dataclass(frozen=True)
class CellStats:
    """What the rules know about one cell: its name and its seeds' final perplexities."""

    label: str  # e.g. "A, no warmup"
    n: int = 0  # finished seeds (completed + diverged)
    n_diverged: int = 0  # seeds that diverged or ended non-finite
    mean: float | None = None  # mean val_ppl of the seeds that did not diverge
    std: float | None = None  # sample std of those (≥ 2 seeds), else None
    n_failed: int = 0  # crashed runs (not results)
    n_incomplete: int = 0  # unfinished runs (not results)

    @property
    def missing(self) -> bool:
        return self.n == 0

    @property
    def n_ok(self) -> int:
        return self.n - self.n_diverged

    @property
    def all_diverged(self) -> bool:
        return self.n > 0 and self.n_diverged == self.n

    @property
    def has_noise(self) -> bool:
        return self.n_ok >= MIN_SEEDS_FOR_NOISE and self.std is not None and math.isfinite(self.std)

    def describe(self) -> str:
        """``A, no warmup: 412.3 ± 5.1 (n=3)`` — the numbers a verdict cites."""
        if self.missing:
            return f"{self.label}: missing"
        return f"{self.label}: {format_stats(self)}"


def _decimals(x: float) -> int:
    return 1 if abs(x) >= 100 else 2


def format_ppl(x: float | None, decimals: int | None = None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.{_decimals(x) if decimals is None else decimals}f}"


def format_stats(s: CellStats) -> str:
    """``412.3 ± 5.1 (n=3)``, ``412.3 (n=1)``, ``diverged (3/3)``, ``400.1 ± 2.0 (n=3; 1/3 diverged)``, ``—``,
    ``— (1 crashed)``: n counts finished seeds; crashed and unfinished runs are named, never counted."""
    other = [f"{k} {w}" for k, w in ((s.n_failed, "crashed"), (s.n_incomplete, "unfinished")) if k]
    if s.missing:
        return "—" + (f" ({', '.join(other)})" if other else "")
    if s.all_diverged:
        return f"diverged ({s.n_diverged}/{s.n}" + "".join(f"; {o}" for o in other) + ")"
    body = format_ppl(s.mean)
    if s.std is not None and math.isfinite(s.std) and s.n_ok >= 2:
        body += f" ± {format_ppl(s.std, _decimals(s.mean))}"
    note = f"n={s.n}"
    if s.n_diverged:
        note += f"; {s.n_diverged}/{s.n} diverged"
    note += "".join(f"; {o}" for o in other)
    return f"{body} ({note})"


@dataclass(frozen=True)
class Judgement:
    """A tri-state answer: True / False / None (inconclusive), with the reason in words and numbers."""

    value: bool | None
    reason: str

    def __bool__(self) -> bool:  # pragma: no cover - guard against `if judgement:`
        raise TypeError("use Judgement.value (True / False / None), not its truth value")


def negate(j: Judgement, reason: str | None = None) -> Judgement:
    return Judgement(None if j.value is None else not j.value, reason or j.reason)


def _missing(*cells: CellStats) -> Judgement | None:
    gone = [c.label for c in cells if c.missing]
    if gone:
        return Judgement(None, f"missing cell{'s' if len(gone) > 1 else ''}: {', '.join(gone)}")
    return None


def rel_diff(a: float, b: float) -> float:
    """|a − b| / min(a, b) for two positive perplexities."""
    return abs(a - b) / min(a, b)


def _within_noise(a: CellStats, b: CellStats) -> bool:
    return a.has_noise and b.has_noise and abs(a.mean - b.mean) <= NOISE_K * math.hypot(a.std, b.std)


def _noise_text(a: CellStats, b: CellStats) -> str:
    return f"{NOISE_K:g}·√(s²+s²) = {NOISE_K * math.hypot(a.std, b.std):.3g}"


def approx(a: CellStats, b: CellStats) -> Judgement:
    """Is a ≈ b? (see the module docstring)"""
    if (m := _missing(a, b)) is not None:
        return m
    if a.all_diverged and b.all_diverged:
        return Judgement(None, f"both diverged ({a.label}, {b.label}): no perplexity to compare")
    for x in (a, b):
        if x.n_diverged:
            return Judgement(False, f"{x.label} diverged in {x.n_diverged} of {x.n} seeds")
    d = rel_diff(a.mean, b.mean)
    pct = f"{d:.1%} apart ({format_ppl(a.mean)} vs {format_ppl(b.mean)})"
    if d <= REL_APPROX:
        return Judgement(True, f"{pct} ≤ {REL_APPROX:.0%}")
    if _within_noise(a, b):
        return Judgement(True, f"{pct}, within seed noise ({_noise_text(a, b)})")
    if d >= FAIL_RATIO - 1:
        return Judgement(False, f"{pct} ≥ {FAIL_RATIO - 1:.0%}")
    if a.has_noise and b.has_noise:
        return Judgement(False, f"{pct}, outside seed noise ({_noise_text(a, b)})")
    return Judgement(None, f"single seed: {pct} lies between the ≈ ({REL_APPROX:.0%}) and "
                           f"different ({FAIL_RATIO - 1:.0%}) thresholds and there is no seed noise to judge it by")


def fails(x: CellStats, ref: CellStats) -> Judgement:
    """Does x fail (diverge, or ≥ FAIL_RATIO × ref's perplexity)? False means x is stable; None when the
    cells cannot tell, also when x diverged but ref diverged in every seed too (no contrast)."""
    if x.missing:
        return Judgement(None, f"missing cell: {x.label}")
    if x.n_diverged:
        if not ref.missing and ref.all_diverged:
            # No contrast: the setting fails with or without what tells x from ref (an SGD lr too large
            # with warmup too, a reference that diverged), so x's divergence says nothing about that difference.
            return Judgement(None, f"{x.label} diverged in {x.n_diverged} of {x.n} seeds, but {ref.label} diverged too "
                                   f"(all {ref.n} seeds): it fails with or without the difference, so the comparison "
                                   "says nothing")
        return Judgement(True, f"{x.label} diverged in {x.n_diverged} of {x.n} seeds")
    if ref.missing:
        return Judgement(None, f"{x.label} did not diverge, but the reference {ref.label} is missing")
    if ref.all_diverged:
        return Judgement(None, f"the reference {ref.label} diverged in all seeds: no perplexity to compare with")
    r = x.mean / ref.mean
    txt = f"{x.label} / {ref.label} = {format_ppl(x.mean)} / {format_ppl(ref.mean)} = {r:.3f}"
    if r >= FAIL_RATIO:
        return Judgement(True, f"{txt} ≥ {FAIL_RATIO:g}")
    if r <= 1 + REL_APPROX:
        return Judgement(False, f"no seed diverged and {txt} ≤ {1 + REL_APPROX:g}")
    if _within_noise(x, ref):
        return Judgement(False, f"no seed diverged and {txt}, within seed noise ({_noise_text(x, ref)})")
    if x.has_noise and ref.has_noise:
        return Judgement(False, f"no seed diverged and {txt} < {FAIL_RATIO:g} (worse, but not failing)")
    return Judgement(None, f"single seed: {txt} lies between {1 + REL_APPROX:g} and {FAIL_RATIO:g}")


def stable(x: CellStats, ref: CellStats) -> Judgement:
    return negate(fails(x, ref))


def worse(x: CellStats, ref: CellStats) -> Judgement:
    """Does x converge to a worse (higher) perplexity than ref?"""
    if (m := _missing(x, ref)) is not None:
        return m
    if x.n_diverged and not ref.n_diverged:
        return Judgement(True, f"{x.label} diverged in {x.n_diverged} of {x.n} seeds")
    if ref.n_diverged and not x.n_diverged:
        return Judgement(False, f"{ref.label} diverged in {ref.n_diverged} of {ref.n} seeds, {x.label} did not")
    eq = approx(x, ref)
    if eq.value is True:
        return Judgement(False, f"≈: {eq.reason}")
    if eq.value is None:
        return Judgement(None, eq.reason)
    if x.mean > ref.mean:
        return Judgement(True, f"{x.label} higher: {eq.reason}")
    return Judgement(False, f"{x.label} lower (better): {eq.reason}")


def not_worse(x: CellStats, ref: CellStats) -> Judgement:
    return negate(worse(x, ref))


# --- RMS(U) ------------------------------------------------------------------------------------------


def rms_excursion(steps, values) -> float | None:
    """max |ln RMS(U_t)| over logged steps t > RMS_SKIP_STEPS (finite, positive values); None if none."""
    best = None
    for t, v in zip(steps, values):
        if t is None or v is None or not (t > RMS_SKIP_STEPS):
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(v) or v <= 0:
            continue
        e = abs(math.log(v))
        best = e if best is None else max(best, e)
    return best


def _per_seed(label: str, excursions: list[float | None], test, word: str, bound: float) -> Judgement:
    xs = [e for e in excursions if e is not None and math.isfinite(e)]
    if not xs:
        return Judgement(None, f"{label}: no RMS(U) logged after step {RMS_SKIP_STEPS}")
    shown = ", ".join(f"{math.exp(e):.2f}" for e in xs)
    verdicts = {test(e) for e in xs}
    txt = f"{label}: max excursion exp(max|ln RMS(U)|) = {shown} ({len(xs)} seed{'s' if len(xs) > 1 else ''})"
    if verdicts == {True}:
        return Judgement(True, f"{txt} {word} {bound:g}")
    if verdicts == {False}:
        return Judgement(False, f"{txt}, not {word} {bound:g}")
    return Judgement(None, f"{txt}: the seeds disagree")


def strays_far(label: str, excursions: list[float | None]) -> Judgement:
    return _per_seed(label, excursions, lambda e: e >= math.log(RMS_FAR), "≥", RMS_FAR)


def stays_near(label: str, excursions: list[float | None]) -> Judgement:
    return _per_seed(label, excursions, lambda e: e <= math.log(RMS_NEAR), "≤", RMS_NEAR)


# --- Table 3: sensitivity to the embedding setting ---------------------------------------------------


def spread(cells: list[CellStats]) -> float | None:
    """max/min of the mean perplexities (∞ if any cell has a diverged seed); None if a cell is missing."""
    if not cells or any(c.missing for c in cells):
        return None
    if any(c.n_diverged for c in cells):
        return math.inf
    means = [c.mean for c in cells]
    return max(means) / min(means)


def less_sensitive(s_af: float | None, s_adam: float | None) -> Judgement:
    if s_af is None or s_adam is None:
        return Judgement(None, "a cell is missing")
    txt = f"spread(Adafactor) = {s_af:.3f}, spread(Adam) = {s_adam:.3f}"
    if math.isinf(s_af) and math.isinf(s_adam):
        return Judgement(None, f"{txt}: both diverged in some setting")
    if math.isinf(s_adam):
        return Judgement(True, f"{txt}: Adam diverged in some setting, Adafactor in none")
    if s_af >= s_adam:
        return Judgement(False, f"{txt}: Adafactor's spread is not smaller")
    ratio = s_adam / s_af
    if ratio >= 1 + REL_APPROX:
        return Judgement(True, f"{txt}: ratio {ratio:.3f} ≥ {1 + REL_APPROX:g}")
    return Judgement(None, f"{txt}: ratio {ratio:.3f} < {1 + REL_APPROX:g}, within the ≈ threshold")


# --- C15: optimizer state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StateCheck:
    label: str
    state_bytes: float
    params: float
    d_model: float | None
    bound_fraction: float = field(init=False)
    fraction: float = field(init=False)  # state_bytes / (4·params)

    def __post_init__(self):
        bound = STATE_FACTOR / self.d_model if self.d_model else STATE_FALLBACK_FRACTION
        object.__setattr__(self, "bound_fraction", bound)
        object.__setattr__(self, "fraction", self.state_bytes / (4 * self.params))

    @property
    def ok(self) -> bool:
        return self.fraction <= self.bound_fraction

    def describe(self) -> str:
        d = f"{STATE_FACTOR:g}/d_model = {STATE_FACTOR:g}/{self.d_model:g}" if self.d_model else "fallback"
        return (f"{self.label}: {self.state_bytes:,.0f} B of state for {self.params:,.0f} params = "
                f"{self.fraction:.2%} of 4·params ({self.fraction / 2:.2%} of Adam's 8·params); bound {d} = "
                f"{self.bound_fraction:.2%}")


def merge_checks(checks: list[StateCheck]) -> list[StateCheck]:
    """Cells with the same state size, parameter count and d_model as one line (labels joined)."""
    groups: dict[tuple, list[StateCheck]] = {}
    for c in checks:
        groups.setdefault((c.state_bytes, c.params, c.d_model), []).append(c)
    return [StateCheck("; ".join(c.label for c in g), *key) for key, g in groups.items()]


def state_is_sublinear(checks: list[StateCheck]) -> Judgement:
    if not checks:
        return Judgement(None, "no finished factored β1 = 0 cell with a recorded state size")
    bad = [c for c in checks if not c.ok]
    if bad:
        return Judgement(False, "; ".join(c.describe() for c in merge_checks(bad)) + " — above the bound")
    worst = max(checks, key=lambda c: c.fraction / c.bound_fraction)
    return Judgement(True, f"all {len(checks)} cells within the bound; the largest is {worst.fraction:.2%} of 4·params "
                           f"≤ {worst.bound_fraction:.2%}")
