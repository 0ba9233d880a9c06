"""Pre-registration: rules as data, their fingerprint, and the fingerprint every run of a study records."""

from __future__ import annotations

import json

import pytest
import yaml

from factorial import store
from factorial import sweep as S
from factorial.report import prereg as P
from factorial.report import rules as R

from cells import sweep_here


def _rules_file(tmp_path, **changes) -> str:
    data = yaml.safe_load(R.rules_path(R.DEFAULT_RULES).read_text())
    data.update(changes)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return str(path)


def test_the_default_rules_are_the_active_thresholds():
    rules = R.load_rules()
    assert R.EQ_MARGIN == pytest.approx(__import__("math").log(rules.data["equivalence_margin"]))
    assert R.MIN_SEEDS == rules.data["min_seeds"] == 3
    assert R.FIG1_MATRICES == tuple(rules.data["rms"]["matrices"])
    assert R.A_FAILS_CLAIMS == {"C5", "C6", "C7", "C9", "C11"}


def test_the_fingerprint_follows_every_rule_and_nothing_else(tmp_path):
    base = P.fingerprint(R.load_rules())
    assert P.fingerprint(R.load_rules()) == base  # stable across loads
    same = R.load_rules(_rules_file(tmp_path))  # the same data in another file, other comments and order
    assert P.fingerprint(same) == base
    for change in ({"fail_margin": 1.3}, {"min_seeds": 4}, {"confirmatory_seeds": [3, 4, 5, 6]},
                   {"preconditions": {"a_fails": ["C6", "C7", "C9"]}}):
        assert P.fingerprint(R.load_rules(_rules_file(tmp_path, **change))) != base, change


@pytest.mark.parametrize("change, expected", [
    ({"fail_margin": 0.9}, "invalid rules file .*fail_margin=0.9; allowed: a number > 1"),
    ({"min_seeds": 0}, "min_seeds=0; allowed: an integer ≥ 1"),
    ({"divergence": "any"}, "divergence='any'; allowed: majority"),
    ({"confirmatory_seeds": [3, 3]}, "confirmatory_seeds=\\[3, 3\\]; allowed: a non-empty list of distinct"),
    ({"rms": {"matrices": ["lm_head"], "band": 1.5, "strays_far": 0.05, "stays_near": 0.025, "skip_steps": 5}},
     "rms.matrices=\\['lm_head'\\]; allowed: .*tok_emb"),
    ({"preconditions": {"a_fails": ["C16"]}}, "a_fails=\\['C16'\\]; allowed: a list of distinct claim ids"),
    ({"margin": 1.05}, "invalid key 'margin'"),
    ({"signature": {"fails": ["A"], "stable": ["A", "B"]}}, "row A is listed under both fails and stable"),
    ({"signature": {"fails": ["A", "Q1"], "stable": []}}, "signature.fails=\\['A', 'Q1'\\]; allowed: a list of distinct Table 2 rows"),
    ({"signature": {"fails": ["A"]}}, "missing key 'stable' in .*signature"),
])
def test_a_bad_rules_file_names_the_key_the_value_and_what_is_allowed(tmp_path, change, expected):
    with pytest.raises(R.RulesError, match=expected):
        R.load_rules(_rules_file(tmp_path, **change))


def test_a_rules_file_that_leaves_a_rule_out_is_refused(tmp_path):
    data = yaml.safe_load(R.rules_path(R.DEFAULT_RULES).read_text())
    del data["min_seeds"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(R.RulesError, match="missing key 'min_seeds'"):
        R.load_rules(str(path))
    with pytest.raises(R.RulesError, match="invalid rules='nope'.*allowed: deep, paper"):
        R.load_rules("nope")


def test_a_study_with_bad_rules_exits_2_before_anything_runs(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text("seeds: [0]\ncells:\n  - {row: A, schedule.warmup: false}\nrules: nope\n")
    proc = sweep_here("--exp", str(study), "--scale", "smoke", root=tmp_path / "runs")
    assert proc.returncode == 2 and "invalid rules='nope'" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_every_run_a_study_trains_records_its_rules(tmp_path, cache_dir):
    rules = _rules_file(tmp_path, confirmatory_seeds=[1])
    study = tmp_path / "reg.yaml"
    study.write_text(f"seeds: [0]\ncells:\n  - {{row: O, schedule.warmup: false}}\nrules: {rules}\n")
    loaded = S.load_study(str(study))
    assert loaded.cells[0].seeds == [0, 1]  # the confirmatory seeds join every cell
    proc = sweep_here("--exp", str(study), "--scale", "smoke", "--jobs", "2", "--", "logger=none", "train.steps=4",
                      root=tmp_path / "runs", cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    fp = P.fingerprint(R.load_rules(rules))
    for seed in (0, 1):
        meta = json.loads(next((tmp_path / "runs" / "reg").rglob(f"seed{seed}/meta.json")).read_text())
        assert meta["rules"] == f"{rules} {fp}"
        assert [s["rules"] for s in meta["starts"]] == [f"{rules} {fp}"]


def _as_clean(root) -> None:
    """The runs' meta.json as from a clean clone (the checkout the tests run in may have local changes)."""
    for meta_path in root.rglob("meta.json"):
        meta = json.loads(meta_path.read_text())
        meta["git"]["dirty"] = False
        meta_path.write_text(json.dumps(meta))


def _table(study: str, root, out) -> None:
    from factorial import table

    assert table.main(["--exp", study, "--scale", "smoke", "--runs-root", str(root), "--out", str(out)]) == 0


def _registrations(out, name: str) -> dict[str, set]:
    import pandas as pd

    frame = pd.read_csv(out / name / "smoke" / "claims.csv", keep_default_na=False)
    frame = frame[frame["verdict"] != "not covered"]
    return {p: set(g["registration"]) | {"note: " + n for n in g["registration_note"]} for p, g in frame.groupby("pass")}


def test_a_threshold_changed_after_the_runs_makes_their_verdicts_exploratory(tmp_path, cache_dir):
    """Train a two-cell study under registered rules, judge it (confirmatory), then change one margin in the
    rules file and judge the same runs again: every verdict of the confirmation is now exploratory, and says why."""
    rules = _rules_file(tmp_path, confirmatory_seeds=[1, 2, 3])
    study = tmp_path / "reg.yaml"
    study.write_text(f"seeds: [0]\ncells:\n  - {{row: A, schedule.warmup: true}}\n  - {{row: C, schedule.warmup: true}}\n"
                     f"fixed: [train.steps=6]\nrules: {rules}\n")
    root, out = tmp_path / "runs", tmp_path / "results"
    proc = sweep_here("--exp", str(study), "--scale", "smoke", "--jobs", "2", "--", "logger=none",
                      root=root, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    _as_clean(root)

    _table(str(study), root, out)
    before = _registrations(out, "reg")
    assert "confirmatory" in before["confirmation"] and "exploratory" not in before["confirmation"]
    assert before["exploration"] >= {"exploratory"}  # seed 0: not a confirmatory seed
    # the table comes per pass, each from its own seeds: no table mixes seeds read before the rules with later ones
    table = (out / "reg" / "smoke" / "table.md").read_text()
    titles = [line for line in table.splitlines() if line.startswith("## ")]
    assert len(titles) == 2 and titles[0].endswith("— confirmation (seeds 1–3)") and titles[1].endswith("— exploration (seed 0)"), titles
    first, second = table.split(titles[1])
    assert "(n=3)" in first and "(n=1)" not in first and "(n=1)" in second and "(n=3)" not in second
    # and so do the figures: each once per pass, the caption naming its seeds
    figures = sorted(p.name for p in (out / "reg" / "smoke").glob("*.png"))
    confirm = {f.removesuffix("_confirmation.png") for f in figures if f.endswith("_confirmation.png")}
    explore = {f.removesuffix("_exploration.png") for f in figures if f.endswith("_exploration.png")}
    assert confirm and confirm == explore and len(figures) == 2 * len(confirm), figures
    report = (out / "reg" / "smoke" / "REPORT.md").read_text()
    assert report.index("*Confirmation (seeds 1–3): ") < report.index("*Exploration (seed 0): ")

    data = yaml.safe_load(open(rules))
    data["equivalence_margin"] = 1.10  # decided after reading the numbers
    open(rules, "w").write(yaml.safe_dump(data, allow_unicode=True))
    _table(str(study), root, out)
    after = _registrations(out, "reg")
    assert "exploratory" in after["confirmation"] and "confirmatory" not in after["confirmation"]
    note = next(n for n in after["confirmation"] if n.startswith("note: "))
    assert "6 of 6 runs were trained under other rules" in note and "a rule changed after the runs" in note
    claims_md = (out / "CLAIMS-smoke.md").read_text()
    assert "**Confirmatory: 0 of 15 reproduced**" in claims_md


def test_a_missing_confirmatory_run_leaves_the_confirmation_incomplete(tmp_path, cache_dir):
    rules = _rules_file(tmp_path, confirmatory_seeds=[1, 2])
    study = tmp_path / "inc.yaml"
    study.write_text(f"seeds: [1]\ncells:\n  - {{row: A, schedule.warmup: true}}\n  - {{row: C, schedule.warmup: true}}\n"
                     f"fixed: [train.steps=6]\nrules: {rules}\n")
    root, out = tmp_path / "runs", tmp_path / "results"
    proc = sweep_here("--exp", str(study), "--scale", "smoke", "--seeds", "1", "--jobs", "2", "--", "logger=none",
                      root=root, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    _as_clean(root)
    _table(str(study), root, out)
    regs = _registrations(out, "inc")
    assert set(regs) == {"confirmation"}
    assert regs["confirmation"] == {"incomplete", "note: 2 of the 4 planned confirmatory runs have finished; the "
                                                  "verdicts become confirmatory when all have"}
    figures = [p.name for p in (out / "inc" / "smoke").glob("*.png")]
    assert figures and not any(f.endswith(("_confirmation.png", "_exploration.png")) for f in figures)  # one pass


def _signature_cells(tmp_path, ppl: dict[tuple[str, str], float | None], **knobs):
    import pandas as pd

    from factorial.report import data as D

    rows = []
    for (row, warmup), value in ppl.items():
        # seed-to-seed wiggles that differ between cells, so that no paired difference is exactly constant
        wiggles = {("A", "true"): (1.0, 1.01, 0.99), ("A", "false"): (1.01, 0.98, 1.0),
                   ("B", "false"): (0.97, 1.0, 1.03)}.get((row, warmup), (1.0, 1.0, 1.0))
        for seed, wiggle in zip((10, 11, 12), wiggles):
            rows.append({"run_id": f"{row}-{warmup}/seed{seed}", "row": row, "schedule.warmup": warmup, "seed": seed,
                         "status": "completed" if value else "diverged", "val_ppl": value * wiggle if value else "",
                         **knobs})
    path = tmp_path / "cells.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    runs, _ = D.load_csv(path)
    return D.aggregate(runs)


def test_the_signature_holds_only_when_a_fails_and_every_listed_row_behaves_as_the_papers(tmp_path, rules_with):
    from factorial.report import signature as SG

    paper_like = {("A", "true"): 100.0, ("A", "false"): 400.0, ("C", "false"): None, ("B", "false"): 104.0}
    with rules_with(signature={"fails": ["A", "C"], "stable": ["B"]}):
        (res,) = SG.evaluate(_signature_cells(tmp_path, paper_like))
        assert res.verdict == "holds"
        assert [(c.row, c.matches) for c in res.checks] == [("A", True), ("C", True), ("B", True)]
        assert "C, no warmup diverged in 3 of 3 seeds" in res.checks[1].judgement.reason
        # momentum failing without warmup contradicts the paper: the signature does not hold
        (res,) = SG.evaluate(_signature_cells(tmp_path, {**paper_like, ("B", "false"): 380.0}))
        assert res.verdict == "does not hold" and res.checks[2].matches is False
        # A does not fail: nothing of the pattern is there
        (res,) = SG.evaluate(_signature_cells(tmp_path, {**paper_like, ("A", "false"): 101.0}))
        assert res.verdict == "does not hold" and res.checks[0].matches is False
        # a row between the margins is undetermined, and so is the signature
        (res,) = SG.evaluate(_signature_cells(tmp_path, {**paper_like, ("B", "false"): 125.0}))
        assert res.verdict == "undetermined"
        md = SG.markdown([("confirmation (seeds 10–12), confirmatory", res)])
        assert "the signature undetermined" in md and "| B | stable |" in md
    # a study that runs some of the listed rows (deep_lr: A, B, H, O): the others are undetermined, named in one
    # line of the report instead of a table row each, and kept in signature.csv
    with rules_with(signature={"fails": ["A", "C", "D"], "stable": ["B", "K"]}):
        (res,) = SG.evaluate(_signature_cells(tmp_path, paper_like))
        assert res.verdict == "undetermined" and [c.row for c in res.checks if not c.has_runs] == ["D", "K"]
        md = SG.markdown([("confirmation (seeds 10–12), confirmatory", res)])
        assert "| C | fails |" in md and "| D |" not in md and "| K |" not in md
        assert "No runs of these rows here, so undetermined: D, K (listed in signature.csv)" in md
        frame = SG.frame([("c", res)])
        assert list(frame["row"]) == ["A", "C", "D", "B", "K"] and list(frame["has_runs"]) == [True, True, False, True, False]
        out = tmp_path / "results"
        (out / "lr" / "cpu_deep").mkdir(parents=True)
        frame.to_csv(out / "lr" / "cpu_deep" / "signature.csv", index=False)
        from factorial.report import summary as SU
        row = next(line for line in SU.signatures_markdown(out, "cpu_deep").splitlines() if line.startswith("| [lr]"))
        assert row.endswith("| – | no runs of D, K |") and "; C; B +4.0 %" in row
        # a signature.csv written before the column existed: every row has runs
        frame.drop(columns="has_runs").to_csv(out / "lr" / "cpu_deep" / "signature.csv", index=False)
        row = next(line for line in SU.signatures_markdown(out, "cpu_deep").splitlines() if line.startswith("| [lr]"))
        assert row.endswith("| D; K |")
        (res,) = SG.evaluate(_signature_cells(tmp_path, {**paper_like, ("B", "false"): 380.0}))
        assert res.verdict == "does not hold"  # a row that is run and behaves against the paper still decides it
        # a context is written as the claims and the table sections write it (multiplier=2, not 2.0)
        import pandas as pd

        (tmp_path / "x2").mkdir()
        res = SG.evaluate(pd.concat([_signature_cells(tmp_path, paper_like, **{"schedule.multiplier": 0.5}),
                                     _signature_cells(tmp_path / "x2", paper_like, **{"schedule.multiplier": 2.0})],
                                    ignore_index=True))
        assert [r.context for r in res] == [{"schedule.multiplier": 0.5}, {"schedule.multiplier": 2.0}]
        assert list(SG.frame([("c", r) for r in res])["context"].unique()) == ["schedule.multiplier=0.5",
                                                                               "schedule.multiplier=2"]
        assert "confirmatory @ schedule.multiplier=2:" in SG.markdown([("c, confirmatory", r) for r in res])
    with rules_with():
        assert SG.evaluate(_signature_cells(tmp_path, paper_like)) == []  # no signature in the rules: nothing


def test_the_scale_summary_gives_each_signatures_verdict_with_its_rows(tmp_path, rules_with):
    """CLAIMS-<scale>.md ends with every pre-registered signature of the scale's studies (their signature.csv):
    the verdict per pass, and which rows behaved as the paper has them, which did not, which are undetermined."""
    import pandas as pd

    from factorial.report import signature as SG
    from factorial.report import summary as SU

    paper_like = {("A", "true"): 100.0, ("A", "false"): 400.0, ("C", "false"): None, ("B", "false"): 380.0}
    with rules_with(signature={"fails": ["A", "C"], "stable": ["B"]}):
        (res,) = SG.evaluate(_signature_cells(tmp_path, paper_like))
    out = tmp_path / "results"
    (out / "deep" / "cpu_deep").mkdir(parents=True)
    SG.frame([("confirmation (seeds 10–12), confirmatory", res)]).to_csv(out / "deep" / "cpu_deep" / "signature.csv",
                                                                         index=False)
    md = SU.signatures_markdown(out, "cpu_deep")
    row = next(line for line in md.splitlines() if line.startswith("| [deep]"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[:4] == ["[deep](deep/cpu_deep/REPORT.md)", "confirmation (seeds 10–12), confirmatory", "–",
                         "**does not hold**"]
    a = res.checks[0].judgement.diff
    assert cells[4] == f"A {R.pct(a.estimate):+.1f} % [{R.pct(a.lo):+.1f}, {R.pct(a.hi):+.1f}]; C"  # C: all diverged
    assert cells[5].startswith("B +2") and cells[6] == "–"  # momentum failing: against the paper
    # the csv keeps the numbers unrounded, so CLAIMS prints each row as the study's REPORT does (rounded to two
    # decimals first, +0.7468 became +0.75 and printed +0.8 beside the report's +0.7)
    frame = pd.read_csv(out / "deep" / "cpu_deep" / "signature.csv")
    for c, r in zip(res.checks, frame.to_dict("records")):
        d = c.judgement.diff
        if d is not None:
            assert (r["ratio_pct"], r["ci_low_pct"], r["ci_high_pct"]) == (R.pct(d.estimate), R.pct(d.lo), R.pct(d.hi))
    assert SU.signatures_markdown(out, "cpu") == ""
    pd.DataFrame([{"claim": "C4", "context": "", "verdict": "reproduced", "reason": "r"}]).to_csv(
        out / "deep" / "cpu_deep" / "claims.csv", index=False)
    SU.write(out, "cpu_deep")
    assert (out / "CLAIMS-cpu_deep.md").read_text().endswith(md)


def test_the_deep_regime_is_registered_with_its_own_seeds_and_signature():
    deep = R.load_rules("deep")
    paper = R.load_rules("paper")
    assert deep.confirmatory_seeds == (10, 11, 12)
    same = {k: v for k, v in deep.data.items() if k not in ("confirmatory_seeds", "signature")}
    assert same == {k: v for k, v in paper.data.items() if k != "confirmatory_seeds"}  # the cpu confirmation's thresholds
    assert set(deep.data["signature"]["fails"]) | set(deep.data["signature"]["stable"]) == set("ABCDEFGHIJKLMNOP")
    for study in ("table2_deep", "deep_lr"):
        s = S.load_study(study)
        assert s.rules.name == "deep" and all(c.seeds == [10, 11, 12] for c in s.cells)


def test_committed_confirmation_runs_were_trained_under_the_rules_as_they_are_now():
    """Every committed run on the confirmatory seeds of a study that names rules records their current
    fingerprint and a clean tree: a rule edited after those runs (or a run from a dirty tree) fails here
    before it silently turns the confirmation exploratory."""
    from factorial.layout import EXPERIMENTS_DIR, REPO_ROOT

    checked = 0
    for study_file in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        raw = yaml.safe_load(study_file.read_text()) or {}
        if not raw.get("rules"):
            continue
        rules = R.load_rules(raw["rules"])
        want = f"{rules.name} {P.fingerprint(rules)}"
        for store_path in sorted((REPO_ROOT / "results" / study_file.stem).glob("*/runs.jsonl.gz")):
            for rid, record in store.load(store_path).items():
                if int(rid.rsplit("/seed", 1)[1]) not in rules.confirmatory_seeds:
                    continue
                meta = record["meta"]
                assert meta.get("rules") == want, (store_path, rid)
                assert all(s.get("rules") == want for s in meta["starts"]), (store_path, rid)
                assert meta["git"]["dirty"] is False, (store_path, rid)
                checked += 1
    assert checked >= 12  # the cpu confirmation's runs committed so far (scripts/confirm_cpu.sh)
