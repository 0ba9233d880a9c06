"""A study declares its report: the ``report:`` section of its study file (factorial.report.spec).

The table's layout, the figures and the claims a study is home to come from its YAML alone: a study of
one's own, written only as a file outside experiments/, gets them from ``make table`` without a line of
code; a bad section is refused, naming the key, the value and what is allowed, before anything is read,
run or written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from factorial import sweep as SW
from factorial import table as CLI
from factorial.report import claims as CL
from factorial.report import data as D
from factorial.report import spec as S
from factorial.report import tables as T

FIG1_RUNS = Path(__file__).parent / "fixtures" / "runs" / "fig1" / "tiny"

MY_STUDY = """\
description: my own look at Figure 1 — rows A and G with warmup, RMS(U) every step
grid:
  row: [A, G]
  schedule.warmup: [true]
fixed: [train.rms_every=1]
"""


@pytest.fixture(autouse=True)
def quiet_wandb(monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "FACTORIAL_TABLE_WANDB"):
        monkeypatch.delenv(var, raising=False)


def my_study(tmp_path: Path, report: str = "") -> tuple[Path, Path]:
    """A study file outside experiments/ and synthetic runs of its two cells (the fig1 fixture, relabelled)."""
    path = tmp_path / "studies" / "mine.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MY_STUDY + report)
    runs = tmp_path / "runs"
    if not (runs / "mine").exists():
        shutil.copytree(FIG1_RUNS, runs / "mine" / "tiny")
        for cfg in (runs / "mine" / "tiny").glob("*/*/config.yaml"):
            cfg.write_text(cfg.read_text().replace("exp: fig1", "exp: mine", 1))
    return path, runs


def build(tmp_path: Path, path: Path, runs: Path, out: str = "out") -> int:
    return CLI.main(["--exp", str(path), "--scale", "tiny", "--runs-root", str(runs), "--out", str(tmp_path / out)])


def test_my_own_study_gets_the_figure_1_table_plot_and_claims_it_declares(tmp_path):
    path, runs = my_study(tmp_path, """\
report:
  table: fig1
  plots: [fig1]
  claims: [C13, C3]
""")
    assert build(tmp_path, path, runs) == 0
    d = tmp_path / "out" / "mine" / "tiny"
    assert "## Figure 1 — RMS of the unscaled update" in (d / "table.md").read_text()
    # only the figure it declares: Figure 1, and no curves
    assert sorted(p.name for p in d.glob("*.png")) == ["fig1_rms_u.png"]
    report = (d / "REPORT.md").read_text()
    assert "![fig1_rms_u.png](fig1_rms_u.png)" in report and "curves.png" not in report
    verdicts = pd.read_csv(d / "claims.csv", keep_default_na=False)
    c13 = verdicts[verdicts["claim"] == "C13"]
    assert set(c13["verdict"]) == {"reproduced"}  # A strays far from 1, G stays near (the fixture's design)
    # home to C3, it judges every part of it, even without B's cells: inconclusive, naming the missing cell
    c3 = verdicts[verdicts["claim"] == "C3"]
    assert list(c3["verdict"]) == ["inconclusive"] and "missing cell: B, warmup" in c3["reason"].iloc[0]
    assert "### C3 — " in report and "### C13 — " in report


def test_without_a_report_section_a_study_gets_the_generic_report(tmp_path):
    path, runs = my_study(tmp_path)
    assert build(tmp_path, path, runs) == 0
    d = tmp_path / "out" / "mine" / "tiny"
    table = (d / "table.md").read_text()
    assert "## Final validation perplexity, one row per cell" in table and "Figure 1 —" not in table
    # the default figures: curves, training loss, and Figure 1 since A and G with warmup logged RMS(U)
    assert sorted(p.name for p in d.glob("*.png")) == ["curves.png", "fig1_rms_u.png", "train_loss.png"]
    verdicts = pd.read_csv(d / "claims.csv", keep_default_na=False).groupby("claim")["verdict"].agg(set)
    assert verdicts["C13"] == {"reproduced"}  # it holds every cell C13 compares
    assert verdicts["C3"] == {"not covered"}  # home to nothing: it cannot speak to C3 without B


def test_a_pivot_table_and_its_sweep_from_yaml(tmp_path):
    path, runs = my_study(tmp_path, """\
report:
  table:
    title: My pivot
    rows: [row]
    columns: [schedule.warmup]
  plots: [curves]
""")
    assert build(tmp_path, path, runs) == 0
    d = tmp_path / "out" / "mine" / "tiny"
    table = (d / "table.md").read_text()
    assert "## My pivot" in table and "| row | warmup |" in table and "| A | " in table and "| G | " in table
    assert sorted(p.name for p in d.glob("*.png")) == ["curves.png"]


BAD_SECTIONS = [
    ("report:\n  tabel: fig1\n", "mine.yaml: invalid key 'tabel' in report", "allowed: table, plots, claims, backup_claims"),
    ("report:\n  table: figure1\n", "mine.yaml: invalid report.table='figure1'", "allowed: cells | table2 | table3 | fig1"),
    ("report:\n  plots: [fig1, rms]\n", "plots entry 'rms'", "allowed: curves, row_curves, train_loss"),
    ("report:\n  plots: [fig1, fig1_ag]\n", "fig1 and fig1_ag draw the same file", "allowed: one of them"),
    ("report:\n  plots: [sweep]\n", "plots entry 'sweep'", "allowed: a pivot table with a sweep field"),
    ("report:\n  claims: [C13, C16]\n", "invalid report.claims entry 'C16'", "allowed: C1, C2, C3"),
    ("report:\n  claims: [C13]\n  backup_claims: [C13]\n", "claim 'C13' is in both", "allowed: one of them"),
    ("report:\n  claims: C13\n", "claims='C13'", "allowed: a list of claim ids"),
    ("report:\n  table: {title: t, rows: [schedule.warmup], sweep: schedule.warmup}\n", "sweep='schedule.warmup'",
     "allowed: a number among the rows"),
    ("report:\n  table: {rows: [row]}\n", "table.title=None", "allowed: the table's title"),
    ("report:\n  controls: {cell: x}\n", "invalid report.controls={'cell': 'x'}", "allowed: a list of mappings"),
    ("report:\n  controls: [{cell: 'row=A,schedule.warmup=true', ref: x}]\n", "invalid key 'ref' in report.controls[0]",
     "allowed: cell, reference"),
    ("report:\n  controls: [{cell: 'row=A,schedule.warmup=true', reference: 3}]\n", "report.controls[0].reference=3",
     "allowed: a cell name of the study"),
    ("report:\n  controls: [{cell: 'row=A,schedule.warmup=true', reference: 'row=A,schedule.warmup=true'}]\n",
     "cell and reference are both 'row=A,schedule.warmup=true'", "allowed: two different cells"),
    ("report:\n  controls: [{cell: 'row=A,schedule.warmup=false', reference: 'row=A,schedule.warmup=true'}]\n",
     "invalid report.controls[0].cell='row=A,schedule.warmup=false'", "allowed: a cell of the study (row=A,schedule.warmup=true"),
    ("report:\n  table: {title: t, rows: [row], colums: [schedule.warmup]}\n", "invalid key 'colums'",
     "allowed: title, rows, columns, sweep"),
    ("report:\n  table: {title: t, rows: ['optim beta1']}\n", "field 'optim beta1'", "allowed: row, optimizer, or a config key"),
]


@pytest.mark.parametrize("section,names,allowed", BAD_SECTIONS)
def test_a_bad_report_section_is_refused_before_any_work(tmp_path, capsys, section, names, allowed):
    path, runs = my_study(tmp_path, section)
    # make table: exit 2, nothing written
    assert build(tmp_path, path, runs) == 2
    err = capsys.readouterr().err
    assert names in err and allowed in err, err
    assert not (tmp_path / "out").exists()
    # make sweep: exit 2 before any cell runs
    sweep_runs = tmp_path / "sweep-runs"
    assert SW.main(["--exp", str(path), "--scale", "smoke", "--runs-root", str(sweep_runs)]) == 2
    err = capsys.readouterr().err
    assert names in err and allowed in err, err
    assert not sweep_runs.exists()


def test_a_pivot_on_a_knob_the_cells_lack_is_refused_before_anything_is_written(tmp_path, capsys):
    path, runs = my_study(tmp_path, "report:\n  table: {title: t, rows: [model.nonsense]}\n")
    assert build(tmp_path, path, runs) == 2
    err = capsys.readouterr().err
    assert "invalid report.table field 'model.nonsense'" in err and "allowed: row, optimizer, or one of" in err
    assert "model.d_model" in err
    assert not (tmp_path / "out").exists()


def test_every_committed_study_declares_a_valid_report():
    homes = S.claim_homes()
    # each claim has a home, and the summary's order is the one the paper's studies call for
    assert set(homes) == set(CL.CLAIM_IDS)
    # (table2_deep and deep_lr are the deep post-LN regime's, at their own scale cpu_deep: a scale's summary
    # takes the first home with results there)
    assert homes["C4"] == ["table2", "table2_deep", "calibrate", "deep_lr"]
    assert homes["C13"] == ["fig1", "table2_deep"] and homes["C14"] == ["table3"]
    assert homes["C15"] == ["table2", "table2_deep", "factoring", "table3"]
    for name in SW.available_studies():
        spec = S.report_of(name)
        assert set(spec.plots) <= set(S.PLOTS)
    assert S.report_of("table2").table == "table2" and S.report_of("smoke") == S.ReportSpec()
    assert S.report_of("a study with no file") == S.ReportSpec()  # results rebuilt from a cells.csv alone


def test_the_spec_and_the_report_code_name_the_same_tables_fields_and_plots():
    assert set(T.NAMED_FIELDS) == set(S.NAMED_FIELDS)
    for name, numeric in S.NAMED_FIELDS.items():
        assert (T.NAMED_FIELDS[name].numeric is not None) == numeric, name
    assert set(T.PRESET_TABLES) | {"cells"} == set(S.TABLES)
    assert set(S.DEFAULT_PLOTS) == set(S.TABLES) | {"pivot"}


def test_a_study_reports_by_its_file_not_by_its_name(tmp_path):
    """table3's study file copied under another name reports the same table, figures and verdicts."""
    cells = SW.EXPERIMENTS_DIR.parent / "results" / "table3" / "cpu" / "cells.csv"
    renamed = tmp_path / "my_table3.yaml"
    shutil.copy(SW.EXPERIMENTS_DIR / "table3.yaml", renamed)
    for exp, out in (("table3", "a"), (str(renamed), "b")):
        assert CLI.main(["--exp", exp, "--scale", "cpu", "--from-csv", str(cells), "--out", str(tmp_path / out)]) == 0
    a, b = tmp_path / "a" / "table3" / "cpu", tmp_path / "b" / "my_table3" / "cpu"
    for name in ("table.md", "table.csv", "claims.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    assert "## Table 3 — embedding scaling" in (b / "table.md").read_text()
    assert sorted(p.name for p in b.glob("*.png")) == sorted(p.name for p in a.glob("*.png"))
    assert (b / "table3_bars_confirmation.png").is_file()  # table3 names rules: its figures come per pass


def test_a_declared_positive_control_is_judged_in_the_report(tmp_path):
    """G with warmup as a 'control' against A with warmup: it passes when G is ≥ SCREEN_FAIL × A (or most of
    its seeds diverged), and the report says which; an unfinished control is 'not run yet'."""
    from factorial.report import rules as R
    from factorial.report import screen as SC

    path, runs = my_study(tmp_path, "report:\n  controls:\n    - {cell: 'row=G,schedule.warmup=true', "
                                    "reference: 'row=A,schedule.warmup=true'}\n")
    assert build(tmp_path, path, runs) == 0
    report = (tmp_path / "out" / "mine" / "tiny" / "REPORT.md").read_text()
    cells = D.aggregate(CLI.load(CLI.parse_args(["--exp", str(path), "--scale", "tiny", "--runs-root", str(runs)]))[0])
    by = {c["cells"]: c for c in cells.to_dict("records")}
    ratio = by["row=G,schedule.warmup=true"]["ppl_mean"] / by["row=A,schedule.warmup=true"]["ppl_mean"]
    [result] = SC.control_results(cells, S.report_of(str(path)).controls)
    assert result["ratio"] == pytest.approx(ratio) and result["passes"] == (ratio >= R.SCREEN_FAIL)
    assert "## Positive controls" in report and f"| {ratio:.2f} |" in report
    assert ("the harness sees a failure" if ratio >= R.SCREEN_FAIL else "the control did not fail") in report
    # the same control over cells where G's seeds diverged passes; over cells without G it has not run yet
    diverged = cells.copy()
    g = diverged["cells"] == "row=G,schedule.warmup=true"
    diverged.loc[g, "n_diverged"] = diverged.loc[g, "n"]
    [result] = SC.control_results(diverged, S.report_of(str(path)).controls)
    assert result["passes"] is True and result["diverged"].split("/")[0] == result["diverged"].split("/")[1]
    [result] = SC.control_results(cells[~g], S.report_of(str(path)).controls)
    assert result["passes"] is None and "not run yet" in SC.control_markdown([result])


def test_the_training_loss_figure_marks_the_unigram_entropy_when_the_runs_recorded_it(tmp_path):
    """Runs that recorded the corpus's unigram baseline (meta.json data) get it as a cells.csv column and as a
    line in the training-loss figure; runs without it (every run trained before it was recorded) get neither."""
    import json

    path, runs = my_study(tmp_path, "report:\n  plots: [train_loss]\n")
    assert build(tmp_path, path, runs, "before") == 0
    before = tmp_path / "before" / "mine" / "tiny"
    assert "train_unigram_entropy" not in pd.read_csv(before / "cells.csv").columns
    assert "unigram" not in (before / "REPORT.md").read_text()
    for meta_path in (runs / "mine" / "tiny").glob("*/*/meta.json"):
        meta = json.loads(meta_path.read_text())
        meta["data"].update(train_unigram_entropy=5.4321, validation_unigram_xent=5.61)
        meta_path.write_text(json.dumps(meta))
    assert build(tmp_path, path, runs, "after") == 0
    after = tmp_path / "after" / "mine" / "tiny"
    cells = pd.read_csv(after / "cells.csv")
    assert set(cells["train_unigram_entropy"]) == {5.4321} and set(cells["validation_unigram_xent"]) == {5.61}
    assert "unigram entropy of the training split (5.432 nats per token)" in (after / "REPORT.md").read_text()


def test_a_study_of_table_2_rows_draws_the_training_loss_one_panel_per_row(tmp_path):
    """With row_curves declared, the training-loss figure is a grid of rows (warmup blue, no warmup red) on a log
    step axis with the unigram line, as the validation curves are — not one panel holding every cell's line."""
    import json

    import matplotlib.image as mpimg

    path, runs = my_study(tmp_path, "report:\n  plots: [row_curves, train_loss]\n")
    for meta_path in (runs / "mine" / "tiny").glob("*/*/meta.json"):
        meta = json.loads(meta_path.read_text())
        meta["data"].update(train_unigram_entropy=5.4321, validation_unigram_xent=5.61)
        meta_path.write_text(json.dumps(meta))
    assert build(tmp_path, path, runs) == 0
    out = tmp_path / "out" / "mine" / "tiny"
    report = (out / "REPORT.md").read_text()
    caption = report.split("![train_loss.png](train_loss.png)", 1)[1].split("\n\n")[1]
    assert "Training loss (nats) against step, on a log axis from the first logged step, one panel per Table 2 row" in caption
    assert "unigram entropy of the training split (5.432 nats per token)" in caption
    curves = report.split("![curves.png](curves.png)", 1)[1].split("\n\n")[1]
    assert "each cell the mean of its seeds with a min–max band" in curves and "one line per seed" not in curves
    # two rows (A, G): two panels side by side, as wide as the validation curves' grid
    loss, val = mpimg.imread(out / "train_loss.png"), mpimg.imread(out / "curves.png")
    assert loss.shape[1] == pytest.approx(val.shape[1], rel=0.1)


def test_the_rms_rows_figure_draws_rms_u_per_row_when_the_runs_logged_it(tmp_path):
    """rms_rows: RMS(U) (the mean over tensors) against step, one panel per Table 2 row, with the logging interval
    and "descriptive" in its caption; runs that did not log opt/rms_u_mean get no such figure (and no error)."""
    import json

    path, runs = my_study(tmp_path, "report:\n  plots: [row_curves, rms_rows]\n")
    assert build(tmp_path, path, runs, "without") == 0
    without = tmp_path / "without" / "mine" / "tiny"
    assert not (without / "rms_u_rows.png").exists() and "rms_u_rows" not in (without / "REPORT.md").read_text()
    for metrics in (runs / "mine" / "tiny").glob("*/*/metrics.jsonl"):
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        for r in records:
            if r["step"] % 4 == 0 and "rms_u/tok_emb" in r:
                r["opt/rms_u_mean"] = 3.0 if r["step"] == 8 else 0.5
        metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert build(tmp_path, path, runs, "with") == 0
    out = tmp_path / "with" / "mine" / "tiny"
    assert (out / "rms_u_rows.png").exists()
    caption = (out / "REPORT.md").read_text().split("![rms_u_rows.png](rms_u_rows.png)", 1)[1].split("\n\n")[1]
    assert "RMS(U), mean over tensors against step, on a log axis from the first logged step, one panel per Table 2 row" in caption
    assert "Logged every 4 steps" in caption and "Descriptive: no rule reads this figure." in caption
    curves = pd.read_csv(out / "curves.csv")
    assert curves["opt/rms_u_mean"].max() == 3.0  # the burst is in the data the figure is drawn from
