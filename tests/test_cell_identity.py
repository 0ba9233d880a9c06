"""One identity for a cell: config.KEYS says, per key, whether it defines a cell, and the cell's name,
the resume check, the sweep and the report all follow it; a cell records only its optimizer's knobs."""

from __future__ import annotations

import pandas as pd
import pytest

from factorial import config as C
from factorial import study as ST
from factorial import sweep as S
from factorial import train as T
from factorial.report import data as D
from factorial.runlog import flatten

from cells import committed_runs

RESULTS = C.REPO_ROOT / "results"
ADAFACTOR_ONLY = ("optim.momentum", "optim.beta2_exponent", "optim.second_moment", "optim.clip_threshold",
                  "optim.relative_step", "optim.eps1", "optim.eps2", "optim.compile")


def schema_leaves() -> list[str]:
    return list(flatten(C.to_dict(T.compose([]))))


def test_every_config_key_has_one_role_and_the_registry_names_only_config_keys():
    leaves = schema_leaves()
    assert all(C.key_role(k) is not None for k in leaves)
    sections = {k.split(".")[0] for k in leaves}
    assert all(k in leaves or k in sections for k in C.KEYS), [k for k in C.KEYS if k not in leaves and k not in sections]
    assert set(C.KIND_RULES) == {role.kind for role in C.KEYS.values()}
    assert all(set(role.optimizers) <= set(C.OPTIMIZERS) for role in C.KEYS.values())


def _value(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def test_name_resume_sweep_and_report_agree_on_every_key(tmp_path):
    """For every key of the config: part of the name <=> compared on resume (unless the sweep sets it)
    <=> a grouping column of the report, and reserved in a study exactly when the sweep sets it."""
    semantic = set()  # over the three optimizers: each compares its own knobs
    for optimizer in C.OPTIMIZERS:
        semantic |= set(flatten(T.semantic_config(C.to_dict(T.compose([f"optim={optimizer}"])))))
    identity = set(D.identity_keys(schema_leaves()))
    for key in schema_leaves():
        role = C.key_role(key)
        named = T.cell_name([f"{key}=x"]) != "default"
        resumed = key in semantic
        grouped = key in identity
        try:
            ST.check_key(key, "grid")
            reserved = False
        except ST.StudyError:
            reserved = True
        got = dict(named=named, resumed=resumed, grouped=grouped, reserved=reserved)
        want = dict(C.KIND_RULES[role.kind])
        if not role.csv:
            want["grouped"] = False  # not a column of cells.csv at all
        assert got == want, (key, role.kind)


@pytest.mark.parametrize("key,value", [("optim.compile", "false"), ("optim.compile", "true"), ("optim.foreach", "false"),
                                       ("train.compile", "true"), ("train.eval_every", "5")])
def test_a_speed_or_logging_key_names_no_new_cell_resumes_and_groups_with_the_cell(key, value, tmp_path):
    """ARGS=optim.compile=… used to name new cells (everything retrained in new directories), and optim.foreach
    blocked a resume that the report ignored."""
    study = S.load_study("smoke", [f"{key}={value}"])
    assert [c.name for c in study.cells] == [c.name for c in S.load_study("smoke").cells]
    assert f"{key}={value}" in study.fixed
    plain = C.to_dict(T.compose(["row=A"]))
    changed = C.to_dict(T.compose(["row=A", f"{key}={value}"]))
    assert T.config_differences(T.semantic_config(plain), T.semantic_config(changed)) == []
    runs = pd.DataFrame([D.run_record("a/seed0", flatten(plain), None, None),
                         D.run_record("b/seed0", flatten(changed), None, None)])
    runs = D.finish_runs(runs)
    assert runs["cell_key"].nunique() == 1 and key not in D.identity_keys(runs.columns)


@pytest.mark.parametrize("overrides", [["optim=adam"], ["optim=adam", "optim.beta2=0.98"], ["optim=sgd"], ["row=Q10"]])
def test_adam_and_sgd_cells_carry_no_adafactor_knobs(overrides):
    cfg = C.to_dict(T.compose(overrides))
    for key in ADAFACTOR_ONLY:
        assert _value(cfg, key) is None, key
    if cfg["optim"]["name"] == "sgd":
        assert cfg["optim"]["beta1"] is None and cfg["optim"]["beta2"] is None and cfg["optim"]["adam_eps"] is None
    else:
        assert cfg["optim"]["beta1"] == 0.9 and cfg["optim"]["adam_eps"] == 1e-9
    adafactor = C.to_dict(T.compose(["row=O"]))["optim"]
    assert adafactor["adam_eps"] is None and adafactor["clip_threshold"] == 1.0 and adafactor["beta2_exponent"] == 0.8


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["optim=adam", "optim.clip_threshold=2.0"], "invalid optim.clip_threshold=2.0; allowed: no optim.clip_threshold with optim.name='adam'"),
        (["optim=adam", "optim.clip_threshold=1.0"], "invalid optim.clip_threshold=1.0"),  # the default, but set
        (["optim=adam", "optim.relative_step=false"], "invalid optim.relative_step=False"),
        (["optim=sgd", "optim.beta2_exponent=0.5"], "invalid optim.beta2_exponent=0.5"),
        (["row=Q10", "optim.beta1=0.9"], "invalid optim.beta1=0.9; allowed: no optim.beta1 with optim.name='sgd'"),
        (["row=O", "optim.adam_eps=1e-8"], "invalid optim.adam_eps=1e-08"),
    ],
)
def test_another_optimizers_knob_is_an_error_before_any_work(tmp_path, capsys, overrides, expected):
    run_dir = tmp_path / "never"
    assert T.main(["scale=smoke", "logger=none", f"run_dir={run_dir}", *overrides]) == 2
    err = capsys.readouterr().err
    assert expected in err and "knobs:" in err, err
    assert not run_dir.exists()


def _adam_config_as_recorded_before() -> dict:
    """An Adam cell's config.yaml as older versions wrote it: with Adafactor's defaults."""
    cfg = C.to_dict(T.compose(["optim=adam", "optim.beta2=0.98", "exp=table3", "scale=cpu"]))
    cfg["optim"].update(momentum="gradient", beta2_exponent=0.8, second_moment="factored", clip_threshold=1.0,
                        relative_step=True, eps1=1e-30, eps2=1e-3, compile=False)
    return cfg


def test_an_adam_run_recorded_with_adafactor_knobs_resumes_and_reports_without_them():
    old = _adam_config_as_recorded_before()
    new = C.to_dict(T.compose(["optim=adam", "optim.beta2=0.98", "exp=table3", "scale=cpu"]))
    assert T.config_differences(T.semantic_config(old), T.semantic_config(new)) == []
    factored = C.to_dict(T.compose(["row=O", "exp=table3", "scale=cpu"]))
    runs = D.finish_runs(pd.DataFrame([
        D.run_record("adam-old/seed0", flatten(old), {"status": "completed", "val_ppl": 200.0}, None),
        D.run_record("adam-new/seed1", flatten(new), {"status": "completed", "val_ppl": 201.0}, None),
        D.run_record("alg6/seed0", flatten(factored), {"status": "completed", "val_ppl": 195.0}, None),
    ]))
    adam = runs[runs["optim.name"] == "adam"]
    for key in ADAFACTOR_ONLY:
        assert adam[key].isna().all(), key
    # A filter on an Adafactor knob picks Adafactor cells only; the two Adam runs are one cell.
    assert list(runs.loc[runs["optim.clip_threshold"] == 1.0, "run_id"]) == ["alg6/seed0"]
    assert list(runs.loc[runs["optim.second_moment"] == "factored", "run_id"]) == ["alg6/seed0"]
    assert adam["cell_key"].nunique() == 1
    assert len(D.aggregate(runs)) == 2


def test_cells_csv_of_an_adam_cell_has_no_adafactor_knobs(tmp_path):
    """cells.csv as `make table` writes it, read back: Adam's Adafactor columns are empty."""
    runs = D.finish_runs(pd.DataFrame([
        D.run_record("adam/seed0", flatten(_adam_config_as_recorded_before()), {"status": "completed", "val_ppl": 200.0}, None),
        D.run_record("alg6/seed0", flatten(C.to_dict(T.compose(["row=O"]))), {"status": "completed", "val_ppl": 195.0}, None),
    ]))
    path = tmp_path / "cells.csv"
    runs.drop(columns=["cell_key"]).to_csv(path, index=False)
    raw = pd.read_csv(path).set_index("run_id")
    for key in ADAFACTOR_ONLY[:-1]:  # optim.compile is a speed key: a column, but never an identity
        assert pd.isna(raw.loc["adam/seed0", key]) and not pd.isna(raw.loc["alg6/seed0", key]), key
    assert pd.isna(raw.loc["alg6/seed0", "optim.adam_eps"]) and raw.loc["adam/seed0", "optim.adam_eps"] == 1e-9
    back, _ = D.load_csv(path)
    assert back.set_index("run_id").loc["adam/seed0", "optim.clip_threshold"] is None


COMMITTED = committed_runs()


def test_there_are_committed_runs():
    assert COMMITTED, "no results store under results/"
    assert sum(map(len, COMMITTED.values())) >= 743  # the 743 run directories committed before the store


def test_no_run_directory_is_tracked_by_git():
    """runs/ is a local cache: the finished runs are committed as data, in the results stores."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "runs"], cwd=C.REPO_ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout == ""
    probe = subprocess.run(["git", "check-ignore", "-q", "runs/table2/cpu/row=A,schedule.warmup=true/seed0/summary.json"],
                           cwd=C.REPO_ROOT)
    assert probe.returncode == 0


@pytest.mark.parametrize("exp,scale", sorted(COMMITTED))  # one test a study: the workers share the compositions
def test_every_committed_run_is_its_cells_and_is_finished_for_the_sweep(exp, scale, tmp_path):
    """results/<exp>/<scale>/runs.jsonl.gz as committed: the sweep's plan for the study at that scale (on a
    fresh clone: no runs/) names each stored run (same cell name from the same overrides), its check
    accepts the recorded config (the plan composes each cell and compares), and the run counts as
    finished, so `make sweep` trains nothing for it."""
    stored = COMMITTED[(exp, scale)]
    study = S.load_study(exp)
    names = {rid.rsplit("/", 1)[0] for rid in stored}
    assert names <= {c.name for c in study.cells}, sorted(names - {c.name for c in study.cells})[:3]
    # Only the cells that have committed runs are composed (the plan of the rest of the study is the compose
    # test's, in test_sweep.py, which leaves these cells at this scale to this test).
    study.cells = [c for c in study.cells if c.name in names]
    runs, errors = S.plan_runs(study, scale, tmp_path / "runs", results=RESULTS)
    planned = {f"{r.cell.name}/seed{r.seed}": r for r in runs}
    assert set(stored) <= set(planned), sorted(set(stored) - set(planned))[:3]
    assert errors == [], errors[:3]
    for rid, record in sorted(stored.items()):
        run = planned[rid]
        assert run.stored is record or run.stored == record
        assert S.status_of(run) in S.FINISHED, rid
        assert rid.rsplit("/", 1)[0] == record["config"]["cell"]
        # The name the trainer computes from the recorded cell's own overrides is the run's.
        assert T.cell_name(run.cell.overrides) == run.cell.name
        assert record["config"]["train"]["seed"] == run.seed  # the plan's check compares everything else
    assert not (tmp_path / "runs").exists()


def test_the_registry_is_the_only_list_of_such_keys():
    """No module of src/ spells the old lists again (names of the lists the registry replaced)."""
    src = C.REPO_ROOT / "src" / "factorial"
    text = "\n".join(p.read_text() for p in src.rglob("*.py"))
    for name in ("NON_SEMANTIC", "NON_IDENTITY", "UNNAMED", "RESERVED =", "DROPPED_KEYS"):
        assert name not in text, name
