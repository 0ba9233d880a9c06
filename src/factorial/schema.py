"""The config schema of a cell, importable without torch, Hydra or OmegaConf.

The dataclasses fix every key and type of a cell's config (the tree mirrors the object graph:
``model``, ``data``, ``optim``, ``schedule``, ``train``, ``logger``); KEYS says what each key is to a cell
(identity, label, runtime, set by the sweep, location). factorial.config registers the schema with Hydra
and checks every range; the model (factorial.model), the trainer, the sweep and the report read the
same definitions from here, so ``make table`` never imports torch or Hydra to read a run's config.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .optim.knobs import KNOBS, OPTIMIZERS

MISSING = "???"  # omegaconf.MISSING: a value Hydra must be given (tests check the two are equal)
PLAIN_STRING_RE = re.compile(r"[A-Za-z0-9_.+\-/:@]+")  # a value an override spells without quotes


# --- the model ---------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    vocab_size: int = 4096
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 512
    context_length: int = 64
    dropout: float = 0.0
    norm: str = "pre"  # "pre" | "post" LayerNorm placement
    tie_embeddings: bool = True  # token embedding shared with the softmax (the paper's setting)
    # Table 3 of the paper ablates both of these: std 1/sqrt(d) or 1, multiplier sqrt(d) or 1.
    embedding_init_std: float | None = None  # None -> 1/sqrt(d_model)
    embedding_multiplier: float | None = None  # None -> sqrt(d_model); scales the input embeddings
    bias: bool = False  # biases in Linear layers

    @property
    def resolved_embedding_init_std(self) -> float:
        return self.embedding_init_std if self.embedding_init_std is not None else self.d_model**-0.5

    @property
    def resolved_embedding_multiplier(self) -> float:
        return self.embedding_multiplier if self.embedding_multiplier is not None else self.d_model**0.5


NORMS = ("pre", "post")

# vocab_size is set from the tokenizer at run time, so presets keep the default.
PRESETS: dict[str, ModelConfig] = {
    # Unit tests only: small enough that a forward+backward takes milliseconds.
    "tiny": ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, context_length=32),
    # What a CPU sweep can afford.
    "cpu": ModelConfig(d_model=128, n_layers=2, n_heads=4, d_ff=512, context_length=64),
    # The paper's Transformer base shape (Vaswani et al. 2017), decoder only.
    "base": ModelConfig(d_model=512, n_layers=6, n_heads=8, d_ff=2048, context_length=256),
}


def _bad_model(field: str, value: object, allowed: str) -> ValueError:
    # One message shape everywhere, so a config error points straight at the YAML key.
    return ValueError(f"model.{field}={value!r} is invalid: {allowed}")


def _is_int(x: object) -> bool:
    # bool is an int subclass; `n_layers: true` in a YAML file is a typo, not 1.
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate_model_config(cfg: ModelConfig) -> None:
    """Raise ValueError naming the offending ``model.<name>`` if ``cfg`` is unusable."""
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "context_length"):
        value = getattr(cfg, name)
        if not _is_int(value) or value <= 0:
            raise _bad_model(name, value, "must be a positive integer")
    if cfg.d_model % cfg.n_heads != 0:
        raise _bad_model(
            "n_heads",
            cfg.n_heads,
            f"must divide model.d_model={cfg.d_model} (head size = d_model / n_heads)",
        )
    if not _is_real(cfg.dropout) or not (0.0 <= cfg.dropout < 1.0):
        raise _bad_model("dropout", cfg.dropout, "must be a number in [0, 1)")
    if cfg.norm not in NORMS:
        raise _bad_model("norm", cfg.norm, f"must be one of {', '.join(repr(n) for n in NORMS)}")
    for name in ("tie_embeddings", "bias"):
        value = getattr(cfg, name)
        if not isinstance(value, bool):
            raise _bad_model(name, value, "must be true or false")
    for name in ("embedding_init_std", "embedding_multiplier"):
        value = getattr(cfg, name)
        if value is None:
            continue
        if not _is_real(value) or not math.isfinite(value) or value <= 0:
            raise _bad_model(name, value, "must be a positive finite number, or null for the default")


# --- the rest of a cell's config ----------------------------------------------------------------

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
WANDB_MODES = ("auto", "online", "offline", "disabled")
DATA_SOURCES = ("shakespeare", "wikitext2", "wikitext103", "text")
SPM_TYPES = ("bpe", "unigram", "char", "word")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""


def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"invalid {key}={value!r}; allowed: {allowed}")


@dataclass
class DataSchema:
    source: str = "shakespeare"
    vocab_size: int = 4096
    model_type: str = "bpe"
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    cache_dir: str = "cache"


OptimSchema = dataclasses.make_dataclass(
    "OptimSchema",
    [
        ("name", str, field(default="adafactor")),
        ("lr_scale", float, field(default=1.0)),
        # The knobs of the spec (factorial.optim.knobs), at Alg. 6's values; a knob another optimizer has is
        # None in a validated config (KEYS says whose each knob is).
        *[(k.name, k.type, field(default=k.default)) for k in KNOBS],
        ("adam_eps", Optional[float], field(default=1e-9)),  # torch.optim.Adam only (Tensor2Tensor's default)
        ("foreach", Optional[bool], field(default=None)),
        # Adafactor's compiled step (compile=True: the whole step in one torch.compile'd function, replayed from
        # CUDA graphs on CUDA; opt-in, docs/OPTIMIZER.md). A speed key, not part of a cell's identity (KEYS below).
        ("compile", Optional[bool], field(default=False)),
    ],
)
OptimSchema.__module__ = __name__
OptimSchema.__doc__ = """One optimizer. ``adafactor`` is factorial.optim.Adafactor with every knob of the paper;
``adam`` is torch.optim.Adam (an independent implementation, e.g. Table 3's Adam); ``sgd`` is
torch.optim.SGD (row Q). The step of a cell is lr_scale · schedule.multiplier · s_t."""


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
    **{f"optim.{k.name}": KeyRole(IDENTITY, k.why, k.optimizers) for k in KNOBS},  # the spec's knobs
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


def default_warmup_steps(steps: int) -> int:
    """W when schedule.warmup_steps is null: a tenth of the run, as in the paper (10k of 100k steps)."""
    return max(1, steps // 10)


def warmup_steps(cfg: Config) -> int:
    """W of the schedule: as configured, or default_warmup_steps."""
    return cfg.schedule.warmup_steps or default_warmup_steps(cfg.train.steps)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def cell_name(overrides: list[str]) -> str:
    """A deterministic directory name from the overrides that define the cell (never a timestamp): those
    whose key is named (config.KEYS: not the sweep's, not speed or logging)."""
    kept = sorted(o.lstrip("+~") for o in overrides
                  if key_is(o.split("=", 1)[0], "named") and not o.lstrip("+~").startswith("hydra"))
    name = ",".join(kept) or "default"
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", name)
