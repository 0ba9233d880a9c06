"""The rules that turn measurements into verdicts — applied here, their numbers read from a rules file
(experiments/rules/<name>.yaml: data a study names and every run records the fingerprint of), and printed
into REPORT.md.

The paper's findings (docs: the claims C1–C15) are stated in words: "≈", "fails", "much worse", "stable",
"strays far from 1". This module fixes what each word means for our measurements, so every claim is
checked with the same yardstick, every verdict carries the interval it rests on, and a reader can see the
yardstick.

What is compared
    A cell's quality is one number per seed: the **final validation perplexity** (``val_ppl``, lower is
    better) — or, for the paper's own numbers, BLEU (higher is better). Comparisons are made on the log
    scale and oriented so that a positive difference means "x is worse than the reference":
    Δ = ln ppl(x) − ln ppl(ref), or ln BLEU(ref) − ln BLEU(x). A difference of Δ is a ratio of e^Δ
    (Δ = 0.049 ≈ 5 % worse). A seed that diverged (NaN/inf loss, a loss above ``train.diverge_loss``,
    or a non-finite final perplexity) counts as **failed** and is never averaged in; crashed and unfinished
    runs are not results and count as missing.

Pairing and the interval
    Seed k gives every cell of a study the same initialisation and data order, so two cells are compared
    **seed by seed** on the seeds both finished: d_k = Δ on seed k, n = the number of pairs, estimate d̄.
    The 90 % confidence interval of d̄ is the wider of
      (a) the study's **pooled seed noise**: σ̂² = the residual mean square of the additive model
          ln ppl = cell + seed, fitted by least squares to every finished run of every cell with ≥ 2 finished
          seeds (degrees of freedom = runs − rank of the model); d̄ ± t(0.95, df)·σ̂·√(2/n);
      (b) with n ≥ ``MIN_PAIRS_OWN`` pairs, the **paired t interval** of the two cells' own differences
          (scipy.stats.ttest_1samp), which protects against cells noisier than the study (a no-warmup cell
          on the edge of failing).
    Where the cells share no seed the comparison is **unpaired** and says so: Welch's interval
    (scipy.stats.ttest_ind) when both cells have ≥ 2 seeds, else the pooled noise of the one-way model
    ln ppl = cell (seed effects do not cancel), σ̂·√(1/n_x + 1/n_ref). With neither a pooled estimate nor
    enough seeds there is no interval, and every rule that needs one answers *inconclusive*.

"≈" (``approx``) — an equivalence test (two one-sided tests at 5 % each)
    Reproduced when the whole 90 % interval lies inside ±``EQ_MARGIN`` (= ln 1.05: within 5 %); clearly
    different when it lies wholly outside; otherwise inconclusive, with the interval shown. A cell with a
    majority of diverged seeds is clearly different from one without; a minority is inconclusive.

"as good as" / "does not hurt" (``not_worse``) — a non-inferiority test
    True when the interval's upper end is below +``EQ_MARGIN``; False when its lower end is above it.

"converges worse" (``worse``)
    True when the interval lies above 0 (x is detectably worse); False when its upper end is below
    +``EQ_MARGIN`` (any loss is smaller than the margin); else inconclusive.

"fails" / "unstable" / "much worse" (``fails``), decided with the noise first
    x fails against its reference (for the no-warmup claims: the same row with warmup, else A with
    warmup) when more than half of its seeds diverged while the reference trained in some seed, or when
    the whole interval lies above ``FAIL_MARGIN`` (= ln 1.25, 25 % worse: a modest bar beside the paper's
    BLEU 25 → 0.1; for BLEU ln 2, half the score, so Table 1's G at 15.6 vs 25.6 is worse but stable).
    x is **stable** when no seed diverged and the upper end is below ``FAIL_MARGIN``. Everything else —
    a minority of diverged seeds, an interval that straddles the bar — is inconclusive. Divergence counts
    carry a 90 % Clopper–Pearson interval (scipy.stats.binomtest).

Untestable here
    A part whose precondition does not hold at the scale (e.g. "clipping at d = 2 does not remove the
    no-warmup instability" when A does not fail without warmup) is *untestable here*, never "not reproduced".

RMS(U) — Figure 1 (``rms_fraction``, ``strays_far``, ``stays_near``)
    Per run, the fraction of logged steps t > ``RMS_SKIP_STEPS`` of the Figure-1 matrices (the
    embedding/softmax, an attention and a feed-forward matrix; the paper does not say which it drew) whose
    RMS(U_t) lies outside [1/``RMS_FAR``, ``RMS_FAR``]. The paper's β2 = 0.999 curve is outside [0.67, 1.5]
    for roughly a third of its 3,000 steps; its β2 = 0.9 curve never. **Strays far** when the fraction is
    ≥ ``RMS_FRAC_FAR`` in every seed, **stays near** when it is ≤ ``RMS_FRAC_NEAR`` in every seed.
    (These two fractions were first set after per-matrix fractions of the cpu runs on seeds 0–2 were known;
    verdicts on those seeds are exploratory. experiments/rules/paper.yaml fixes them for the fresh seeds.)

Sensitivity to the embedding setting — Table 3 (``less_sensitive``)
    Per optimizer and seed, the spread = max − min of the log metric over the three settings; the
    difference spread(Adam) − spread(Adafactor) is paired by seed. Adafactor is less sensitive when the
    interval lies above 0, not when it lies below 0 or inside ±``EQ_MARGIN``; else inconclusive.

Learning-rate sensitivity — a multiplier sweep (``lr_sensitivity``, ``sweep_fails``)
    Wortsman et al. (2023): for one seed and one row × warmup setting, S = mean over the grid of
    min(L(m), L0) − min over m of L(m), with L the final validation loss in nats and L0 = ln(vocab size),
    a diverged seed counting as L0. No warmup **fails by the sweep** when D_k = S_k(no warmup) −
    S_k(warmup), paired by seed, has a 90 % t interval above ``SWEEP_MARGIN`` nats, or the largest
    multiplier at which most seeds train (no divergence, L < L0) is smaller without warmup; **stable by
    the sweep** when the interval lies below ``SWEEP_MARGIN`` and that multiplier is not smaller.

Sublinear state — C15 (``state_is_sublinear``)
    Optimizer state bytes of a factored, β1 = 0 cell must be at most ``STATE_FACTOR`` / d_model of one
    full fp32 moment (4 · params bytes): factoring an n×m matrix keeps n + m numbers instead of n·m, and
    (n + m)/(n·m) ≤ 2/d_model when both sides are ≥ d_model. A linear state takes ≥ 100 %.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats as sps

from ..layout import EXPERIMENTS_DIR
from ..runfiles import FIG1_MATRICES as LOGGED_MATRICES  # what the trainer logs as rms_u/<name>

# --- thresholds: data, from the study's rules file (the report prints these) --------------------------

RULES_DIR = EXPERIMENTS_DIR / "rules"
DEFAULT_RULES = "paper"  # experiments/rules/paper.yaml: the rules of every committed study that judges C1–C15
DIVERGENCE_RULES = ("majority",)


class RulesError(ValueError):
    """A rules file that cannot judge anything: names the key, the value and what is allowed."""


def _num(lo: float, hi: float | None = None, *, lo_open: bool = True, integer: bool = False):
    def check(value: Any) -> str | None:
        ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        if ok and math.isfinite(value) and (value > lo if lo_open else value >= lo) and (hi is None or value < hi):
            return None
        kind = "an integer" if integer else "a number"
        return f"{kind} {'>' if lo_open else '≥'} {lo:g}" + (f" and < {hi:g}" if hi is not None else "")
    return check


def _seeds(value: Any) -> str | None:
    if (isinstance(value, list) and value and len(set(value)) == len(value)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        return None
    return "a non-empty list of distinct integer seeds ≥ 0"


def _choice(options: tuple[str, ...]):
    return lambda value: None if value in options else " | ".join(options)


def _matrices(value: Any) -> str | None:
    if isinstance(value, list) and value and all(v in LOGGED_MATRICES for v in value) and len(set(value)) == len(value):
        return None
    return f"a non-empty list of distinct names from {', '.join(LOGGED_MATRICES)} (what the trainer logs)"


CLAIM_IDS = tuple(f"C{i}" for i in range(1, 16))  # the paper's claims (factorial.report.claims: one Claim each)


def _claim_list(value: Any) -> str | None:
    if isinstance(value, list) and all(v in CLAIM_IDS for v in value) and len(set(value)) == len(value):
        return None
    return f"a list of distinct claim ids ({CLAIM_IDS[0]} … {CLAIM_IDS[-1]})"


# key → (check, ...) of a rules file; nested mappings are dicts of the same
RULE_SCHEMA: dict[str, Any] = {
    "confirmatory_seeds": _seeds,
    "confidence": _num(0.5, 1.0),
    "equivalence_margin": _num(1.0),
    "fail_margin": _num(1.0),
    "fail_margin_bleu": _num(1.0),
    "min_seeds": _num(1, lo_open=False, integer=True),
    "min_pairs_own": _num(2, lo_open=False, integer=True),
    "min_pooled_df": _num(1, lo_open=False, integer=True),
    "divergence": _choice(DIVERGENCE_RULES),
    "preconditions": {"a_fails": _claim_list},
    "sweep_margin": _num(0.0, lo_open=False),
    "rms": {"matrices": _matrices, "band": _num(1.0), "strays_far": _num(0.0, 1.0), "stays_near": _num(0.0, 1.0, lo_open=False),
            "skip_steps": _num(0, lo_open=False, integer=True)},
    "state_factor": _num(0.0),
    "state_fallback_fraction": _num(0.0, 1.0),
}


_ROWS = ("A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P")


def _rows(value: Any) -> str | None:
    if isinstance(value, list) and all(v in _ROWS for v in value) and len(set(value)) == len(value):
        return None
    return f"a list of distinct Table 2 rows ({', '.join(_ROWS)})"


# An optional section: the signature of the paper's no-warmup pattern at a scale (factorial.report.signature).
SIGNATURE_SCHEMA: dict[str, Any] = {
    "fails": _rows,  # rows the paper has failing without warmup: each must fail against A with warmup
    "stable": _rows,  # rows the paper has training without warmup: each must be stable against A with warmup
}
OPTIONAL_RULES = {"signature": SIGNATURE_SCHEMA}


def _check_rules(raw: Any, schema: dict, where: str) -> None:
    if not isinstance(raw, dict):
        raise RulesError(f"invalid {where}={raw!r}; allowed: a mapping with the keys {', '.join(schema)}")
    optional = OPTIONAL_RULES if schema is RULE_SCHEMA else {}
    unknown = sorted(set(raw) - set(schema) - set(optional))
    if unknown:
        raise RulesError(f"invalid key {unknown[0]!r} in {where}; allowed: {', '.join([*schema, *optional])}")
    for key, sub in optional.items():
        if key in raw:
            _check_rules(raw[key], sub, f"{where}.{key}")
            both = set(raw[key]["fails"]) & set(raw[key]["stable"])
            if both:
                raise RulesError(f"invalid {where}.{key}: row {sorted(both)[0]} is listed under both fails and stable; "
                                 "allowed: each row in one list")
    missing = [k for k in schema if k not in raw]
    if missing:
        raise RulesError(f"missing key {missing[0]!r} in {where}; every rule is written down (allowed keys: {', '.join(schema)})")
    for key, check in schema.items():
        if isinstance(check, dict):
            _check_rules(raw[key], check, f"{where}.{key}")
        elif (allowed := check(raw[key])) is not None:
            raise RulesError(f"invalid {where}.{key}={raw[key]!r}; allowed: {allowed}")


@dataclass(frozen=True)
class RuleSet:
    """A rules file: its name (``paper`` for experiments/rules/paper.yaml, or a path) and its checked data."""

    name: str
    path: Path
    data: Mapping[str, Any]

    @property
    def confirmatory_seeds(self) -> tuple[int, ...]:
        return tuple(self.data["confirmatory_seeds"])


def rules_path(name: str) -> Path:
    """``paper`` → experiments/rules/paper.yaml; a value ending in .yaml or holding a / is a path."""
    return Path(name) if name.endswith((".yaml", ".yml")) or "/" in name else RULES_DIR / f"{name}.yaml"


def load_rules(name: str = DEFAULT_RULES) -> RuleSet:
    path = rules_path(name)
    if not path.is_file():
        known = sorted(p.stem for p in RULES_DIR.glob("*.yaml"))
        raise RulesError(f"invalid rules={name!r}: no file {path}; allowed: {', '.join(known)} (files in {RULES_DIR}) "
                         "or a path to a rules file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RulesError(f"rules file {path} is not valid YAML: {err}") from None
    _check_rules(raw, RULE_SCHEMA, f"rules file {path}:")
    return RuleSet(name, path, raw)


def activate(rules: RuleSet) -> None:
    """Make ``rules`` the thresholds every function of this module (and the claims) uses."""
    global ACTIVE, CONFIDENCE, EQ_MARGIN, FAIL_MARGIN, FAIL_MARGIN_BLEU, MIN_SEEDS, MIN_PAIRS_OWN, MIN_POOLED_DF
    global SWEEP_MARGIN, RMS_FAR, RMS_FRAC_FAR, RMS_FRAC_NEAR, RMS_SKIP_STEPS, FIG1_MATRICES, FIG1_MATRIX
    global STATE_FACTOR, STATE_FALLBACK_FRACTION, A_FAILS_CLAIMS
    d = rules.data
    ACTIVE = rules
    CONFIDENCE = float(d["confidence"])
    EQ_MARGIN = math.log(d["equivalence_margin"])
    FAIL_MARGIN = math.log(d["fail_margin"])
    FAIL_MARGIN_BLEU = math.log(d["fail_margin_bleu"])
    MIN_SEEDS, MIN_PAIRS_OWN, MIN_POOLED_DF = int(d["min_seeds"]), int(d["min_pairs_own"]), int(d["min_pooled_df"])
    SWEEP_MARGIN = float(d["sweep_margin"])
    RMS_FAR = float(d["rms"]["band"])
    RMS_FRAC_FAR, RMS_FRAC_NEAR = float(d["rms"]["strays_far"]), float(d["rms"]["stays_near"])
    RMS_SKIP_STEPS = int(d["rms"]["skip_steps"])
    FIG1_MATRICES = tuple(d["rms"]["matrices"])
    FIG1_MATRIX = FIG1_MATRICES[0]
    STATE_FACTOR, STATE_FALLBACK_FRACTION = float(d["state_factor"]), float(d["state_fallback_fraction"])
    A_FAILS_CLAIMS = frozenset(d["preconditions"]["a_fails"])


@contextlib.contextmanager
def using(rules: "RuleSet | None"):
    """Judge with ``rules`` inside the block (None: the active ones), then restore the rules active before."""
    before = ACTIVE
    if rules is not None:
        activate(rules)
    try:
        yield ACTIVE
    finally:
        activate(before)


ACTIVE: RuleSet
CONFIDENCE = EQ_MARGIN = FAIL_MARGIN = FAIL_MARGIN_BLEU = SWEEP_MARGIN = RMS_FAR = RMS_FRAC_FAR = RMS_FRAC_NEAR = 0.0
MIN_SEEDS = MIN_PAIRS_OWN = MIN_POOLED_DF = RMS_SKIP_STEPS = 0
FIG1_MATRICES: tuple[str, ...] = ()
FIG1_MATRIX = ""
STATE_FACTOR = STATE_FALLBACK_FRACTION = 0.0
A_FAILS_CLAIMS: frozenset[str] = frozenset()
activate(load_rules(DEFAULT_RULES))

RMS_LEVELS = (1.0, 1.5, 2.0)  # the report's fractions of steps with RMS(U) above these (shown, not judged)
SCREEN_FAIL = 1.25  # the no-warmup screen's signature (experiments/regime.yaml): A fails at ≥ 1.25 × A with warmup,
SCREEN_OK = 1.10  # B and H stay below 1.10 ×, and A's RMS(U) exceeds 1.5 on ≥ 5 % of logged steps
SCREEN_RMS = 0.05
PAPER_NOISE = 0.01  # the paper reports single runs: an assumed seed noise of 1 % of BLEU (≈ 0.25 BLEU) on ln BLEU


@dataclass(frozen=True)
class Metric:
    """What a cell's number is: perplexity (lower is better) or BLEU (higher is better)."""

    name: str
    higher_is_better: bool

    @property
    def fail_margin(self) -> float:
        """The active rules' "fails" margin for this metric (read when used, so a study's rules apply)."""
        return FAIL_MARGIN_BLEU if self.higher_is_better else FAIL_MARGIN

    def y(self, value: float) -> float:
        """The analysis scale: larger is worse."""
        return -math.log(value) if self.higher_is_better else math.log(value)


PPL = Metric("perplexity", False)
BLEU = Metric("BLEU", True)


def pct(delta: float) -> float:
    """A log difference as a percentage change (0.0488 → 5.0)."""
    return (math.exp(delta) - 1) * 100


def thresholds_markdown(noise: "Noise | None" = None) -> str:
    """The rules and their parameters as a Markdown list, for REPORT.md (generated from the constants)."""
    eq, fail = pct(EQ_MARGIN), pct(FAIL_MARGIN)
    noise_txt = (f"in this study σ̂ = {noise.sigma:.4f} ({pct(noise.sigma):.2f} %) with {noise.df} degrees of freedom "
                 f"from {noise.runs} runs of {noise.cells} cells" if noise is not None and noise.sigma is not None
                 else f"this study has too few repeated seeds for a pooled estimate (it needs ≥ {MIN_POOLED_DF} "
                      "degrees of freedom)")
    return "\n".join([
        "- Quality of a cell: final validation perplexity (`val_ppl`) per seed; a diverged seed (or a non-finite "
        "perplexity) counts as **failed**, never averaged in; crashed and unfinished runs count as missing. "
        "Differences are taken on the log scale, oriented so that positive = x worse: Δ = ln ppl(x) − ln ppl(ref), "
        "shown as a percentage e^Δ − 1.",
        f"- **Pairing and intervals**: cells are compared seed by seed on their common seeds (n pairs). The "
        f"{CONFIDENCE:.0%} interval of the mean difference is the wider of (a) the pooled seed noise σ̂ of the "
        "additive model ln ppl = cell + seed over the cells with ≥ 2 finished seeds of the comparison's own context "
        "(the cells that share every knob the claim does not vary), used from "
        f"{MIN_POOLED_DF} degrees of freedom, d̄ ± t·σ̂·√(2/n) (over the whole study {noise_txt}; each interval names "
        f"the σ̂ and df it used), and (b) from {MIN_PAIRS_OWN} pairs, the paired t interval of the two cells' own "
        "differences. "
        "Without a common seed the comparison is *unpaired*: Welch's interval with ≥ 2 seeds each, else the pooled "
        "noise of the model ln ppl = cell.",
        f"- **≈** (equivalence, two one-sided tests): the whole interval inside ±{eq:.1f} %; clearly different when "
        "wholly outside; otherwise inconclusive.",
        f"- **as good as / does not hurt** (non-inferiority): upper end < +{eq:.1f} %; not, when the lower end is above it.",
        f"- **converges worse**: the interval lies above 0; not, when its upper end is < +{eq:.1f} %.",
        f"- **fails / unstable / much worse** (x vs reference; for no-warmup claims the same row with warmup, else A "
        f"with warmup): more than half of x's seeds diverged (the reference trained), or the whole interval lies "
        f"above +{fail:.0f} %. **Stable**: no seed diverged and the upper end < +{fail:.0f} %. Otherwise inconclusive. "
        f"Divergence counts carry a {CONFIDENCE:.0%} Clopper–Pearson interval.",
        f"- **seeds**: every comparison of our runs needs ≥ {MIN_SEEDS} finished seeds (diverged ones count) on each "
        "side; with fewer it is inconclusive. A cell *diverged* when more than half of its seeds did "
        f"(`divergence: {ACTIVE.data['divergence']}`); in a learning-rate sweep a multiplier is trainable where more than "
        "half of the seeds trained.",
        "- **untestable here**: a part whose precondition (named in the part) does not hold at this scale; counted "
        "apart from *not reproduced*. Every stability part (\"X without warmup is stable / fails\") of "
        f"{', '.join(sorted(A_FAILS_CLAIMS, key=lambda c: int(c[1:])))} needs \"A without warmup fails\".",
        f"- **confirmatory seeds** {', '.join(str(k) for k in ACTIVE.confirmatory_seeds)}: a verdict on them is "
        "confirmatory when every run it rests on was trained under these rules (their fingerprint in its meta.json) "
        "from a clean commit; every other verdict is exploratory.",
        f"- **RMS(U)** (Figure 1): per run, the fraction of logged steps t > {RMS_SKIP_STEPS} of the Figure-1 matrices "
        f"({', '.join(FIG1_MATRICES)}) with RMS(U_t) outside [{1 / RMS_FAR:.2f}, {RMS_FAR:g}]; **strays far** when "
        f"≥ {RMS_FRAC_FAR:.1%} in every seed, **stays near** when ≤ {RMS_FRAC_NEAR:.1%} in every seed.",
        f"- **less sensitive to the embedding setting** (Table 3): spread = max − min of ln ppl over the settings, per "
        f"optimizer and seed; spread(Adam) − spread(Adafactor) paired by seed: above 0 → less sensitive; below 0 or "
        f"inside ±{eq:.1f} % → not; else inconclusive.",
        f"- **learning-rate sensitivity** (a multiplier sweep; Wortsman et al. 2023): S = mean over the grid of "
        f"min(L, L0) − min L, in nats (L0 = ln vocab; a diverged seed counts as L0). No warmup **fails by the sweep** "
        f"when S(no warmup) − S(warmup), paired by seed, has a {CONFIDENCE:.0%} t interval above {SWEEP_MARGIN:g} nats "
        f"or its largest trainable multiplier is smaller; **stable by the sweep** when the interval lies below "
        f"{SWEEP_MARGIN:g} nats and that multiplier is not smaller.",
        f"- **sublinear state** (C15): every factored β1 = 0 cell has state_bytes ≤ ({STATE_FACTOR:g}/d_model) · 4 · params; "
        f"{STATE_FALLBACK_FRACTION:.0%} of 4 · params if d_model is unknown.",
    ])


# --- the evidence a rule looks at ------------------------------------------------------------------


@dataclass(frozen=True)
class CellStats:
    """What the rules know about one cell: its name and its seeds' final values."""

    label: str  # e.g. "A, no warmup"
    n: int = 0  # finished seeds (completed + diverged)
    n_diverged: int = 0  # seeds that diverged or ended non-finite
    mean: float | None = None  # mean value (perplexity) of the seeds that did not diverge
    std: float | None = None  # sample std of those (≥ 2 seeds), else None
    n_failed: int = 0  # crashed runs (not results)
    n_incomplete: int = 0  # unfinished runs (not results)
    by_seed: Mapping[int, float] = field(default_factory=dict)  # seed → value, finished seeds that did not diverge

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
    def mostly_diverged(self) -> bool:
        return self.n > 0 and self.n_diverged * 2 > self.n

    def describe(self) -> str:
        """``A, no warmup: 412.3 ± 5.1 (n=3)`` — the numbers a verdict cites."""
        if self.missing:
            return f"{self.label}: missing"
        return f"{self.label}: {format_stats(self)}"


def cell_stats(label: str, values: Mapping[int, float | None], n_failed: int = 0, n_incomplete: int = 0) -> CellStats:
    """A cell from seed → value (None or non-finite: diverged)."""
    ok = {int(k): float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
    xs = list(ok.values())
    return CellStats(label, n=len(values), n_diverged=len(values) - len(ok), mean=statistics.fmean(xs) if xs else None,
                     std=statistics.stdev(xs) if len(xs) >= 2 else None, n_failed=n_failed, n_incomplete=n_incomplete,
                     by_seed=ok)


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


# --- seed noise ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Noise:
    """The study's pooled seed noise on the log scale: σ̂ of the additive model y = cell + seed (paired
    comparisons) and of y = cell (unpaired ones), with their degrees of freedom (df ≤ 0: no estimate)."""

    sigma: float | None
    df: int
    sigma_unpaired: float | None
    df_unpaired: int
    runs: int = 0
    cells: int = 0
    source: str = "pooled"  # "pooled" (fitted on the study) or "assumed" (the paper's single runs)

    @staticmethod
    def assumed(sigma: float) -> "Noise":
        """A known noise (df = ∞), for numbers reported without seeds (the paper's)."""
        return Noise(sigma, 10**9, sigma, 10**9, source="assumed")


NO_NOISE = Noise(None, 0, None, 0)


def _residual(y: np.ndarray, design: np.ndarray) -> tuple[float | None, int]:
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    df = len(y) - int(rank)
    if df <= 0:
        return None, df
    ss = float(np.sum((y - design @ coef) ** 2))
    return math.sqrt(ss / df), df


def pooled_noise(cells: Sequence[Mapping[int, float]], metric: Metric = PPL) -> Noise:
    """Fit y = cell + seed (and y = cell) by least squares to every cell with ≥ 2 finished seeds."""
    used = [c for c in cells if len(c) >= 2]
    if not used:
        return NO_NOISE
    seeds = sorted({k for c in used for k in c})
    rows, y = [], []
    for i, c in enumerate(used):
        for k, v in c.items():
            row = np.zeros(len(used) + len(seeds))
            row[i] = 1.0
            row[len(used) + seeds.index(k)] = 1.0
            rows.append(row)
            y.append(metric.y(v))
    x, yv = np.array(rows), np.array(y)
    s2, df2 = _residual(yv, x)
    s1, df1 = _residual(yv, x[:, :len(used)])
    if df2 < MIN_POOLED_DF:
        s2 = None
    if df1 < MIN_POOLED_DF:
        s1 = None
    return Noise(s2, df2, s1, df1, runs=len(yv), cells=len(used))


# --- differences ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diff:
    """The difference x − ref on the analysis scale (positive: x worse) with its interval."""

    estimate: float
    lo: float | None
    hi: float | None
    n: int  # pairs (paired) or n_x + n_ref (unpaired)
    paired: bool
    method: str
    unit: str = "log"  # "log": a log ratio, shown as a percentage; "nats": a loss difference (the sweeps)

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    def text(self) -> str:
        where = f"paired n={self.n}" if self.paired else f"unpaired, {self.n} runs"
        if not self.has_interval:
            return f"{pct(self.estimate):+.1f} % (no interval: {self.method}; {where})"
        return (f"{pct(self.estimate):+.1f} % [{pct(self.lo):+.1f}, {pct(self.hi):+.1f}] "
                f"({CONFIDENCE:.0%} CI, {where}; {self.method})")


def _t_interval(est: float, se: float, df: float) -> tuple[float, float]:
    q = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df))
    return est - q * se, est + q * se


def difference(x: CellStats, ref: CellStats, noise: Noise = NO_NOISE, metric: Metric = PPL) -> Diff | None:
    """x − ref, paired on the common seeds where there are any; None when either has no finished value."""
    if not x.by_seed or not ref.by_seed:
        return None
    common = sorted(set(x.by_seed) & set(ref.by_seed))
    if common:
        d = np.array([metric.y(x.by_seed[k]) - metric.y(ref.by_seed[k]) for k in common])
        n, est = len(d), float(d.mean())
        options = []
        if noise.sigma is not None:
            lo, hi = _t_interval(est, noise.sigma * math.sqrt(2 / n), noise.df)
            word = "assumed" if noise.source == "assumed" else "pooled"
            options.append((lo, hi, f"{word} seed noise σ̂ = {noise.sigma:.4f}"
                            + (f", df {noise.df}" if noise.source != "assumed" else "")))
        if n >= MIN_PAIRS_OWN:
            ci = sps.ttest_1samp(d, 0.0).confidence_interval(CONFIDENCE)
            options.append((float(ci.low), float(ci.high), f"paired t, df {n - 1}"))
        if not options:
            return Diff(est, None, None, n, True, "no pooled seed noise and fewer than "
                        f"{MIN_PAIRS_OWN} pairs")
        lo, hi, how = max(options, key=lambda o: o[1] - o[0])
        if len(options) > 1:
            how += " (the wider of pooled and own)"
        return Diff(est, lo, hi, n, True, how)
    xs = np.array([metric.y(v) for v in x.by_seed.values()])
    rs = np.array([metric.y(v) for v in ref.by_seed.values()])
    est = float(xs.mean() - rs.mean())
    n = len(xs) + len(rs)
    if len(xs) >= 2 and len(rs) >= 2:
        ci = sps.ttest_ind(xs, rs, equal_var=False).confidence_interval(CONFIDENCE)
        return Diff(est, float(ci.low), float(ci.high), n, False, "Welch t, no common seed")
    if noise.sigma_unpaired is not None:
        lo, hi = _t_interval(est, noise.sigma_unpaired * math.sqrt(1 / len(xs) + 1 / len(rs)), noise.df_unpaired)
        return Diff(est, lo, hi, n, False, f"pooled noise of y = cell σ̂ = {noise.sigma_unpaired:.4f}, df "
                    f"{noise.df_unpaired}, no common seed")
    return Diff(est, None, None, n, False, "no common seed and no pooled noise")


# --- verdicts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """A tri-state answer: True / False / None (inconclusive), with the reason in words and numbers, and the
    interval it rests on (``diff``), when there is one. ``untestable`` marks a None whose precondition failed."""

    value: bool | None
    reason: str
    diff: Diff | None = None
    untestable: bool = False
    sides: tuple[int, ...] | None = None  # finished seeds (diverged ones included) of each cell compared

    def __bool__(self) -> bool:  # pragma: no cover - guard against `if judgement:`
        raise TypeError("use Judgement.value (True / False / None), not its truth value")


def negate(j: Judgement, reason: str | None = None) -> Judgement:
    return Judgement(None if j.value is None else not j.value, reason or j.reason, j.diff, j.untestable, j.sides)


def untestable(precondition: str) -> Judgement:
    return Judgement(None, f"untestable here: {precondition}", None, True)


def _missing(*cells: CellStats) -> Judgement | None:
    gone = [c.label for c in cells if c.missing]
    if gone:
        return Judgement(None, f"missing cell{'s' if len(gone) > 1 else ''}: {', '.join(gone)}")
    return None


def _too_few(metric: Metric, *cells: CellStats) -> Judgement | None:
    """Fewer than MIN_SEEDS finished seeds on a side of a comparison of our runs: inconclusive. (The paper's
    single runs, compared in BLEU with an assumed noise, are exempt: the paper has one run a cell.)"""
    if metric.higher_is_better:
        return None
    few = [c for c in cells if not c.missing and c.n < MIN_SEEDS]
    if few:
        return Judgement(None, "fewer than the " + str(MIN_SEEDS) + " finished seeds a side needs: "
                         + "; ".join(c.describe() for c in few))
    return None


def _nonzero_note(d: Diff) -> str:
    """Said of a difference that holds its margin but is clearly not zero (the interval excludes 0)."""
    if d.has_interval and (d.lo > 0 or d.hi < 0):
        return " (the difference is clearly non-zero — its interval excludes 0 — but inside the margin)"
    return ""


def divergence_interval(k: int, n: int) -> tuple[float, float]:
    """The Clopper–Pearson interval of a divergence rate k/n."""
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return float(ci.low), float(ci.high)


def divergence_text(s: CellStats) -> str:
    lo, hi = divergence_interval(s.n_diverged, s.n)
    return f"{s.label} diverged in {s.n_diverged} of {s.n} seeds (rate {CONFIDENCE:.0%} CI [{lo:.2f}, {hi:.2f}])"


def _diff_or_none(x, ref, noise, metric) -> tuple[Diff | None, Judgement | None]:
    d = difference(x, ref, noise, metric)
    if d is None:
        return None, Judgement(None, f"no finished value to compare ({x.describe()}; {ref.describe()})")
    if not d.has_interval:
        return d, Judgement(None, f"{x.label} vs {ref.label}: {d.text()}", d)
    return d, None


def approx(a: CellStats, b: CellStats, noise: Noise = NO_NOISE, metric: Metric = PPL) -> Judgement:
    """a ≈ b: the interval of a − b inside ±EQ_MARGIN (equivalence)."""
    if (m := _missing(a, b)) is not None:
        return m
    if (few := _too_few(metric, a, b)) is not None:
        return few
    if a.all_diverged and b.all_diverged:
        return Judgement(None, f"both diverged ({a.label}, {b.label}): no value to compare")
    for x, y in ((a, b), (b, a)):
        if x.mostly_diverged and not y.mostly_diverged:
            return Judgement(False, divergence_text(x) + f"; {y.label} did not")
    for x in (a, b):
        if x.n_diverged:
            return Judgement(None, divergence_text(x) + ": a minority, which neither makes nor breaks ≈")
    d, j = _diff_or_none(a, b, noise, metric)
    if j is not None:
        return j
    txt = f"{a.label} vs {b.label}: {d.text()}"
    if -EQ_MARGIN < d.lo and d.hi < EQ_MARGIN:
        return Judgement(True, f"{txt} inside ±{pct(EQ_MARGIN):.1f} %{_nonzero_note(d)}", d)
    if d.lo > EQ_MARGIN or d.hi < -EQ_MARGIN:
        return Judgement(False, f"{txt} wholly outside ±{pct(EQ_MARGIN):.1f} %", d)
    return Judgement(None, f"{txt} reaches beyond ±{pct(EQ_MARGIN):.1f} %: equivalence not shown", d)


def _one_sided_preamble(x: CellStats, ref: CellStats, x_diverged_means: bool, metric: Metric) -> Judgement | None:
    """What divergence alone decides for a one-sided comparison of x against ref (x_diverged_means: the
    answer when most of x's seeds diverged and ref's did not); None when the values must decide."""
    if (m := _missing(x, ref)) is not None:
        return m
    if (few := _too_few(metric, x, ref)) is not None:
        return few
    if x.mostly_diverged and not ref.mostly_diverged:
        return Judgement(x_diverged_means, divergence_text(x) + f"; {ref.label} did not")
    if ref.mostly_diverged and not x.mostly_diverged:
        return Judgement(not x_diverged_means, divergence_text(ref) + f"; {x.label} did not")
    if x.n_diverged or ref.n_diverged:
        return Judgement(None, divergence_text(x if x.n_diverged else ref) + ": a minority")
    return None


def not_worse(x: CellStats, ref: CellStats, noise: Noise = NO_NOISE, metric: Metric = PPL) -> Judgement:
    """x is as good as ref (non-inferiority at EQ_MARGIN)."""
    if (pre := _one_sided_preamble(x, ref, False, metric)) is not None:
        return pre
    d, j = _diff_or_none(x, ref, noise, metric)
    if j is not None:
        return j
    txt = f"{x.label} vs {ref.label}: {d.text()}"
    if d.hi < EQ_MARGIN:
        return Judgement(True, f"{txt}, upper end < +{pct(EQ_MARGIN):.1f} %{_nonzero_note(d)}", d)
    if d.lo > EQ_MARGIN:
        return Judgement(False, f"{txt}, lower end > +{pct(EQ_MARGIN):.1f} %", d)
    return Judgement(None, f"{txt} straddles +{pct(EQ_MARGIN):.1f} %", d)


def worse(x: CellStats, ref: CellStats, noise: Noise = NO_NOISE, metric: Metric = PPL) -> Judgement:
    """x converges to a detectably worse value than ref."""
    if (pre := _one_sided_preamble(x, ref, True, metric)) is not None:
        return pre
    d, j = _diff_or_none(x, ref, noise, metric)
    if j is not None:
        return j
    txt = f"{x.label} vs {ref.label}: {d.text()}"
    if d.lo > 0:
        return Judgement(True, f"{txt} lies above 0", d)
    if d.hi < EQ_MARGIN:
        return Judgement(False, f"{txt}: not worse by {pct(EQ_MARGIN):.1f} % or more", d)
    return Judgement(None, f"{txt} straddles 0 and reaches beyond +{pct(EQ_MARGIN):.1f} %", d)


def fails(x: CellStats, ref: CellStats, noise: Noise = NO_NOISE, metric: Metric = PPL) -> Judgement:
    """x fails against ref (True), is stable (False), or cannot tell (None)."""
    bar = pct(metric.fail_margin)
    if x.missing:
        return Judgement(None, f"missing cell: {x.label}")
    if (few := _too_few(metric, x, ref)) is not None:
        return few
    if x.n_diverged:
        if not ref.missing and ref.all_diverged:
            return Judgement(None, f"{divergence_text(x)}, but {ref.label} diverged too (all {ref.n} seeds): it fails "
                                   "with or without the difference, so the comparison says nothing")
        if x.mostly_diverged:
            return Judgement(True, divergence_text(x))
        return Judgement(None, f"{divergence_text(x)}: a minority of seeds, neither stable nor a failure")
    if ref.missing:
        return Judgement(None, f"{x.label} did not diverge, but the reference {ref.label} is missing")
    if ref.all_diverged:
        return Judgement(None, f"the reference {ref.label} diverged in all seeds: nothing to compare with")
    d, j = _diff_or_none(x, ref, noise, metric)
    if j is not None:
        return j
    txt = f"{x.label} vs {ref.label}: {d.text()}"
    if d.lo > metric.fail_margin:
        return Judgement(True, f"{txt} lies above +{bar:.0f} %", d)
    if d.hi < metric.fail_margin:
        return Judgement(False, f"no seed diverged and {txt} stays below +{bar:.0f} %", d)
    return Judgement(None, f"{txt} straddles +{bar:.0f} %", d)


def stable(x: CellStats, ref: CellStats, noise: Noise = NO_NOISE, metric: Metric = PPL) -> Judgement:
    return negate(fails(x, ref, noise, metric))


# --- RMS(U) ------------------------------------------------------------------------------------------


def rms_fractions(steps, values) -> dict[str, float | None]:
    """Of the logged steps t > RMS_SKIP_STEPS (finite positive values): the fraction outside
    [1/RMS_FAR, RMS_FAR] (``out``) and above each of RMS_LEVELS (``gt1``, ``gt1.5``, ``gt2``), and the count."""
    vals = []
    for t, v in zip(steps, values):
        try:
            t, v = float(t), float(v)
        except (TypeError, ValueError):
            continue
        if t > RMS_SKIP_STEPS and math.isfinite(v) and v > 0:
            vals.append(v)
    n = len(vals)
    out: dict[str, float | None] = {"n": n}
    out["out"] = sum(1 for v in vals if v > RMS_FAR or v < 1 / RMS_FAR) / n if n else None
    for level in RMS_LEVELS:
        out[f"gt{level:g}"] = sum(1 for v in vals if v > level) / n if n else None
    return out


def rms_excursion(steps, values) -> float | None:
    """max |ln RMS(U_t)| over logged steps t > RMS_SKIP_STEPS (shown beside the fraction, not judged)."""
    best = None
    for t, v in zip(steps, values):
        try:
            t, v = float(t), float(v)
        except (TypeError, ValueError):
            continue
        if t > RMS_SKIP_STEPS and math.isfinite(v) and v > 0:
            e = abs(math.log(v))
            best = e if best is None else max(best, e)
    return best


def _per_seed(label: str, fractions: list[float | None], test, word: str, bound: float) -> Judgement:
    xs = [f for f in fractions if f is not None and math.isfinite(f)]
    if not xs:
        return Judgement(None, f"{label}: no RMS(U) logged after step {RMS_SKIP_STEPS}")
    shown = ", ".join(f"{f:.1%}" for f in xs)
    verdicts = {test(f) for f in xs}
    txt = (f"{label}: fraction of logged steps with RMS(U) outside [{1 / RMS_FAR:.2f}, {RMS_FAR:g}] = {shown} "
           f"({len(xs)} seed{'s' if len(xs) > 1 else ''})")
    if verdicts == {True}:
        return Judgement(True, f"{txt} {word} {bound:.1%}")
    if verdicts == {False}:
        return Judgement(False, f"{txt}, not {word} {bound:.1%}")
    return Judgement(None, f"{txt}: the seeds disagree")


def strays_far(label: str, fractions: list[float | None]) -> Judgement:
    return _per_seed(label, fractions, lambda f: f >= RMS_FRAC_FAR, "≥", RMS_FRAC_FAR)


def stays_near(label: str, fractions: list[float | None]) -> Judgement:
    return _per_seed(label, fractions, lambda f: f <= RMS_FRAC_NEAR, "≤", RMS_FRAC_NEAR)


# --- Table 3: sensitivity to the embedding setting ---------------------------------------------------


def seed_spreads(settings: Sequence[CellStats], metric: Metric = PPL) -> dict[int, float]:
    """Per seed present in every setting: max − min of the analysis value over the settings."""
    if not settings or any(s.missing for s in settings):
        return {}
    common = set.intersection(*(set(s.by_seed) for s in settings))
    return {k: max(metric.y(s.by_seed[k]) for s in settings) - min(metric.y(s.by_seed[k]) for s in settings)
            for k in sorted(common)}


def less_sensitive(adafactor: Sequence[CellStats], adam: Sequence[CellStats], noise: Noise = NO_NOISE,
                   metric: Metric = PPL) -> Judgement:
    """Adafactor's spread over the embedding settings is smaller than Adam's (paired by seed)."""
    missing = [s.label for s in [*adafactor, *adam] if s.missing]
    if missing:
        return Judgement(None, f"missing cells: {', '.join(missing)}")
    div_af, div_adam = any(s.mostly_diverged for s in adafactor), any(s.mostly_diverged for s in adam)
    if div_adam and not div_af:
        return Judgement(True, "Adam diverged in some setting, Adafactor in none")
    if div_af:
        return Judgement(None if div_adam else False, "Adafactor diverged in some setting"
                         + (" and so did Adam" if div_adam else ", Adam in none"))
    sa, sf = seed_spreads(adam, metric), seed_spreads(adafactor, metric)
    common = sorted(set(sa) & set(sf))
    if not common:
        return Judgement(None, "no seed finished every setting with both optimizers")
    d = np.array([sa[k] - sf[k] for k in common])
    n, est = len(d), float(d.mean())
    options = []
    if noise.sigma is not None:  # a spread is a difference of two runs, a difference of spreads of four
        options.append((*_t_interval(est, 2 * noise.sigma / math.sqrt(n), noise.df), "pooled seed noise"))
    if n >= MIN_PAIRS_OWN:
        ci = sps.ttest_1samp(d, 0.0).confidence_interval(CONFIDENCE)
        options.append((float(ci.low), float(ci.high), f"paired t, df {n - 1}"))
    txt = (f"spread(Adam) − spread(Adafactor) = {est:.4f} (spreads {np.mean([sa[k] for k in common]):.4f} vs "
           f"{np.mean([sf[k] for k in common]):.4f} on the log scale; paired n={n}")
    if not options:
        return Judgement(None, txt + "; no interval)")
    lo, hi, how = max(options, key=lambda o: o[1] - o[0])
    diff = Diff(est, lo, hi, n, True, how)
    txt += f"; {CONFIDENCE:.0%} CI [{lo:.4f}, {hi:.4f}], {how})"
    if lo > 0:
        return Judgement(True, f"{txt}: above 0", diff)
    if hi < 0 or (-EQ_MARGIN < lo and hi < EQ_MARGIN):
        return Judgement(False, f"{txt}: {'below 0' if hi < 0 else f'inside ±{EQ_MARGIN:.4f}'}", diff)
    return Judgement(None, f"{txt}: straddles 0", diff)


# --- learning-rate sweeps ------------------------------------------------------------------------------


def lr_sensitivity(losses: Mapping[float, float | None], l0: float) -> float | None:
    """Wortsman et al. (2023): mean over the grid of min(L(m), L0) − min_m L(m); None (diverged) counts as L0."""
    if not losses:
        return None
    capped = [min(v, l0) if v is not None and math.isfinite(v) else l0 for v in losses.values()]
    return float(np.mean(capped) - min(capped))


def largest_trainable(losses_by_seed: Mapping[int, Mapping[float, float | None]], l0: float) -> float | None:
    """The largest multiplier at which more than half of the seeds trained (finite loss below L0; the
    ``divergence: majority`` rule, as for a cell); None if there is none."""
    grids = list(losses_by_seed.values())
    if not grids:
        return None
    ms = sorted(set.intersection(*(set(g) for g in grids)))
    ok = [m for m in ms if 2 * sum(g[m] is not None and math.isfinite(g[m]) and g[m] < l0 for g in grids) > len(grids)]
    return max(ok) if ok else None


@dataclass(frozen=True)
class SweepRow:
    """One row × warmup setting of a multiplier sweep (losses in nats)."""

    label: str
    losses: Mapping[int, Mapping[float, float | None]]  # seed → multiplier → final validation loss (None: diverged)
    l0: float

    @property
    def sensitivity(self) -> dict[int, float]:
        return {k: s for k, g in self.losses.items() if (s := lr_sensitivity(g, self.l0)) is not None}

    @property
    def largest(self) -> float | None:
        return largest_trainable(self.losses, self.l0)


def sweep_fails(nw: SweepRow, w: SweepRow) -> Judgement:
    """No warmup fails by the sweep (True), is stable by it (False), or cannot tell (None)."""
    if not nw.losses or not w.losses:
        return Judgement(None, f"missing sweep: {nw.label if not nw.losses else w.label}")
    s_nw, s_w = nw.sensitivity, w.sensitivity
    common = sorted(set(s_nw) & set(s_w))
    big_nw, big_w = nw.largest, w.largest
    smaller = big_w is not None and (big_nw is None or big_nw < big_w)
    lt = f"largest trainable multiplier {big_nw if big_nw is not None else 'none'} vs {big_w if big_w is not None else 'none'}"
    if not common:
        return Judgement(True if smaller else None, f"no common seed; {lt}")
    d = np.array([s_nw[k] - s_w[k] for k in common])
    est = float(d.mean())
    txt = (f"S(no warmup) − S(warmup) = {est:+.3f} nats (S = {np.mean([s_nw[k] for k in common]):.3f} vs "
           f"{np.mean([s_w[k] for k in common]):.3f}, paired n={len(d)}")
    if len(d) >= 2:
        ci = sps.ttest_1samp(d, 0.0).confidence_interval(CONFIDENCE)
        lo, hi = float(ci.low), float(ci.high)
        txt += f"; {CONFIDENCE:.0%} CI [{lo:+.3f}, {hi:+.3f}]"
        diff = Diff(est, lo, hi, len(d), True, f"paired t, df {len(d) - 1}", unit="nats")
    else:
        lo = hi = None
        txt += "; one seed, no interval"
        diff = Diff(est, None, None, 1, True, "one seed", unit="nats")
    txt += f"); {lt}"
    if smaller or (lo is not None and lo > SWEEP_MARGIN):
        return Judgement(True, f"{txt}: fails", diff)
    if hi is not None and hi < SWEEP_MARGIN and not smaller:
        return Judgement(False, f"{txt}: stable", diff)
    return Judgement(None, f"{txt}: inconclusive", diff)


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
