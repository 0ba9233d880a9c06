"""The results store (factorial.store): runs as data, written back as the run directories they came from."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from factorial import runfiles as RF
from factorial import store as ST

FIX = Path(__file__).parent / "fixtures" / "runs"
FILES = (RF.CONFIG, RF.META, RF.SUMMARY, RF.METRICS, RF.LOG)


def fixture_runs(study: str = "table2") -> list[Path]:
    """The finished runs of one study of the report tests' hand-made run directories."""
    return sorted(p.parent for p in FIX.glob(f"{study}/tiny/*/seed*/{RF.SUMMARY}")
                  if json.loads(p.read_text()).get("status") in RF.FINISHED)


def test_a_run_directory_round_trips_through_the_store(tmp_path):
    runs = fixture_runs()
    assert len(runs) >= 8
    records = {r["run"]: r for r in map(ST.read_run, runs)}
    path = tmp_path / "s" / RF.STORE
    assert ST.save(path, records) is True
    assert ST.save(path, records) is False  # the same runs: not rewritten
    back = ST.load(path)
    assert back == records and list(back) == sorted(records, key=ST.sort_key)
    for run_dir in runs:
        rid = ST.run_id(run_dir)
        out = ST.write_run(back[rid], tmp_path / "w" / rid)
        again = ST.read_run(out)
        assert again == records[rid]  # every field, parsed
        for name in (RF.METRICS, RF.LOG):  # one JSON object a line, as the trainer writes them
            if (run_dir / name).is_file():
                assert (out / name).read_text().splitlines() == [
                    json.dumps(json.loads(line)) if name == RF.METRICS else line
                    for line in (run_dir / name).read_text().splitlines() if line.strip()], (rid, name)
    # pandas reads the store as a table of runs
    import pandas as pd

    frame = pd.read_json(path, lines=True)
    assert list(frame.columns) == list(ST.FIELDS) and len(frame) == len(records)


def test_the_bytes_depend_only_on_the_runs(tmp_path):
    records = [ST.read_run(p) for p in fixture_runs()]
    data = ST.dumps(records)
    assert ST.dumps(list(reversed(records))) == data
    assert data[4:8] == b"\0\0\0\0"  # gzip MTIME: none, so a rebuild makes the same file
    lines = gzip.decompress(data).decode().splitlines()
    assert [json.loads(line)["run"] for line in lines] == sorted((r["run"] for r in records), key=ST.sort_key)
    unfinished = {**records[0], "summary": {"status": "failed"}}
    with pytest.raises(ST.StoreError, match="has status 'failed'; allowed: a finished run"):
        ST.dumps([unfinished])


def test_config_yaml_is_written_as_the_trainer_writes_it(tmp_path):
    """OmegaConf.to_yaml quotes strings that YAML 1.1 reads as booleans or numbers (row: 'N'); so does the store,
    so that a written config.yaml is the trainer's byte for byte and loads back the same."""
    from omegaconf import OmegaConf

    config = {"row": "N", "cell": "model.norm=post,row=N,schedule.warmup=false", "a": "yes", "b": "1e-3", "c": "0.5",
              "d": "on", "e": None, "f": 1e-30, "g": True, "h": [1, "Y"], "i": {"j": "off", "k": 3}, "l": "text"}
    text = ST._yaml(config)
    assert text == OmegaConf.to_yaml(OmegaConf.create(config))
    import yaml

    assert yaml.safe_load(text) == config


def test_a_run_is_written_only_where_none_exists(tmp_path):
    record = ST.read_run(fixture_runs()[0])
    target = tmp_path / "cell" / "seed0"
    target.mkdir(parents=True)
    (target / "mine.txt").write_text("kept")
    with pytest.raises(ST.StoreError, match="exists"):
        ST.write_run(record, target)
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    bad = {**record, "metrics": [{"step": float("nan")}]}  # not JSON: nothing is left behind
    with pytest.raises(ValueError):
        ST.write_run(bad, tmp_path / "cell" / "seed1")
    assert sorted(p.name for p in (tmp_path / "cell").iterdir()) == ["seed0"]


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # no timestamp: the same bytes (and test ids) in every worker


@pytest.mark.parametrize("content, expected", [
    (b"not gzip", "is not a gzip-compressed JSON-lines store"),
    (_gz(b"[1, 2]\n"), "line 1: not a stored run"),
    (_gz(b'{"run": "c/seed0", "config": {}, "summary": {}, "metrics": [], "extra": 1}\n'), "unknown fields ['extra']"),
    (_gz(b'{"run": "c/seed0", "config": {}, "summary": null, "metrics": []}\n'), "summary=NoneType; allowed: a JSON object"),
    (_gz(b'{"run": "c/seed0", "config": {}, "summary": {}, "metrics": []}\n' * 2), "line 2 repeats run 'c/seed0'"),
    (_gz(b'{"run": "c/seed0", "config": {}\n'), "line 1 is not a stored run"),
], ids=["not-gzip", "not-an-object", "unknown-field", "no-summary", "repeated-run", "broken-json"])
def test_a_store_that_does_not_read_says_where_and_why(tmp_path, content, expected):
    path = tmp_path / RF.STORE
    path.write_bytes(content)
    with pytest.raises(ST.StoreError, match=expected.replace("[", r"\[").replace("(", r"\(")) as err:
        ST.load(path)
    assert str(path) in str(err.value)
    assert ST.load(tmp_path / "none.gz") == {}


def _copy(run_dir: Path, root: Path) -> Path:
    target = root / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def test_collect_and_merge_keep_every_stored_run_and_refuse_a_different_one(tmp_path):
    runs = fixture_runs()[:3]
    stored = {r["run"]: r for r in map(ST.read_run, runs[:2])}
    local = tmp_path / "study"
    same = _copy(runs[0], local)  # the stored run, written back (materialised): the same computation
    new = _copy(runs[2], local)  # not stored yet: added
    got, conflicts, notes = ST.collect(stored, local)
    assert conflicts == [] and notes == [] and set(got) == {ST.run_id(p) for p in runs}
    merged, conflicts, added = ST.merge(stored, [ST.read_run(new), ST.read_run(same)])
    assert conflicts == [] and added == 1 and set(merged) == set(got)

    # the same cell and seed finished with other numbers: a conflict, and the stored run stays
    summary = json.loads((same / RF.SUMMARY).read_text())
    summary["val_ppl"] = (summary.get("val_ppl") or 0) + 1.0
    (same / RF.SUMMARY).write_text(json.dumps(summary))
    got, conflicts, _ = ST.collect(stored, local, "results/x/tiny/runs.jsonl.gz")
    assert len(conflicts) == 1 and "val_ppl" in conflicts[0] and "results/x/tiny/runs.jsonl.gz" in conflicts[0]
    assert got[ST.run_id(same)] == stored[ST.run_id(same)]
    merged, conflicts, added = ST.merge(stored, [ST.read_run(same)])
    assert len(conflicts) == 1 and added == 0 and merged[ST.run_id(same)] == stored[ST.run_id(same)]

    # an unfinished directory of a stored run yields to the stored run (a note), and is never stored
    (same / RF.SUMMARY).unlink()
    got, conflicts, notes = ST.collect(stored, local)
    assert conflicts == [] and len(notes) == 1 and "has not finished" in notes[0]
    assert got[ST.run_id(same)] == stored[ST.run_id(same)]
    assert ST.merge({}, [ST.read_run(same)])[2] == 0


def test_make_table_refuses_a_run_directory_that_differs_from_its_stored_run(tmp_path, capsys):
    from factorial import table as TBL

    out, runs = tmp_path / "results", tmp_path / "runs"
    shutil.copytree(FIX / "fig1", runs / "fig1")
    assert TBL.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(runs), "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    summary = next((runs / "fig1" / "tiny").glob(f"*/seed0/{RF.SUMMARY}"))
    data = json.loads(summary.read_text())
    data["val_ppl"] = 1.0
    summary.write_text(json.dumps(data))
    capsys.readouterr()
    assert TBL.main(["--exp", "fig1", "--scale", "tiny", "--runs-root", str(runs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "differ (val_ppl" in err and "allowed: one run per cell and seed" in err
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_the_pooled_noise_script_reads_a_committed_store(capsys):
    """scripts/pooled_noise.py (quoted in results/README.md) reads the committed table2 store: the rules' pooled
    noise of the confirmation, and the refit without row E."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "pooled_noise.py"
    spec = importlib.util.spec_from_file_location("pooled_noise", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["table2", "cpu", "--seeds", "3,4,5"]) == 0
    assert "sigma = 0.0352 in ln ppl (df 68)" in capsys.readouterr().out
    assert module.main(["table2", "cpu", "--seeds", "3,4,5", "--drop-rows", "E"]) == 0
    assert "in 34 cells, pooled seed noise sigma = 0.0183 in ln ppl (df 66)" in capsys.readouterr().out
    assert module.main(["table2", "cpu", "--seeds", "99"]) == 2
    # one context of a study (deep_lr at x 2, whose intervals pool sigma 0.2072 in its REPORT), and without one cell
    assert module.main(["deep_lr", "cpu_deep", "--where", "schedule.multiplier=2"]) == 0
    assert "24 runs in 8 cells, pooled seed noise sigma = 0.2072 in ln ppl (df 14)" in capsys.readouterr().out
    assert module.main(["deep_lr", "cpu_deep", "--where", "schedule.multiplier=2",
                        "--drop", "row=B,schedule.warmup=true"]) == 0
    assert "21 runs in 7 cells, pooled seed noise sigma = 0.0854 in ln ppl (df 12)" in capsys.readouterr().out
    assert module.main(["deep_lr", "cpu_deep", "--where", "multiplier=2"]) == 2
    assert "has the knob 'multiplier'" in capsys.readouterr().err
    assert module.main(["deep_lr", "cpu_deep", "--where", "schedule.multiplier=3"]) == 2
    assert "with schedule.multiplier=3 (allowed: schedule.multiplier has ['0.5', '2.0'])" in capsys.readouterr().err
    assert module.main(["deep_lr", "cpu_deep", "--drop", "row"]) == 2
    assert "--drop 'row': allowed: KEY=VALUE" in capsys.readouterr().err


def test_the_command_line_lists_a_store_and_drops_chosen_or_dirty_runs(tmp_path, capsys):
    records = {r["run"]: r for r in map(ST.read_run, fixture_runs())}
    dirty_id, named_id, *_ = sorted(records, key=ST.sort_key)
    records[dirty_id] = {**records[dirty_id], "meta": {**(records[dirty_id]["meta"] or {}), "git": {"commit": "ab" * 20,
                                                                                                     "dirty": True}}}
    for rid in records:
        if rid != dirty_id and records[rid].get("meta"):
            records[rid] = {**records[rid], "meta": {**records[rid]["meta"], "git": {"commit": "cd" * 20, "dirty": False}}}
    folder = tmp_path / "results" / "table2" / "tiny"
    path = folder / RF.STORE
    ST.save(path, records)
    before = path.read_bytes()

    assert ST.main(["list", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: {len(records)} runs" and len(out) == 2 + len(records)
    assert any(line.startswith(dirty_id + "\t") and "\tababababab" in line and "\tdirty\t" in line for line in out)

    # errors name the value and what is allowed, and write nothing
    assert ST.main(["drop", str(folder), "row=Z/seed0"]) == 2
    assert "run 'row=Z/seed0' is not in" in capsys.readouterr().err
    assert ST.main(["list", str(tmp_path / "nowhere")]) == 2
    assert "no store at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ST.main(["drop", str(folder)])  # neither runs nor --dirty
    assert path.read_bytes() == before

    assert ST.main(["drop", str(folder), "--dirty", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"would drop {dirty_id}"] and path.read_bytes() == before
    assert ST.main(["drop", str(path), named_id, "--dirty"]) == 0
    assert "dropped 2 of" in capsys.readouterr().out
    left = ST.load(path)
    assert set(left) == set(records) - {dirty_id, named_id} and all(left[k] == records[k] for k in left)
