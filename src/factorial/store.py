"""The results store: every finished run of a study at a scale, as one compact file committed beside its report.

    results/<exp>/<scale>/runs.jsonl.gz

One JSON object per line, one line per run, sorted by cell and seed; gzip without a timestamp, so the same
runs always make the same bytes. Each line holds what the run directory held (factorial.runfiles):

    {"run": "<cell>/seed<k>",          the run's place under runs/<exp>/<scale>/
     "config": {...},                  config.yaml
     "meta": {...} | null,             meta.json (commit, machine, threads, rules fingerprint, starts)
     "summary": {...},                 summary.json (status completed or diverged: only finished runs)
     "metrics": [{"step": 0, ...}, …], metrics.jsonl, one object per logged record, as the trainer wrote it
                                       (non-finite floats as the strings "NaN", "Infinity", "-Infinity")
     "log": "..." | null}              train.log

so that ``pandas.read_json(path, lines=True)`` reads it. ``make table`` builds a report from the store and the
run directories under runs/ together (and adds the newly finished ones to the store); ``make sweep`` takes a
run the store holds as finished and writes its files into runs/, the local cache that git ignores.

Nothing here replaces what was written: a run directory is created whole (under a temporary name, then
renamed) and only where none exists; a store is rewritten atomically, and a run it holds is never replaced
by a different one (``merge`` reports the conflict instead). Imports neither torch nor Hydra.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import runfiles as RF
from .runio import _umask, atomic_write_bytes
from .runlog import parse_metrics

FIELDS = ("run", "config", "meta", "summary", "metrics", "log")


class StoreError(ValueError):
    """A store or a run directory that cannot be read, or a run that would replace a different one."""


def store_path(results_root: str | os.PathLike, exp: str, scale: str) -> Path:
    """Where the store of study ``exp`` at ``scale`` lives under a results root."""
    return Path(results_root) / exp / scale / RF.STORE


def run_id(run_dir: Path) -> str:
    """'<cell>/seed<k>': a run's place within its study and scale (the last two parts of its directory)."""
    run_dir = Path(run_dir)
    return f"{run_dir.parent.name}/{run_dir.name}"


def sort_key(rid: str) -> tuple[str, str]:
    """Cell by cell, then seed: the order of the sorted run directories (seed10 sorts before seed2)."""
    cell, _, seed = rid.rpartition("/")
    return (cell, seed)


def is_finished(record: Mapping[str, Any]) -> bool:
    return ((record.get("summary") or {}).get("status")) in RF.FINISHED


# --- run directories <-> records --------------------------------------------------------------------------


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise StoreError(f"{path} is not JSON ({err})") from err


def read_run(run_dir: str | os.PathLike) -> dict:
    """The record of a run directory (finished or not): its config, meta, summary, metrics and log."""
    import yaml

    run_dir = Path(run_dir)
    try:
        config = yaml.safe_load((run_dir / RF.CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{run_dir} has no {RF.CONFIG}; allowed: a run directory the trainer wrote") from None
    except yaml.YAMLError as err:
        raise StoreError(f"{run_dir / RF.CONFIG} is not YAML ({err})") from err
    if not isinstance(config, dict):
        raise StoreError(f"{run_dir / RF.CONFIG} holds {type(config).__name__}; allowed: a mapping (a run's config)")
    try:
        metrics = parse_metrics((run_dir / RF.METRICS).read_bytes(), run_dir / RF.METRICS)
    except FileNotFoundError:
        metrics = []
    except ValueError as err:
        raise StoreError(str(err)) from err
    try:
        log_text = (run_dir / RF.LOG).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        log_text = None
    return {"run": run_id(run_dir), "config": config, "meta": _json_file(run_dir / RF.META),
            "summary": _json_file(run_dir / RF.SUMMARY), "metrics": metrics, "log": log_text}


# YAML 1.1 reads these as booleans: a string that spells one, or a number, is written quoted (as the trainer's
# OmegaConf.to_yaml writes config.yaml: row: 'N'), so a written config.yaml reads back the same everywhere.
_YAML_BOOLS = frozenset("y Y yes Yes YES n N no No NO true True TRUE false False FALSE on On ON off Off OFF".split())


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _yaml(config: Mapping) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, data: str):
        quoted = data in _YAML_BOOLS or _number(data)
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="'" if quoted else None)

    Dumper.add_representer(str, text)
    return yaml.dump(dict(config), Dumper=Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


def write_run(record: Mapping[str, Any], run_dir: str | os.PathLike) -> Path:
    """Write a record's files as a run directory (what the trainer would have left, without checkpoints).

    Only where no run directory exists: built under a hidden temporary name beside it and renamed into
    place, so a reader never sees half a run."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        raise StoreError(f"{run_dir} exists; a stored run is written only where there is none")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".tmp", dir=run_dir.parent))
    try:
        (tmp / RF.CONFIG).write_text(_yaml(record["config"]), encoding="utf-8")
        for name, key in ((RF.META, "meta"), (RF.SUMMARY, "summary")):
            if record.get(key) is not None:
                (tmp / name).write_text(json.dumps(record[key], indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (tmp / RF.METRICS).write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in record.get("metrics") or []),
                                      encoding="utf-8")
        if record.get("log") is not None:
            (tmp / RF.LOG).write_text(record["log"], encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        if run_dir.exists():  # created meanwhile by another process: keep it, drop ours
            raise StoreError(f"{run_dir} exists; a stored run is written only where there is none")
        os.rename(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


# --- the store file ---------------------------------------------------------------------------------------


def _check(record: Any, where: str) -> dict:
    if not isinstance(record, dict) or not isinstance(record.get("run"), str) or "/" not in record["run"]:
        raise StoreError(f"{where}: not a stored run; allowed: a JSON object with the fields {', '.join(FIELDS)}")
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise StoreError(f"{where}: run {record['run']!r} has unknown fields {unknown}; allowed: {', '.join(FIELDS)}")
    for key, kind in (("config", dict), ("summary", dict), ("metrics", list)):
        if not isinstance(record.get(key), kind):
            raise StoreError(f"{where}: run {record['run']!r} has {key}={type(record.get(key)).__name__}; "
                             f"allowed: a JSON {'object' if kind is dict else 'array'}")
    return record


def load(path: str | os.PathLike) -> dict[str, dict]:
    """run id → record, for every run a store holds ({} when there is no store)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise StoreError(f"{path} is not a gzip-compressed JSON-lines store ({err})") from err
    records: dict[str, dict] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            loaded = json.loads(line)
        except ValueError as err:
            raise StoreError(f"{path}: line {n} is not a stored run ({err})") from err
        record = _check(loaded, f"{path}: line {n}")
        if record["run"] in records:
            raise StoreError(f"{path}: line {n} repeats run {record['run']!r}; allowed: each run once")
        records[record["run"]] = record
    return records


def dumps(records: Iterable[Mapping[str, Any]]) -> bytes:
    """The bytes of a store holding ``records``: sorted, compact JSON lines, gzip with no name or time."""
    lines = []
    for record in sorted(records, key=lambda r: sort_key(r["run"])):
        if not is_finished(record):
            raise StoreError(f"run {record['run']!r} has status {(record.get('summary') or {}).get('status')!r}; "
                             f"allowed: a finished run ({' or '.join(RF.FINISHED)})")
        ordered = {k: record.get(k) for k in FIELDS}
        try:
            lines.append(json.dumps(ordered, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
        except ValueError as err:
            raise StoreError(f"run {record['run']!r} holds a value JSON cannot store ({err})") from err
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write("".join(line + "\n" for line in lines).encode("utf-8"))
    return buf.getvalue()


def save(path: str | os.PathLike, records: Mapping[str, Mapping[str, Any]]) -> bool:
    """Write the store atomically; False (and nothing written) when it already holds exactly these runs."""
    path = Path(path)
    data = dumps(records.values())
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return True


# --- store + run directories --------------------------------------------------------------------------------


def same_run(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two records are one computation: the same summary and the same logged metrics."""
    return a.get("summary") == b.get("summary") and a.get("metrics") == b.get("metrics")


def _differs(stored: Mapping, local: Mapping) -> str:
    s, l = stored.get("summary") or {}, local.get("summary") or {}
    for key in ("status", "val_ppl", "step"):
        if s.get(key) != l.get(key):
            return f"{key} {s.get(key)!r} stored, {l.get(key)!r} in the run directory"
    return "the logged metrics differ"


def collect(stored: Mapping[str, dict], study_dir: str | os.PathLike, store_file: str | os.PathLike = RF.STORE,
            ) -> tuple[dict[str, dict], list[str], list[str]]:
    """The runs of a study at a scale: those of the store and those of its run directories (``study_dir``,
    ``runs/<exp>/<scale>/``), as run id → record, sorted.

    A run in both must be the same computation when its directory finished (else a conflict, listed in the
    second value); an unfinished directory of a stored run yields to the stored one (a note in the third).
    A directory that cannot be read is skipped with a note."""
    runs: dict[str, dict] = dict(stored)
    conflicts: list[str] = []
    notes: list[str] = []
    study_dir = Path(study_dir)
    dirs = sorted(study_dir.glob(f"*/*/{RF.CONFIG}"), key=lambda p: sort_key(run_id(p.parent))) if study_dir.is_dir() else []
    for cfg in dirs:
        run_dir = cfg.parent
        try:
            local = read_run(run_dir)
        except StoreError as err:
            notes.append(f"skipped unreadable run {run_dir}: {err}")
            continue
        rid = local["run"]
        if rid not in stored:
            runs[rid] = local
        elif not is_finished(local):
            notes.append(f"{run_dir} has not finished; the finished run stored in {store_file} is used")
        elif not same_run(stored[rid], local):
            conflicts.append(f"{run_dir} and the run {rid} stored in {store_file} differ ({_differs(stored[rid], local)})")
    return {k: runs[k] for k in sorted(runs, key=sort_key)}, conflicts, notes


def finished(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """The finished runs (completed or diverged): what a store keeps."""
    return {k: dict(r) for k, r in runs.items() if is_finished(r)}


def merge(stored: Mapping[str, dict], new: Iterable[Mapping[str, Any]], store_file: str | os.PathLike = RF.STORE,
          ) -> tuple[dict[str, dict], list[str], int]:
    """Add the finished runs of ``new`` to ``stored``: (the merged store, conflicts, runs added). A run the store
    holds is kept; one with the same id but another computation is a conflict and is not added."""
    merged = dict(stored)
    conflicts: list[str] = []
    added = 0
    for record in new:
        if not is_finished(record):
            continue
        rid = record["run"]
        if rid not in merged:
            merged[rid] = dict(record)
            added += 1
        elif not same_run(merged[rid], record):
            conflicts.append(f"run {rid} differs from the one stored in {store_file} ({_differs(merged[rid], record)})")
    return merged, conflicts, added


# --- command line -------------------------------------------------------------------------------------------


def _store_of(where: str) -> Path:
    """A store named by its file or by its folder (results/<exp>/<scale>/)."""
    path = Path(where)
    path = path / RF.STORE if path.suffix != ".gz" else path
    if not path.is_file():
        raise StoreError(f"no store at {path}; allowed: a results/<exp>/<scale>/ folder holding {RF.STORE}, or the file")
    return path


def _provenance(record: Mapping[str, Any]) -> tuple[str, bool | None]:
    git = (record.get("meta") or {}).get("git") or {}
    return str(git.get("commit") or "")[:12], git.get("dirty")


def _list(path: Path) -> int:
    records = load(path)
    print(f"{path}: {len(records)} runs")
    print("run\tstatus\tval_ppl\tcommit\tdirty\tdevice")
    for rid, rec in records.items():
        s, meta = rec.get("summary") or {}, rec.get("meta") or {}
        commit, dirty = _provenance(rec)
        ppl = s.get("val_ppl")
        print("\t".join([rid, str(s.get("status")), "-" if ppl is None else f"{ppl:.2f}", commit or "-",
                         {True: "dirty", False: "clean"}.get(dirty, "-"), str(meta.get("device_name") or meta.get("device") or "-")]))
    return 0


def _drop(path: Path, run_ids: list[str], dirty: bool, dry_run: bool) -> int:
    records = load(path)
    unknown = [r for r in run_ids if r not in records]
    if unknown:
        raise StoreError(f"run {unknown[0]!r} is not in {path}; allowed: one of its {len(records)} runs "
                         f"(python -m factorial.store list {path.parent})")
    chosen = set(run_ids) | ({rid for rid, rec in records.items() if _provenance(rec)[1] is True} if dirty else set())
    if not chosen:
        print(f"{path}: no run matches; nothing dropped")
        return 0
    for rid in sorted(chosen, key=sort_key):
        print(f"{'would drop' if dry_run else 'drop'} {rid}")
    if dry_run:
        return 0
    save(path, {k: v for k, v in records.items() if k not in chosen})
    exp, scale = path.parent.parent.name, path.parent.name
    print(f"{path}: dropped {len(chosen)} of {len(records)} runs (`git checkout -- {path}` restores them). A run "
          f"directory of one of them under runs/{exp}/{scale}/ would be read back into the store by make table: "
          "move it away first. Then train the cells again (make sweep) and rebuild the report (make table, "
          "TABLE_ARGS=--force while the runs are missing).")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m factorial.store",
                                description="List the runs of a results store, or take runs out of it.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="one line per stored run: id, status, final validation perplexity, commit, "
                                     "whether the working tree was dirty, device")
    ls.add_argument("store", help="results/<exp>/<scale>/ (or its runs.jsonl.gz)")
    drop = sub.add_parser("drop", help="rewrite the store without the chosen runs (to train them again)")
    drop.add_argument("store", help="results/<exp>/<scale>/ (or its runs.jsonl.gz)")
    drop.add_argument("runs", nargs="*", help="run ids as `list` prints them (<cell>/seed<k>)")
    drop.add_argument("--dirty", action="store_true", help="also every run trained from a working tree with "
                                                          "uncommitted changes")
    drop.add_argument("--dry-run", action="store_true", help="say what would be dropped; write nothing")
    args = p.parse_args(argv)
    try:
        path = _store_of(args.store)
        if args.command == "list":
            return _list(path)
        if not args.runs and not args.dirty:
            p.error("drop: name the runs to drop, or --dirty")
        return _drop(path, args.runs, args.dirty, args.dry_run)
    except StoreError as err:
        print(f"python -m factorial.store: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
