"""Metric logging for one training run ("cell"): local JSONL files plus Weights & Biases.

The local ``metrics.jsonl`` is the source of truth. W&B is a convenience mirror and is
treated as unreliable: any exception it raises (init, log, summary, finish) produces one
warning, switches W&B off for the rest of the run, and training carries on. Nothing W&B
does can lose or delay a local record, because the local line is written (and flushed)
before W&B is called.

``metrics.jsonl`` format
    One JSON object per line: ``{"step": <int>, "<metric>": <value>, ...}``. Floats are
    written with Python's shortest round-trip repr, so they read back bit-exact.
    Non-finite floats are not valid JSON, so they are stored as the *strings*
    ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``; :func:`read_metrics` turns those exact
    strings back into floats (so a genuine string metric spelled exactly like that would
    come back as a float too -- metrics are numbers, so that is acceptable).

``wandb`` is imported lazily: a run with ``mode="disabled"`` never imports it (the import
alone costs ~0.5 s), and tests of the local path don't depend on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .runfiles import METRICS
from .runio import atomic_write_bytes

log = logging.getLogger(__name__)

__all__ = [
    "WandbSettings",
    "RunLogger",
    "resolve_wandb_mode",
    "read_metrics",
    "parse_metrics",
    "decode_record",
    "flatten",
    "run_id_for",
    "METRICS_FILE",
]

METRICS_FILE = METRICS  # factorial.runfiles
MODES = ("auto", "online", "offline", "disabled")
# W&B's own aliases for WANDB_MODE (wandb.Settings accepts them too).
_ENV_MODE_ALIASES = {"dryrun": "offline", "run": "online"}
# Metrics that get min/last summaries (best and final validation quality).
_VAL_METRICS = ("val/ppl", "val/loss")
# Bounded waits so an unreachable server can't hang a cell (wandb's defaults: init 90 s,
# login prompt and finish upload: forever).
_INIT_TIMEOUT_S = 60.0
_FINISH_TIMEOUT_S = 300.0

_NONFINITE_TO_JSON = {math.inf: "Infinity", -math.inf: "-Infinity"}
_JSON_TO_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


# ============================================================================ settings / mode


@dataclass
class WandbSettings:
    mode: str = "auto"  # "auto" | "online" | "offline" | "disabled"
    project: str = "factorial"
    entity: str | None = None
    group: str | None = None  # the study, e.g. "table2/cpu"
    name: str | None = None  # the cell id
    # Stable id so a resumed cell continues the same W&B run; derived from run_dir if None.
    run_id: str | None = None
    tags: list[str] = field(default_factory=list)


def run_id_for(run_dir: Path) -> str:
    """Stable W&B run id for a run directory: first 16 hex chars of sha1(resolved path).

    Hex digits are within W&B's allowed id alphabet [a-z0-9], and the same directory
    (i.e. a resumed cell) always maps to the same id.
    """
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def _invalid_mode(value: str, key: str = "logger.mode") -> ValueError:
    return ValueError(f"{key}={value!r} is invalid; allowed: {' | '.join(MODES)}")


def resolve_wandb_mode(mode: str) -> tuple[str, str]:
    """Decide the W&B mode before ``wandb.init`` (never by trying online first).

    Returns ``(mode, reason)`` with mode in ``online | offline | disabled``.

    * ``online`` / ``offline`` / ``disabled`` are returned as given.
    * ``auto``: ``WANDB_MODE`` (or ``WANDB_DISABLED=true``) in the environment wins;
      otherwise ``online`` if W&B has credentials for this session (what ``wandb.login``
      finds: ``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, a key saved by ``wandb login``),
      else ``offline``.

    Never touches the network: credentials are only looked up, not verified. An invalid
    key therefore resolves to ``online``; RunLogger then falls back to an offline run when
    the server is out of reach or ``wandb.init`` fails online.
    """
    if mode not in MODES:
        raise _invalid_mode(mode)
    if mode != "auto":
        return mode, f"logger.mode={mode}"

    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode:
        resolved = _ENV_MODE_ALIASES.get(env_mode, env_mode)
        if resolved not in ("online", "offline", "disabled"):
            raise _invalid_mode(env_mode, key="WANDB_MODE")
        return resolved, f"WANDB_MODE={env_mode} in the environment"
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "disabled", "WANDB_DISABLED is set in the environment"

    found, where = _find_credentials()
    if found:
        return "online", f"logger.mode=auto and W&B credentials found ({where})"
    return "offline", (
        f"logger.mode=auto and no W&B credentials ({where}); "
        "run `wandb login` or set WANDB_API_KEY to log online"
    )


def _find_credentials() -> tuple[bool, str]:
    """(found, description) by W&B's public API, without the network and without a prompt.

    ``wandb.login(prompt=False, verify=False)`` looks in W&B's own sources and order
    (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, W&B's settings files, the netrc file that
    ``wandb login`` writes) and only reads them. W&B is set up silent first: a non-silent
    login looks the account up on the server to greet it (seconds, and a hang on a node
    without network). The login is remembered for this process, so the run started next uses it.
    """
    if os.environ.get("WANDB_API_KEY"):
        where = "WANDB_API_KEY is set"
    elif os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        where = "WANDB_IDENTITY_TOKEN_FILE is set"
    else:
        where = "a key saved by `wandb login`, in the netrc file or W&B's settings"
    try:
        import wandb

        wandb.setup(wandb.Settings(silent=True))
        found = wandb.login(prompt=False, verify=False)
    except Exception as e:  # e.g. AuthenticationError: a saved key that is malformed
        return False, f"W&B credentials unusable: {type(e).__name__}: {_first_line(e)}"
    if found:
        return True, where
    return False, "WANDB_API_KEY unset and no key saved by `wandb login`"


# ============================================================================ helpers


def flatten(d: Mapping, prefix: str = "") -> dict:
    """Nested mapping -> flat dict with dotted keys.

    ``{"optim": {"beta1": 0.9}}`` -> ``{"optim.beta1": 0.9}``.

    W&B shows flat config keys as filterable/groupable columns; nested dicts would be a
    single opaque column. Non-mapping values (lists included) are kept as they are.
    """
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _config_value(value: Any) -> Any:
    """Config value -> something wandb can serialise (a Path in the config must not be
    what turns W&B off for a whole run): JSON scalars and lists of them pass, the rest
    becomes str."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_config_value(v) for v in value]
    return str(value)


def _scalar(value: Any) -> Any:
    """numpy scalar / 0-d tensor -> Python number (both sinks then see the same value;
    wandb would turn a tensor into a histogram)."""
    if not isinstance(value, (bool, int, float, str)) and hasattr(value, "item"):
        return value.item()
    return value


def _to_json_value(value: Any) -> Any:
    """Scalar -> JSON-safe value; floats exact, non-finite floats as strings (see module doc)."""
    value = _scalar(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else _NONFINITE_TO_JSON[value]
    return value


def _from_json_value(value: Any) -> Any:
    if isinstance(value, str):
        return _JSON_TO_NONFINITE.get(value, value)
    return value


def _encode_record(metrics: Mapping[str, Any], step: int) -> str:
    record = {"step": int(step)}
    for key, value in metrics.items():
        record[str(key)] = _to_json_value(value)
    # allow_nan=False: a non-finite float that slipped through must fail here, loudly,
    # rather than produce a line no standard JSON reader accepts.
    return json.dumps(record, allow_nan=False)


def _parse_lines(data: bytes, path: Path) -> list[tuple[bytes, dict]]:
    """Split JSONL bytes into (raw line incl. newline, decoded record) pairs.

    A last line without its newline, or one that doesn't decode, is a write cut short by
    a crash and is dropped. Anything undecodable before it is real corruption: raise.
    """
    lines = data.splitlines(keepends=True)
    out: list[tuple[bytes, dict]] = []
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        if not raw.strip():
            continue
        if last and not raw.endswith(b"\n"):
            log.warning("%s: dropping a partial last line (interrupted write): %r", path, raw[:80])
            break
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
        except ValueError as e:
            if last:
                log.warning("%s: dropping an unreadable last line: %r", path, raw[:80])
                break
            raise ValueError(f"{path}: line {i + 1} is corrupt ({e}): {raw[:80]!r}") from e
        out.append((raw, rec))
    return out


def read_metrics(path: Path) -> list[dict]:
    """Read metrics.jsonl: one dict per record, non-finite floats restored.

    A partial trailing line (the writer crashed mid-line) is skipped; corruption anywhere
    else raises ValueError. A missing file reads as no records.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [decode_record(rec) for _, rec in _parse_lines(data, path)]


def parse_metrics(data: bytes, where: str | Path) -> list[dict]:
    """The records of metrics.jsonl bytes as JSON has them (non-finite floats still as their strings): what
    the results store keeps (factorial.store). ``where`` names the file in an error."""
    return [rec for _, rec in _parse_lines(data, Path(where))]


def decode_record(record: Mapping[str, Any]) -> dict:
    """A record as metrics.jsonl holds it, with its non-finite floats restored."""
    return {k: _from_json_value(v) for k, v in record.items()}


def _truncate_metrics(path: Path, resume_step: int | None) -> None:
    """Keep only records with step <= resume_step (all if None, none if < 0) and drop a partial last line.

    A crashed run may have logged steps after its last checkpoint; the resumed run logs
    them again, so they must go or they'd be duplicated. Rewritten atomically (temp file
    in the same directory + os.replace) so a crash here can't leave a half-written file.
    Untouched when there's nothing to remove.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    records = _parse_lines(data, path)
    keep = [
        raw
        for raw, rec in records
        if resume_step is None or (isinstance(rec.get("step"), int) and rec["step"] <= resume_step)
    ]
    new = b"".join(keep)
    if new == data:
        return
    if resume_step is not None and resume_step < 0 and len(keep) < len(records):
        log.info("%s: a start from step 0, dropped %d record(s) an earlier start logged", path, len(records) - len(keep))
    elif resume_step is not None and len(keep) < len(records):
        log.info(
            "%s: resuming from step %d, dropped %d record(s) logged after it",
            path, resume_step, len(records) - len(keep),
        )
    atomic_write_bytes(path, new)


def _first_line(exc: BaseException) -> str:
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return lines[0][:300] if lines else ""


_PROBE_TIMEOUT_S = 5.0


def wandb_server_reachable(timeout_s: float = _PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, host:port): a TCP connection to the W&B server ($WANDB_BASE_URL or W&B's default)
    within ``timeout_s``, name lookup included. Says nothing about the key."""
    import socket
    import threading

    base_url = os.environ.get("WANDB_BASE_URL")
    if not base_url:
        import wandb

        base_url = wandb.Settings().base_url  # W&B's default server
    parts = urlsplit(base_url if "//" in base_url else f"https://{base_url}")
    host = parts.hostname or ""
    try:
        port = parts.port or (80 if parts.scheme == "http" else 443)
    except ValueError:
        return False, base_url
    where = f"{host}:{port}"
    result: dict[str, bool] = {}

    def probe() -> None:  # in a thread: getaddrinfo has no timeout of its own
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result["ok"] = True
        except OSError:
            result["ok"] = False

    thread = threading.Thread(target=probe, daemon=True, name="wandb-probe")
    thread.start()
    thread.join(timeout_s)
    return result.get("ok", False), where


def _set_aside_wandb_runs(wandb_root: Path) -> None:
    """Move earlier local W&B runs (``offline-run-*``, ``run-*``) into ``wandb/superseded/``."""
    earlier = sorted(p for p in wandb_root.glob("*run-*") if p.is_dir() and p.name.startswith(("offline-run-", "run-")))
    if not earlier:
        return
    aside = wandb_root / "superseded"
    aside.mkdir(exist_ok=True)
    for p in earlier:
        os.replace(p, aside / p.name)
    log.info("%s: a start from step 0; %d earlier W&B run director%s set aside in %s",
             wandb_root, len(earlier), "y" if len(earlier) == 1 else "ies", aside)


def flush_wandb() -> None:
    """Wait until W&B has written out every run of this process (``wandb.teardown()``).

    ``run.finish()`` returns once wandb-core has handled the run's end, but an offline run's file
    can reach the disk a moment later; shutting W&B down waits for it. The next W&B use in this
    process starts it again. Never raises: the local logs are complete either way.
    """
    import wandb

    try:
        wandb.teardown()
    except (Exception, SystemExit) as e:  # teardown exits the process when wandb-core failed
        log.warning("W&B did not shut down cleanly (%s: %s); its offline run may be incomplete", type(e).__name__, e)


# ============================================================================ RunLogger


class RunLogger:
    """Logs one run's metrics to ``run_dir/metrics.jsonl`` and (best effort) to W&B.

    Use as a context manager so W&B is finished (and the file closed) in all cases::

        with RunLogger(run_dir, settings, cfg_dict, resume_step=ckpt_step) as rl:
            rl.log({"train/loss": loss}, step)
    """

    # fsync cost is paid once per this many lines; every line is still flushed to the OS
    # at once, so only a machine crash (not a process crash) can lose the last few lines.
    FSYNC_EVERY = 50

    def __init__(
        self,
        run_dir: Path,
        wandb: WandbSettings,
        config: dict,
        *,
        resume_step: int | None = None,
        fresh: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / METRICS_FILE
        self._settings = wandb
        self._run: Any = None  # the wandb Run while W&B is active
        self._wandb_dir: Path | None = None
        self._closed = False
        self._since_fsync = 0
        self._offline_because: str | None = None  # why an online run fell back to offline
        self._offline_run = False  # an offline W&B run was started: finish() waits until it is on disk

        # Local first: it must work even if everything about W&B fails.
        if fresh:
            # A start from step 0 (no checkpoint): what an earlier start logged before it was cut
            # is logged again now, so it goes, and so do its offline W&B runs (set aside, not deleted,
            # so that `wandb sync .../offline-run-*` uploads this start only).
            _truncate_metrics(self.metrics_path, -1)
            _set_aside_wandb_runs(self.run_dir / "wandb")
        else:
            _truncate_metrics(self.metrics_path, resume_step)
        self._file = open(self.metrics_path, "a", encoding="utf-8")

        mode, reason = resolve_wandb_mode(wandb.mode)
        self._mode = mode
        log.info("W&B mode: %s (%s)", mode, reason)
        if mode == "online":
            # A compute node without network would cost wandb.init its whole timeout per cell and
            # record nothing: look at the server first (seconds at most), and go offline if it is out of reach.
            reachable, where = wandb_server_reachable()
            if not reachable:
                self._offline_because = f"the W&B server {where} is out of reach"
                mode = self._mode = "offline"
        if mode != "disabled":
            self._init_wandb(mode, config)

    # ------------------------------------------------------------------ properties

    @property
    def wandb_mode(self) -> str:
        """The W&B mode in use: online | offline | disabled ("disabled" after any failure)."""
        return self._mode

    @property
    def wandb_dir(self) -> Path | None:
        """The local W&B run directory (``run_dir/wandb/[offline-]run-*``), if W&B started."""
        return self._wandb_dir

    # ------------------------------------------------------------------ W&B plumbing

    def _init_wandb(self, mode: str, config: dict) -> None:
        if mode == "online":
            try:
                self._start_wandb("online", config)
                return
            except Exception as e:
                # An online start that fails (no route, DNS, a refused key) falls back to an offline run
                # with the same id, once, so that the run is still recorded and can be synced later.
                self._offline_because = f"wandb.init online failed ({type(e).__name__}: {_first_line(e)})"
                half, self._run = self._run, None
                if half is not None:  # started, then failed: close it before the offline start
                    try:
                        half.finish(exit_code=1)
                    except Exception:
                        log.debug("finishing the failed online W&B run also failed", exc_info=True)
                self._wandb_dir = None
                self._mode = "offline"
                mode = "offline"
        try:
            self._start_wandb(mode, config)
        except Exception as e:
            self._wandb_failed("wandb.init" + (f" offline, after {self._offline_because}" if self._offline_because else ""), e)
            return
        if self._offline_because and self._run is not None:
            log.warning("W&B: %s; this run logs to W&B offline instead, in %s (upload it later with "
                        "`wandb sync %s`)", self._offline_because, self._wandb_dir, self._wandb_dir)
        log.info("W&B run %s (%s) in %s", self._run.id if self._run else "-", self._mode, self._wandb_dir)

    def _start_wandb(self, mode: str, config: dict) -> None:
        """wandb.init in ``mode``; raises what it raises."""
        s = self._settings
        import wandb

        settings = wandb.Settings(
            silent=True,  # our own log lines report what matters
            console="off",  # don't wrap/capture stdout/stderr of the training loop
            x_disable_stats=True,  # no system-metrics sampler process
            x_disable_machine_info=True,  # no hardware/cloud-metadata probing
            init_timeout=_INIT_TIMEOUT_S,
            login_timeout=_INIT_TIMEOUT_S,  # an interactive key prompt must not block
            # Bound the final upload; anything not uploaded stays in the run dir
            # for `wandb sync`. Raise so we can say so in our warning.
            finish_timeout=_FINISH_TIMEOUT_S if mode == "online" else 0.0,
            finish_timeout_raises=mode == "online",
        )
        run = wandb.init(
            project=s.project,
            entity=s.entity,
            group=s.group,
            name=s.name,
            id=s.run_id or run_id_for(self.run_dir),
            resume="allow",  # same id -> a resumed cell continues the same W&B run
            tags=list(s.tags) or None,
            config={k: _config_value(v) for k, v in flatten(config).items()},
            dir=str(self.run_dir),  # -> run_dir/wandb/...
            mode=mode,
            # Each RunLogger owns its run object; never get a previous cell's run back
            # (wandb's script default "return_previous" would) and never touch it.
            reinit="create_new",
            settings=settings,
        )
        self._run = run
        self._wandb_dir = Path(run.settings.sync_dir)
        # wandb may have ended up in another mode than asked (e.g. a login prompt
        # timing out yields a no-op run); report what is actually in use.
        if run.disabled:
            self._mode = "disabled"
            self._run = None
            log.warning("W&B init returned a disabled run; only local logs are written")
            return
        if run.offline:
            self._mode = "offline"
            self._offline_run = True

        # Our "step" (the optimizer step) is the x-axis of every chart, not wandb's
        # internal _step: that one restarts/shifts across resumes, ours doesn't.
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        for name in _VAL_METRICS:
            # wandb 0.31 takes several aggregations as a comma-separated string.
            run.define_metric(name, step_metric="step", summary="min,last")

    def _sync_hint(self) -> str:
        if self._wandb_dir is not None and self._wandb_dir.is_dir():
            return (
                f"What W&B recorded so far is in {self._wandb_dir}; upload it later with "
                f"`wandb sync {self._wandb_dir}`."
            )
        return (
            "W&B recorded nothing for this run (offline W&B runs of this cell that did "
            f"record can be uploaded with `wandb sync {self.run_dir}/wandb/offline-run-*`)."
        )

    def _wandb_failed(self, what: str, exc: BaseException) -> None:
        """Switch W&B off for the rest of the run after one warning."""
        run, self._run = self._run, None
        self._mode = "disabled"
        log.warning(
            "W&B failed in %s (%s: %s). W&B logging is off for the rest of this run; "
            "training continues and %s stays complete. %s",
            what, type(exc).__name__, exc, self.metrics_path, self._sync_hint(),
        )
        if run is not None:
            # Close the broken run so its service stream flushes what it has and the
            # run isn't left dangling until interpreter exit. Best effort, silently.
            try:
                run.finish(exit_code=1)
            except Exception:
                log.debug("finishing the failed W&B run also failed", exc_info=True)
            # What it recorded reaches the disk when W&B shuts down (finish() or process exit).

    # ------------------------------------------------------------------ public API

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Append ``{"step": step, **metrics}`` to metrics.jsonl, then mirror it to W&B."""
        if self._closed:
            raise RuntimeError(f"RunLogger for {self.run_dir} is finished; cannot log")
        if "step" in metrics:
            raise ValueError("'step' is reserved; pass it as the step argument")
        metrics = {str(k): _scalar(v) for k, v in metrics.items()}
        self._file.write(_encode_record(metrics, step) + "\n")
        self._file.flush()  # to the OS: survives a crash of this process
        self._since_fsync += 1
        if self._since_fsync >= self.FSYNC_EVERY:
            os.fsync(self._file.fileno())  # to disk: survives a machine crash
            self._since_fsync = 0

        if self._run is not None:
            try:
                # "step" is logged as a metric (see define_metric in _init_wandb) rather
                # than passed as wandb's step=, which must increase strictly across the
                # whole W&B run and would reject re-logged steps after a resume.
                self._run.log({**metrics, "step": step})
            except Exception as e:
                self._wandb_failed(f"wandb.log at step {step}", e)

    def log_summary(self, summary: dict) -> None:
        """Set W&B run summary values (the local summary.json is the trainer's job)."""
        if self._run is None:
            return
        try:
            self._run.summary.update(summary)
        except Exception as e:
            self._wandb_failed("wandb summary update", e)

    def finish(self, exit_code: int = 0) -> None:
        """Close metrics.jsonl and finish the W&B run. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            # Even if the disk write failed (that error propagates: local logs matter),
            # the W&B run still gets closed.
            self._file.close()
            self._finish_wandb(exit_code)

    def _finish_wandb(self, exit_code: int) -> None:
        run, self._run = self._run, None
        if run is not None:
            try:
                run.finish(exit_code=exit_code)
            except Exception as e:
                self._mode = "disabled"
                log.warning(
                    "W&B failed in wandb.finish (%s: %s); local logs in %s are complete. %s",
                    type(e).__name__, e, self.metrics_path, self._sync_hint(),
                )
        if self._offline_run:  # also one that failed midway: what it recorded is for `wandb sync`
            flush_wandb()
            if self._mode == "offline":
                log.info("W&B offline run saved; upload with `wandb sync %s`", self._wandb_dir)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.finish(exit_code=0 if exc_type is None else 1)
        return False  # never swallow the training loop's exception
