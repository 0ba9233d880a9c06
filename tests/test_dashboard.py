"""`make dashboard`: the W&B workspace and report of a study, built offline; only the network is faked.

The fake stands in for W&B's server behind ``wandb.Api`` (GraphQL requests, the project list): everything
``wandb_workspaces`` does before and after the request runs for real, so the specs checked here are the ones
that would be sent. Metric, summary and config names in the panels are checked against what a real (tiny,
offline) run hands to W&B.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import wandb
import wandb_workspaces.reports.v2 as wr
import yaml

from factorial import dashboard as DB
from factorial import train as TR
from factorial.config import REPO_ROOT
from factorial.report import rules as R
from wandb_offline import iter_records, read_offline_wandb_history

RESULTS = REPO_ROOT / "results"
COMMITTED = sorted(p.parent.parent.name for p in RESULTS.glob("*/cpu/cells.csv"))
REQUIRED = ("table2", "fig1", "table3", "calibrate")


@pytest.fixture(autouse=True)
def no_wandb_login(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / ".netrc").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED", "WANDB_DIR", "WANDB_BASE_URL",
                "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)


class Studies(dict):
    """The committed studies' dashboards' inputs, each loaded when a test first asks for it (a worker
    loads only the studies of its own tests)."""

    def __missing__(self, exp: str) -> DB.Study:
        assert exp in COMMITTED, exp
        self[exp] = DB.load_study(exp, "cpu", RESULTS)
        return self[exp]


@pytest.fixture(scope="module")
def studies() -> Studies:
    return Studies()


# --- walking the built objects ------------------------------------------------------------------------


def report_grids(report) -> list[wr.PanelGrid]:
    return [b for b in report.blocks if isinstance(b, wr.PanelGrid)]


def all_panels(workspace, report) -> list:
    panels = [p for s in workspace.sections for p in s.panels]
    return panels + [p for g in report_grids(report) for p in g.panels]


def names_used(workspace, report) -> dict[str, set[str]]:
    """Every history metric, summary key and config key the panels, groupings and filters name."""
    used: dict[str, set[str]] = {"history": set(), "summary": set(), "config": set()}

    def add(metric) -> None:
        if isinstance(metric, wr.Config):
            used["config"].add(metric.name.removesuffix(".value"))
        elif isinstance(metric, wr.SummaryMetric):
            used["summary"].add(metric.name)
        elif isinstance(metric, str):
            used["history"].add(metric)

    for p in all_panels(workspace, report):
        if isinstance(p, wr.LinePlot):
            add(p.x)
            for y in p.y:
                add(y)
            add(p.groupby)
        elif isinstance(p, wr.ScatterPlot):
            add(p.x)
            add(p.y)
        elif isinstance(p, wr.ParallelCoordinatesPlot):
            for c in p.columns:
                add(c.metric)
    for g in workspace.runset_settings.groupby:
        used["config"].add(g.name.removesuffix(".value"))
    for grid in report_grids(report):
        for rs in grid.runsets:
            used["config"] |= {g.removeprefix("config.").removesuffix(".value") for g in rs.groupby}
    return used


# --- a fake W&B server behind wandb.Api -----------------------------------------------------------------


class FakeServer:
    app_url = "https://wandb.example"

    def __init__(self, projects=("factorial",), default_entity="me"):
        self.requests: list[tuple[str, dict]] = []
        self.projects = list(projects)
        self.default_entity = default_entity
        self.api_made = 0

    def execute_graphql(self, query: str, variables: dict | None = None) -> dict:
        variables = dict(variables or {})
        self.requests.append((query, variables))
        if "ProjectInternalId" in query:
            return {"project": {"id": "UHJvamVjdA==", "internalId": "p-1"}}
        if "UpsertView2" in query:  # the workspace
            return {"upsertView": {"view": {"name": "nw-ws", "id": "view-1"}}}
        if "upsertView" in query:  # the report
            return {"upsertView": {"view": {
                "id": "report-1", "name": variables["name"], "displayName": variables["displayName"],
                "description": variables["description"], "spec": variables["spec"],
                "project": {"name": variables["projectName"], "entityName": variables["entityName"]}}}}
        raise AssertionError(f"unexpected request: {query[:80]}")

    def saves(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {"workspace": [], "report": []}
        for q, v in self.requests:
            if "UpsertView2" in q:
                out["workspace"].append(v)
            elif "upsertView" in q:
                out["report"].append(v)
        return out

    def api(self):
        server = self

        class FakeApi:
            def __init__(self, *args, **kwargs):
                server.api_made += 1
                self._service_api = server
                self.default_entity = server.default_entity

            def projects(self, entity=None):
                return [type("P", (), {"name": n})() for n in server.projects]

            def create_project(self, name, entity):
                server.projects.append(name)

        return FakeApi


@pytest.fixture
def server(monkeypatch) -> FakeServer:
    s = FakeServer()
    monkeypatch.setattr(wandb, "Api", s.api())
    monkeypatch.setattr(DB, "network_problem", lambda url, timeout: None)  # the fake server is always reachable
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    return s


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_study(tmp_path: Path, exp: str) -> Path:
    dst = tmp_path / "results" / exp / "cpu"
    shutil.copytree(RESULTS / exp / "cpu", dst)
    return tmp_path / "results"


# --- the objects, for every committed study -------------------------------------------------------------


def test_the_required_studies_are_committed():
    assert set(REQUIRED) <= set(COMMITTED)


@pytest.mark.parametrize("exp", COMMITTED)
def test_workspace_of_every_committed_study(studies, exp):
    study = studies[exp]
    w = DB.build_workspace(study, "ent", "proj")
    names = [s.name for s in w.sections]
    assert names[0] == "Validation perplexity"
    assert "Knobs against final perplexity" in names and "Training" in names
    assert ("Update RMS and clipping" in names) == DB.has_adafactor(study)
    assert ("Claims" in names) == bool(DB.claim_rows(study.claims))

    # the study's runs only, grouped by cell: the saved spec, as wandb_workspaces writes it
    spec = w._to_model().spec.section
    runset = spec.run_sets[0]
    leaves = {(f["key"]["section"], f["key"]["name"], f["op"], json.dumps(f["value"])) for f in runset.filters["filters"]}
    assert ("run", "group", "=", json.dumps(f"{exp}/cpu")) in leaves
    assert ("run", "jobType", "!=", json.dumps("table")) in leaves
    assert [(k.section, k.name) for k in runset.grouping] == [("config", "cell.value")]

    # every cell coloured, warmup blue and no warmup red
    cells = study.cells.to_dict("records")
    cell_names = {n for c in cells for n in DB._names(study, c)}
    assert set(w.runset_settings.group_colors) == cell_names
    for c in cells:
        for n in DB._names(study, c):
            palette = DB.WARMUP_COLORS if c["schedule.warmup"] else DB.NO_WARMUP_COLORS
            assert w.runset_settings.group_colors[n] in palette

    # seeds as mean with a band, by cell, on our step
    plot = w.sections[0].panels[0]
    assert isinstance(plot, wr.LinePlot) and plot.y == [DB.VAL_PPL] and plot.x == DB.STEP
    assert (plot.groupby_aggfunc, plot.groupby_rangefunc) == ("mean", "minmax")
    model = plot._to_model().config
    assert (model.x_axis, model.metrics, model.group_by) == ("step", ["val/ppl"], "cell.value")

    # the claims section: one markdown panel per verdict of claims.csv
    if "Claims" in names:
        claims = w.sections[names.index("Claims")].panels
        assert len(claims) == len(DB.claim_rows(study.claims))
        assert all(isinstance(p, wr.MarkdownPanel) for p in claims)

    # parallel coordinates over the varied knobs, spelled as flat config keys, against final val/ppl
    pc = next(p for p in w.sections[names.index("Knobs against final perplexity")].panels
              if isinstance(p, wr.ParallelCoordinatesPlot))
    accessors = [c._to_model().accessor for c in pc.columns]
    assert accessors[-1] == "summary:val_ppl"
    assert accessors[:-1] == [f"config:{k}.value" for k in DB.knobs(study)]
    assert DB.knobs(study), "a study varies something"
    for k in DB.knobs(study):
        assert k in study.runs.columns, k  # a knob the runs have in their config


@pytest.mark.parametrize("exp", COMMITTED)
def test_report_of_every_committed_study(studies, exp):
    study = studies[exp]
    report = DB.build_report(study, "ent", "proj")
    texts = [b.text for b in report.blocks if isinstance(b, wr.MarkdownBlock)]
    folder = RESULTS / exp / "cpu"

    # the table: the numbers of table.md, verbatim
    assert (folder / "table.md").read_text(encoding="utf-8") in texts

    # the verdicts: claims.csv with every column and row
    claims = pd.read_csv(folder / "claims.csv", dtype=str, keep_default_na=False)
    verdicts = next(t for t in texts if t.startswith("| claim |"))
    header = [h.strip() for h in verdicts.splitlines()[0].strip("|").split("|")]
    assert header == list(claims.columns)
    assert len(verdicts.splitlines()) == 2 + len(claims)

    # a section per verdict, with a plot over exactly the cells that claim compares
    headings = [b.text for b in report.blocks if isinstance(b, wr.H3)]
    rows = DB.claim_rows(claims)
    assert headings == [DB.claim_title(r) for r in rows]
    cell_names = {str(c) for c in study.runs["cell"]}
    grids = report_grids(report)
    claim_grids = [g for g in grids if g.runsets[0].name.endswith(": the cells compared")]
    with_cells = [(r, study.claim_cells[(r["claim"], r["context"])]) for r in rows
                  if study.claim_cells.get((r["claim"], r["context"]))]
    assert len(claim_grids) == len(with_cells)
    for g, (r, cells) in zip(claim_grids, with_cells):
        rs = g.runsets[0]
        assert rs.name == f"{r['claim']}: the cells compared"
        assert f"Metric('Group') == '{exp}/cpu'" in rs.filters.replace('"', "'")
        assert cells and set(cells) <= cell_names
        assert all(c in rs.filters for c in cells)
        assert rs.groupby == ["config.cell.value"]
        assert isinstance(g.panels[0], wr.LinePlot) and g.panels[0].y == [DB.VAL_PPL]

    # every figure of the results folder, as the summary run logs it
    media = [p for g in grids for p in g.panels if isinstance(p, wr.MediaBrowser)]
    assert sorted(k for p in media for k in p.media_keys) == sorted(f"plot/{p.stem}" for p in folder.glob("*.png"))

    # learning-rate sensitivity where the study sweeps the multiplier
    multipliers = {m for m in study.cells["schedule.multiplier"] if m is not None}
    has_lr = any(isinstance(b, wr.H2) and b.text == "Learning-rate sensitivity" for b in report.blocks)
    assert has_lr == (len(multipliers) >= 3)

    # the way back: commit and commands
    code = next(t for t in texts if t.startswith("```bash"))
    assert f"make sweep EXP={exp} SCALE=cpu" in code and f"make dashboard EXP={exp} SCALE=cpu" in code
    assert f"make table EXP={exp} SCALE=cpu" in code


def test_calibrate_report_has_the_learning_rate_sensitivity(studies):
    report = DB.build_report(studies["calibrate"], "ent", "proj")
    i = next(i for i, b in enumerate(report.blocks) if isinstance(b, wr.H2) and b.text == "Learning-rate sensitivity")
    grid = next(b for b in report.blocks[i:] if isinstance(b, wr.PanelGrid))
    scatter = next(p for p in grid.panels if isinstance(p, wr.ScatterPlot))
    model = scatter._to_model().config
    assert (model.x_axis, model.y_axis) == ("config:schedule.multiplier.value", "summary:val_ppl")
    assert "plot/sweep_multiplier" in [k for g in report_grids(report) for p in g.panels
                                       if isinstance(p, wr.MediaBrowser) for k in p.media_keys]


def test_claims_cells_come_from_the_claim_definitions(studies):
    table2 = studies["table2"]
    assert table2.claim_cells[("C3", "")] == ["row=A,schedule.warmup=true", "row=B,schedule.warmup=true"]
    fig1 = studies["fig1"]
    assert fig1.claim_cells[("C13", "")] == ["row=A,schedule.warmup=true", "row=G,schedule.warmup=true"]
    calibrate = studies["calibrate"]
    assert calibrate.claim_cells[("C4", "schedule.multiplier=5")] == [  # B's reference: B with warmup
        "row=A,schedule.multiplier=5,schedule.warmup=false", "row=A,schedule.multiplier=5,schedule.warmup=true",
        "row=B,schedule.multiplier=5,schedule.warmup=false", "row=B,schedule.multiplier=5,schedule.warmup=true"]


def test_new_claim_columns_verdicts_and_figures_appear_without_code_changes(tmp_path):
    root = copy_study(tmp_path, "calibrate")
    folder = root / "calibrate" / "cpu"
    claims = pd.read_csv(folder / "claims.csv", dtype=str, keep_default_na=False)
    claims["mean difference %"] = "-3.1"
    claims["90% CI"] = "[-5.0, -1.2]"
    claims["seeds compared"] = "3"
    claims.loc[0, "verdict"] = "untestable here"
    claims.to_csv(folder / "claims.csv", index=False)
    shutil.copy(folder / "sweep_multiplier.png", folder / "lr_sensitivity.png")

    study = DB.load_study("calibrate", "cpu", root)
    report = DB.build_report(study, "ent", "proj")
    texts = [b.text for b in report.blocks if isinstance(b, wr.MarkdownBlock)]
    verdicts = next(t for t in texts if t.startswith("| claim |"))
    header = verdicts.splitlines()[0]
    assert "| mean difference % | 90% CI | seeds compared |" in header
    assert "| estimate_pct | ci_low_pct | ci_high_pct | n | n_x | n_ref | paired | method |" in header  # the report's own interval columns
    first = claims.iloc[0].to_dict()
    assert DB.claim_title(first).endswith("— untestable here")
    assert DB.claim_title(first) in [b.text for b in report.blocks if isinstance(b, wr.H3)]
    detail = DB.claim_markdown(first)
    assert "**90% CI**: [-5.0, -1.2]" in detail and "**seeds compared**: 3" in detail
    assert detail in texts
    keys = [k for g in report_grids(report) for p in g.panels if isinstance(p, wr.MediaBrowser) for k in p.media_keys]
    assert "plot/lr_sensitivity" in keys and "plot/sweep_multiplier" in keys


def test_commit_link():
    link = DB.commit_link("git@github.com:someone/factorial.git", "a" * 40, "results/fig1/cpu")
    assert isinstance(link, wr.Link) and link.url == f"https://github.com/someone/factorial/tree/{'a' * 40}/results/fig1/cpu"
    link = DB.commit_link("https://github.com/someone/factorial", "b" * 40, "results/x")
    assert link.url == f"https://github.com/someone/factorial/tree/{'b' * 40}/results/x"
    code = DB.commit_link(None, "c" * 40, "results/x")
    assert isinstance(code, wr.InlineCode) and code.text == "c" * 40


# --- the names in the panels are the ones the runs log -------------------------------------------------


def _offline_run_keys(run_dir: Path) -> dict[str, set[str]]:
    """History, summary and config keys as a run handed them to W&B (its offline transaction log)."""
    from wandb.proto import wandb_internal_pb2 as pb

    history = set().union(*(set(row) for row in read_offline_wandb_history(run_dir)))
    summary: set[str] = set()
    config: set[str] = set()
    for file in (run_dir / "wandb").glob("offline-run-*/run-*.wandb"):
        for payload in iter_records(file):
            record = pb.Record()
            record.ParseFromString(payload)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                config |= {item.key or ".".join(item.nested_key) for item in record.run.config.update}
            elif kind == "config":
                config |= {item.key or ".".join(item.nested_key) for item in record.config.update}
            elif kind == "summary":
                for item in record.summary.update:
                    key = item.key or ".".join(item.nested_key)
                    summary.add(key)
                    value = json.loads(item.value_json)
                    if isinstance(value, dict):  # min/last summaries of val/ppl: val/ppl.min, val/ppl.last
                        summary |= {f"{key}.{k}" for k in value}
    return {"history": history, "summary": summary, "config": config}


@pytest.fixture(scope="module")
def logged(tmp_path_factory, cache_dir) -> dict[str, set[str]]:
    """What a real Adafactor cell with update clipping (row H) hands to W&B (offline) at smoke scale."""
    tmp = tmp_path_factory.mktemp("cell")
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("WANDB_SILENT", "true")
        mp.delenv("WANDB_MODE", raising=False)
        overrides = ["scale=smoke", "row=H", "logger.mode=offline", f"run_dir={tmp / 'run'}",
                     f"data.cache_dir={cache_dir}"]
        cfg = TR.compose(overrides)
        cfg.cell = TR.cell_name(overrides)
        summary = TR.run_cell(cfg)
    finally:
        mp.undo()
    assert summary["status"] == "completed"
    keys = _offline_run_keys(tmp / "run")
    keys["summary.json"] = set(json.loads((tmp / "run" / "summary.json").read_text()))
    keys["config.yaml"] = set(pd.json_normalize(yaml.safe_load((tmp / "run" / "config.yaml").read_text()), sep=".").columns)
    return keys


def test_the_dashboards_metric_names_are_logged_by_the_runs(logged):
    history = logged["history"]
    for name in (DB.STEP, DB.VAL_PPL, *DB.TRAIN_METRICS, *DB.RMS_METRICS, DB.RMS_MEAN, DB.CLIP_FRAC):
        assert name in history, f"{name!r} is not a metric the runs log; they log {sorted(history)}"
    # exactly the RMS(U) metrics the runs log: a new Figure 1 matrix must show up in the workspace too
    assert {k for k in history if k.startswith("rms_u/")} == set(DB.RMS_METRICS)
    assert set(DB.RMS_METRICS) == {f"rms_u/{m}" for m in R.FIG1_MATRICES}
    assert DB.FINAL_PPL in logged["summary"] and DB.FINAL_PPL in logged["summary.json"]
    for key in (DB.CELL, DB.ROW, DB.WARMUP, DB.MULTIPLIER):
        assert key in logged["config"], key
    assert logged["config"] <= logged["config.yaml"] | {"_wandb"}  # W&B got config.yaml's keys, flat


@pytest.mark.parametrize("exp", COMMITTED)
def test_every_panel_names_what_the_runs_log(studies, logged, exp):
    study = studies[exp]
    used = names_used(DB.build_workspace(study, "ent", "proj"), DB.build_report(study, "ent", "proj"))
    assert used["history"] <= logged["history"], used["history"] - logged["history"]
    assert used["summary"] <= logged["summary"], used["summary"] - logged["summary"]
    assert used["config"] <= logged["config"], used["config"] - logged["config"]
    assert used["history"] and used["summary"] and used["config"]


def test_a_panel_on_a_metric_no_run_logs_is_caught(studies, logged, monkeypatch):
    # the check above can fail: a misspelt metric in the dashboards is outside what the runs log
    monkeypatch.setattr(DB, "VAL_PPL", "val/perplexity")
    used = names_used(DB.build_workspace(studies["fig1"], "e", "p"), DB.build_report(studies["fig1"], "e", "p"))
    assert not used["history"] <= logged["history"]


# --- the command -------------------------------------------------------------------------------------------


def test_the_command_saves_each_object_once_and_leaves_results_alone(server, tmp_path, capsys):
    root = copy_study(tmp_path, "fig1")
    before = tree_digest(root)
    rc = DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    saves = server.saves()
    assert len(saves["workspace"]) == 1 and len(saves["report"]) == 1
    assert tree_digest(root) == before
    assert "workspace: https://wandb.example/me/factorial?nw=" in out.out
    assert "report:    https://wandb.example/me/factorial/reports/" in out.out

    # entity from the login (the runs' logger.entity is empty), project from the runs' logger.project
    ws = saves["workspace"][0]
    assert (ws["entityName"], ws["projectName"]) == ("me", "factorial")
    spec = json.loads(ws["spec"])
    grouping = spec["section"]["runSets"][0]["grouping"]
    assert grouping == [{"section": "config", "name": "cell.value"}]

    report = saves["report"][0]
    assert (report["entityName"], report["projectName"]) == ("me", "factorial")
    rspec = json.loads(report["spec"])
    grids = [b for b in rspec["blocks"] if b["type"] == "panel-grid"]
    runsets = [rs for g in grids for rs in g["metadata"]["runSets"]]
    assert all(rs["project"] == {"entityName": "me", "name": "factorial", "id": "p-1"} for rs in runsets)
    claim_sets = [rs for rs in runsets if rs["name"].endswith("the cells compared")]
    assert claim_sets and all(rs["grouping"] == [{"section": "config", "name": "cell.value"}] for rs in claim_sets)
    # cell names hold "=": sent as they are (wandb_workspaces' filter parser would double them)
    leaves = [(f["key"]["section"], f["key"]["name"], f["op"], f["value"]) for rs in claim_sets
              for f in rs["filters"]["filters"]]
    assert ("config", "cell", "IN", ["row=A,schedule.warmup=true", "row=G,schedule.warmup=true"]) in leaves
    assert ("run", "group", "=", "fig1/cpu") in leaves and ("run", "jobType", "!=", "table") in leaves
    summary = next(rs for rs in runsets if rs["name"] == "the summary run")
    assert [(f["key"]["name"], f["op"], f["value"]) for f in summary["filters"]["filters"]] == [
        ("displayName", "=", "fig1/cpu/summary")]
    colors = [k for g in grids for k in g["metadata"].get("customRunColors", {})]
    assert any(k.endswith("-config:cell.value:row=A,schedule.warmup=true") for k in colors)


def test_entity_and_project_come_from_the_runs_config_unless_given(server, tmp_path, capsys):
    root = copy_study(tmp_path, "fig1")
    cells = root / "fig1" / "cpu" / "cells.csv"
    frame = pd.read_csv(cells, dtype=str, keep_default_na=False)
    frame["logger.entity"], frame["logger.project"] = "team", "adafactor"
    frame.to_csv(cells, index=False)
    assert DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root)]) == 0
    saves = server.saves()
    assert {(s["entityName"], s["projectName"]) for s in saves["workspace"] + saves["report"]} == {("team", "adafactor")}
    server.requests.clear()
    assert DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root), "--entity", "x", "--project", "y"]) == 0
    saves = server.saves()
    assert {(s["entityName"], s["projectName"]) for s in saves["workspace"] + saves["report"]} == {("x", "y")}

    # runs that logged to two projects: the command asks which, before any network
    frame.loc[0, "logger.project"] = "other"
    frame.to_csv(cells, index=False)
    server.requests.clear()
    made = server.api_made
    assert DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "the runs disagree on logger.project: adafactor, other; pass --project" in err
    assert server.api_made == made and not server.requests
    assert DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root), "--project", "adafactor"]) == 0


def test_without_a_login_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    made = []
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: made.append(1))
    root = copy_study(tmp_path, "fig1")
    before = tree_digest(root)
    rc = DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and not made
    assert len(err.splitlines()) == 1 and "online only" in err and "wandb login" in err
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "WANDB_MODE=offline" in err and not made
    monkeypatch.setenv("WANDB_MODE", "sideways")
    assert DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "WANDB_MODE='sideways' is invalid" in err and not made
    assert tree_digest(root) == before


def test_without_a_network_one_line_and_exit_1(tmp_path, capsys, monkeypatch, server):
    root = copy_study(tmp_path, "fig1")
    before = tree_digest(root)

    class Unreachable:
        def __init__(self, *a, **k):
            raise ConnectionError("Failed to verify credentials with https://api.wandb.ai: connection refused\nmore")

    monkeypatch.setattr(wandb, "Api", Unreachable)
    assert DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not reach W&B" in err and "connection refused" in err

    # reached at first, then the save fails
    monkeypatch.setattr(wandb, "Api", server.api())

    def refuse(*a, **k):
        raise RuntimeError("503 Service Unavailable\ntraceback …")

    monkeypatch.setattr(server, "execute_graphql", refuse)
    assert DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root), "--entity", "e"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "503 Service Unavailable" in err
    assert tree_digest(root) == before


def test_without_a_network_says_so_in_seconds_before_asking_wandb(tmp_path, capsys, monkeypatch):
    """A login and no network: wandb.Api would retry for half a minute, then blame its service process."""
    import socket
    import time

    made = []
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: made.append(1))
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)

    def unreachable(address, timeout=None, **kw):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    root = copy_study(tmp_path, "fig1")
    start = time.monotonic()
    assert DB.main(["--exp", "fig1", "--scale", "cpu", "--results", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - start < 10 and not made
    assert len(err.splitlines()) == 1 and "no network" in err and "api.wandb.ai" in err, err


def test_runs_root_is_in_the_help_and_in_the_make_table_hint(tmp_path, capsys, monkeypatch):
    assert DB.main(["--help"]) == 0
    assert "FACTORIAL_RUNS" in capsys.readouterr().out
    monkeypatch.delenv("FACTORIAL_RUNS", raising=False)
    rc = DB.main(["--exp", "fig1", "--scale", "smoke", "--results", str(tmp_path), "--runs-root", str(tmp_path / "r")])
    assert rc == 2
    assert f'make table EXP=fig1 SCALE=smoke TABLE_ARGS="--runs-root {tmp_path / "r"}"' in capsys.readouterr().err


@pytest.mark.parametrize("args, expected", [
    (["--exp", "nope", "--scale", "cpu"], "invalid --exp='nope'; allowed:"),
    (["--exp", "experiments/fig1.yaml", "--scale", "cpu"], "invalid --exp='experiments/fig1.yaml'; allowed: a study name"),
    (["--exp", "fig1", "--scale", "huge"], "invalid --scale='huge'; allowed:"),
    (["--exp", "fig1", "--scale", "smoke"], "run `make table EXP=fig1 SCALE=smoke` first"),
    (["--exp", "fig1", "--scale", "cpu", "--timeout", "0"], "invalid --timeout=0; allowed: a positive number"),
])
def test_bad_arguments_exit_2_before_any_network(server, tmp_path, capsys, args, expected):
    rc = DB.main([*args, "--results", str(tmp_path / "results")] if "smoke" in args else args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and expected in err and len(err.splitlines()) == 1
    assert server.api_made == 0 and not server.requests
