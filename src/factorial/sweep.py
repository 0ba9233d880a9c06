"""A study: a resumable grid of cells, each one ``python -m factorial.train`` run.

    python -m factorial.sweep --exp table2 --scale cpu --jobs 4            # or: make sweep EXP=table2 JOBS=4
    python -m factorial.sweep --exp fig1 --scale smoke --dry-run            # list the cells, run nothing
    python -m factorial.sweep --exp smoke --scale smoke -- logger=none train.steps=60

Study files: ``experiments/<name>.yaml``
----------------------------------------

A study is a set of *cells*; a cell is a list of Hydra overrides of conf/config.yaml, run once per seed::

    description: Table 2 — rows A–P and the SGD rows, with and without warmup   # free text
    grid:                      # cartesian product of override values; each combination is one cell
      row: [A, B, C]           #   a config group choice (row, optim, data, model, logger) -> `row=A`
      schedule.warmup: [true, false]   # a plain key -> `schedule.warmup=true`; null -> `key=null`
      optimizer:               #   a value that is a mapping sets several keys together; the axis
        - {optim: adam, schedule.warmup: true}      # name ("optimizer") is then only a label
        - {optim: adafactor, schedule.warmup: false}
    seeds: [0]                 # seeds of every cell (default [0])
    more_seeds:                # more seeds for the cells that match `when` (the union of seeds is run)
      - when: {schedule.warmup: false, row: [A, B]}   # every key must match; a list means "any of"
        seeds: [0, 1, 2]
    fixed: [train.rms_every=1] # overrides applied to every cell but not part of its name
                               # (a list of key=value strings, or a mapping)
    cells:                     # explicit cells (mappings), added to the grid's; optional `seeds:` of their own
      - {row: O, schedule.warmup: false, seeds: [0, 1, 2]}
    report:                    # what `make table` reports (optional; factorial.report.spec)
      table: table2            #   the table: cells (default: a row per cell) | table2 | table3 | fig1, or a pivot:
                               #   {title: ..., rows: [schedule.multiplier], columns: [row, schedule.warmup],
                               #    sweep: schedule.multiplier} — fields are knobs, `row` or `optimizer`
      plots: [row_curves, sgd_lr, fig1_ag]   # the figures, in order (default: by the table): curves, row_curves,
                               #   train_loss, sgd_lr, fig1, fig1_ag, table3_bars, lr_sensitivity, sweep
      claims: [C1, C3]         #   claims this study is home to: every part judged here, and CLAIMS-<scale>.md's verdict
      backup_claims: [C4]      #   judged in full here too; the summary's verdict only where no `claims` home has results

``grid`` may also be a list of grids (their union). A scalar grid value is a one-value axis. Every key
is checked by composing each cell with Hydra before anything runs; ``exp``, ``scale``, ``cell``,
``run_dir`` and ``train.seed`` are set by the sweep and may not appear in a study. Two cells with the
same name (the same overrides) are one cell, run for the union of their seeds. ``more_seeds`` compares
values as the overrides spell them (``1`` and ``1.0`` differ); a rule that matches no cell is an error.
The ``report`` section is checked with the rest (an unknown key, table, field, plot or claim is an error
naming it and what is allowed); a study without one gets a row per cell, the default figures and no claim
of its own (it still speaks to every claim whose cells it holds).

Cells, names and run directories
--------------------------------

A cell's name is ``factorial.train.cell_name`` of its study overrides plus the extra overrides given
after ``--`` (they change what a cell computes), without ``fixed`` overrides and without keys that do not
change the result (``factorial.config.KEYS`` says which: speed and logging such as ``logger*``,
``train.threads``, ``train.progress``, ``optim.compile``, ``optim.foreach``, ``data.cache_dir``).
Each (cell, seed) runs in ``<runs>/<exp>/<scale>/<cell>/seed<k>/`` (``<runs>`` is ``runs/`` of the
repository, or ``--runs-root`` / ``$FACTORIAL_RUNS``) as::

    python -m factorial.train <study overrides> <extra> <fixed> exp=<exp> scale=<scale> cell=<name> \
        train.seed=<k> run_dir=<run dir> train.progress=false [train.threads=N] [data.cache_dir=...]

with its stdout and stderr appended to ``<run dir>/train.log``. ``train.threads`` is
max(1, cpu_count // jobs) (``--cpus-per-cell``) unless the config (scale file or overrides) sets it.

Before any cell starts, every cell is composed and validated, and every existing run directory is
checked to hold the same config; any error (unknown study or scale, a bad override or row, a run
directory from another config) is reported with the key, the value and what is allowed, and the
sweep exits 2 having written nothing.

Resuming: a run whose ``summary.json`` says ``completed`` or ``diverged`` is skipped without starting a
process; ``failed`` or missing runs again (the trainer resumes from its last checkpoint). A run still
locked by a live trainer (an orphan of a killed sweep) is waited for. A diverged or failed cell never
stops the sweep. So a sweep interrupted any way (Ctrl-C, SIGTERM, SIGKILL of its process group) and run
again ends with the same summaries as one that was never interrupted.

Shared runs: a run this study has never started whose computation another study at the same scale has
finished (the same config as a resume checks it — the study's name and the Table-2 row label aside — the
same seed, thread count and device kind) and that logged everything this study asks for (its evaluation,
training-log and RMS(U) cadences divide this study's) is not trained again. Its run directory becomes a view of that run: the small files
copied, config.yaml naming this study's cell, meta.json's ``shared_from`` naming the run that trained it
(``--dry-run`` lists such runs as ``shared``). Only a directory that does not exist yet is written.

Launchers (``--launcher``)
--------------------------

``local`` (default)  ``--jobs`` worker threads, each running one cell subprocess at a time; on a machine
                     with several CUDA GPUs, worker i runs its cells on GPU i % n_gpus
                     (CUDA_VISIBLE_DEVICES). Ctrl-C / SIGTERM stop the running cells, each saving a
                     checkpoint at the step it reached. ``--jobs auto`` (default): one per GPU, else one per core.
``submitit_local``   the submitit library (what hydra-submitit-launcher uses) with its local executor:
                     at most ``--jobs`` jobs at a time, each running the same subprocess (job slot i on
                     GPU i % n_gpus when ``--gpus-per-cell`` > 0); job files in ``<runs>/<exp>/<scale>/.submitit/``.
``slurm``            submitit's SLURM executor: the pending cells as one job array
                     (``slurm_array_parallelism=--jobs``, ``--partition``, ``--time-min``,
                     ``--gpus-per-cell``, ``--cpus-per-cell``, ``--mem-per-cell``); a job that reaches
                     its time limit is requeued and its cell resumes from the checkpoint. Before
                     anything runs the request is checked against the partition (``sinfo``): one no
                     node can satisfy exits 2; unset knobs default to what the partition can give.
                     Job states come from ``squeue`` (no accounting needed); a job pending for a
                     reason that cannot resolve itself is cancelled and its cell reported failed, as
                     is a job SLURM ends without a result (``scancel``): the next sweep resumes it.

Exit status: 0 when every cell completed or diverged, 1 when a cell failed, 2 for bad input (nothing
run), 130 / 143 when interrupted by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from filelock import FileLock, Timeout

from .layout import EXPERIMENTS_DIR, REPO_ROOT, SCALES_DIR, available_scales, available_studies  # noqa: F401 (re-exported)
from .layout import runs_root as layout_runs_root
from .layout import runs_root_help
from . import runfiles as RF
from . import store as ST
from .runfiles import FINISHED
from .schema import key_is
from .study import Cell, Study, StudyError, load_study  # noqa: F401 (Cell, Study: re-exported)

SweepError = StudyError  # bad input to the sweep (a study, an option, the launcher): exit 2, the key, value, allowed

EXIT_BUSY = 75  # = factorial.train.EXIT_BUSY: another process trains the cell right now
LAUNCHERS = ("local", "submitit_local", "slurm")
RULES_ENV = "FACTORIAL_RULES"  # "<rules name> <fingerprint>": the pre-registered rules a cell is trained under
DEFAULT_SLURM_CPUS = 8
DEFAULT_TIME_MIN = 240


class Interrupted(BaseException):
    """SIGTERM of the sweep (SIGINT raises KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# --- runs ----------------------------------------------------------------------------------------


@dataclass
class Run:
    cell: Cell
    seed: int
    run_dir: Path
    command: list[str]
    data: Any = None  # the composed data config (DataSchema), to prepare the corpus once for the study
    steps: int | None = None  # train.steps of the composed cell (for the progress line)
    shared: tuple[str, Any] | None = None  # a finished run of another study with the same identity and seed:
    #                                       ("<exp>/<scale>/<cell>/seed<k>", its run directory or stored record)
    stored: dict | None = None  # this run, finished, as the study's results store holds it (factorial.store)
    names: dict | None = None  # exp, cell, row of this run's composed config (to adopt a shared run)
    env: dict | None = None  # environment of the cell's process (the study's rules: RULES_ENV)


def shared_key(cfg_dict: dict, seed: int, threads: Any, device: Any) -> str:
    """What two runs of different studies must share to be one computation: the config that a resume
    checks (config.KEYS), without the study's name and the Table-2 row's label; the seed; and the torch
    thread count and device kind. The last two do not name a cell, but they change float rounding, which
    training amplifies: 1 against 2 threads moved a `cpu` cell's final perplexity by 2–3 %
    (results/README.md), so only a run that would compute the same numbers is shared."""
    from . import train as T

    sem = T.semantic_config(cfg_dict)
    for key in ("exp", "row"):
        sem.pop(key, None)
    sem.setdefault("train", {})["seed"] = seed
    return json.dumps([sem, threads, device], sort_keys=True, default=str)


CADENCES = ("eval_every", "log_every", "rms_every")  # train.*: how often a run logged what a report reads


def logged_enough(old: dict, wanted: dict) -> bool:
    """Whether a run with config ``old`` logged everything a run with config ``wanted`` would: each cadence of
    train.CADENCES divides the wanted one (RMS(U) every 20 steps cannot stand in for every step)."""
    for key in CADENCES:
        have, want = (old.get("train") or {}).get(key), (wanted.get("train") or {}).get(key)
        if want is None:
            continue
        if not isinstance(have, int) or have < 1 or want % have:
            return False
    return True


SharedIndex = dict[str, list[tuple[str, dict, Any]]]  # shared_key → [(label, config, run directory or record)]


def shared_runs(runs_root: Path, scale: str, exclude: str, results: Path | None = None) -> SharedIndex:
    """shared_key → [(where, its config, its run directory or stored record)], for every finished run at this
    scale of a study other than ``exclude``: the run directories first, then the runs of the results stores
    under ``results`` (factorial.store)."""
    from omegaconf import OmegaConf

    index: SharedIndex = {}

    def add(label: str, config: Any, meta: Any, source: Any) -> None:
        try:
            key = shared_key(config, int(config["train"]["seed"]), meta["torch_threads"], meta["device"])
        except Exception:  # noqa: BLE001 — a run without a readable config and meta is simply not shared
            return
        index.setdefault(key, []).append((label, config, source))

    for summary in sorted(runs_root.glob(f"*/{scale}/*/seed*/summary.json")):
        run_dir = summary.parent
        if run_dir.parts[-4] == exclude or run_status(run_dir) not in FINISHED:
            continue
        try:
            old = OmegaConf.to_container(OmegaConf.load(run_dir / RF.CONFIG))
            meta = json.loads((run_dir / RF.META).read_text())
        except Exception:  # noqa: BLE001 — as above
            continue
        add("/".join(run_dir.parts[-4:]), old, meta, run_dir)
    for path in sorted(Path(results).glob(f"*/{scale}/{RF.STORE}")) if results is not None else []:
        exp = path.parent.parent.name
        if exp == exclude:
            continue
        try:
            stored = ST.load(path)
        except ST.StoreError:  # a store that does not read shares nothing (its own study's sweep says why)
            continue
        for rid, record in stored.items():
            add(f"{exp}/{scale}/{rid}", record["config"], record.get("meta") or {}, record)
    return index


def find_shared(index: SharedIndex, key: str, wanted: dict) -> tuple[str, Any] | None:
    """The first finished run with this identity that logged everything ``wanted`` asks for: (where, source)."""
    return next(((label, src) for label, old, src in index.get(key, []) if logged_enough(old, wanted)), None)


def torch_threads() -> int:
    """The thread count a cell gets when neither the study nor the sweep sets train.threads."""
    import torch

    return torch.get_num_threads()


def planned_device(device: str) -> str:
    """The device kind a cell will train on (train.device, with auto resolved as the trainer does)."""
    if device != "auto":
        return str(device).split(":")[0]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def adopt_shared(run: Run) -> None:
    """Make ``run`` a view of the finished run it shares: its files (factorial.store's record of them), with
    config.yaml naming this study's cell and meta.json saying where the numbers were trained. Only into a
    run directory that does not exist yet, so nothing written is ever replaced."""
    label, src = run.shared
    record = dict(src) if isinstance(src, dict) else ST.read_run(src)
    record["config"] = {**record["config"], **(run.names or {}), "run_dir": str(run.run_dir)}
    record["meta"] = {**(record.get("meta") or {}), "shared_from": label}
    ST.write_run(record, run.run_dir)


def quote(value: str) -> str:
    """A Hydra override value that is taken literally (cell names hold ',' and '=')."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_summary(run_dir: Path) -> dict | None:
    try:
        summary = json.loads((run_dir / RF.SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def run_status(run_dir: Path) -> str:
    summary = read_summary(run_dir)
    return (summary or {}).get("status") or RF.PENDING


def status_of(run: Run) -> str:
    """A run's status: its directory's, else the stored run's (a run the results store holds is finished)."""
    if run.stored is not None and not run.run_dir.exists():
        return run.stored["summary"]["status"]
    return run_status(run.run_dir)


def plan_runs(
    study: Study,
    scale: str,
    runs_root: Path,
    cache_dir: str | None = None,
    threads: int | None = None,
    results: Path | None = None,
) -> tuple[list[Run], list[str]]:
    """Every (cell, seed) with its run directory and command; composes and validates each cell. A run that
    ``results``' store of the study at that scale holds (factorial.store) is finished (``Run.stored``), and
    one that another study has finished is shared (``Run.shared``), when the run directory does not exist.

    Returns the runs and the list of errors (empty when everything can run)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from . import config as C
    from . import train as T

    runs, errors = [], []
    index: SharedIndex | None = None  # finished runs of other studies, built on first need
    stored: dict[str, dict] = {}
    if results is not None:
        try:
            stored = ST.load(ST.store_path(results, study.name, scale))
        except ST.StoreError as err:
            errors.append(f"{err}; allowed: a store written by make table (git checkout the file to restore it)")
    registration = study.registration()
    env = {RULES_ENV: registration} if registration else None
    for cell in study.cells:
        cell_runs = []
        for seed in cell.seeds:
            run_dir = runs_root / study.name / scale / cell.name / f"seed{seed}"
            command = [
                *cell.overrides, *study.fixed, f"exp={study.name}", f"scale={scale}", f"cell={quote(cell.name)}",
                f"train.seed={seed}", f"run_dir={quote(str(run_dir))}",
            ]
            keys = {o.split("=", 1)[0].lstrip("+~") for o in command}
            if "train.progress" not in keys:
                command.append("train.progress=false")
            if cache_dir is not None and "data.cache_dir" not in keys:
                command.append(f"data.cache_dir={quote(str(cache_dir))}")
            cell_runs.append(Run(cell, seed, run_dir, command, env=env))
        # Compose once per cell (the seeds differ only in train.seed and run_dir).
        try:
            cfg = T.compose(cell_runs[0].command)
        except (ValueError, HydraException, OmegaConfBaseException) as err:
            errors.append(f"cell {cell.name}: {T.describe_error(err)}")
            continue
        for r in cell_runs:
            r.data = cfg.data
            r.steps = cfg.train.steps
        given = {o.split("=", 1)[0].lstrip("+~") for o in cell_runs[0].command}
        if cfg.train.threads is None and threads is not None and "train.threads" not in given:
            for r in cell_runs:
                r.command.append(f"train.threads={threads}")
        # A run directory must hold this cell's config (a changed study or scale file must not be mixed in).
        cfg_dict = C.to_dict(cfg)
        semantic = T.semantic_config(cfg_dict)
        for r in cell_runs:
            r.stored = stored.get(f"{cell.name}/seed{r.seed}") if not r.run_dir.exists() else None
            if not r.run_dir.exists() and r.stored is None:  # never run: another study may have trained it
                if index is None:
                    index = shared_runs(runs_root, scale, study.name, results)
                run_threads = cfg.train.threads or threads or torch_threads()
                r.shared = find_shared(index, shared_key(cfg_dict, r.seed, run_threads, planned_device(cfg.train.device)), cfg_dict)
                r.names = {"exp": cfg_dict.get("exp"), "cell": cfg_dict.get("cell"), "row": cfg_dict.get("row")}
            if r.stored is not None:
                old = copy.deepcopy(r.stored["config"])
                where = f"the run {r.cell.name}/seed{r.seed} stored in {ST.store_path(results, study.name, scale)}"
            elif (r.run_dir / RF.CONFIG).exists():
                try:
                    old = OmegaConf.to_container(OmegaConf.load(r.run_dir / RF.CONFIG))
                except Exception as err:
                    errors.append(f"run {r.run_dir}: its config.yaml does not load ({err}); allowed: a run directory of this cell")
                    continue
                where = f"run_dir={str(r.run_dir)!r}"
            else:
                continue
            if isinstance(old.get("train"), dict):
                old["train"]["seed"] = cfg.train.seed  # the seeds of a cell differ by design
            diffs = T.config_differences(T.semantic_config(old), semantic)
            if diffs:
                redo = ("remove the directory to redo it" if r.stored is None else
                        "a study or scale file changed after its runs were stored: restore it, or name the changed "
                        "study otherwise")
                errors.append(f"{where} holds a run with a different config ({'; '.join(diffs[:5])}); "
                              f"allowed: the same config, or another --exp/--runs-root ({redo})")
        runs += cell_runs
    return runs, errors


def prepare_data(runs: list[Run]) -> list[str]:
    """Build (or find) each distinct corpus of the pending runs once, before any cell starts.

    A corpus that cannot be had (no network for a hub dataset, a vocabulary the corpus cannot
    support) is then one error up front instead of one failed cell after another, and parallel
    cells do not all build the same tokenizer at once. Returns the errors."""
    from .data import DataError
    from .train import load_cell_corpus

    errors, seen = [], set()
    for r in runs:
        d = r.data
        key = (d.source, d.vocab_size, d.model_type, d.train_file, d.validation_file, d.test_file, d.cache_dir)
        if key in seen:
            continue
        seen.add(key)
        try:
            load_cell_corpus(d)
        except DataError as err:
            errors.append(f"data={d.source} (cell {r.cell.name}): {err}")
    return errors


# --- one run in a subprocess (shared by every launcher) -------------------------------------------


def cell_locked(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock (factorial.runio.CellLock, not imported: job
    processes stay light); False when there is no lock file."""
    lock = Path(run_dir) / RF.LOCK
    if not lock.exists():
        return False
    probe = FileLock(lock, blocking=False, fallback_to_soft=False)  # as CellLock
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False


def wait_for_cell_lock(run_dir: Path, stop: threading.Event | None = None, poll: float = 0.5) -> None:
    """Wait while another live process (an orphan of a killed sweep) trains this run."""
    while cell_locked(run_dir):
        if stop is not None and stop.is_set():
            return
        time.sleep(poll)


def execute_run(
    command: list[str],
    run_dir: Path,
    env: dict[str, str] | None = None,
    start: Callable[..., subprocess.Popen | None] | None = None,
    stop: threading.Event | None = None,
) -> int | None:
    """Run ``python -m factorial.train <command>`` with its output appended to <run_dir>/train.log.

    Returns its exit status; 0 without a process when the run is already finished; None when ``start``
    refused to start it (the sweep is stopping)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    while True:
        wait_for_cell_lock(run_dir, stop)
        if run_status(run_dir) in FINISHED:  # finished meanwhile (an orphan, another sweep)
            return 0
        rc = _run_trainer(command, run_dir, env, start)
        # Another sweep took the cell between our wait and the trainer's lock: wait for it, then look again.
        if rc != EXIT_BUSY or (stop is not None and stop.is_set()):
            return rc


def _run_trainer(command, run_dir: Path, env, start) -> int | None:
    argv = [sys.executable, "-m", "factorial.train", *command]
    full_env = {**os.environ, **(env or {})}
    with open(run_dir / RF.LOG, "ab") as log:
        log.write(f"\n=== factorial.sweep {time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}: {shlex.join(argv)}\n".encode())
        log.flush()
        popen = start or subprocess.Popen
        proc = popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        if proc is None:
            return None
        try:
            rc = proc.wait()
        except BaseException:  # interrupted (a submitit job being cancelled): stop the cell too
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        log.write(f"=== exit status {rc}\n".encode())
    return rc


def outcome(run: Run, rc: int | None, error: str | None = None) -> dict:
    """The run's summary when it finished, else a 'failed' record with the reason."""
    summary = read_summary(run.run_dir)
    if summary and summary.get("status") in FINISHED:  # written atomically at the very end: trust it
        return summary
    if error is None:
        error = (summary or {}).get("error") if summary and summary.get("status") == RF.FAILED else None
    if error is None:
        tail = ""
        with contextlib.suppress(OSError):
            lines = [x for x in (run.run_dir / RF.LOG).read_text(errors="replace").splitlines() if x.strip() and not x.startswith("===")]
            tail = lines[-1].strip() if lines else ""
        error = f"exit status {rc}" + (f": {tail}" if tail else "")
    return {"status": RF.FAILED, "error": error}


class CellJob:
    """A submitit job: one run's subprocess. On a time limit submitit calls ``checkpoint``: the cell
    is stopped and the job requeued, and the trainer resumes from its last checkpoint."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def __call__(self, command: list[str], run_dir: str, env: dict[str, str]) -> int | None:
        def start(*args, **kwargs):
            self._proc = subprocess.Popen(*args, **kwargs)
            return self._proc

        return execute_run(command, Path(run_dir), env, start=start)

    def checkpoint(self, command: list[str], run_dir: str, env: dict[str, str]):
        import submitit

        # Called from a signal handler that interrupted ``proc.wait()``, which holds the Popen's wait
        # lock: only signal the cell here (a blocking wait would never see it exit). The requeued job
        # waits for the cell's lock before starting it again.
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(OSError):
                self._proc.send_signal(signal.SIGTERM)
        return submitit.helpers.DelayedSubmission(CellJob(), command, run_dir, env)

    def __getstate__(self) -> dict:
        return {"_proc": None}


def latest_progress(run: Run) -> str | None:
    """'<cell>/seed<k> step s/N loss x' from the newest training record of a running cell's metrics.jsonl."""
    try:
        with open(run.run_dir / RF.METRICS, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for raw in reversed(lines):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get(RF.TRAIN_LOSS), (int, float)):
            total = f"/{run.steps}" if run.steps else ""
            return f"{run.cell.name}/seed{run.seed} step {rec['step']}{total} loss {rec[RF.TRAIN_LOSS]:.3f}"
    return f"{run.cell.name}/seed{run.seed} starting"


def auto_jobs(gpus: list[str]) -> int:
    """Cells a machine runs at once: one per GPU; without one, one per CPU core (each with one torch
    thread: two single-threaded cells use two cores better than one two-threaded cell), at most one per
    GiB of memory."""
    if gpus:
        return len(gpus)
    cores = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = cores
    return max(1, min(cores, int(mem_gib)))


# --- launchers -----------------------------------------------------------------------------------

Report = Callable[[Run, dict, float], None]


def gpu_ids() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them."""
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:
        n = 0
    if n == 0:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [x.strip() for x in visible.split(",") if x.strip()] if visible else [str(i) for i in range(n)]
    return names[:n]


def slot_env(slot: int, gpus: list[str]) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]} if len(gpus) > 1 else {}


def launch_local(runs: list[Run], jobs: int, gpus: list[str], report: Report,
                 progress: Callable[[list[Run]], None] | None = None) -> None:
    """``jobs`` worker threads, each running one cell subprocess at a time; ``progress`` is called
    with the runs in flight about twice a second."""
    todo: queue.Queue[Run] = queue.Queue()
    running: dict[int, Run] = {}
    for r in runs:
        todo.put(r)
    results: queue.Queue = queue.Queue()
    stop = threading.Event()
    guard = threading.Lock()
    procs: dict[int, subprocess.Popen] = {}

    def worker(slot: int) -> None:
        env = slot_env(slot, gpus)

        def start(*args, **kwargs):
            with guard:
                if stop.is_set():
                    return None
                procs[slot] = subprocess.Popen(*args, **kwargs)
                return procs[slot]

        while not stop.is_set():
            try:
                run = todo.get_nowait()
            except queue.Empty:
                break
            t0 = time.perf_counter()
            with guard:
                running[slot] = run
            try:
                rc = execute_run(run.command, run.run_dir, {**env, **(run.env or {})}, start=start, stop=stop)
                error = None
            except Exception as err:  # e.g. the run dir cannot be written: a failed cell, not a crashed sweep
                rc, error = None, f"{type(err).__name__}: {err}"
            with guard:
                procs.pop(slot, None)
                running.pop(slot, None)
            result = outcome(run, rc, error)
            if stop.is_set() and result["status"] not in FINISHED:
                result = None  # stopped by the sweep's interruption: neither a result nor a failure
            results.put((run, result, time.perf_counter() - t0))
        results.put(None)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"sweep-worker-{i}") for i in range(min(jobs, len(runs)))]
    for t in threads:
        t.start()
    alive = len(threads)
    try:
        while alive:
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                if progress is not None:
                    with guard:
                        in_flight = [running[k] for k in sorted(running)]
                    progress(in_flight)
                continue
            if item is None:
                alive -= 1
            elif item[1] is not None:
                report(*item)
    except BaseException:
        with guard:
            stop.set()
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
        deadline = time.monotonic() + 15
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with guard:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
        while True:  # cells that finished as the sweep stopped are results all the same
            try:
                item = results.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[1] is not None:
                report(*item)
        raise


def _no_slurm(reason: str, folder: Path | None = None) -> SweepError:
    if folder is not None:
        import submitit

        try:  # submitit's own check, for its message
            submitit.AutoExecutor(folder=folder, cluster="slurm")
        except RuntimeError as err:
            reason += f"; submitit: {err}"
    return SweepError(
        f"invalid --launcher=slurm: SLURM is not available on this machine ({reason}); "
        "allowed here: --launcher local | submitit_local"
    )


def check_slurm(args: argparse.Namespace):
    """Check the SLURM request against the partition (sinfo) before anything runs; fill in its defaults.

    Sets args.partition, args.cpus_per_cell, args.gpus_per_cell and args.time_min to what the jobs
    will ask for; returns the factorial.slurm.Request."""
    from . import slurm

    reason = slurm.unavailable_reason()
    if reason is not None:
        raise _no_slurm(reason)
    try:
        request = slurm.check_request(args.partition, args.cpus_per_cell, args.gpus_per_cell, args.time_min,
                                      getattr(args, "mem_per_cell", None), DEFAULT_SLURM_CPUS, DEFAULT_TIME_MIN)
    except slurm.SlurmError as err:
        raise SweepError(str(err)) from None
    args.partition, args.cpus_per_cell = request.partition.name, request.cpus
    args.gpus_per_cell, args.time_min = request.gpus, request.time_min
    return request


def make_executor(launcher: str, folder: Path, args: argparse.Namespace, cpus: int | None):
    import submitit

    cluster = "slurm" if launcher == "slurm" else "local"
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise _no_slurm("`sbatch` is not on PATH", folder)
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except RuntimeError as err:
        raise SweepError(f"invalid --launcher={launcher}: {err}; allowed here: --launcher local") from None
    time_min = args.time_min
    if cluster == "slurm":  # sbatch takes whole minutes
        time_min = int(-(-time_min // 1))
    params: dict[str, Any] = dict(
        timeout_min=time_min, gpus_per_node=args.gpus_per_cell, name=f"factorial-{args.exp_name}-{args.scale}",
        slurm_array_parallelism=args.jobs,
    )
    if cpus is not None:
        params["cpus_per_task"] = cpus
    if args.partition:
        params["slurm_partition"] = args.partition
    if getattr(args, "mem_per_cell", None) is not None:
        params["mem_gb"] = args.mem_per_cell
    executor.update_parameters(**params)
    return executor


def launch_submitit(runs: list[Run], executor, launcher: str, jobs: int, gpus: list[str], report: Report,
                    gpus_per_cell: int = 0, note: Callable[[str], None] | None = None,
                    slurm_poll_s: float = 10.0) -> None:
    """Submit the runs with submitit and wait: local, at most ``jobs`` at a time; SLURM, one job array.

    On SLURM the jobs' states come from ``squeue`` (factorial.slurm.SqueueWatcher: no accounting
    needed); a job pending for a reason that cannot resolve itself is cancelled and its cell reported
    failed, and a job that SLURM ended without a result (scancel, a node failure) is a failed cell that
    the next sweep resumes. ``note`` gets a line when the jobs' SLURM states change."""
    pending = list(runs)
    in_flight: list[tuple[Any, Run, int, float]] = []
    free_slots = list(range(jobs))
    note = note or (lambda line: print(line, flush=True))
    watcher = None
    if launcher == "slurm":
        from .slurm import SqueueWatcher

        watcher = SqueueWatcher(delay_s=slurm_poll_s)
    last_states = ""

    def env_for(slot: int) -> dict[str, str]:
        # SLURM assigns GPUs itself; submitit's local executor gives every job GPU 0, so a slot names its own.
        if launcher == "slurm" or not gpus or gpus_per_cell == 0:
            return {}
        return {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]}

    def submit(batch: list[tuple[Run, int]]) -> None:
        specs = [(r.command, str(r.run_dir), {**env_for(slot), **(r.env or {})}) for r, slot in batch]
        for r, _ in batch:
            r.run_dir.mkdir(parents=True, exist_ok=True)
        if len(specs) == 1:
            submitted = [executor.submit(CellJob(), *specs[0])]
        else:
            submitted = executor.map_array(CellJob(), *zip(*specs))
        now = time.perf_counter()
        in_flight.extend((job, r, slot, now) for job, (r, slot) in zip(submitted, batch))
        if watcher is not None:
            for job in submitted:
                job.watcher = watcher  # squeue instead of submitit's sacct watcher
                watcher.register_job(job.job_id)
            array = str(submitted[0].job_id).split("_")[0]
            what = f"job array {array}: {len(submitted)} cells, at most {jobs} at a time" if len(submitted) > 1 else f"job {array}: 1 cell"
            note(f"SLURM {what}; watch: squeue -j {array}; cancel: scancel {array} (the same sweep again resumes the cells)")

    def slurm_checks() -> None:
        """Cancel the jobs that will never start; say how the jobs stand when that changes."""
        nonlocal last_states
        from .slurm import stuck_reason

        counts: dict[str, int] = {}
        for item in list(in_flight):
            job, run, _, t0 = item
            info = watcher.info(job.job_id)
            state, reason = info.get("State", "UNKNOWN"), info.get("Reason", "")
            why = stuck_reason(reason) if state == "PENDING" else None
            if why is not None:
                with contextlib.suppress(Exception):
                    job.cancel(check=False)
                in_flight.remove(item)
                error = (f"SLURM job {job.job_id} can never start: pending for {reason} ({why}); it was cancelled. "
                         "Change the request (PARTITION, TIME, CPUS, GPUS, MEM; see `scontrol show job`) and run the sweep again")
                report(run, outcome(run, None, error), time.perf_counter() - t0)
                continue
            label = state.lower() + (f" ({reason})" if state == "PENDING" and reason and reason != "None" else "")
            counts[label] = counts.get(label, 0) + 1
        states = ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
        if states and states != last_states:
            note(f"SLURM jobs: {states}")
        last_states = states

    def failure(job, err: Exception) -> str:
        lines = [x for x in str(err).splitlines() if x.strip()]
        last = lines[-1] if lines else type(err).__name__
        if watcher is None:
            return f"submitit job {job.job_id} failed: {last}"
        state = watcher.info(job.job_id).get("State", "UNKNOWN")
        if state in ("CANCELLED", "GONE", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"):
            return (f"SLURM job {job.job_id} ended {state} before its cell finished (scancel, or SLURM stopped it): "
                    "the same sweep again resumes the cell from its checkpoint")
        return f"SLURM job {job.job_id} ended {state}: {last}"

    try:
        if launcher == "slurm":
            submit([(r, 0) for r in pending])
            pending = []
        while pending or in_flight:
            while pending and free_slots:
                submit([(pending.pop(0), free_slots.pop(0))])
            time.sleep(0.5)
            for item in list(in_flight):
                job, run, slot, t0 = item
                if not job.done():
                    continue
                in_flight.remove(item)
                if launcher != "slurm":
                    free_slots.append(slot)
                try:
                    rc, error = job.result(), None
                except Exception as err:
                    rc, error = None, failure(job, err)
                report(run, outcome(run, rc, error), time.perf_counter() - t0)
            if watcher is not None and in_flight:
                watcher.update_if_long_enough()
                slurm_checks()
    except BaseException:
        for job, *_ in in_flight:
            with contextlib.suppress(Exception):
                job.cancel(check=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(not _quiet_done(job) for job, *_ in in_flight):
            time.sleep(0.2)
        raise


def _quiet_done(job) -> bool:
    try:
        return job.done()
    except Exception:
        return True


# --- command line --------------------------------------------------------------------------------


def studies_help() -> str:
    """The studies (with their descriptions) and scales, for --help."""
    lines = ["studies (--exp NAME):"]
    names = available_studies()
    width = max((len(n) for n in names), default=0)
    for name in names:
        try:
            raw = yaml.safe_load((EXPERIMENTS_DIR / f"{name}.yaml").read_text()) or {}
            text = str(raw.get("description") or "") if isinstance(raw, dict) else ""
        except (OSError, yaml.YAMLError):
            text = ""
        lines.append(f"  {name:<{width}}  {text}")
    lines += ["", f"scales (--scale NAME): {', '.join(available_scales())} (smoke: seconds per cell, plumbing only; "
              "cpu: the CPU study; paper: the paper's setup, for GPUs)",
              "", "examples:",
              "  python -m factorial.sweep --exp smoke --scale smoke            # four tiny cells, under a minute",
              "  python -m factorial.sweep --exp table2 --scale cpu --dry-run   # list the cells, run nothing",
              "", "Rows, knobs and claims: docs/PAPER.md. A cell's config: python -m factorial.train --help."]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m factorial.sweep",
        description="Run a study (experiments/<name>.yaml): every cell x seed, resumably. Extra Hydra overrides after --.",
        epilog=studies_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--exp", default="table2", help="study name in experiments/, or a path to a study file (default: table2)")
    p.add_argument("--scale", default="cpu", help="scale preset, a file in conf/scale/ (default: cpu)")
    p.add_argument("--jobs", default="auto",
                   help="cells run at the same time, or auto (default): one per GPU, else one per CPU core; "
                        "with --launcher slurm, auto submits every pending cell at once")
    p.add_argument("--launcher", default="local", help="local | submitit_local | slurm (default: local)")
    p.add_argument("--partition", default=None, help="SLURM partition")
    p.add_argument("--time-min", type=float, default=None,
                   help=f"time limit of a submitit job in minutes (default: {DEFAULT_TIME_MIN}, or the SLURM partition's limit if smaller)")
    p.add_argument("--gpus-per-cell", type=int, default=None,
                   help="GPUs of a submitit job (default: 1 if this machine has a GPU, else 0; SLURM: 1 if the partition's nodes have GPUs)")
    p.add_argument("--cpus-per-cell", type=int, default=None,
                   help="train.threads (and SLURM cpus_per_task) of a cell unless the config sets it "
                        f"(default: cpu_count // jobs; SLURM: {DEFAULT_SLURM_CPUS} or the partition's largest node if smaller)")
    p.add_argument("--mem-per-cell", type=float, default=None, help="memory of a SLURM job in GB (default: the partition's default)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds for every cell, replacing the study's (e.g. 0,1,2)")
    p.add_argument("--runs-root", default=None, help=runs_root_help())
    p.add_argument("--results", default=None,
                   help=f"results root whose stores (<exp>/<scale>/{RF.STORE}) hold finished runs that are not trained "
                        "again (default: results/ of the repository)")
    p.add_argument("--cache-dir", default=None, help="data cache (data.cache_dir, not part of cell names; default: $FACTORIAL_CACHE_DIR or the config's)")
    p.add_argument("--dry-run", action="store_true", help="compose and list the cells, run nothing")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every cell (after --)")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.launcher not in LAUNCHERS:
        raise SweepError(f"invalid --launcher={args.launcher!r}; allowed: {' | '.join(LAUNCHERS)}")
    scales = available_scales()
    if args.scale not in scales:
        raise SweepError(f"invalid --scale={args.scale!r}; allowed: {' | '.join(scales)} (files in {SCALES_DIR})")
    if args.jobs != "auto":
        try:
            jobs = int(args.jobs)
        except (TypeError, ValueError):
            jobs = 0
        if jobs < 1:
            raise SweepError(f"invalid --jobs={args.jobs}; allowed: an integer >= 1, or auto")
        args.jobs = jobs
    if args.time_min is not None and not args.time_min > 0:
        raise SweepError(f"invalid --time-min={args.time_min}; allowed: a number of minutes > 0")
    if args.gpus_per_cell is not None and args.gpus_per_cell < 0:
        raise SweepError(f"invalid --gpus-per-cell={args.gpus_per_cell}; allowed: an integer >= 0")
    if args.cpus_per_cell is not None and args.cpus_per_cell < 1:
        raise SweepError(f"invalid --cpus-per-cell={args.cpus_per_cell}; allowed: an integer >= 1")
    if args.mem_per_cell is not None and not args.mem_per_cell > 0:
        raise SweepError(f"invalid --mem-per-cell={args.mem_per_cell}; allowed: a number of GB > 0")
    if args.mem_per_cell is not None and args.launcher != "slurm":
        raise SweepError(f"invalid --mem-per-cell={args.mem_per_cell} with --launcher={args.launcher}; allowed: only with --launcher slurm")
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            seeds = []
        if not seeds or any(s < 0 for s in seeds):
            raise SweepError(f"invalid --seeds={args.seeds!r}; allowed: comma-separated integers >= 0, e.g. 0,1,2")
        args.seeds = sorted(set(seeds))


def _fmt_ppl(summary: dict) -> str:
    ppl = summary.get("val_ppl")
    return f"{ppl:.2f}" if isinstance(ppl, (int, float)) else "-"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        check_args(args)
        study = load_study(args.exp, args.overrides, args.seeds)
        slurm_request = check_slurm(args) if args.launcher == "slurm" and not args.dry_run else None
    except SweepError as err:
        print(f"factorial.sweep: error: {err}", file=sys.stderr)
        return 2
    args.exp_name = study.name
    runs_root = layout_runs_root(args.runs_root).resolve()
    cache_dir = args.cache_dir or os.environ.get("FACTORIAL_CACHE_DIR")
    if cache_dir is not None:
        cache_dir = str(Path(cache_dir).resolve())
    auto = args.jobs == "auto"
    if auto and args.launcher != "slurm":
        args.jobs = auto_jobs(gpu_ids())
    if args.launcher == "slurm":
        cpus = args.cpus_per_cell or DEFAULT_SLURM_CPUS  # check_slurm set it to what the partition can give
    else:
        cpus = args.cpus_per_cell or max(1, (os.cpu_count() or 1) // args.jobs)

    n_runs = sum(len(c.seeds) for c in study.cells)
    print(f"study {study.name}: {len(study.cells)} cells, {n_runs} runs, scale {args.scale} — {study.description}", flush=True)
    named = [o for o in args.overrides if key_is(o.split("=", 1)[0], "named")]
    if named:
        print(f"extra overrides {' '.join(named)} change what every cell computes: these are other cells than the "
              "study's (their names end in them); make table marks them and leaves them out of the study's verdicts",
              flush=True)
    results = Path(args.results).resolve() if args.results else REPO_ROOT / "results"
    runs, errors = plan_runs(study, args.scale, runs_root, cache_dir, cpus, results)
    if errors:
        print(f"factorial.sweep: error: the study cannot run as it is ({len(errors)} problem(s)); nothing was run:", file=sys.stderr)
        seen: dict[str, int] = {}
        for e in errors:  # the same message for many cells is shown once
            msg = e.split(": ", 1)[1] if e.startswith("cell ") else e
            seen[msg] = seen.get(msg, 0) + 1
            if seen[msg] == 1:
                print(f"  {e}", file=sys.stderr)
        for msg, n in seen.items():
            if n > 1:
                print(f"  (and {n - 1} more cells: {msg})", file=sys.stderr)
        return 2

    study_dir = runs_root / study.name / args.scale
    status = {id(r): status_of(r) for r in runs}
    stored = [r for r in runs if r.stored is not None and not r.run_dir.exists()]
    shared = [r for r in runs if r.shared is not None and status[id(r)] not in FINISHED]
    if args.dry_run:
        for r in runs:
            state = "shared" if r in shared else "stored" if r in stored else status[id(r)]
            print(f"{state:9s} {r.cell.name}/seed{r.seed}   python -m factorial.train {shlex.join(r.command)}"
                  + (f"   (finished in {r.shared[0]})" if r in shared else ""))
        pending = [r for r in runs if status[id(r)] not in FINISHED and r not in shared]
        share = f"{len(shared)} shared with another study's finished runs, " if shared else ""
        print(f"{len(runs)} runs ({len(pending)} to run, {share}{len(runs) - len(pending) - len(shared)} already "
              f"finished) in {study_dir}")
        return 0
    for r in shared:  # trained once: this study's run is a view of the other study's
        adopt_shared(r)
        status[id(r)] = run_status(r.run_dir)
    for r in stored:  # finished, in the study's results store: written into the runs cache as they were
        ST.write_run(r.stored, r.run_dir)
    if stored:
        print(f"{len(stored)} runs finished in {ST.store_path(results, study.name, args.scale)} (not trained again; "
              f"their files are now in {study_dir})", flush=True)
    if shared:
        print(f"{len(shared)} runs shared with other studies' finished runs (not trained again; meta.json "
              "says where): " + ", ".join(sorted({r.shared[0].split("/")[0] for r in shared})), flush=True)
    pending = [r for r in runs if status[id(r)] not in FINISHED]
    skipped = len(runs) - len(pending)

    if auto and args.launcher == "slurm":
        args.jobs = max(1, len(pending))
    if pending:
        print(f"{len(pending)} runs to run, {args.jobs} at a time" + (" (--jobs auto)" if auto else ""), flush=True)

    data_errors = prepare_data(pending)
    if data_errors:
        print("factorial.sweep: error: the study's data cannot be prepared; nothing was run:", file=sys.stderr)
        for e in data_errors:
            print(f"  {e}", file=sys.stderr)
        return 2

    gpus = gpu_ids()
    executor = None
    if args.launcher != "local":
        if args.time_min is None:
            args.time_min = DEFAULT_TIME_MIN
        if args.gpus_per_cell is None:
            args.gpus_per_cell = 1 if gpus else 0
        try:
            executor = make_executor(args.launcher, study_dir / ".submitit", args, cpus if args.launcher == "slurm" else None)
        except SweepError as err:
            print(f"factorial.sweep: error: {err}", file=sys.stderr)
            return 2

    from tqdm import tqdm

    if slurm_request is not None and pending:
        print(f"SLURM: {slurm_request.describe()}", flush=True)
    counts = dict.fromkeys(RF.STATUSES, 0)
    bar = tqdm(total=len(runs), initial=skipped, unit="run", desc=f"{study.name}/{args.scale}", dynamic_ncols=True,
               file=sys.stderr, smoothing=0.1)
    bar.set_postfix(diverged=0, failed=0)

    def report(run: Run, summary: dict, seconds: float) -> None:
        s = summary.get("status", RF.FAILED)
        counts[s if s in counts else RF.FAILED] += 1
        extra = f"val_ppl {_fmt_ppl(summary)}" if s != RF.FAILED else f"error: {summary.get('error')}"
        if s == RF.DIVERGED:
            extra += f" (diverged at step {summary.get('diverged_at')})"
        tqdm.write(f"{s:9s} {run.cell.name}/seed{run.seed}  {extra}  [{seconds:.0f}s]", file=sys.stdout)
        sys.stdout.flush()
        bar.update(1)
        bar.set_postfix(diverged=counts[RF.DIVERGED], failed=counts[RF.FAILED])

    def show_progress(in_flight: list[Run]) -> None:
        # while cells run: each one's step and training loss, from its metrics.jsonl
        lines = [x for x in (latest_progress(r) for r in in_flight[:3]) if x]
        more = f" (+{len(in_flight) - 3} more)" if len(in_flight) > 3 else ""
        text = f"diverged={counts['diverged']}, failed={counts['failed']} | " + "; ".join(lines) + more
        if text != shown[0]:  # redraw on news only (a log file gets one line per change)
            shown[0] = text
            bar.set_postfix_str(text)

    shown = [""]

    def on_term(signum, frame):
        raise Interrupted(signum)

    old_term = signal.signal(signal.SIGTERM, on_term)
    interrupted = None
    try:
        if pending:
            if args.launcher == "local":
                launch_local(pending, args.jobs, gpus, report, progress=show_progress)
            else:
                launch_submitit(pending, executor, args.launcher, args.jobs, gpus, report, args.gpus_per_cell,
                                note=lambda line: (tqdm.write(line, file=sys.stdout), sys.stdout.flush()))
    except KeyboardInterrupt:
        interrupted = signal.SIGINT
    except Interrupted as err:
        interrupted = err.signum
    finally:
        signal.signal(signal.SIGTERM, old_term)
        bar.close()
    if interrupted and all(run_status(r.run_dir) in FINISHED for r in pending):
        # the signal came after the last cell had finished: nothing was stopped, the study is whole
        print(f"{signal.Signals(interrupted).name} after every cell had finished: nothing was stopped", flush=True)
        interrupted = None

    print(
        f"{study.name}/{args.scale}: {counts['completed']} completed, {counts['diverged']} diverged, "
        f"{counts['failed']} failed, {skipped} skipped (finished before)"
        + (f", {len(pending) - sum(counts.values())} not run (interrupted)" if interrupted else "")
    )
    print(f"runs: {study_dir}")
    if interrupted:
        print("interrupted: the running cells were stopped; run the same command again to resume them from their checkpoints")
        return 128 + int(interrupted)
    # the table finds the runs where the sweep put them: $FACTORIAL_RUNS it reads itself, --runs-root it is told
    told = f' TABLE_ARGS="--runs-root {runs_root}"' if runs_root != layout_runs_root().resolve() else ""
    print(f"tables: make table EXP={args.exp} SCALE={args.scale}{told}")
    return 1 if counts[RF.FAILED] else 0


if __name__ == "__main__":
    sys.exit(main())
