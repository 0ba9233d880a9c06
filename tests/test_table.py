"""`make table`: runs → cells → claims → tables, figures and REPORT.md (factorial.table, factorial.report).

Fixtures (tests/fixtures/):
  runs/table2/tiny/   hand-made run dirs: A with warmup (3 seeds), A without warmup (3 seeds, one diverged),
                      B without warmup and C with warmup (1 seed each), G without warmup 15% above A (1 seed),
                      H without warmup crashed, I with warmup unfinished, and a dir *labelled* row=A whose
                      knobs (clip_threshold = 1) make it row H — it must be read as H.
  runs/fig1/tiny/     A and G with warmup, RMS(U) every step: A swings 0.4 … 2.0, G stays in 0.9 … 1.1
                      except steps 2–5 (3.0), which the rule ignores.
  cells/paper_like.csv   rows A B C H I J, two seeds each, behaving as the paper says
  cells/small_model.csv  the same rows behaving as a small CPU model does (no instability without warmup; 3 seeds
                         for A, B and C so that the study has a pooled seed noise)
  cells/table3.csv       Adam and Adafactor in the three embedding settings of Table 3

The W&B source is tested against a fake ``wandb.Api`` (no server here); the W&B summary run offline.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from factorial import table as CLI
from factorial.report import claims as CL
from factorial.report import data as D
from factorial.report import output
from factorial.report import rules as R
from factorial.report import tables as T
from factorial.rows import TABLE2
from factorial.runlog import flatten, read_metrics
from wandb_offline import read_offline_wandb_history

FIX = Path(__file__).parent / "fixtures"
RUNS = FIX / "runs"
CELLS = FIX / "cells"


@pytest.fixture(autouse=True)
def quiet_wandb(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / ".netrc").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "FACTORIAL_TABLE_WANDB"):
        monkeypatch.delenv(var, raising=False)


def cells_of(runs: pd.DataFrame) -> pd.DataFrame:
    return D.aggregate(runs)


def results(cells: pd.DataFrame, exp: str, noise: R.Noise | None = None) -> dict[str, list[CL.ClaimResult]]:
    found, _ = CL.evaluate(cells, exp, noise)
    out: dict[str, list[CL.ClaimResult]] = {}
    for r in found:
        out.setdefault(r.claim.id, []).append(r)
    return out


def only(res: dict, claim: str) -> CL.ClaimResult:
    assert len(res[claim]) == 1, res[claim]
    return res[claim][0]


def part(r: CL.ClaimResult, text: str) -> CL.PartResult:
    return next(p for p in r.parts if p.text.startswith(text))


@pytest.fixture(scope="module")
def table2_fixture():
    runs, curves = D.load_local(RUNS, "table2", "tiny")
    return runs, curves, cells_of(runs)


def cell(cells: pd.DataFrame, letter: str, warmup: bool) -> dict:
    hits = [c for c in cells.to_dict("records") if c["row_match"] == letter and c["schedule.warmup"] is warmup]
    assert len(hits) == 1, (letter, warmup, hits)
    return hits[0]


# --- the rules -----------------------------------------------------------------------------------------


def S(label, *ppl, diverged=0):
    ok = list(ppl)
    mean = sum(ok) / len(ok) if ok else None
    std = math.sqrt(sum((x - mean) ** 2 for x in ok) / (len(ok) - 1)) if len(ok) >= 2 else None
    return R.CellStats(label, n=len(ok) + diverged, n_diverged=diverged, mean=mean, std=std)


# The comparison rules (≈, fails, worse, intervals, pairing) are tested on designed cases in test_verdicts.py.


def test_format_stats():
    assert R.format_stats(S("", 100.0, 102.0, 98.0)) == "100.0 ± 2.0 (n=3)"
    assert R.format_stats(S("", 50.0, 51.0)) == "50.50 ± 0.71 (n=2)"
    assert R.format_stats(S("", 400.0, 402.0, diverged=1)) == "401.0 ± 1.4 (n=3; 1/3 diverged)"
    assert R.format_stats(S("", diverged=3)) == "diverged (3/3)"
    assert R.format_stats(S("", 412.34)) == "412.3 (n=1)"
    assert R.format_stats(S("")) == "—"
    assert R.format_stats(R.CellStats("", n_failed=1)) == "— (1 crashed)"


def test_rms_and_state_rules():
    assert R.rms_excursion([1, 2, 3, 6, 7], [5.0, 5.0, 5.0, 1.2, 0.9]) == pytest.approx(math.log(1.2))  # steps ≤ 5 ignored
    fr = R.rms_fractions([1, 2, 6, 7, 8, 9], [5.0, 5.0, 1.2, 0.5, 2.2, 1.0])  # steps ≤ 5 ignored
    assert fr["n"] == 4 and fr["out"] == pytest.approx(0.5) and fr["gt1"] == pytest.approx(0.5) and fr["gt2"] == pytest.approx(0.25)
    assert R.strays_far("A", [0.30]).value is True
    assert R.strays_far("A", [0.01]).value is False
    assert R.stays_near("G", [0.0, 0.2]).value is None  # seeds disagree
    ok = R.StateCheck("C", 38400, 918784, 128)  # 1.04% of 4·params ≤ 2/128 = 1.56%
    full = R.StateCheck("A", 4 * 918784, 918784, 128)
    assert ok.ok and not full.ok
    assert R.state_is_sublinear([ok]).value is True
    assert R.state_is_sublinear([ok, full]).value is False
    assert R.StateCheck("?", 9000, 918784, None).bound_fraction == R.STATE_FALLBACK_FRACTION
    md = R.thresholds_markdown(R.Noise(0.0123, 42, 0.02, 44, runs=60, cells=20))  # printed from the constants
    assert "±5.0 %" in md and "+25 %" in md and f"{R.RMS_FRAC_FAR:.1%}" in md and "σ̂ = 0.0123" in md and "42 degrees" in md


def test_per_matrix_clip_fraction_is_the_share_of_logged_steps_with_rms_u_above_d():
    """RMS(U) is logged before clipping, so a matrix's update was clipped at a logged step exactly when its RMS(U)
    exceeded d; steps ≤ RMS_SKIP_STEPS are ignored as for the band; a run that does not clip has no fraction."""
    steps = [1, 2, 6, 7, 8, 9]
    curve = pd.DataFrame({"run_id": "r", "step": steps,
                          **{f"rms_u/{m}": [5.0, 5.0, 1.2, 0.5, 2.2, 1.0] for m in R.FIG1_MATRICES}})
    curve[f"rms_u/{R.FIG1_MATRICES[1]}"] = [5.0, 5.0, 0.9, 0.8, float("nan"), 1.1]  # a missing point is no step
    one = D.rms_stats(curve, 1.0)
    assert one[f"rms_u/{R.FIG1_MATRICES[0]}.frac_clipped"] == pytest.approx(2 / 4)  # 1.2, 2.2 (1.0 is not above 1)
    assert one[f"rms_u/{R.FIG1_MATRICES[1]}.frac_clipped"] == pytest.approx(1 / 3)
    assert D.rms_stats(curve, 2.0)[f"rms_u/{R.FIG1_MATRICES[0]}.frac_clipped"] == pytest.approx(1 / 4)
    none = D.rms_stats(curve, None)
    assert all(none[f"rms_u/{m}.frac_clipped"] is None for m in R.FIG1_MATRICES)
    assert D.rms_stats(pd.DataFrame(), 1.0)[f"rms_u/{R.FIG1_MATRICES[0]}.frac_clipped"] is None


def test_the_mechanism_table_gives_each_matrix_its_clip_fraction_where_the_cell_clips():
    from factorial.report.document import mechanism_table

    base = {f"rmsgt{lv:g}_{m}": [0.5, 0.3] for lv in R.RMS_LEVELS for m in R.FIG1_MATRICES}
    clipping = {"row_match": "H", "schedule.warmup": False, "n": 2, "rms_frac_out": [0.2, 0.1], "clip_frac": [0.5, 0.7],
                **base, **{f"clipped_{m}": [0.5, 0.3] for m in R.FIG1_MATRICES}}
    plain = {"row_match": "A", "schedule.warmup": True, "n": 2, "rms_frac_out": [0.2, 0.1], "clip_frac": [],
             **base, **{f"clipped_{m}": [None, None] for m in R.FIG1_MATRICES}}
    md = mechanism_table(pd.DataFrame([clipping, plain], dtype=object))
    head, _, h, a = md.splitlines()
    assert f"clipped: {' / '.join(R.FIG1_MATRICES)}" in head and "clipped: all tensors (mean)" in head
    assert h.startswith("| H, no warmup | 2 |") and h.endswith("| 15.0% | 40% / 40% / 40% | 60.0% |")
    assert a.startswith("| A, warmup | 2 |") and a.endswith("| 15.0% | – | – |")


def test_the_unigram_table_sets_each_seeds_validation_loss_against_the_unigram_cross_entropy():
    from factorial.report.document import unigram_table

    runs = pd.DataFrame([
        {"run_id": "a0", "outcome": "ok", "val_loss": 6.40, "validation_unigram_xent": 6.35},
        {"run_id": "a1", "outcome": "ok", "val_loss": 6.30, "validation_unigram_xent": 6.35},
        {"run_id": "a2", "outcome": "diverged", "val_loss": None, "validation_unigram_xent": 6.35},
        {"run_id": "h0", "outcome": "ok", "val_loss": 5.10, "validation_unigram_xent": 6.35},
        {"run_id": "x0", "outcome": "ok", "val_loss": 5.00, "validation_unigram_xent": None},  # recorded before it existed
    ], dtype=object)
    cells = pd.DataFrame([
        {"row_match": "A", "schedule.warmup": False, "run_ids": ["a0", "a1", "a2"], "n_diverged": 1},
        {"row_match": "H", "schedule.warmup": True, "run_ids": ["h0"], "n_diverged": 0},
        {"row_match": "B", "schedule.warmup": True, "run_ids": ["x0"], "n_diverged": 0},
        {"row_match": "G", "schedule.warmup": True, "run_ids": ["h0", "x0"], "n_diverged": 0},
    ], dtype=object)
    head, _, a, h, g = unigram_table(runs, cells).splitlines()
    assert g == "| G, warmup | 1 of 2 | 5.100 | 6.350 | -1.250 |"  # x0 finished without the baseline
    assert "unigram cross-entropy" in head
    assert a == f"| A, no warmup | 2 (+1 diverged) | 6.350 ± {0.1 / 2 ** 0.5:.3f} | 6.350 | +0.000 [-0.050, +0.050] |"
    assert h == "| H, warmup | 1 | 5.100 | 6.350 | -1.250 |"
    assert unigram_table(runs.drop(columns=["validation_unigram_xent"]), cells) == ""


# --- loading and aggregation ------------------------------------------------------------------------


def test_local_runs_are_identified_by_their_knobs(table2_fixture):
    runs, curves, cells = table2_fixture
    assert len(runs) == 12
    relabelled = runs[runs["cell"] == "row=A,optim.clip_threshold=1.0,schedule.warmup=true"].iloc[0]
    assert relabelled["row"] == "A" and relabelled["row_match"] == "H"  # the label says A, the knobs say H
    outcome = dict(zip(runs["run_id"], runs["outcome"]))
    assert outcome["row=A,schedule.warmup=false/seed1"] == "diverged"
    assert outcome["row=H,schedule.warmup=false/seed0"] == "failed"
    assert outcome["row=I,schedule.warmup=true/seed0"] == "incomplete"
    assert set(runs["git_commit"]) == {"0123456789abcdef0123456789abcdef01234567"}
    assert not curves.empty and set(curves["run_id"]) <= set(runs["run_id"])


def test_aggregation_over_seeds(table2_fixture):
    _, _, cells = table2_fixture
    a_nw = cell(cells, "A", False)
    assert (a_nw["n"], a_nw["n_ok"], a_nw["n_diverged"]) == (3, 2, 1)
    assert a_nw["ppl_mean"] == pytest.approx(100.0) and a_nw["ppl_std"] == pytest.approx(math.sqrt(2))
    assert a_nw["diverged_at"] == [40]
    a_w = cell(cells, "A", True)
    assert a_w["n"] == 3 and a_w["ppl_mean"] == pytest.approx(100.0) and a_w["ppl_std"] == pytest.approx(2.0)
    h_nw = cell(cells, "H", False)
    assert (h_nw["n"], h_nw["n_failed"]) == (0, 1)  # a crash is not a result
    assert cell(cells, "I", True)["n_incomplete"] == 1


def test_claims_on_the_run_fixture(table2_fixture, rules_with):
    # the fixture has one to three seeds a cell: judged here with min_seeds = 1 (the rules' 3 would make
    # every comparison with a one-seed cell inconclusive for that reason alone; test_verdicts checks that rule)
    _, _, cells = table2_fixture
    with rules_with(min_seeds=1):
        res = results(cells, "table2")
    c4 = only(res, "C4")  # A: 1 of 3 seeds diverged — a minority is neither stable nor a failure
    assert c4.verdict == "inconclusive"
    assert "diverged in 1 of 3 seeds" in part(c4, "A without warmup fails").judgement.reason
    assert "minority" in part(c4, "A without warmup fails").judgement.reason
    c5 = only(res, "C5")  # G vs A with warmup, one seed each and no pooled seed noise for the pair: no interval
    assert c5.verdict == "inconclusive"
    c1 = only(res, "C1")  # H and J are missing
    assert c1.verdict == "inconclusive" and "missing" in c1.reason
    c8 = only(res, "C8")  # H (the relabelled dir) vs A: one pair and too few seeds for a pooled noise
    assert c8.verdict == "inconclusive" and "no interval" in c8.reason and "H, warmup" in c8.reason
    c7 = only(res, "C7")  # H without warmup crashed: missing, not a failure
    assert c7.verdict == "inconclusive" and "missing cell: H, no warmup" in c7.reason
    assert only(res, "C15").verdict == "reproduced"  # C: 4,480 B for 24,768 params ≤ 2/32 of 4·params
    assert "C13" not in res  # table2 logged no RMS(U): C13 stays with fig1
    _, skipped = CL.evaluate(cells, "table2")
    assert {c.id for c, _ in skipped} == {"C13", "C14"}


def test_claims_reproduced_on_paper_like_cells(rules_with):
    runs, _ = D.load_csv(CELLS / "paper_like.csv")
    with rules_with(min_seeds=1):  # two seeds a cell (the seeds rule: test_verdicts)
        res = results(cells_of(runs), "table2")
    for claim in ("C1", "C3", "C4", "C8", "C15"):
        assert only(res, claim).verdict == "reproduced", (claim, only(res, claim).reason)
    c4 = only(res, "C4")  # every verdict rests on an interval with its n and pairing
    d = part(c4, "B without warmup is stable").judgement.diff
    assert d.paired and d.n == 2 and d.lo < d.estimate < d.hi
    i = part(only(res, "C7"), "I without warmup fails").judgement  # 1 of 2 seeds diverged: a minority
    assert i.value is None and i.reason.startswith("I, no warmup diverged in 1 of 2")


def test_claims_not_reproduced_on_small_model_cells(rules_with):
    runs, _ = D.load_csv(CELLS / "small_model.csv")
    with rules_with(min_seeds=1):  # single seeds of G (the seeds rule: test_verdicts)
        res = results(cells_of(runs), "table2")
    c1 = only(res, "C1")  # C 7.5 % worse than A with tight seeds: the whole interval above the 5 % margin
    assert c1.verdict == "not reproduced" and "lower end > +5.0 %" in c1.reason
    c4 = only(res, "C4")  # A is better without warmup: it does not fail
    assert c4.verdict == "not reproduced" and "A, no warmup vs A, warmup: -14.5 %" in c4.reason
    assert "paired n=3" in c4.reason
    c7 = only(res, "C7")  # nothing for clipping to remove: its precondition is absent, not contradicted
    assert c7.verdict == "untestable here" and all(p.judgement.untestable for p in c7.parts)
    assert only(res, "C15").verdict == "not reproduced"  # state = 4·params: linear
    c5 = only(res, "C5")  # single seeds of G, judged with the study's pooled seed noise (df 6); "G is stable
    # without warmup" needs A to fail without warmup (the rules' preconditions.a_fails), as C7's and C9's parts do
    assert c5.verdict == "untestable here" and part(c5, "G without warmup is stable").judgement.untestable
    assert part(c5, "G without warmup converges worse").judgement.value is True
    assert "pooled seed noise σ̂ = 0.0074, df 6" in part(c5, "G without warmup converges worse").judgement.reason
    c3 = only(res, "C3")  # B with warmup never ran
    assert c3.verdict == "inconclusive" and "missing cell: B, warmup" in c3.reason


def test_c13_from_rms_curves():
    runs, curves = D.load_local(RUNS, "fig1", "tiny")
    c13 = only(results(cells_of(runs), "fig1"), "C13")
    assert c13.verdict == "reproduced", c13.reason
    g = part(c13, "RMS(U) of G").judgement
    assert "= 0.0%" in g.reason  # steps 2–5 (RMS 3.0) are ignored; after them G stays within 0.9 … 1.1
    # A that never strays: not reproduced
    flat = runs.copy()
    for m in R.FIG1_MATRICES:
        flat.loc[flat["row_match"] == "A", f"rms_u/{m}.frac_out"] = 0.0
    c13 = only(results(cells_of(flat), "fig1"), "C13")
    assert c13.verdict == "not reproduced" and "not ≥ 5.0%" in c13.reason


def test_c14_from_table3_cells():
    runs, _ = D.load_csv(CELLS / "table3.csv")
    cells = cells_of(runs)
    assert set(cells["embedding"]) == {"σ=1/√d, ×√d", "σ=1, ×1", "σ=1/√d, ×1"}
    single = only(results(cells, "table3"), "C14")  # one seed a cell and no pooled noise: no interval
    assert single.verdict == "inconclusive" and "no interval" in single.reason
    noise = R.Noise(0.02, 30, 0.03, 30)  # a study that knows its seed noise (2 % a run)
    assert only(results(cells, "table3", noise), "C14").verdict == "reproduced"  # spread 1.40 (Adam) vs 1.10 (Adafactor)
    same = runs.copy()
    same.loc[same["optim.name"] == "adafactor", "val_ppl"] = [195.0, 300.0, 215.0]
    assert only(results(cells_of(same), "table3", noise), "C14").verdict == "not reproduced"
    missing = runs[runs["run_id"] != "alg6-mult1/seed0"].reset_index(drop=True)
    c14 = only(results(cells_of(missing), "table3"), "C14")
    assert c14.verdict == "inconclusive" and "missing" in c14.reason


def test_contexts_give_one_verdict_each():
    runs, _ = D.load_csv(CELLS / "paper_like.csv")
    twice = pd.concat([runs, runs.assign(**{"schedule.multiplier": 5.0, "run_id": runs["run_id"] + "-x5"})], ignore_index=True)
    twice = D.finish_runs(twice)
    c4 = results(cells_of(twice), "table2")["C4"]
    assert [r.title for r in c4] == ["C4 @ schedule.multiplier=1", "C4 @ schedule.multiplier=5"]


# --- tables ------------------------------------------------------------------------------------------


def test_table2_layout(table2_fixture):
    _, _, cells = table2_fixture
    [t] = T.build_tables("table2", cells)
    rows = t.display.set_index("row")
    assert list(rows.index) == list(TABLE2)  # all 22 rows, in the paper's order
    assert rows.loc["A", "warmup: val ppl"] == "100.0 ± 2.0 (n=3)"
    assert rows.loc["A", "no warmup: val ppl"] == "100.0 ± 1.4 (n=3; 1/3 diverged)"
    assert rows.loc["B", "warmup: val ppl"] == "—"
    assert rows.loc["H", "no warmup: val ppl"] == "— (1 crashed)"
    assert rows.loc["H", "warmup: val ppl"] == "101.0 (n=1)"  # the relabelled dir
    # the paper's columns come from factorial.rows
    assert rows.loc["A", "warmup: paper BLEU"] == f"{TABLE2['A'].bleu_warmup:.1f}"
    assert rows.loc["Q300", "warmup: paper BLEU"] == "diverged"
    assert (rows.loc["O", "step"], rows.loc["Q100", "step"], rows.loc["A", "step"]) == ("ρ = s_t", "lr = 100·s_t", "α = 0.1·s_t")
    assert rows.loc["L", "β2"] == "1 − t^−0.8" and rows.loc["J", "d"] == "1.0" and rows.loc["D", "second moment"] == "row means only"
    data = t.data.set_index("row")
    assert data.loc["A", "no warmup n_diverged"] == 1 and data.loc["A", "no warmup paper_bleu"] == TABLE2["A"].bleu_no_warmup
    md = T.to_markdown([t])
    assert "| A | full | 0 | β2 = 0.999 |" in md
    tex = T.to_latex([t])
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "$t^{-0.8}$" in tex


def test_pivot_layouts_and_sections():
    runs, _ = D.load_csv(CELLS / "table3.csv")
    [t] = T.build_tables("table3", cells_of(runs))
    assert list(t.display.columns[:4]) == ["embedding init σ", "embedding multiplier", "Adam, warmup", "Adafactor, no warmup"]
    assert t.display.iloc[0]["paper BLEU: Adam"] == "26.4"
    # a knob the layout does not explain splits the table into sections
    runs2, _ = D.load_csv(CELLS / "small_model.csv")
    mixed = D.finish_runs(pd.concat([runs2, runs2.assign(**{"model.norm": "post", "run_id": runs2["run_id"] + "-post"})],
                                    ignore_index=True))
    tables = T.build_tables("table2", cells_of(mixed))
    assert [t.section for t in tables] == [{"model.norm": "post"}, {"model.norm": "pre"}]
    generic = T.build_tables("my_new_study", cells_of(runs2))  # unknown study: one row per cell
    assert len(generic[0].display) == 12 and "optimizer" in generic[0].display.columns


# --- the W&B source (a fake Api: no server here) ------------------------------------------------------


class FakeRun:
    def __init__(self, run_dir: Path):
        import yaml

        self.config = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()))
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
        records = read_metrics(run_dir / "metrics.jsonl")
        vals = [r["val/ppl"] for r in records if "val/ppl" in r]
        if vals:
            summary["val/ppl"] = {"min": min(vals), "last": vals[-1]}
        self.summary = summary
        self._history = [{**r, "_step": i} for i, r in enumerate(records)]
        self.name = f"{run_dir.parent.name}/{run_dir.name}"
        self.group = f"{self.config['exp']}/{self.config['scale']}"
        self.state = "finished" if summary else "running"
        self.job_type = None
        self.metadata = json.loads((run_dir / "meta.json").read_text())

    def history(self, samples=500, keys=None, x_axis="_step", pandas=True):
        return pd.DataFrame(self._history) if pandas else list(self._history)


class FakeApi:
    calls: list = []

    def __init__(self, *a, **k):
        self._runs = [FakeRun(p.parent) for p in sorted(RUNS.glob("*/*/*/*/config.yaml"))]

    def runs(self, path, filters=None, **kw):
        FakeApi.calls.append((path, filters))
        return [r for r in self._runs if r.group == filters["group"]]


def test_wandb_source_reads_the_same_cells(monkeypatch, table2_fixture):
    import wandb

    monkeypatch.setattr(wandb, "Api", FakeApi)
    runs, curves = D.load_wandb("table2", "tiny", project="factorial", entity="me")
    assert FakeApi.calls[-1] == ("me/factorial", {"group": "table2/tiny"})
    local_runs, _, local_cells = table2_fixture
    cols = ["cell_key", "n", "n_ok", "n_diverged", "n_failed", "n_incomplete", "ppl_mean", "ppl_std"]
    key = lambda f: f[cols].sort_values("cell_key").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(cells_of(runs)), key(local_cells))
    assert set(runs["git_commit"]) == set(local_runs["git_commit"])
    assert len(curves) == len(D.load_local(RUNS, "table2", "tiny")[1])
    with pytest.raises(D.ReportError, match="no runs in project factorial with group 'nope/tiny'"):
        D.load_wandb("nope", "tiny")


def test_cli_with_wandb_source(monkeypatch, tmp_path):
    import wandb

    monkeypatch.setattr(wandb, "Api", FakeApi)
    out = tmp_path / "out"
    assert CLI.main(["--exp", "table2", "--scale", "tiny", "--source", "wandb", "--out", str(out)]) == 0
    report = (out / "table2" / "tiny" / "REPORT.md").read_text()
    assert "from W&B project `factorial`, group `table2/tiny`: 12 runs in 8 cells" in report
    line = next(x for x in report.splitlines() if x.startswith("| C4 | §4.1, §5 |"))
    assert "| exploration (seeds 0–2) | exploratory | ❔ inconclusive |" in line  # a study of no rules: exploratory
    assert CLI.main(["--exp", "table2", "--scale", "none", "--source", "wandb", "--out", str(out)]) == 2


# --- the command line -----------------------------------------------------------------------------------


def test_missing_runs_dir_is_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "factorial.table", "--exp", "table2", "--scale", "smoke",
                           "--runs-root", str(tmp_path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"no runs directory {tmp_path}/table2/smoke" in proc.stderr
    assert "make sweep EXP=table2 SCALE=smoke" in proc.stderr  # a command that works
    assert "<cell>/seed<k>/config.yaml" in proc.stderr
    (tmp_path / "table2" / "empty").mkdir(parents=True)
    assert CLI.main(["--exp", "table2", "--scale", "empty", "--runs-root", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert CLI.main(["--exp", "x", "--scale", "y", "--from-csv", str(tmp_path / "none.csv")]) == 2
    assert not (tmp_path / "out").exists()


def test_the_runs_root_comes_from_factorial_runs_as_for_the_sweep(tmp_path, monkeypatch, capsys):
    """FACTORIAL_RUNS=/tmp/r make sweep trains into /tmp/r: the table step reads the runs from there too."""
    monkeypatch.setenv("FACTORIAL_RUNS", str(RUNS))
    out = tmp_path / "results"
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--out", str(out)]) == 0
    report = (out / "fig1" / "tiny" / "REPORT.md").read_text()
    assert f"--runs-root {RUNS}" in report  # the report's own rebuild command names where its runs are
    with pytest.raises(SystemExit):
        CLI.parse_args(["--help"])
    assert "FACTORIAL_RUNS" in capsys.readouterr().out
    from factorial import sweep as SW

    with pytest.raises(SystemExit):
        SW.parse_args(["--help"])
    assert "FACTORIAL_RUNS" in capsys.readouterr().out


def test_an_unknown_study_lists_the_studies_instead_of_an_invalid_sweep(tmp_path, capsys):
    assert CLI.main(["--exp", "tabel2", "--scale", "cpu", "--runs-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "invalid --exp='tabel2'" in err and "did you mean table2?" in err and "fig1, " in err, err
    assert "make sweep EXP=tabel2" not in err
    assert CLI.main(["--exp", "table2", "--scale", "cpuu", "--runs-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "invalid --scale='cpuu'" in err and "did you mean cpu?" in err and "make sweep" not in err, err
    # runs trained with exp=NAME and no study file are a study all the same
    (tmp_path / "mine" / "cpu").mkdir(parents=True)
    assert CLI.main(["--exp", "mine", "--scale", "cpu", "--runs-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no runs in" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _with_an_extra_cell(tmp_path: Path) -> Path:
    """The fig1 fixture's runs, and A with warmup trained once more with an extra override (train.steps=3000, as
    `make sweep EXP=fig1 ARGS="train.steps=3000"` names it): a cell the study file does not define."""
    import shutil

    import yaml

    root = tmp_path / "runs"
    shutil.copytree(RUNS / "fig1", root / "fig1")
    src = root / "fig1" / "tiny" / "row=A,schedule.warmup=true"
    dst = root / "fig1" / "tiny" / "row=A,schedule.warmup=true,train.steps=3000"
    shutil.copytree(src, dst)
    for cfg_path in dst.glob("seed*/config.yaml"):
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["train"]["steps"], cfg["cell"] = 3000, dst.name
        cfg_path.write_text(yaml.safe_dump(cfg))
    return root


def test_cells_from_extra_overrides_are_marked_and_left_out_of_the_verdicts(tmp_path, capsys):
    root = _with_an_extra_cell(tmp_path)
    plain, out, every = tmp_path / "plain", tmp_path / "out", tmp_path / "every"
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(RUNS), "--out", str(plain)]) == 0
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(root), "--out", str(out)]) == 0
    assert "not cells of the study file" in capsys.readouterr().err
    d = out / "fig1" / "tiny"
    report = (d / "REPORT.md").read_text()
    assert "**Not the study's cells:**" in report and "`row=A,schedule.warmup=true,train.steps=3000`" in report
    cells = pd.read_csv(d / "cells.csv")
    marked = dict(zip(cells["cell"], cells["in_study"]))
    assert marked["row=A,schedule.warmup=true,train.steps=3000"] == False  # noqa: E712
    assert marked["row=A,schedule.warmup=true"] == True  # noqa: E712
    # the verdicts are the study's own: the same as without the extra cell
    pd.testing.assert_frame_equal(pd.read_csv(d / "claims.csv"), pd.read_csv(plain / "fig1" / "tiny" / "claims.csv"))
    assert "in_study" not in pd.read_csv(plain / "fig1" / "tiny" / "cells.csv").columns  # nothing extra, nothing marked
    # unless the user asks otherwise
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(root), "--out", str(every), "--all-cells"]) == 0
    assert "--all-cells" in (every / "fig1" / "tiny" / "REPORT.md").read_text()


def test_cli_from_fixture_and_from_csv_agree(tmp_path, monkeypatch):
    out = tmp_path / "results"
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(RUNS), "--out", str(out)]) == 0
    d = out / "fig1" / "tiny"
    # every build also refreshes the scale's claim-by-claim summary
    assert "| C13 | §5, Fig. 1 |" in (out / "CLAIMS-tiny.md").read_text()
    names = {p.name for p in d.iterdir()}
    assert {"cells.csv", "curves.csv", "claims.csv", "table.md", "table.csv", "table.tex", "REPORT.md",
            "fig1_rms_u.png", "curves.png"} <= names
    assert not [p for p in out.glob("fig1/.*")]  # no staging folder left behind
    first = (d / "table.md").read_text()
    report = (d / "REPORT.md").read_text()
    assert "C13" in report and "✅ reproduced" in report and "![fig1_rms_u.png](fig1_rms_u.png)" in report
    # rebuilt from cells.csv + curves.csv alone, into another folder: the same tables and verdicts
    out2 = tmp_path / "again"
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--from-csv", str(d / "cells.csv"), "--out", str(out2)]) == 0
    assert (out2 / "fig1" / "tiny" / "table.md").read_text() == first
    c1 = pd.read_csv(d / "claims.csv")
    c2 = pd.read_csv(out2 / "fig1" / "tiny" / "claims.csv")
    pd.testing.assert_frame_equal(c1, c2)
    # a second build replaces the files; a figure no longer made is removed. With --wandb the tables also go
    # to a W&B summary run (offline here) beside them.
    (d / "stale.png").write_bytes(b"old")
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--from-csv", str(d / "cells.csv"), "--out", str(out),
                     "--wandb", "offline"]) == 0
    assert not (d / "stale.png").exists() and (d / "table.md").read_text() == first
    logged = {k.split(".")[0] for row in read_offline_wandb_history(d) for k in row}  # table.nrows → table
    assert {"table", "claims", "cells", "plot/fig1_rms_u"} <= logged


def test_wandb_summary_run_offline_and_failure(tmp_path, monkeypatch, caplog):
    import wandb

    frame = pd.DataFrame({"row": ["A"], "ppl": [1.0]})
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert output.log_to_wandb("offline", "factorial", None, "fig1", "tiny", tmp_path, {"table": frame}, [], {"runs": 1})
    assert list((tmp_path / "wandb").glob("offline-run-*"))

    def boom(**kw):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", boom)
    with caplog.at_level("WARNING"):
        assert not output.log_to_wandb("offline", "factorial", None, "fig1", "tiny", tmp_path, {"table": frame}, [], {})
    assert "W&B summary run failed (RuntimeError: no W&B today)" in caplog.text
    assert not output.log_to_wandb("disabled", "factorial", None, "fig1", "tiny", tmp_path / "d", {"table": frame}, [], {})
    assert not (tmp_path / "d" / "wandb").exists()


# --- end to end: real tiny cells ---------------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_real_cells(tmp_path):
    from factorial import train

    root, cache = tmp_path / "runs", tmp_path / "cache"
    todo = [(letter, warmup) for letter in ("A", "C", "H") for warmup in ("true", "false")] + [("G", "true")]
    for letter, warmup in todo:  # G with warmup: Figure 1's second cell
        overrides = [f"row={letter}", f"schedule.warmup={warmup}"]
        cfg = train.compose(["scale=smoke", "logger=none", "exp=table2", f"data.cache_dir={cache}", *overrides])
        cfg.cell = train.cell_name(overrides)  # the sweep's name; run_dir set here (its "=" would need Hydra quoting)
        cfg.run_dir = str(root / "table2" / "smoke" / cfg.cell / "seed0")
        assert train.run_cell(cfg)["status"] == "completed"
    out = tmp_path / "results"
    assert CLI.main(["--exp", "table2", "--scale", "smoke", "--runs-root", str(root), "--out", str(out)]) == 0
    d = out / "table2" / "smoke"
    for name in ("cells.csv", "curves.csv", "claims.csv", "table.md", "table.csv", "table.tex", "REPORT.md",
                 "curves.png", "fig1_rms_u.png"):
        assert (d / name).is_file() and (d / name).stat().st_size > 0, name
    for png in d.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cells = pd.read_csv(d / "cells.csv")
    assert len(cells) == 7 and set(cells["row_match"]) == {"A", "C", "G", "H"} and set(cells["status"]) == {"completed"}
    assert {"optim.beta1", "optim.second_moment", "schedule.warmup", "model.tie_embeddings", "state_bytes",
            "val_ppl", "git_commit"} <= set(cells.columns)
    table = (d / "table.md").read_text()
    assert "| A | full | 0 | β2 = 0.999 |" in table and "| B | full | 0.9 |" in table
    report = (d / "REPORT.md").read_text()
    for text in ("make sweep EXP=table2 SCALE=smoke", "make table EXP=table2 SCALE=smoke", "## Provenance",
                 "### C1 ", "### C4 ", "### C8 ", "### C15 ", "Claims this study cannot speak to", "**C14**",
                 "## Rules and thresholds", "(n=1)", "![curves.png](curves.png)"):
        assert text in report, text
    # a smoke-scale verdict carries the README's caveat, before the verdicts
    assert report.index("**Plumbing only.**") < report.index("| claim | paper | runs judged | standing | verdict | reason |")
    verdicts = pd.read_csv(d / "claims.csv").set_index("claim")["verdict"]
    assert "C13" in verdicts.index  # A and G with warmup logged RMS(U): table2 speaks to C13 too
    assert verdicts["C15"] == "reproduced"  # factored state of the tiny model ≤ 2/32 of 4·params
    assert verdicts["C14"] == "not covered"


def _claims_csv(out: Path, exp: str, rows: list[tuple[str, str, str]], registration: str = "confirmatory") -> None:
    """A claims.csv whose verdicts are all of the study's confirmation (``registration``: confirmatory,
    exploratory or incomplete), or — with registration=None — of a claims.csv written before passes existed."""
    d = out / exp / "cpu"
    d.mkdir(parents=True)
    extra = {} if registration is None else {"pass": "confirmation", "registration": registration,
                                             "registration_note": f"{exp}: {registration} because"}
    pd.DataFrame([{"claim": c, "context": ctx, **extra, "paper": "", "statement": "", "verdict": v,
                   "reason": f"{exp} says {v}", "parts": ""} for c, ctx, v in rows]).to_csv(d / "claims.csv", index=False)


def test_summary_takes_each_claims_verdict_from_its_home_study(tmp_path):
    out = tmp_path / "results"
    _claims_csv(out, "table2", [("C1", "", "reproduced"), ("C4", "", "not reproduced"), ("C13", "", "not covered"),
                                ("C15", "", "reproduced")])
    # calibrate is a home of C4 too, but only after table2; its contexts are further evidence
    _claims_csv(out, "calibrate", [("C4", "schedule.multiplier=1", "reproduced"), ("C4", "schedule.multiplier=2", "inconclusive")])
    _claims_csv(out, "fig1", [("C13", "", "reproduced")])
    # a home study whose contexts disagree gives no verdict of its own
    _claims_csv(out, "beta2_exponent", [("C9", "optim.clip_threshold=None", "reproduced"),
                                        ("C9", "optim.clip_threshold=1.0", "not reproduced")])
    assert CLI.main(["--summary", "--scale", "cpu", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "claims-cpu.csv", keep_default_na=False).set_index("claim")
    assert list(frame.index) == [f"C{i}" for i in range(1, 16)]
    assert frame.loc["C1", "verdict"] == "reproduced" and frame.loc["C1", "study"] == "table2"
    assert frame.loc["C4", "verdict"] == "not reproduced" and frame.loc["C4", "reason"] == "table2 says not reproduced"
    assert frame.loc["C4", "other_studies"] == ("calibrate @ schedule.multiplier=1: reproduced; "
                                                "calibrate @ schedule.multiplier=2: inconclusive")
    assert frame.loc["C13", "verdict"] == "reproduced" and frame.loc["C13", "study"] == "fig1"
    assert frame.loc["C9", "verdict"] == "not run"  # table2 (its first home) has no C9 row here
    assert "beta2_exponent @ optim.clip_threshold=1.0: not reproduced" in frame.loc["C9", "other_studies"]
    assert frame.loc["C14", "verdict"] == "not run"
    md = (out / "CLAIMS-cpu.md").read_text()
    assert ("**Confirmatory: 3 of 15 reproduced**, 1 not reproduced, 0 inconclusive, 0 untestable here (a precondition "
            "absent at this scale); 11 without a confirmatory verdict.") in md
    assert "[fig1](fig1/cpu/REPORT.md)" in md


def test_summary_counts_only_confirmatory_verdicts_and_shows_the_exploratory_beside(tmp_path):
    out = tmp_path / "results"
    _claims_csv(out, "table2", [("C1", "", "reproduced"), ("C3", "", "reproduced")], registration="exploratory")
    _claims_csv(out, "fig1", [("C13", "", "not reproduced")])
    _claims_csv(out, "table3", [("C14", "", "reproduced")], registration="incomplete")
    assert CLI.main(["--summary", "--scale", "cpu", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "claims-cpu.csv", keep_default_na=False).set_index("claim")
    assert frame.loc["C1", "verdict"] == "reproduced" and frame.loc["C1", "standing"] == "exploratory"
    assert frame.loc["C13", "standing"] == "confirmatory" and frame.loc["C14", "standing"] == "incomplete"
    md = (out / "CLAIMS-cpu.md").read_text()
    assert "**Confirmatory: 0 of 15 reproduced**, 1 not reproduced" in md and "14 without a confirmatory verdict" in md
    apart = md.split("## Not confirmatory", 1)[1]
    assert "- **C1** (exploratory): table2: exploratory because" in apart and "- **C14** (incomplete)" in apart
    assert "**C13**" not in apart
    # a claims.csv from before passes existed (no registration): its verdicts are exploratory
    legacy = tmp_path / "legacy"
    _claims_csv(legacy, "table2", [("C3", "", "reproduced")], registration=None)
    assert CLI.main(["--summary", "--scale", "cpu", "--out", str(legacy)]) == 0
    frame = pd.read_csv(legacy / "claims-cpu.csv", keep_default_na=False).set_index("claim")
    assert frame.loc["C3", "verdict"] == "not run" and frame.loc["C3", "exploratory_verdict"] == "reproduced"


def test_summary_of_contexts_that_disagree_is_inconclusive(tmp_path):
    out = tmp_path / "results"
    _claims_csv(out, "calibrate", [("C4", "schedule.multiplier=1", "reproduced"), ("C4", "schedule.multiplier=2", "not reproduced")])
    assert CLI.main(["--summary", "--scale", "cpu", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "claims-cpu.csv", keep_default_na=False).set_index("claim")
    assert frame.loc["C4", "verdict"] == "inconclusive"
    assert frame.loc["C4", "reason"] == "contexts disagree: 1 reproduced, 1 not reproduced"


def test_summary_without_any_study_is_exit_code_2(tmp_path, capsys):
    assert CLI.main(["--summary", "--scale", "cpu", "--out", str(tmp_path)]) == 2
    assert "claims.csv" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert CLI.main(["--scale", "cpu"]) == 2  # neither --exp nor --summary


def _sgd_verdict(tmp_path, q100_with_warmup: str) -> CL.ClaimResult:
    rows = [("A-w", "A", "true", "completed", 100.0), ("Q10-w", "Q10", "true", "completed", 180.0),
            ("Q10-nw", "Q10", "false", "completed", 190.0), ("Q100-nw", "Q100", "false", "diverged", ""),
            ("Q100-w", "Q100", "true", q100_with_warmup, 150.0 if q100_with_warmup == "completed" else "")]
    path = tmp_path / q100_with_warmup / "cells.csv"
    path.parent.mkdir()
    pd.DataFrame([{"run_id": f"{r}/seed0", "row": row, "schedule.warmup": w, "seed": 0, "status": st, "val_ppl": v}
                  for r, row, w, st, v in rows]).to_csv(path, index=False)
    runs, _ = D.load_csv(path)
    return only(results(cells_of(runs), "table2"), "C12")


def test_c12_needs_the_large_sgd_lr_to_train_with_warmup(tmp_path, rules_with):
    """'Diverges at large lr without warmup' is the contrast with warmup: a row that diverges both ways
    (the step too large for the model) says nothing about warmup. (One seed a cell: min_seeds = 1 here.)"""
    with rules_with(min_seeds=1):
        _c12_contrast(tmp_path)


def _c12_contrast(tmp_path):
    contrast = part(_sgd_verdict(tmp_path, "completed"), "at large lr")
    assert contrast.judgement.value is True, contrast.judgement.reason
    both = _sgd_verdict(tmp_path, "diverged")
    p = part(both, "at large lr")
    assert p.judgement.value is None and "diverged too" in p.judgement.reason
    assert both.verdict == "inconclusive"


def test_a_report_at_a_real_scale_has_no_plumbing_caveat(tmp_path):
    out = tmp_path / "results"
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(RUNS), "--out", str(out)]) == 0
    assert "Plumbing only" not in (out / "fig1" / "tiny" / "REPORT.md").read_text()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_build_from_fewer_finished_runs_never_replaces_the_results(tmp_path, capsys):
    """An interrupted sweep's runs must not overwrite results built from more runs. The results store beside
    the report keeps every finished run a build read, so a later build from fewer run directories still reads
    them all; results without a store (or a --from-csv build) are guarded by cells.csv: refused with exit 2,
    nothing written (tables, figures, CLAIMS-<scale>.md); --force replaces them, --out writes elsewhere."""
    import shutil

    out = tmp_path / "results"
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(RUNS), "--out", str(out)]) == 0
    before = _tree(out)
    assert "fig1/tiny/fig1_rms_u.png" in before and "fig1/tiny/runs.jsonl.gz" in before
    partial = tmp_path / "runs"
    shutil.copytree(RUNS / "fig1", partial / "fig1")
    gone = next((partial / "fig1" / "tiny").iterdir())
    shutil.rmtree(gone)  # one of the two cells has not run yet
    capsys.readouterr()

    # the store holds the missing run: the build reads it from there, and every file is as before (but the
    # build command, which names the other runs root)
    def unbuilt(tree: dict) -> dict:
        report = tree["fig1/tiny/REPORT.md"].decode().splitlines()
        return {**tree, "fig1/tiny/REPORT.md": [line for line in report if "python -m factorial.table" not in line]}

    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(partial), "--out", str(out)]) == 0
    assert unbuilt(_tree(out)) == unbuilt(before)
    # so does a build from no run directory at all (a fresh clone)
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(tmp_path / "none"), "--out", str(out)]) == 0
    assert unbuilt(_tree(out)) == unbuilt(before)

    (out / "fig1" / "tiny" / "runs.jsonl.gz").unlink()  # results from before the store
    before = _tree(out)
    capsys.readouterr()
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(partial), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "refused to overwrite" in err and f"{gone.name}/seed0" in err
    assert "--force" in err and "--out" in err and "make sweep EXP=fig1 SCALE=tiny" in err
    assert _tree(out) == before  # not a byte changed, no figure removed, no staging folder left

    # an unfinished run does not count as one: the same refusal
    (partial / "fig1" / "tiny").joinpath(gone.name).mkdir()
    shutil.copytree(RUNS / "fig1" / "tiny" / gone.name / "seed0", partial / "fig1" / "tiny" / gone.name / "seed0")
    (partial / "fig1" / "tiny" / gone.name / "seed0" / "summary.json").unlink()
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(partial), "--out", str(out)]) == 2
    assert _tree(out) == before

    # --force replaces them with the partial build, whose store holds only its own finished run
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(partial), "--out", str(out), "--force"]) == 0
    assert len(pd.read_csv(out / "fig1" / "tiny" / "cells.csv").query("status == 'completed'")) == 1
    from factorial import store as ST

    assert len(ST.load(out / "fig1" / "tiny" / "runs.jsonl.gz")) == 1


def test_provenance_warns_about_dirty_trees_mixed_commits_devices_and_thread_counts():
    from factorial.report import document

    clean = pd.DataFrame({"git_commit": ["a" * 40] * 3, "git_dirty": [False] * 3,
                          "device_name": ["Intel(R) Xeon(R) Processor"] * 3, "train.threads": [1, 1, 1]})
    assert document.provenance_warning(clean) is None
    dirty = clean.assign(git_dirty=[False, True, False])
    assert "1 of 3 runs came from a working tree with uncommitted changes" in document.provenance_warning(dirty)
    commits = clean.assign(git_commit=["a" * 40, "a" * 40, "b" * 40])
    assert "2 different commits" in document.provenance_warning(commits)
    devices = clean.assign(device_name=["AMD EPYC", "Intel(R) Xeon(R) Processor", "AMD EPYC"])
    warn = document.provenance_warning(devices)
    assert "2 device models (AMD EPYC (2 runs), Intel(R) Xeon(R) Processor (1 runs))" in warn
    assert "thread counts" not in warn
    threads = clean.assign(**{"train.threads": [1.0, 2.0, 1.0]})  # as read back from a csv
    assert "2 thread counts (train.threads = 1 (2 runs), train.threads = 2 (1 runs))" in document.provenance_warning(threads)


def _committed_calibrate() -> pd.DataFrame:
    runs, _ = D.load_csv(Path(__file__).resolve().parents[1] / "results" / "calibrate" / "cpu" / "cells.csv")
    return runs


def _lr_sensitivity_figure(cells: pd.DataFrame, tmp_path, monkeypatch):
    """The learning-rate sensitivity figure of ``cells``, kept open instead of saved."""
    from factorial.report import plots as P

    figures = []
    monkeypatch.setattr(P, "_save", lambda fig, path: figures.append(fig))
    assert P.lr_sensitivity(cells, tmp_path)
    (fig,) = figures
    return fig


def test_every_lr_sensitivity_panel_names_the_multiplier_on_its_x_axis(tmp_path, monkeypatch):
    """Six rows of the committed calibrate grid fill one row of four panels and half the next: the lowest panel
    of each column labels its x axis as the learning-rate multiplier (it said "step" where the column ended
    above). Six, not all of them: how many rows the committed study has reached must not decide what is tested."""
    runs = _committed_calibrate()
    six = sorted(runs["row"].unique())[:6]
    assert len(six) == 6, six
    fig = _lr_sensitivity_figure(D.aggregate(runs[runs["row"].isin(six)]), tmp_path, monkeypatch)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    nrows, ncols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    assert len(visible) % ncols, "every row full: this grid cannot show the bug"
    labels = {ax.get_xlabel() for ax in visible} - {""}
    assert labels == {"learning-rate multiplier"}, labels
    for col in range(ncols):
        column = [ax for ax in visible if ax.get_subplotspec().colspan.start == col]
        lowest = max(column, key=lambda ax: ax.get_subplotspec().rowspan.start)
        assert lowest.get_xlabel() == "learning-rate multiplier"


def test_diverged_markers_of_both_settings_at_one_multiplier_are_both_visible(tmp_path, monkeypatch):
    """Where seeds diverged with and without warmup at the same multiplier (committed calibrate: M and O at
    × 50), the two triangles sit side by side; they were drawn on the same spot, one hiding the other."""
    fig = _lr_sensitivity_figure(D.aggregate(_committed_calibrate()), tmp_path, monkeypatch)
    fig.canvas.draw()
    shared = 0
    for ax in fig.axes:
        marks = [ln for ln in ax.get_lines() if ln.get_marker() == "^"]
        by_m: dict[float, list] = {}
        for ln in marks:
            by_m.setdefault(float(ln.get_xdata()[0]), []).append(ln)
        for lines in by_m.values():
            if len(lines) == 2:
                shared += 1
                xs = [ln.get_transform().transform((ln.get_xdata()[0], ln.get_ydata()[0]))[0] for ln in lines]
                assert abs(xs[0] - xs[1]) > 5, xs  # display pixels apart
    assert shared >= 1, "no multiplier where both settings diverged: this grid cannot show the bug"


def test_the_same_runs_rebuild_the_same_report_whatever_the_flags(tmp_path):
    """REPORT.md names the command that decides its content, not --force or --out: a plain rebuild of a
    report built with --force leaves it byte for byte as it was (a fresh clone's `make table` leaves git clean)."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(RUNS), "--out", str(one)]) == 0
    assert CLI.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(RUNS), "--out", str(two), "--force"]) == 0
    a, b = (d / "fig1" / "tiny" / "REPORT.md" for d in (one, two))
    assert a.read_bytes() == b.read_bytes()
    assert f"Built by `python -m factorial.table --exp fig1 --scale tiny --runs-root {RUNS}`" in a.read_text()


def test_a_comparison_that_pairs_runs_from_different_machines_says_so(tmp_path):
    rows = []
    for warmup in ("true", "false"):
        for seed in (0, 1, 2):
            machine = "Intel(R) Xeon(R) Processor" if (warmup, seed) == ("false", 1) else "AMD EPYC"
            rows.append({"run_id": f"A-{warmup}/seed{seed}", "row": "A", "schedule.warmup": warmup, "seed": seed,
                         "status": "completed", "val_ppl": 100.0 + seed + (warmup == "false"), "device_name": machine,
                         "torch_threads": 1})
    path = tmp_path / "cells.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    runs, _ = D.load_csv(path)
    c4 = only(results(cells_of(runs), "table2"), "C4")
    reason = part(c4, "A without warmup fails").judgement.reason
    assert ("[mixed machines: seed 1 pair runs from different machines or thread counts, e.g. seed 1: "
            "Intel(R) Xeon(R) Processor, 1 thread vs AMD EPYC, 1 thread]") in reason
    same = runs.assign(device_name="AMD EPYC")
    assert "mixed machines" not in part(only(results(cells_of(same), "table2"), "C4"), "A without warmup fails").judgement.reason


def _figures_of(monkeypatch) -> list:
    from factorial.report import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig))
    return figs


def _hidden_lines(fig) -> list[str]:
    """The curves of a figure none of whose points is inside its panel's limits."""
    hidden = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.lines:
            continue
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        for line in ax.lines:
            if line.get_transform() != ax.transData:  # the × of a diverged seed sits on the top edge by design
                continue
            xs, ys = (list(map(float, v)) for v in line.get_data())
            if len(xs) > 1 and not any(x0 <= x <= x1 and y0 <= y <= y1 for x, y in zip(xs, ys)):
                hidden.append(f"{ax.get_title(loc='left')}: {line.get_label()} ({min(ys):.0f}–{max(ys):.0f} outside {y0:.0f}–{y1:.0f})")
    return hidden


def test_no_plotted_cell_is_hidden_by_its_panels_limits(monkeypatch):
    """One row far above the rest (as Q1 at 591 with the others near 100) is drawn inside its own panel, in the
    per-row curves and in the generic ones (one panel per setting: extra overrides' cells)."""
    from factorial.report import plots

    runs, _ = D.load_local(RUNS, "table2", "tiny")
    cells = D.aggregate(runs)
    rows = []
    for rid in runs["run_id"]:
        final = 591.0 if rid.startswith("row=B") else 100.0 + 3 * len(rows) % 7
        rows += [{"run_id": rid, "step": s, "val/ppl": final + (512 - final) * math.exp(-s / 8)} for s in range(10, 210, 10)]
    curves = pd.DataFrame(rows)
    figs = _figures_of(monkeypatch)
    plots.table2_curves(runs, cells, curves, Path("."), "curves.png")
    plots.generic_curves(runs, cells, curves, None, Path("."), "curves.png", "t")
    assert len(figs) == 2
    for fig in figs:
        assert _hidden_lines(fig) == []


def test_a_sweep_verdicts_interval_is_in_nats_not_a_percentage():
    """A learning-rate sweep's S difference is a loss difference in nats: claims.csv gives it as such
    (estimate_nats, ci_*_nats) and leaves the percentage columns empty (exp(x) − 1 of nats means nothing)."""
    from factorial.table import _interval_columns

    row = R.SweepRow("A, no warmup", {k: {1.0: 5.0 + 0.1 * k, 10.0: 6.0 + 0.05 * k} for k in range(3)}, l0=8.3)
    ref = R.SweepRow("A, warmup", {k: {1.0: 5.0 + 0.1 * k, 10.0: 5.2 + 0.02 * k} for k in range(3)}, l0=8.3)
    j = R.sweep_fails(row, ref)
    cols = _interval_columns(j)
    assert cols["estimate_pct"] is None and cols["ci_low_pct"] is None
    assert cols["estimate_nats"] == round(j.diff.estimate, 4) and cols["ci_low_nats"] < cols["estimate_nats"]
    ppl = _interval_columns(R.approx(R.cell_stats("x", {0: 101.0, 1: 102.0, 2: 99.0}),
                                     R.cell_stats("r", {0: 100.0, 1: 100.0, 2: 100.0})))
    assert ppl["estimate_pct"] is not None and ppl["estimate_nats"] is None


def test_a_from_csv_build_keeps_the_column_order_when_it_adds_a_statistic(tmp_path):
    """A cells.csv written before a statistic existed (here, without the per-matrix clip fractions) gets it from
    curves.csv in its place among the RMS(U) columns, so rebuilding from the rebuilt cells.csv changes nothing."""
    src = Path(__file__).parent.parent / "results" / "clipping" / "cpu"
    old = tmp_path / "old"
    old.mkdir()
    cells = pd.read_csv(src / "cells.csv", dtype=str, keep_default_na=False)
    cells.drop(columns=[c for c in cells.columns if c.endswith(".frac_clipped")]).to_csv(old / "cells.csv", index=False)
    shutil.copy(src / "curves.csv", old / "curves.csv")
    for source, out in ((old, "a"), (tmp_path / "a" / "clipping" / "cpu", "b")):
        assert CLI.main(["--exp", "clipping", "--scale", "cpu", "--from-csv", str(source / "cells.csv"),
                         "--out", str(tmp_path / out)]) == 0
    a, b = (tmp_path / o / "clipping" / "cpu" / "cells.csv" for o in ("a", "b"))
    assert any(c.endswith(".frac_clipped") for c in pd.read_csv(a, nrows=0).columns)
    assert a.read_text() == b.read_text()


def test_a_panel_with_no_curve_says_why_and_draws_no_empty_legend(monkeypatch):
    """A table built while a sweep runs has cells with no finished run: their panel says "unfinished" (or
    "crashed", or "diverged" with its ×), never that every seed diverged when none did, and no panel asks
    matplotlib for a legend with nothing in it."""
    import warnings

    from factorial.report import plots

    runs, _ = D.load_local(RUNS, "table2", "tiny")  # row I: one unfinished run; row H: one crashed run, without warmup
    runs = runs[~runs["run_id"].str.startswith("row=A,optim.clip_threshold=1.0")]  # H with warmup: H's panel empty too
    cells = D.aggregate(runs)
    rows = []
    for rid, outcome in zip(runs["run_id"], runs["outcome"]):
        if outcome == "ok":
            rows += [{"run_id": rid, "step": s, "val/ppl": 100.0 + 400 * math.exp(-s / 8)} for s in range(10, 110, 10)]
    figs = _figures_of(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.table2_curves(runs, cells, pd.DataFrame(rows), Path("."), "curves.png")
        plots.generic_curves(runs, cells, pd.DataFrame(rows), None, Path("."), "curves.png", "t")
    said = {}
    for fig in figs:
        for ax in fig.axes:
            for t in ax.texts:
                said.setdefault(ax.get_title(loc="left").split(":")[0].split(",")[0], []).append(t.get_text())
    assert "no point logged:\nof 1 run, 1 unfinished" in said["I"]
    assert "no point logged:\nof 1 run, 1 crashed" in said["H"]
    assert not any("diverged" in t for ts in said.values() for t in ts)
