"""The verdict rules on designed cases with a known answer, and on the paper's own numbers.

Each designed case builds cells whose truth is known by construction (a noisy 4 % gap, equal cells with a
large seed effect, a 1.35× failure in every seed, …) and checks that the rules of factorial.report.rules
say what a statistician would. The last tests apply the claims of factorial.report.claims to the paper's
Table 2 (BLEU), Table 3 and Figure 1: rules that cannot reproduce the paper on its own numbers are
miscalibrated.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from factorial.report import claims as CL
from factorial.report import rules as R
from factorial.report import sweeps as SW


def C(label, values: dict, diverged=()):
    """A cell from seed → perplexity, plus seeds that diverged."""
    return R.cell_stats(label, {**values, **{k: None for k in diverged}})


# --- intervals and pairing ---------------------------------------------------------------------------


def test_a_noisy_4_percent_gap_is_not_approx():
    # per-seed ratios 1.07, 1.01, 1.04 (mean +4 %): the interval reaches past 5 %, so equivalence is not shown
    ref = C("ref", {0: 100.0, 1: 120.0, 2: 110.0})
    x = C("x", {0: 107.0, 1: 121.2, 2: 114.4})
    j = R.approx(x, ref)
    assert j.value is not True
    assert j.diff.paired and j.diff.n == 3 and j.diff.hi > R.EQ_MARGIN


def test_equal_cells_with_a_large_seed_effect_are_approx_when_paired_only():
    ref = C("ref", {0: 100.0, 1: 110.0, 2: 120.0})
    x = C("x", {0: 100.4, 1: 110.2, 2: 120.7})
    paired = R.approx(x, ref)
    assert paired.value is True and paired.diff.paired
    # the same numbers on different seeds: the seed effect no longer cancels, the interval is wide
    unpaired = R.approx(C("x", {3: 100.4, 4: 110.2, 5: 120.7}), ref)
    assert unpaired.value is None and not unpaired.diff.paired and "no common seed" in unpaired.diff.method
    assert (unpaired.diff.hi - unpaired.diff.lo) > 5 * (paired.diff.hi - paired.diff.lo)


def test_a_135_percent_failure_in_every_seed_fails():
    ref = C("ref", {0: 100.0, 1: 104.0, 2: 98.0})
    x = C("x", {0: 135.5, 1: 139.9, 2: 132.1})
    j = R.fails(x, ref)
    assert j.value is True and j.diff.lo > R.FAIL_MARGIN
    assert R.stable(x, ref).value is False


def test_failure_is_decided_with_the_noise_first():
    # the post-LN × 5 case: a 1.27× mean ratio whose seeds range widely is not "fails"
    ref = C("ref", {0: 120.0, 1: 160.0, 2: 125.0})
    x = C("x", {0: 150.0, 1: 195.0, 2: 171.0})
    j = R.fails(x, ref)
    assert j.value is None and "straddles" in j.reason
    # and a tight 1.10× is stable
    assert R.fails(C("x", {0: 110.0, 1: 132.5, 2: 120.8}), C("ref", {0: 100.0, 1: 120.0, 2: 110.0})).value is False


def test_divergence_counts_with_binomial_intervals():
    ref = C("ref", {0: 100.0, 1: 101.0, 2: 99.0})
    all3 = R.fails(C("x", {}, diverged=(0, 1, 2)), ref)
    assert all3.value is True and "3 of 3" in all3.reason and "CI [0.37, 1.00]" in all3.reason
    one = R.fails(C("x", {0: 100.0, 1: 102.0}, diverged=(2,)), ref)
    assert one.value is None and "minority" in one.reason
    both = R.fails(C("x", {}, diverged=(0,)), C("ref", {}, diverged=(0, 1)))
    assert both.value is None  # no contrast: the reference diverged too
    lo, hi = R.divergence_interval(0, 3)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.05 ** (1 / 3))


def test_non_inferiority_and_worse():
    ref = C("ref", {0: 100.0, 1: 110.0, 2: 120.0})
    better = C("x", {0: 95.0, 1: 104.0, 2: 114.5})
    assert R.not_worse(better, ref).value is True
    assert R.worse(better, ref).value is False
    clearly = C("x", {0: 112.0, 1: 123.0, 2: 134.5})
    assert R.worse(clearly, ref).value is True
    assert R.not_worse(clearly, ref).value is False


def test_fewer_seeds_than_the_rules_ask_is_inconclusive_whatever_the_noise():
    noise = R.Noise(0.01, 40, 0.02, 40)
    one, three = C("x", {0: 100.0}), C("ref", {0: 100.5, 1: 101.0, 2: 99.0})
    for rule in (R.approx, R.not_worse, R.worse, R.fails):
        j = rule(one, three, noise)
        assert j.value is None and f"fewer than the {R.MIN_SEEDS} finished seeds" in j.reason and "x: 100.0 (n=1)" in j.reason
    # a cell whose seeds diverged still counts them: three diverged seeds are three finished seeds
    assert R.fails(C("x", {}, diverged=(0, 1, 2)), three, noise).value is True
    # the paper's single runs (BLEU, an assumed noise) are exempt: the paper has one run a cell
    assert R.approx(C("x", {0: 25.6}), C("ref", {0: 25.4}), R.Noise.assumed(0.01), R.BLEU).value is True


def test_no_interval_without_noise_is_inconclusive(rules_with):
    with rules_with(min_seeds=1):
        j = R.approx(C("x", {0: 100.0}), C("ref", {0: 100.5}))
        assert j.value is None and "no interval" in j.reason
        noise = R.Noise(0.01, 40, 0.02, 40)  # a study that knows its seed noise can judge single seeds
        assert R.approx(C("x", {0: 100.0}), C("ref", {0: 100.5}), noise).value is True


def test_pooled_noise_recovers_a_known_sigma():
    rng = np.random.default_rng(0)
    sigma, n_cells, seeds = 0.02, 40, [0, 1, 2]
    seed_effect = {s: rng.normal(0, 0.05) for s in seeds}
    cells = []
    for c in range(n_cells):
        mu = rng.uniform(4.5, 5.5)
        cells.append({s: math.exp(mu + seed_effect[s] + rng.normal(0, sigma)) for s in seeds})
    cells.append({0: 123.0})  # single-seed cells do not enter the estimate
    noise = R.pooled_noise(cells)
    assert noise.df == n_cells * len(seeds) - n_cells - len(seeds) + 1
    assert noise.sigma == pytest.approx(sigma, rel=0.2)
    assert noise.sigma_unpaired > noise.sigma  # without the seed effect in the model it lands in the noise


def test_the_wider_of_pooled_and_own_interval_is_used():
    ref = C("ref", {0: 100.0, 1: 110.0, 2: 120.0})
    x = C("x", {0: 100.0, 1: 125.0, 2: 108.0})  # these two cells are far noisier than the study
    tight = R.Noise(0.005, 100, 0.01, 100)
    d = R.difference(x, ref, tight)
    assert "paired t" in d.method and "wider" in d.method


def test_table3_spread_paired_by_seed():
    settings = ("a", "b", "c")
    adam = [C(f"Adam {s}", {k: v * f for k, v in {0: 100.0, 1: 110.0, 2: 120.0}.items()})
            for s, f in zip(settings, (1.0, 1.4, 1.2))]
    af = [C(f"AF {s}", {k: v * f for k, v in {0: 100.0, 1: 110.0, 2: 120.0}.items()})
          for s, f in zip(settings, (1.0, 1.1, 1.05))]
    assert R.less_sensitive(af, adam).value is True
    assert R.less_sensitive(adam, adam).value is False  # equal spreads: not less sensitive


# --- learning-rate sweeps ------------------------------------------------------------------------------


def _sweep_cells(rows: dict, vocab=4096):
    """rows: (row, warmup) → multiplier → {seed: ppl or None (diverged)}; aggregated cells as the report makes."""
    out = []
    for (row, warmup), grid in rows.items():
        for m, seeds in grid.items():
            ok = {s: v for s, v in seeds.items() if v is not None}
            out.append({"row_match": row, "opt": row, "schedule.warmup": warmup, "schedule.multiplier": float(m),
                        "data.vocab_size": vocab, "vocab_size": vocab, "seeds": sorted(seeds), "n": len(seeds),
                        "n_diverged": len(seeds) - len(ok), "ppl_by_seed": ok,
                        "ppl_mean": float(np.mean(list(ok.values()))) if ok else None, "ppl_std": None})
    return pd.DataFrame(out)


def _grid(values, jitter=(1.0, 1.01, 0.99)):
    return {m: {k: (None if v is None else v * j) for k, j in enumerate(jitter)} for m, v in values.items()}


def test_lr_sensitivity_of_wortsman():
    l0 = math.log(4096)
    losses = {1: 5.0, 2: 4.6, 5: 4.5, 10: None}
    assert R.lr_sensitivity(losses, l0) == pytest.approx(np.mean([5.0, 4.6, 4.5, l0]) - 4.5)
    assert R.largest_trainable({0: losses, 1: {1: 5.0, 2: 4.6, 5: 4.5, 10: 4.8}}, l0) == 5


def test_sweep_verdicts_on_designed_sweeps():
    warm = _grid({1: 150.0, 2: 120.0, 5: 105.0, 10: 110.0, 20: 125.0})
    frail = _grid({1: 140.0, 2: 118.0, 5: 104.0, 10: 300.0, 20: None})  # no warmup: falls apart past the optimum
    robust = _grid({1: 141.0, 2: 117.0, 5: 103.0, 10: 111.0, 20: 126.0})  # no warmup, as robust as with warmup
    cells = _sweep_cells({("A", True): warm, ("A", False): frail, ("B", True): warm, ("B", False): robust,
                          ("H", True): warm, ("H", False): robust})
    table = SW.sweep_table(cells).set_index(["row", "warmup"])
    assert table.loc[("A", False), "largest trainable multiplier"] == 10
    assert table.loc[("A", True), "best multiplier"] == 5
    verdicts = {(cid, row): j for _, cid, row, _, j in SW.sweep_judgements(cells)}
    assert verdicts[("C4", "A")].value is True  # fails by the sweep
    assert verdicts[("C4", "B")].value is True  # stable by the sweep (the part says "B is stable")
    assert verdicts[("C7", "H")].value is True
    res = [r for r in CL.evaluate_sweeps(cells) if r.claim.id == "C4"]
    assert len(res) == 1 and res[0].verdict == "reproduced" and res[0].context["judged by"] == "learning-rate sweep"
    # where A does not fail by the sweep, "H removes the instability" is untestable
    calm = _sweep_cells({("A", True): warm, ("A", False): robust, ("H", True): warm, ("H", False): robust})
    c7 = [r for r in CL.evaluate_sweeps(calm) if r.claim.id == "C7"]
    assert c7[0].verdict == "untestable here"


# --- claims: untestable here --------------------------------------------------------------------------


def _cells(values: dict, metric_is_bleu=False, extra: dict | None = None) -> pd.DataFrame:
    """(row, warmup) → value or {seed: value} (None: diverged) → aggregated cells."""
    out = []
    for (row, warmup), v in values.items():
        seeds = v if isinstance(v, dict) else {0: v}
        ok = {s: x for s, x in seeds.items() if x is not None}
        rec = {"row_match": row, "opt": row, "schedule.warmup": warmup, "seeds": sorted(seeds), "n": len(seeds),
               "n_diverged": len(seeds) - len(ok), "ppl_by_seed": ok, "n_failed": 0, "n_incomplete": 0,
               "ppl_mean": float(np.mean(list(ok.values()))) if ok else None,
               "ppl_std": float(np.std(list(ok.values()), ddof=1)) if len(ok) >= 2 else None}
        rec.update((extra or {}).get((row, warmup), {}))
        out.append(rec)
    return pd.DataFrame(out)


def test_a_claim_whose_precondition_is_absent_is_untestable():
    s = {0: 100.0, 1: 110.0, 2: 120.0}
    same = {k: v * 1.002 for k, v in s.items()}
    cells = _cells({("A", True): s, ("A", False): same, ("H", True): s, ("H", False): same,
                    ("I", True): s, ("I", False): same, ("F", False): same})
    res = {r.claim.id: r for r in CL.evaluate(cells, "table2")[0]}
    assert res["C4"].verdict == "not reproduced"  # A does not fail: the claim itself is contradicted
    assert res["C7"].verdict == "untestable here"  # nothing for clipping to remove
    assert res["C6"].verdict == "untestable here"
    assert all(p.judgement.untestable for p in res["C7"].parts)
    assert "A without warmup fails" in res["C7"].reason


# --- the paper's own numbers --------------------------------------------------------------------------

TABLE2_BLEU = {  # PAPER §4: row → (warmup, no warmup); None = diverged
    "A": (25.6, 0.1), "B": (25.4, 23.1), "C": (25.4, 0.2), "D": (25.2, 0.3), "E": (0.3, 0.5), "F": (25.0, 0.4),
    "G": (18.4, 15.6), "H": (25.4, 21.5), "I": (25.7, 0.2), "J": (25.6, 22.4), "K": (25.6, 21.1), "L": (25.6, 0.1),
    "M": (25.4, 0.1), "N": (25.9, 22.4), "O": (25.0, 25.5), "P": (24.9, 25.3), "Q1": (0.6, 0.8), "Q10": (8.2, 9.1),
    "Q100": (22.9, None), "Q150": (24.0, None), "Q200": (24.3, None), "Q300": (None, None),
}
PAPER_NOISE = R.Noise.assumed(R.PAPER_NOISE)


def _figure1_fraction(points: list[tuple[int, float]], steps=range(1, 3001)) -> float:
    """The fraction of steps outside the band of a curve drawn through the figure's described points
    (log-linear between them)."""
    xs, ys = zip(*points)
    curve = np.exp(np.interp(list(steps), xs, np.log(ys)))
    return R.rms_fractions(list(steps), list(curve))["out"]


def test_the_rules_reproduce_the_paper_on_its_own_numbers():
    vals = {}
    for row, (w, nw) in TABLE2_BLEU.items():
        vals[(row, True)] = {0: w}
        vals[(row, False)] = {0: nw}
    cells = _cells(vals)
    res = {r.claim.id: r for r in CL.evaluate(cells, "table2", PAPER_NOISE, R.BLEU)[0]}
    for cid in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C10", "C11", "C12"):
        assert res[cid].verdict == "reproduced", (cid, res[cid].reason)

    # Figure 1 (PAPER §6): β2 = 0.999 dips to 0.33 near step 300, rises to 2.2 near 800, settles toward 1 after
    # about 2,100; β2 = 0.9 stays within 0.8–1.13.
    a = _figure1_fraction([(1, 1.0), (300, 0.33), (550, 1.0), (800, 2.2), (1400, 1.3), (2100, 1.05), (3000, 1.0)])
    g = _figure1_fraction([(1, 1.0), (300, 0.8), (800, 1.13), (2100, 0.95), (3000, 1.0)])
    assert a > 0.2 and g == 0.0
    fig1 = _cells({("A", True): {0: 25.6}, ("G", True): {0: 18.4}},
                  extra={("A", True): {"rms_frac_out": [a], "rms_every": 1},
                         ("G", True): {"rms_frac_out": [g], "rms_every": 1}})
    c13 = [r for r in CL.evaluate(fig1, "fig1", PAPER_NOISE, R.BLEU)[0] if r.claim.id == "C13"]
    assert c13[0].verdict == "reproduced", c13[0].reason

    # Table 3 (PAPER §5): Adam with its warmup schedule, Adafactor (Alg. 6) without warmup
    t3 = []
    for emb, adam, af in (("σ=1/√d, ×√d", 26.4, 26.6), ("σ=1, ×1", 25.8, 26.4), ("σ=1/√d, ×1", 24.2, 25.4)):
        for name, bleu, warm in (("adam", adam, True), ("adafactor", af, False)):
            t3.append({"optim.name": name, "schedule.warmup": warm, "embedding": emb, "row_match": None, "opt": name,
                       "seeds": [0], "n": 1, "n_diverged": 0, "ppl_by_seed": {0: bleu}, "ppl_mean": bleu,
                       "ppl_std": None, "n_failed": 0, "n_incomplete": 0})
    c14 = [r for r in CL.evaluate(pd.DataFrame(t3), "table3", PAPER_NOISE, R.BLEU)[0] if r.claim.id == "C14"]
    assert c14[0].verdict == "reproduced", c14[0].reason

    # C15 (PAPER §3): the factored state of Alg. 4/5 on the paper's Transformer-base shapes with a 32k shared
    # vocabulary — n + m numbers per matrix, a full accumulator per vector — against the sublinear bound
    import dataclasses

    import torch

    from factorial.model import PRESETS, Transformer

    with torch.device("meta"):
        model = Transformer(dataclasses.replace(PRESETS["base"], vocab_size=32000))
    params = sum(p.numel() for p in model.parameters())
    state = sum(4 * (sum(p.shape) if p.dim() == 2 else p.numel()) for p in model.parameters())
    base = pd.DataFrame([{"optim.name": "adafactor", "optim.second_moment": "factored", "optim.beta1": 0.0,
                          "row_match": "C", "schedule.warmup": True, "state_bytes": state, "params": params,
                          "model.d_model": 512, "n": 1, "n_diverged": 0, "ppl_by_seed": {0: 25.4}, "seeds": [0],
                          "ppl_mean": 25.4, "ppl_std": None, "n_failed": 0, "n_incomplete": 0}])
    c15 = [r for r in CL.evaluate(base, "table2", PAPER_NOISE, R.BLEU)[0] if r.claim.id == "C15"]
    assert c15[0].verdict == "reproduced", c15[0].reason


def test_the_paper_numbers_also_catch_a_wrong_claim():
    # the same rules on a made-up table where momentum does not rescue the run: C4 is not reproduced
    vals = {(r, True): {0: w} for r, (w, _) in TABLE2_BLEU.items()}
    vals.update({(r, False): {0: nw} for r, (_, nw) in TABLE2_BLEU.items()})
    vals[("B", False)] = {0: 0.3}
    res = {r.claim.id: r for r in CL.evaluate(_cells(vals), "table2", PAPER_NOISE, R.BLEU)[0]}
    assert res["C4"].verdict == "not reproduced"


def test_each_context_uses_its_own_seed_noise():
    # a noisy setting (post-LN-like, ±20 % between seeds) beside a quiet one (±0.5 %): the quiet context's
    # single-seed comparison is judged with the quiet noise, not a pooled one inflated by the noisy context
    rng = np.random.default_rng(1)
    rows = []
    for norm, sd in (("pre", 0.005), ("post", 0.2)):
        for letter in "ABCDEFGHIJK":
            for warmup in (True, False):
                seeds = {s: 100.0 * math.exp(rng.normal(0, sd)) for s in (0, 1, 2)}
                rows.append({"row_match": letter, "opt": letter, "schedule.warmup": warmup, "model.norm": norm,
                             "seeds": [0, 1, 2], "n": 3, "n_diverged": 0, "ppl_by_seed": seeds, "n_failed": 0,
                             "n_incomplete": 0, "ppl_mean": float(np.mean(list(seeds.values()))), "ppl_std": None})
    res = [r for r in CL.evaluate(pd.DataFrame(rows), "table2")[0] if r.claim.id == "C8"]
    by_norm = {r.context["model.norm"]: r for r in res}
    assert by_norm["pre"].verdict == "reproduced"  # A ≈ H: equal by construction, judged with the quiet noise
    assert by_norm["post"].verdict == "inconclusive"
    quiet = by_norm["pre"].parts[0].judgement.diff
    loud = by_norm["post"].parts[0].judgement.diff
    assert (quiet.hi - quiet.lo) * 10 < (loud.hi - loud.lo)


def test_the_no_warmup_screen_finds_the_point_with_the_papers_pattern(tmp_path):
    from factorial.report import screen as SC

    def cell(norm, row, warmup, ppl, rms=None, diverged=0):
        rec = {"row_match": row, "opt": row, "schedule.warmup": warmup, "model.norm": norm, "n": 1,
               "optim.beta1": 0.9 if row == "B" else 0.0, "optim.clip_threshold": 1.0 if row == "H" else None,
               "n_diverged": diverged, "ppl_mean": ppl, "ppl_by_seed": {0: ppl} if ppl else {}, "seeds": [0]}
        for m in R.FIG1_MATRICES:
            rec[f"rmsgt1.5_{m}"] = [rms] if rms is not None else []
        return rec

    cells = pd.DataFrame([
        cell("pre", "A", True, 100.0, 0.0), cell("pre", "A", False, 97.0, 0.0),  # the cpu scale: no pattern
        cell("pre", "B", False, 103.0), cell("pre", "H", False, 98.0),
        cell("post", "A", True, 100.0, 0.01), cell("post", "A", False, 140.0, 0.12),  # A fails, B and H do not
        cell("post", "B", False, 105.0), cell("post", "H", False, 101.0),
        cell("deep", "A", True, 100.0), cell("deep", "A", False, None, diverged=1),  # all fail: no pattern
        cell("deep", "B", False, 180.0), cell("deep", "H", False, 150.0),
    ])
    points = {p["point"]: p for p in SC.screen_points(cells)}
    assert set(points) == {"model.norm=pre", "model.norm=post", "model.norm=deep"}
    assert points["model.norm=post"]["pattern"] and points["model.norm=post"]["S3"]
    assert not points["model.norm=pre"]["S1"] and not points["model.norm=pre"]["pattern"]
    deep = points["model.norm=deep"]
    assert deep["S1"] and not deep["S2"] and math.isinf(deep["A / A warmup"])
    md = SC.screen_markdown(list(points.values()))
    assert "| model.norm=post | 100.0 | 1.40 | 1.05 | 1.01 |" in md and "diverged (1/1 div.)" in md
    assert SC.screen_plot(list(points.values()), tmp_path) and (tmp_path / "screen.png").stat().st_size > 0


def test_a_screened_point_is_named_by_the_overrides_its_cells_set():
    """Two of three points share a longer run (warmup_steps, steps), one of them at a higher multiplier: the
    point whose cells set nothing beyond row and warmup is the scale itself, whatever most points share, and a
    derived key (model.vocab_size, set by data.vocab_size) never names a point."""
    from factorial.report import screen as SC

    def cell(point: dict, row, warmup, ppl):
        name = ",".join(sorted([f"row={row}", f"schedule.warmup={str(warmup).lower()}", *(f"{k}={v}" for k, v in point.items())]))
        rec = {"row_match": row, "opt": row, "schedule.warmup": warmup, "n": 1, "cells": name,
               "optim.beta1": 0.9 if row == "B" else 0.0, "optim.clip_threshold": 1.0 if row == "H" else None,
               "n_diverged": 0, "ppl_mean": ppl, "ppl_by_seed": {0: ppl}, "seeds": [0],
               "schedule.warmup_steps": None, "train.steps": 2000, "schedule.multiplier": 1.0,
               "data.vocab_size": 4096, "model.vocab_size": 4096}
        rec.update(point)
        if "data.vocab_size" in point:
            rec["model.vocab_size"] = point["data.vocab_size"]
        return rec

    points = [{}, {"schedule.warmup_steps": 3000, "train.steps": 4000},
              {"schedule.warmup_steps": 3000, "train.steps": 4000, "schedule.multiplier": 3}, {"data.vocab_size": 16384}]
    cells = pd.DataFrame([cell(p, row, warmup, 100.0) for p in points
                          for row, warmup in (("A", True), ("A", False), ("B", False), ("H", False))])
    names = {p["point"] for p in SC.screen_points(cells)}
    assert names == {"(the scale itself)", "schedule.warmup_steps=3000, train.steps=4000",
                     "schedule.multiplier=3, schedule.warmup_steps=3000, train.steps=4000", "data.vocab_size=16384"}, names
