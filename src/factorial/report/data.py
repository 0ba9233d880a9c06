"""What the runs wrote, as two tables: one row per run (``runs``) and the logged curves (``curves``).

Three sources give the same frames:

* ``load_local``  — run directories ``<runs_root>/<exp>/<scale>/<cell>/seed<k>/`` (config.yaml, summary.json,
  meta.json, metrics.jsonl), read with pandas; no W&B needed.
* ``load_wandb``  — the W&B public API: runs of group ``<exp>/<scale>``; ``run.config`` is the flattened
  config (dotted keys), ``run.summary`` holds the summary.json keys (and the metric keys), ``run.history``
  the curves.
* ``load_csv``    — a ``cells.csv`` written earlier (and ``curves.csv`` beside it, if there), so every table
  can be rebuilt without the runs.

A cell is identified by its knob values (the resolved config), never by its directory name: ``cell_key``
is the canonical JSON of every knob that defines a cell (factorial.config.KEYS: not the seed, names,
speed or logging). ``row_match`` is the Table 2 row whose optimizer settings (factorial.rows) the knobs
equal, whatever the ``row`` label says.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..schema import (KEYS, Config, DataSchema, LoggerSchema, ModelConfig, OptimSchema, ScheduleSchema, TrainSchema,
                      default_warmup_steps, key_is, knob_applies)
from ..rows import TABLE2
from .. import runfiles as RF
from .. import store as ST
from ..runlog import decode_record, flatten
from . import rules as R

log = logging.getLogger("factorial.report")


class ReportError(Exception):
    """Nothing to report on (no runs dir, no runs, bad csv); the CLI exits with code 2."""


# --- the knobs -------------------------------------------------------------------------------------

# Which config keys go into cells.csv and which define a cell: factorial.config.KEYS (csv, kind).
# The optimizer keys Table 2's rows set (the union over rows): a row is identified by these.
ROW_KEYS = tuple(sorted({f"optim.{k}" for row in TABLE2.values() for k in row.optim}))
ROW_ORDER = list(TABLE2)  # A … P, Q1 … Q300

RESULT_COLUMNS = [
    "status", "outcome", "val_ppl", "best_val_ppl", "test_ppl", "val_loss", "step", "steps", "tokens",
    "wall_time_s", "state_bytes", "params", "diverged_at", "error",
]
META_COLUMNS = ["git_commit", "git_dirty", "device_name", "torch_threads", "torch_version", "warmup_steps_resolved",
                "train_tokens", "rules"]
# The corpus's unigram baseline (nats per token; factorial.data.Corpus.unigram_stats), a column only when some
# run recorded it (runs trained before it was recorded lack it, and their cells.csv stays as it was).
UNIGRAM_COLUMNS = ("train_unigram_entropy", "validation_unigram_xent")
# Columns that are text whatever they look like (a commit hash can be all digits).
STR_COLUMNS = ("run_id", "cell", "exp", "scale", "row", "row_match", "opt", "embedding", "status", "outcome", "error",
               "git_commit", "device_name", "torch_version")
CURVE_KEYS = (RF.TRAIN_LOSS, RF.VAL_PPL, *RF.RMS_KEYS, RF.CLIP_FRAC, RF.RMS_U_MEAN)


def _schema_defaults() -> tuple[dict[str, Any], dict[str, str]]:
    """Flat defaults and value types of every config key, from the schema dataclasses."""
    defaults: dict[str, Any] = {}
    types: dict[str, str] = {}
    sections = {"model": ModelConfig, "data": DataSchema, "optim": OptimSchema, "schedule": ScheduleSchema,
                "train": TrainSchema, "logger": LoggerSchema}
    for prefix, cls in sections.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}.{f.name}"
            if f.default is not dataclasses.MISSING:
                defaults[key] = f.default
            types[key] = _kind(hints[f.name])
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.name not in sections:
            types[f.name] = _kind(hints[f.name])
    return defaults, types


def _kind(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    base = args[0]
    for kind in (bool, int, float, str):
        if base is kind:
            return kind.__name__
    return "any"


DEFAULTS, KINDS = _schema_defaults()


def canon(value: Any, kind: str = "any") -> Any:
    """One spelling per value: None for missing/NaN, real bools, ints, floats, strs (CSV or YAML alike)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text == "" or text.lower() in ("nan", "none", "null"):
            return None
        if kind == "bool" or (kind == "any" and text.lower() in ("true", "false")):
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
        if kind in ("int", "float"):
            value = float(text)
        elif kind == "any":
            try:
                value = float(text)
            except ValueError:
                return text
        else:
            return text
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "str":
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return value  # keep floats floats: 1.0 in a float knob stays 1.0
    return value


def knob_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
    return a == b


def match_row(knobs: dict[str, Any]) -> str | None:
    """The Table 2 row whose optimizer settings these knobs have (None if none)."""
    for letter, row in TABLE2.items():
        if all(knob_equal(knobs.get(f"optim.{k}"), canon(v, KINDS.get(f"optim.{k}", "any"))) for k, v in row.optim.items()):
            return letter
    return None


def _keep_key(key: str) -> bool:
    """A column of cells.csv: every config key but machine paths and W&B plumbing (config.KEYS' csv)."""
    role = KEYS.get(key)
    return role is None or role.csv


def complete_knobs(flat: dict[str, Any]) -> dict[str, Any]:
    """Fill keys a config lacks: from its Table 2 row (``row`` given, optim.* absent), then schema defaults.
    A knob of another optimizer is empty, also where an older config recorded Adafactor's defaults for
    an Adam or SGD cell."""
    out = dict(flat)
    letter = out.get("row")
    if isinstance(letter, str) and letter in TABLE2:
        for k, v in TABLE2[letter].optim.items():
            out.setdefault(f"optim.{k}", v)
    for key, value in DEFAULTS.items():
        if _keep_key(key):
            out.setdefault(key, value)
    optimizer = out.get("optim.name")
    return {k: canon(v, KINDS.get(k, "any")) if knob_applies(k, optimizer) else None
            for k, v in out.items() if _keep_key(k)}


# --- one run ---------------------------------------------------------------------------------------


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def outcome_of(status: Any, val_ppl: Any) -> str:
    """ok | diverged | failed | incomplete — what a run counts as (a completed non-finite run diverged)."""
    if status == RF.COMPLETED:
        return "ok" if _finite(val_ppl) is not None else "diverged"
    if status == RF.DIVERGED:
        return "diverged"
    if status == RF.FAILED:
        return "failed"
    return "incomplete"


def rms_stats(curve: pd.DataFrame, clip: Any = None) -> dict[str, Any]:
    """Per matrix, over the logged steps after RMS_SKIP_STEPS: the excursion max|ln RMS(U)|, min, max, count,
    the fractions of steps outside the band [1/RMS_FAR, RMS_FAR] and above 1, 1.5 and 2 (rules.rms_fractions),
    and — when the run clips at threshold ``clip`` (optim.clip_threshold) — the fraction of those steps on which
    the matrix's update was clipped (RMS(U) is logged before clipping, so that is RMS(U) > d)."""
    out: dict[str, Any] = {}
    d = _finite(clip)
    have = curve is not None and not curve.empty
    all_steps = pd.to_numeric(curve["step"], errors="coerce").to_numpy(float) if have else np.empty(0)
    for m in R.FIG1_MATRICES:
        key = RF.rms_key(m)
        steps, v = np.empty(0), np.empty(0)
        if have and key in curve:  # numpy, not pandas, per matrix: a study's report reads hundreds of runs
            vals = pd.to_numeric(curve[key], errors="coerce").to_numpy(float)
            with np.errstate(invalid="ignore"):
                keep = (all_steps > R.RMS_SKIP_STEPS) & np.isfinite(vals) & (vals > 0)
            steps, v = all_steps[keep], vals[keep]
        out[f"{key}.excursion"] = R.rms_excursion(steps.tolist(), v.tolist())
        out[f"{key}.min"] = float(v.min()) if len(v) else None
        out[f"{key}.max"] = float(v.max()) if len(v) else None
        out[f"{key}.n"] = int(len(v))
        fr = R.rms_fractions(steps.tolist(), v.tolist())
        out[f"{key}.frac_out"] = fr["out"]
        for level in R.RMS_LEVELS:
            out[f"{key}.frac_gt{level:g}"] = fr[f"gt{level:g}"]
        out[f"{key}.frac_clipped"] = float((v > d).mean()) if d is not None and len(v) else None
    clip = None
    if curve is not None and not curve.empty and RF.CLIP_FRAC in curve:
        c = pd.to_numeric(curve[RF.CLIP_FRAC], errors="coerce").dropna()
        clip = float(c.mean()) if len(c) else None
    out[f"{RF.CLIP_FRAC}.mean"] = clip  # the mean over logged steps of the fraction of tensors clipped
    return out


def _curve_frame(records: list[dict], run_id: str) -> pd.DataFrame:
    rows = []
    for rec in records:
        step = rec.get("step")
        if step is None:
            continue
        row = {"run_id": run_id, "step": int(step)}
        found = False
        for k in CURVE_KEYS:
            v = rec.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k] = float(v)
                found = True
        if found:
            rows.append(row)
    frame = pd.DataFrame(rows, columns=["run_id", "step", *CURVE_KEYS])
    return frame


def run_record(run_id: str, config: dict, summary: dict | None, meta: dict | None) -> dict[str, Any]:
    """One row of ``runs``: the knobs (flattened config), the results and the provenance."""
    knobs = complete_knobs(config)
    summary = summary or {}
    meta = meta or {}
    rec: dict[str, Any] = {"run_id": run_id, **knobs}
    rec["seed"] = knobs.get("train.seed")
    status = summary.get("status")
    rec["status"] = status if isinstance(status, str) else "incomplete"
    for key in ("val_ppl", "best_val_ppl", "test_ppl", "val_loss", "wall_time_s", "state_bytes", "params"):
        rec[key] = _finite(summary.get(key))
    for key in ("step", "steps", "tokens", "diverged_at"):
        v = _finite(summary.get(key))
        rec[key] = int(v) if v is not None else None
    if rec["steps"] is None:
        rec["steps"] = knobs.get("train.steps")
    rec["error"] = summary.get("error")
    rec["outcome"] = outcome_of(rec["status"], rec["val_ppl"])
    git = meta.get("git") or {}
    rec["git_commit"] = git.get("commit")
    rec["git_dirty"] = git.get("dirty")
    rec["device_name"] = meta.get("device_name")
    rec["torch_threads"] = meta.get("torch_threads")
    # the pre-registered rules the run was trained under ("<name> <fingerprint>"), when every start had the
    # same; "mixed" when its starts disagree (a resume under other rules); None when trained under none
    starts = {s.get("rules") for s in meta.get("starts") or [] if isinstance(s, dict)}
    rec["rules"] = meta.get("rules") if starts == {meta.get("rules")} else ("mixed" if meta.get("rules") or starts - {None} else None)
    rec["torch_version"] = (meta.get("packages") or {}).get("torch")
    rec["warmup_steps_resolved"] = meta.get("warmup_steps") or knobs.get("schedule.warmup_steps") or (
        default_warmup_steps(int(knobs["train.steps"])) if knobs.get("train.steps") else None)
    rec["train_tokens"] = (meta.get("data") or {}).get("train_tokens")
    if rec["params"] is None and meta.get("params") is not None:
        rec["params"] = _finite(meta["params"])
    return rec


# --- sources ---------------------------------------------------------------------------------------


def study_dir(runs_root: Path, exp: str, scale: str) -> Path:
    return Path(runs_root) / exp / scale


def load_local(runs_root: Path, exp: str, scale: str, store_file: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run of the study at that scale: those of its results store (``store_file``, factorial.store) and the
    run dirs ``<runs_root>/<exp>/<scale>/<cell>/seed<k>/`` that have a config.yaml."""
    return frames(local_records(runs_root, exp, scale, store_file))


def local_records(runs_root: Path, exp: str, scale: str, store_file: Path | None = None) -> dict[str, dict]:
    """run id → record (factorial.store) of every run of the store and the run dirs, sorted; a run dir that
    finished with other numbers than the stored run of the same cell and seed is an error."""
    root = study_dir(runs_root, exp, scale)
    pattern = f"{root}/<cell>/seed<k>/{RF.CONFIG}"
    try:
        stored = ST.load(store_file) if store_file is not None else {}
    except ST.StoreError as err:
        raise ReportError(str(err)) from None
    if not root.is_dir() and not stored:
        where = f" and no store {store_file}" if store_file is not None else ""
        raise ReportError(f"no runs directory {root} (looked for {pattern}){where}; "
                          f"run `make sweep EXP={exp} SCALE={scale}` first")
    records, conflicts, notes = ST.collect(stored, root, store_file or RF.STORE)
    for note in notes:
        log.warning("%s", note)
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ReportError(f"{conflicts[0]}{more}; allowed: one run per cell and seed — move the run directory away "
                          "to build from the stored run, or build from the run directories alone elsewhere "
                          "(--out DIR)")
    if not records:
        raise ReportError(f"no runs in {root} (looked for {pattern})")
    return records


def frames(records: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs and curves frames of stored-run records (factorial.store)."""
    rows, curves = [], []
    for run_id, record in records.items():
        config = flatten(record.get("config") or {})
        summary, meta = record.get("summary"), record.get("meta")
        curve = _curve_frame([decode_record(m) for m in record.get("metrics") or []], run_id)
        rec = run_record(run_id, config, summary, meta)
        rec.update({k: v for k, v in ((meta or {}).get("data") or {}).items() if k in UNIGRAM_COLUMNS})
        rec.update(rms_stats(curve, rec.get("optim.clip_threshold")))
        rows.append(rec)
        curves.append(curve)
    return finish_runs(pd.DataFrame(rows)), _concat(curves)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["run_id", "step", *CURVE_KEYS])
    return pd.concat(frames, ignore_index=True)


HISTORY_SAMPLES = 100_000  # rows per run asked of W&B's history (all of them at every scale we run)


def _summary_value(summary: dict, key: str, metric: str | None = None, pick: str = "last") -> Any:
    """summary.json's key, else the metric's W&B summary (a number, or {"min":…, "last":…})."""
    if key in summary and summary[key] is not None:
        return summary[key]
    if metric and metric in summary:
        v = summary[metric]
        if isinstance(v, dict):
            return v.get(pick)
        return v
    return None


def load_wandb(exp: str, scale: str, project: str = "factorial", entity: str | None = None,
               api: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs of W&B group ``<exp>/<scale>`` — the same frames as ``load_local``.

    ``api`` is a ``wandb.Api()`` (made here if None; tests pass a fake). Summary runs of this module
    (job_type "table") are skipped.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    group = f"{exp}/{scale}"
    try:
        runs = list(api.runs(path, filters={"group": group}))
    except Exception as err:  # network, auth, unknown project
        raise ReportError(f"W&B: could not list runs of {path} group {group!r}: {type(err).__name__}: {err}") from err
    records, curves = [], []
    for run in runs:
        if getattr(run, "job_type", None) == "table" or str(getattr(run, "name", "")).endswith("/summary"):
            continue
        config = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
        config = flatten(config)  # already flat in W&B; nested dicts from older runs flatten the same way
        summary = dict(run.summary) if run.summary is not None else {}
        summ = {
            "status": summary.get("status"),
            "val_ppl": _summary_value(summary, "val_ppl", RF.VAL_PPL, "last"),
            "best_val_ppl": _summary_value(summary, "best_val_ppl", RF.VAL_PPL, "min"),
            "test_ppl": _summary_value(summary, "test_ppl", RF.TEST_PPL),
            **{k: summary.get(k) for k in ("val_loss", "step", "steps", "tokens", "wall_time_s", "state_bytes",
                                          "params", "diverged_at", "error")},
        }
        if summ["status"] is None and getattr(run, "state", None) in ("running", "crashed", "failed", "killed"):
            summ["status"] = RF.FAILED if run.state != "running" else None
        meta = {}
        with _quiet():
            md = getattr(run, "metadata", None)
        if isinstance(md, dict):
            meta["git"] = md.get("git") or {}
        name = str(getattr(run, "name", "") or getattr(run, "id", "run"))
        run_id = name if "/" in name else f"{config.get('cell') or name}/seed{config.get('train.seed', 0)}"
        rec = run_record(run_id, config, summ, meta)
        try:
            hist = run.history(samples=HISTORY_SAMPLES, pandas=False)
        except Exception as err:
            log.warning("W&B: no history for %s: %s", run_id, err)
            hist = []
        if isinstance(hist, pd.DataFrame):
            hist = hist.to_dict("records")
        rows = []
        for h in hist:
            h = dict(h)
            if "step" not in h or h["step"] is None or (isinstance(h["step"], float) and math.isnan(h["step"])):
                h["step"] = h.get("_step")
            rows.append({k: (float(v) if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity") else v)
                         for k, v in h.items()})
        curve = _curve_frame(rows, run_id)
        rec.update(rms_stats(curve, rec.get("optim.clip_threshold")))
        records.append(rec)
        curves.append(curve)
    if not records:
        raise ReportError(f"W&B: no runs in project {path} with group {group!r}")
    return finish_runs(pd.DataFrame(records)), _concat(curves)


class _quiet:
    """Suppress any error from a lazy W&B attribute (metadata needs a file download)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], Exception)


def _csv_value(key: str, value: Any) -> Any:
    return canon(value, "str" if key in STR_COLUMNS else KINDS.get(key, "any"))


def load_csv(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cells.csv (and curves.csv beside it, if present)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"no cells.csv at {path}")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    if raw.empty:
        raise ReportError(f"{path} holds no runs")
    records = []
    for i, row in enumerate(raw.to_dict("records")):
        row = {k: v for k, v in row.items() if not str(k).startswith("Unnamed")}
        run_id = row.get("run_id") or f"run{i}"
        config = {k: canon(v, KINDS[k]) for k, v in row.items() if k in KINDS}
        if "seed" in row and config.get("train.seed") is None:
            config["train.seed"] = canon(row["seed"], "int")
        rec = run_record(run_id, config, {k: _csv_value(k, row.get(k)) for k in RESULT_COLUMNS if k in row}, None)
        for k in META_COLUMNS:
            if k in row:
                rec[k] = _csv_value(k, row[k])
        for k, v in row.items():  # anything else (rms stats, extra columns) passes through
            if k not in rec:
                rec[k] = _csv_value(k, v)
        if "outcome" in row and canon(row["outcome"]) and rec.get("status") == "incomplete":
            rec["outcome"] = row["outcome"]
        records.append(rec)
    runs = finish_runs(pd.DataFrame(records))
    curves_path = path.with_name("curves.csv")
    curves = pd.read_csv(curves_path) if curves_path.is_file() else _concat([])
    if not curves.empty:
        curves["run_id"] = curves["run_id"].astype(str)
        clips = dict(zip(runs["run_id"], runs["optim.clip_threshold"])) if "optim.clip_threshold" in runs else {}
        stats = {rid: rms_stats(g, clips.get(rid)) for rid, g in curves.groupby("run_id", sort=False)}
        for k in dict.fromkeys(k for st in stats.values() for k in st):  # .loc: a new column is allowed, .at's is not
            has = [k in stats.get(rid, {}) for rid in runs["run_id"]]
            runs.loc[has, k] = [stats[rid][k] for rid, h in zip(runs["run_id"], has) if h]
        runs = _ordered(runs)  # a statistic cells.csv lacked (written before it existed) takes its place
    return runs, curves


# --- derived columns -------------------------------------------------------------------------------


def identity_keys(columns) -> list[str]:
    """The knob columns that define a cell (config.KEYS: not the seed, names, speed or logging)."""
    return [c for c in columns if (c in KINDS or c in DEFAULTS) and key_is(c, "grouped") and _keep_key(c)]


def _fmt_num(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


def opt_label(k: dict[str, Any]) -> str:
    """The optimizer in words: the Table 2 row letter if it is one, else its settings."""
    letter = match_row(k)
    if letter:
        return letter
    name = k.get("optim.name")
    if name == "sgd":
        return f"SGD lr={_fmt_num(k.get('optim.lr_scale'))}·s_t"
    if name == "adam":
        return f"Adam β1={_fmt_num(k.get('optim.beta1'))} β2={_fmt_num(k.get('optim.beta2'))} α={_fmt_num(k.get('optim.lr_scale'))}·s_t"
    exp = k.get("optim.beta2_exponent")
    beta2 = f"1−t^−{_fmt_num(exp)}" if exp is not None else _fmt_num(k.get("optim.beta2"))
    clip = k.get("optim.clip_threshold")
    beta1 = k.get("optim.beta1") or 0.0
    mom = f" ({k.get('optim.momentum')})" if beta1 and k.get("optim.momentum") not in (None, "gradient") else ""
    step = "ρ" if k.get("optim.relative_step") else "α"
    return (f"Adafactor {k.get('optim.second_moment')} β1={_fmt_num(beta1)}{mom} β2={beta2} "
            f"d={_fmt_num(clip) if clip is not None else 'off'} {step}={_fmt_num(k.get('optim.lr_scale'))}·s_t")


def embedding_labels(k: dict[str, Any]) -> tuple[str, str]:
    """(init σ, multiplier) in the paper's terms: 1/√d, √d, 1, or the number."""
    d = k.get("model.d_model")
    std, mult = k.get("model.embedding_init_std"), k.get("model.embedding_multiplier")

    def name(v, default, sym):
        if v is None:
            return sym
        if d and math.isclose(v, default, rel_tol=1e-6):
            return sym
        if math.isclose(v, 1.0):
            return "1"
        return f"{v:g}"

    return (name(std, d**-0.5 if d else 0.0, "1/√d"), name(mult, d**0.5 if d else 0.0, "√d"))


def finish_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Add the derived columns: row_match, opt, embedding, cell_key; order the columns for cells.csv."""
    runs = runs.astype(object).where(runs.notna(), None)
    idkeys = identity_keys(runs.columns)
    derived = {"row_match": [], "opt": [], "embedding": [], "cell_key": []}
    for rec in runs.to_dict("records"):
        k = {key: rec.get(key) for key in idkeys}
        derived["row_match"].append(match_row(k))
        derived["opt"].append(opt_label(k))
        std, mult = embedding_labels(k)
        derived["embedding"].append(f"σ={std}, ×{mult}")
        derived["cell_key"].append(json.dumps({key: k[key] for key in sorted(idkeys)}, sort_keys=True, default=str))
    for col, values in derived.items():
        runs[col] = pd.Series(values, index=runs.index, dtype=object)
    runs["seed"] = pd.Series([int(v) if v is not None else None for v in runs["seed"]], index=runs.index, dtype=object)
    runs = _ordered(runs).sort_values(["run_id"], kind="stable").reset_index(drop=True)
    return runs.astype(object).where(runs.notna(), None)  # Python values throughout: None, bool, int, float, str


def _ordered(runs: pd.DataFrame) -> pd.DataFrame:
    """The columns of ``runs`` in cells.csv's order: identity and results, the knobs, the RMS(U) statistics."""
    first = ["run_id", "cell", "seed", "exp", "scale", "row", "row_match", "opt", "embedding", *RESULT_COLUMNS, *META_COLUMNS,
             *UNIGRAM_COLUMNS]
    rms = sorted(c for c in runs.columns if c.startswith(RF.rms_key("")))
    knobs = sorted(c for c in runs.columns if c not in first and c not in rms and c != "cell_key")
    order = [c for c in first if c in runs.columns] + knobs + rms + (["cell_key"] if "cell_key" in runs.columns else [])
    return runs[order]


# --- cells: runs aggregated over seeds --------------------------------------------------------------


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _std(xs: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def machine_of(run: dict) -> str:
    """``AMD EPYC, 1 thread``: what decides a run's float rounding besides its config (None parts: unknown)."""
    threads = run.get("torch_threads")
    name = run.get("device_name") or "unknown machine"
    if threads is None or threads == "":
        return str(name)
    threads = int(float(threads))
    return f"{name}, {threads} thread{'s' if threads != 1 else ''}"


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (runs with the same knobs), with seed statistics of the final perplexity."""
    idkeys = identity_keys(runs.columns)
    out = []
    for key, g in runs.groupby("cell_key", sort=False, dropna=False):
        g = g.sort_values("seed", kind="stable", na_position="last")
        first = g.iloc[0]
        rec = {k: first[k] for k in idkeys}
        rec.update({"cell_key": key, "row_match": first["row_match"], "opt": first["opt"], "embedding": first["embedding"]})
        ok = g[g["outcome"] == "ok"]
        div = g[g["outcome"] == "diverged"]
        finished = g[g["outcome"].isin(["ok", "diverged"])]
        ppls = [float(v) for v in ok["val_ppl"]]
        rec.update({
            "cells": ", ".join(sorted({str(c) for c in g["cell"] if c})) if "cell" in g else "",
            "run_ids": list(g["run_id"]),
            "finished_run_ids": list(finished["run_id"]),
            "seeds": [int(s) for s in finished["seed"] if s is not None],
            "n_runs": len(g), "n": len(finished), "n_ok": len(ok), "n_diverged": len(div),
            "n_failed": int((g["outcome"] == "failed").sum()), "n_incomplete": int((g["outcome"] == "incomplete").sum()),
            "ppl_values": ppls, "ppl_mean": _mean(ppls), "ppl_std": _std(ppls),
            "ppl_by_seed": {int(s): float(v) for s, v in zip(ok["seed"], ok["val_ppl"]) if s is not None},
            # where each finished seed ran: CPU/GPU model and torch threads (pairs across them are flagged)
            "machine_by_seed": {int(r["seed"]): machine_of(r) for r in finished.to_dict("records") if r["seed"] is not None},
            "vocab_size": first.get("data.vocab_size"),
            "best_ppl_mean": _mean([float(v) for v in ok["best_val_ppl"] if v is not None]),
            "test_ppl_mean": _mean([float(v) for v in ok["test_ppl"] if v is not None]),
            "diverged_at": [int(v) for v in div["diverged_at"] if v is not None],
            "state_bytes": max((float(v) for v in finished["state_bytes"] if v is not None), default=None),
            "params": max((float(v) for v in g["params"] if v is not None), default=None),
            "wall_time_s": _mean([float(v) for v in finished["wall_time_s"] if v is not None]),
        })
        rec["rms_every"] = first.get("train.rms_every")
        for m in R.FIG1_MATRICES:
            for stat, name in (("excursion", "rms"), ("min", "rmsmin"), ("max", "rmsmax")):
                col = f"{RF.rms_key(m)}.{stat}"
                rec[f"{name}_{m}"] = [_finite(v) for v in finished[col]] if col in finished else []
            col = f"{RF.rms_key(m)}.frac_out"
            rec[f"rmsout_{m}"] = [_finite(v) for v in finished[col]] if col in finished else []
        # per finished seed: the fraction of (matrix, logged step) pairs outside the band, over every logged matrix
        rec["rms_frac_out"] = _pooled_fraction(finished)
        for m in R.FIG1_MATRICES:
            for level in R.RMS_LEVELS:
                col = f"{RF.rms_key(m)}.frac_gt{level:g}"
                rec[f"rmsgt{level:g}_{m}"] = [_finite(v) for v in finished[col]] if col in finished else []
            col = f"{RF.rms_key(m)}.frac_clipped"
            rec[f"clipped_{m}"] = [_finite(v) for v in finished[col]] if col in finished else []
        col = f"{RF.CLIP_FRAC}.mean"
        rec["clip_frac"] = [_finite(v) for v in finished[col]] if col in finished else []
        out.append(rec)
    cells = pd.DataFrame(out, dtype=object)
    return cells.reset_index(drop=True)


def _pooled_fraction(finished: pd.DataFrame) -> list[float | None]:
    out = []
    for rec in finished.to_dict("records"):
        num = den = 0.0
        for m in R.FIG1_MATRICES:
            f, n = _finite(rec.get(f"{RF.rms_key(m)}.frac_out")), _finite(rec.get(f"{RF.rms_key(m)}.n"))
            if f is not None and n:
                num += f * n
                den += n
        out.append(num / den if den else None)
    return out


def stats_of(cell: dict | pd.Series | None, label: str) -> R.CellStats:
    """The rules' view of one aggregated cell (None: missing)."""
    if cell is None:
        return R.CellStats(label)
    by_seed = cell.get("ppl_by_seed") or {}
    return R.CellStats(label, n=int(cell["n"]), n_diverged=int(cell["n_diverged"]), mean=cell["ppl_mean"],
                       std=cell["ppl_std"], n_failed=int(cell.get("n_failed") or 0),
                       n_incomplete=int(cell.get("n_incomplete") or 0), by_seed=dict(by_seed))


def study_noise(cells: pd.DataFrame | list[dict] | None) -> R.Noise:
    """The study's pooled seed noise (rules.pooled_noise) from every cell's finished seeds (a frame of
    cells, or its records)."""
    if isinstance(cells, pd.DataFrame):
        cells = None if cells.empty or "ppl_by_seed" not in cells else cells.to_dict("records")
    if not cells or not any("ppl_by_seed" in c for c in cells):
        return R.NO_NOISE
    return R.pooled_noise([dict(c.get("ppl_by_seed") or {}) for c in cells])


def varying(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    """The keys that take more than one value in frame, among the rows whose optimizer has the knob (an
    Adam cell's empty clip_threshold does not make clipping vary in a study of Adam and Adafactor)."""
    out = []
    names = list(frame["optim.name"]) if "optim.name" in frame else [None] * len(frame)
    for k in keys:
        if k in frame and len({json.dumps(v, default=str) for v, o in zip(frame[k], names) if knob_applies(k, o)}) > 1:
            out.append(k)
    return out
