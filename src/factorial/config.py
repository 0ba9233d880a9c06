"""The config schema: Hydra structured configs for every component of a cell.

The tree mirrors the object graph (as lightning-hydra-template does): ``model``, ``data``,
``optim``, ``schedule``, ``train``, ``logger``. YAML files under ``conf/`` choose values; the
dataclasses here fix the keys and types, so an unknown key or a wrong type stops Hydra before a cell
starts, and ``validate`` checks every range with a message that names the key, the value and what is
allowed. Table 2's rows and the model presets are registered as group options from the Python
definitions (factorial.rows, factorial.model), so they exist once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from .model import PRESETS, ModelConfig, validate_model_config
from .optim.adafactor import validate_hyperparameters, validate_paths
from .rows import TABLE2

from .layout import REPO_ROOT  # noqa: E402
CONF_DIR = REPO_ROOT / "conf"

OPTIMIZERS = ("adafactor", "adam", "sgd")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
WANDB_MODES = ("auto", "online", "offline", "disabled")
DATA_SOURCES = ("shakespeare", "wikitext2", "wikitext103", "text")
SPM_TYPES = ("bpe", "unigram", "char", "word")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""


def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"invalid {key}={value!r}; allowed: {allowed}")


def _command_line_words(message: str) -> str:
    """The optimizer's checks speak Python (None, True, False); an override spells them null, true, false."""
    head, sep, allowed = message.partition("allowed:")
    for py, cli in (("None", "null"), ("True", "true"), ("False", "false")):
        allowed = re.sub(rf"\b{py}\b", cli, allowed)
    return head + sep + allowed


def schema_keys(path: str) -> list[str] | None:
    """The keys under a dotted config path ("" for the top, "optim", "model"), or None if it has none."""
    node: Any = Config
    for part in [x for x in path.split(".") if x]:
        if node is Config and part == "model":
            node = ModelConfig
            continue
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            return None
        f = fields[part]
        node = f.default_factory if f.default_factory is not dataclasses.MISSING else None
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else None


@dataclass
class DataSchema:
    source: str = "shakespeare"
    vocab_size: int = 4096
    model_type: str = "bpe"
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    cache_dir: str = "cache"


@dataclass
class OptimSchema:
    """One optimizer. ``adafactor`` is factorial.optim.Adafactor with every knob of the paper;
    ``adam`` is torch.optim.Adam (an independent implementation, e.g. Table 3's Adam);
    ``sgd`` is torch.optim.SGD (row Q). The step of a cell is lr_scale · schedule.multiplier · s_t."""

    name: str = "adafactor"
    lr_scale: float = 1.0
    # A knob another optimizer has is None in a validated config (KEYS says whose each knob is).
    beta1: Optional[float] = 0.0
    momentum: Optional[str] = "gradient"
    beta2: Optional[float] = 0.999
    beta2_exponent: Optional[float] = 0.8
    second_moment: Optional[str] = "factored"
    clip_threshold: Optional[float] = 1.0
    relative_step: Optional[bool] = True
    eps1: Optional[float] = 1e-30
    eps2: Optional[float] = 1e-3
    weight_decay: float = 0.0
    adam_eps: Optional[float] = 1e-9  # torch.optim.Adam only (Tensor2Tensor's default)
    foreach: Optional[bool] = None
    # Adafactor's compiled step (compile=True: the whole step in one torch.compile'd function, replayed from CUDA
    # graphs on CUDA; opt-in, docs/OPTIMIZER.md). A speed key, not part of a cell's identity (KEYS below).
    compile: Optional[bool] = False


@dataclass
class ScheduleSchema:
    """s_t of docs/PAPER.md §3: peak·min(t/W, √(W/t)) with warmup, peak·min(1, √(W/t)) without."""

    warmup: bool = True
    warmup_steps: Optional[int] = None  # None: a tenth of train.steps (10k of 100k in the paper)
    peak: float = 1e-2
    multiplier: float = 1.0  # the scale's calibrated learning-rate multiplier on α_t, ρ_t and SGD's lr


@dataclass
class TrainSchema:
    steps: int = 600
    batch_size: int = 32
    seed: int = 0
    eval_every: int = 100
    eval_tokens: Optional[int] = 65536  # validation tokens per evaluation (None: the whole split)
    log_every: int = 10
    rms_every: int = 10  # RMS(U) of the Figure-1 matrices (1 for Figure 1)
    checkpoint_every: int = 200
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False
    threads: Optional[int] = None  # torch threads; None leaves torch's default
    diverge_loss: Optional[float] = None  # None: 2·ln(vocab_size), twice the loss of a uniform guess
    progress: bool = True


@dataclass
class LoggerSchema:
    mode: str = "auto"  # W&B: auto (online when logged in, else offline) | online | offline | disabled
    project: str = "factorial"
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    model: Any = MISSING  # ModelConfig, chosen from the presets (model=tiny|cpu|base)
    data: DataSchema = field(default_factory=DataSchema)
    optim: OptimSchema = field(default_factory=OptimSchema)
    schedule: ScheduleSchema = field(default_factory=ScheduleSchema)
    train: TrainSchema = field(default_factory=TrainSchema)
    logger: LoggerSchema = field(default_factory=LoggerSchema)
    exp: str = "adhoc"  # the study a cell belongs to (W&B group, runs/<exp>/...)
    scale: str = "custom"  # the scale preset's name, set by conf/scale/*.yaml
    cell: Optional[str] = None  # the cell's name; None: derived from the command-line overrides
    row: Optional[str] = None  # Table 2 row letter, set by the row group (row=H)
    run_dir: Optional[str] = None  # None: runs/<exp>/<scale>/<cell>/seed<seed>


# --- what each config key is to a cell: the one list ------------------------------------------------
#
# Naming (factorial.train.cell_name), the resume check (factorial.train.semantic_config), the sweep's
# named/unnamed overrides and reserved keys (factorial.sweep) and the report's grouping and cells.csv
# (factorial.report.data) all read KEYS; no other module lists keys of these kinds.

IDENTITY = "identity"  # defines the cell: it can change the numbers beyond float rounding
LABEL = "label"  # names the cell, but the report identifies a cell by the knobs the label sets
RUNTIME = "runtime"  # speed, display, logging, where files go: the same numbers to float rounding
SWEEP = "sweep"  # set by the sweep for every run (a study may not set it), recorded with the run
LOCATION = "location"  # where a run lives, set by the sweep (a study may not set it)

# What each kind means to the four readers. named: an override of the key is part of the cell's name;
# resumed: a run directory resumes only with the same value; grouped: the report's cells are runs that
# agree on it (cells.csv's cell_key); reserved: the sweep sets it, a study or extra override may not.
KIND_RULES: dict[str, dict[str, bool]] = {
    IDENTITY: dict(named=True, resumed=True, grouped=True, reserved=False),
    LABEL: dict(named=True, resumed=True, grouped=False, reserved=False),
    RUNTIME: dict(named=False, resumed=False, grouped=False, reserved=False),
    SWEEP: dict(named=False, resumed=True, grouped=False, reserved=True),
    LOCATION: dict(named=False, resumed=False, grouped=False, reserved=True),
}


@dataclass(frozen=True)
class KeyRole:
    kind: str
    why: str
    optimizers: tuple[str, ...] = OPTIMIZERS  # optim.* only: the optimizers that have this knob
    csv: bool = True  # a column of cells.csv (False: machine paths and W&B plumbing)


_ADAFACTOR = ("adafactor",)
_ADAM_LIKE = ("adafactor", "adam")

# A key not listed takes the role of its nearest listed parent ("model.d_model" -> "model"); a group
# choice (optim=adam, logger=none) is its section's key. tests/test_train.py checks that every key of
# the schema has a role.
KEYS: dict[str, KeyRole] = {
    "model": KeyRole(IDENTITY, "the network's shape, normalisation and initialisation"),
    "data": KeyRole(IDENTITY, "the corpus and its tokenizer: other tokens"),
    "data.cache_dir": KeyRole(RUNTIME, "where the tokenized corpus is kept: the same tokens wherever it is", csv=False),
    "optim": KeyRole(IDENTITY, "the optimizer (optim=adam picks conf/optim/adam.yaml)"),
    "optim.name": KeyRole(IDENTITY, "which optimizer"),
    "optim.lr_scale": KeyRole(IDENTITY, "the step size's factor"),
    "optim.beta1": KeyRole(IDENTITY, "first-moment decay (Adam's beta1; Adafactor's momentum)", _ADAM_LIKE),
    "optim.momentum": KeyRole(IDENTITY, "where Adafactor's beta1 acts: on the gradient or on the update", _ADAFACTOR),
    "optim.beta2": KeyRole(IDENTITY, "second-moment decay", _ADAM_LIKE),
    "optim.beta2_exponent": KeyRole(IDENTITY, "Adafactor's increasing decay 1 - t^-c (null: constant beta2)", _ADAFACTOR),
    "optim.second_moment": KeyRole(IDENTITY, "Adafactor's full, factored, row or column second moment", _ADAFACTOR),
    "optim.clip_threshold": KeyRole(IDENTITY, "Adafactor's update clipping d (null: off)", _ADAFACTOR),
    "optim.relative_step": KeyRole(IDENTITY, "Adafactor's step relative to the parameter scale", _ADAFACTOR),
    "optim.eps1": KeyRole(IDENTITY, "Adafactor's epsilon in the second moment", _ADAFACTOR),
    "optim.eps2": KeyRole(IDENTITY, "Adafactor's floor of the parameter scale", _ADAFACTOR),
    "optim.weight_decay": KeyRole(IDENTITY, "decoupled weight decay"),
    "optim.adam_eps": KeyRole(IDENTITY, "torch.optim.Adam's epsilon", ("adam",)),
    "optim.foreach": KeyRole(RUNTIME, "multi-tensor or per-tensor kernels of the same step: equal to float32 "
                                      "rounding (tests/test_optim.py compares the paths)"),
    "optim.compile": KeyRole(RUNTIME, "Adafactor's step compiled by torch.compile (CUDA graphs on CUDA): the "
                                      "reference path's numbers to float32 rounding (tests/test_compiled.py)",
                             _ADAFACTOR),
    "schedule": KeyRole(IDENTITY, "the learning-rate schedule s_t: warmup, peak, multiplier"),
    "train.steps": KeyRole(IDENTITY, "how long the cell trains"),
    "train.batch_size": KeyRole(IDENTITY, "sequences per step"),
    "train.seed": KeyRole(SWEEP, "one run of a cell: the sweep runs a cell once per seed; a run resumes "
                                 "only with its own seed"),
    "train.eval_every": KeyRole(RUNTIME, "how often validation is measured: evaluation uses no randomness "
                                         "and leaves the weights alone (best_val_ppl is the best measured point)"),
    "train.eval_tokens": KeyRole(IDENTITY, "how many validation tokens a measurement averages: another number"),
    "train.log_every": KeyRole(RUNTIME, "how often training metrics are logged"),
    "train.rms_every": KeyRole(RUNTIME, "how often RMS(U) is logged (read from the optimizer's state, not "
                                        "computed for it)"),
    "train.checkpoint_every": KeyRole(RUNTIME, "how often a checkpoint is saved: a resumed run equals an "
                                               "uninterrupted one"),
    "train.device": KeyRole(IDENTITY, "cpu or cuda (with precision=auto, cuda also means bf16)"),
    "train.precision": KeyRole(IDENTITY, "fp32 or bf16 autocast: more than float32 rounding"),
    "train.compile": KeyRole(RUNTIME, "torch.compile of the model: the same arithmetic to float rounding"),
    "train.threads": KeyRole(RUNTIME, "torch threads: speed"),
    "train.diverge_loss": KeyRole(IDENTITY, "the loss at which a run counts as diverged: its status"),
    "train.progress": KeyRole(RUNTIME, "the progress bar"),
    "logger": KeyRole(RUNTIME, "where metrics go (W&B mode, project, entity, tags), not what they are"),
    "logger.mode": KeyRole(RUNTIME, "W&B online, offline or off: this machine's choice", csv=False),
    "logger.tags": KeyRole(RUNTIME, "W&B tags: a list, not a knob", csv=False),
    "exp": KeyRole(SWEEP, "the study a run belongs to (the sweep's --exp)"),
    "scale": KeyRole(SWEEP, "the scale preset's name (--scale); its values are the keys it sets"),
    "row": KeyRole(LABEL, "a Table 2 row's letter: it sets optim.*, which the report compares"),
    "cell": KeyRole(LOCATION, "the cell's name: its directory under runs/<exp>/<scale>/"),
    "run_dir": KeyRole(LOCATION, "the run's directory on this machine", csv=False),
}


def key_role(key: str) -> KeyRole | None:
    """The role of a dotted config key, or of an override's key (``+``/``~`` stripped); None if unknown."""
    key = key.lstrip("+~")
    while key:
        if key in KEYS:
            return KEYS[key]
        key = key.rpartition(".")[0]
    return None


def key_is(key: str, rule: str) -> bool:
    """Whether a key is named / resumed / grouped / reserved (KIND_RULES); a key without a role is named,
    resumed and grouped (it can only be a typo, which composing rejects)."""
    role = key_role(key)
    return KIND_RULES[role.kind][rule] if role is not None else rule != "reserved"


def knob_applies(key: str, optimizer: Any) -> bool:
    """Whether an optim.* knob belongs to this optimizer (unknown optimizers: every knob does)."""
    role = key_role(key)
    if role is None or not key.startswith("optim.") or optimizer not in OPTIMIZERS:
        return True
    return optimizer in role.optimizers


def optimizer_knobs(optimizer: str) -> list[str]:
    """The optim.* keys an optimizer has, in schema order."""
    return [f.name for f in dataclasses.fields(OptimSchema) if knob_applies(f"optim.{f.name}", optimizer)]


def register_configs() -> None:
    """Put the schema, the model presets and Table 2's rows into Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for name, preset in PRESETS.items():
        node = OmegaConf.structured(preset)
        node.vocab_size = "${data.vocab_size}"  # the tokenizer decides it
        cs.store(group="model", name=name, node=node)
    for letter, row in TABLE2.items():
        node = OmegaConf.merge(OmegaConf.structured(OptimSchema), row.optim)
        # @package _global_: a row sets the optimizer and records its own letter.
        cs.store(group="row", name=letter, node={"optim": node, "row": letter}, package="_global_")


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(key, value, "a positive integer")


def _positive_number(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _bad(key, value, "a positive finite number")


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _bad(key, value, " | ".join(allowed))


def _own_knobs_only(o: OptimSchema, overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Refuse a knob of another optimizer (KEYS' ``optimizers``), set by an override or to anything but its
    schema default, then set every such knob to None: a cell records only its optimizer's knobs.
    Returns the knobs to check, other optimizers' at their (valid) schema defaults."""
    defaults, own = OptimSchema(), set(optimizer_knobs(o.name))
    given = {text.partition("=")[0].lstrip("+~") for text in overrides}
    knobs = {}
    for f in dataclasses.fields(OptimSchema):
        key, value, default = f"optim.{f.name}", getattr(o, f.name), getattr(defaults, f.name)
        if f.name in own:
            knobs[f.name] = value
            continue
        if key in given or not (value is None or value == default):
            raise _bad(key, value, f"no {key} with optim.name={o.name!r}: it is a knob of "
                       f"{' | '.join(KEYS[key].optimizers)} only ({o.name}'s knobs: {', '.join(sorted(own - {'name'}))})")
        knobs[f.name] = default
        setattr(o, f.name, None)
    return knobs


def validate(cfg: DictConfig | Config, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Check every range of a composed config, before any work; return it as dataclasses.

    Type errors and unknown keys are already caught by Hydra against the schema; this adds the
    ranges, the allowed words and the relations between keys. ``overrides`` (the command line's)
    tell a knob set to its default from one left alone: either is an error on another optimizer.
    """
    obj: Config = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    if not isinstance(obj.model, ModelConfig):
        obj.model = ModelConfig(**obj.model)
    try:
        validate_model_config(obj.model)
    except ValueError as err:
        raise ConfigError(str(err)) from None

    d = obj.data
    _one_of("data.source", d.source, DATA_SOURCES)
    _one_of("data.model_type", d.model_type, SPM_TYPES)
    if isinstance(d.vocab_size, bool) or d.vocab_size < 32:
        raise _bad("data.vocab_size", d.vocab_size, "an integer >= 32")
    if d.source == "text":
        for key in ("train_file", "validation_file", "test_file"):
            path = getattr(d, key)
            if not path:
                raise _bad(f"data.{key}", path, "a path to a text file (data=text needs train, validation and test files)")
            if not Path(path).is_file():
                raise _bad(f"data.{key}", path, "an existing text file")
            if Path(path).stat().st_size == 0:
                raise _bad(f"data.{key}", path, "a non-empty text file")

    o = obj.optim
    _one_of("optim.name", o.name, OPTIMIZERS)
    _positive_number("optim.lr_scale", o.lr_scale)
    k = _own_knobs_only(o, overrides)
    # Every knob is checked, so a typo never hides until it matters (another optimizer's are defaults).
    try:
        validate_hyperparameters(
            lr=o.lr_scale, beta1=k["beta1"], momentum=k["momentum"], beta2=k["beta2"],
            beta2_exponent=k["beta2_exponent"], second_moment=k["second_moment"], clip_threshold=k["clip_threshold"],
            relative_step=k["relative_step"], eps1=k["eps1"], eps2=k["eps2"], weight_decay=o.weight_decay,
            prefix="optim.",
        )
    except ValueError as err:
        raise ConfigError(_command_line_words(str(err))) from None
    try:
        validate_paths(foreach=o.foreach, fused=None, compile=k["compile"], prefix="optim.")
    except ValueError as err:
        raise ConfigError(_command_line_words(str(err))) from None
    if not (isinstance(k["adam_eps"], (int, float)) and math.isfinite(k["adam_eps"]) and k["adam_eps"] >= 0):
        raise _bad("optim.adam_eps", k["adam_eps"], "a finite number >= 0")

    s = obj.schedule
    if s.warmup_steps is not None:
        _positive_int("schedule.warmup_steps", s.warmup_steps)
    _positive_number("schedule.peak", s.peak)
    _positive_number("schedule.multiplier", s.multiplier)

    t = obj.train
    for key in ("steps", "batch_size", "eval_every", "log_every", "rms_every", "checkpoint_every"):
        _positive_int(f"train.{key}", getattr(t, key))
    if isinstance(t.seed, bool) or t.seed < 0:
        raise _bad("train.seed", t.seed, "an integer >= 0")
    if t.eval_tokens is not None:
        _positive_int("train.eval_tokens", t.eval_tokens)
    if t.threads is not None:
        _positive_int("train.threads", t.threads)
    if t.diverge_loss is not None:
        _positive_number("train.diverge_loss", t.diverge_loss)
    _one_of("train.device", t.device, DEVICES)
    _one_of("train.precision", t.precision, PRECISIONS)
    if t.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise _bad("train.device", t.device, "auto | cpu (no CUDA device is visible on this machine)")

    _one_of("logger.mode", obj.logger.mode, WANDB_MODES)
    if obj.row is not None and obj.row not in TABLE2:
        raise _bad("row", obj.row, " | ".join(TABLE2))
    for key in ("exp", "scale"):
        value = getattr(obj, key)
        if not value or "/" in value or value.startswith("."):
            raise _bad(key, value, "a non-empty name without '/' that does not start with '.'")
    return obj


def warmup_steps(cfg: Config) -> int:
    """W of the schedule: as configured, or a tenth of the run as in the paper (10k of 100k)."""
    return cfg.schedule.warmup_steps or max(1, cfg.train.steps // 10)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
