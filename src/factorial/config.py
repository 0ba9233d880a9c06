"""The config schema with Hydra: structured configs for every component of a cell, and their ranges.

The dataclasses (factorial.schema, importable without torch or Hydra) fix the keys and types; here they
are registered with Hydra, so an unknown key or a wrong type stops Hydra before a cell starts, and
``validate`` checks every range with a message that names the key, the value and what is allowed.
Table 2's rows and the model presets are registered as group options from the Python definitions
(factorial.rows, factorial.schema), so they exist once. The YAML files under ``conf/`` choose values.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .layout import REPO_ROOT
from .optim.adafactor import validate_hyperparameters, validate_paths
from .optim.knobs import NAMES as KNOB_NAMES
from .rows import TABLE2
from .schema import (  # noqa: F401 (the schema's names, re-exported for the trainer and the tests)
    DATA_SOURCES, DEVICES, IDENTITY, KEYS, KIND_RULES, LABEL, LOCATION, OPTIMIZERS, PRECISIONS, PRESETS, RUNTIME,
    SPM_TYPES, SWEEP, WANDB_MODES, Config, ConfigError, DataSchema, KeyRole, LoggerSchema, ModelConfig, OptimSchema,
    ScheduleSchema, TrainSchema, _bad, cell_name, key_is, key_role, knob_applies, optimizer_knobs, schema_keys,
    to_dict, validate_model_config, warmup_steps,
)

CONF_DIR = REPO_ROOT / "conf"


def _command_line_words(message: str) -> str:
    """The optimizer's checks speak Python (None, True, False); an override spells them null, true, false."""
    head, sep, allowed = message.partition("allowed:")
    for py, cli in (("None", "null"), ("True", "true"), ("False", "false")):
        allowed = re.sub(rf"\b{py}\b", cli, allowed)
    return head + sep + allowed


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
        validate_hyperparameters(lr=o.lr_scale, prefix="optim.", **{name: k[name] for name in KNOB_NAMES})
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


# --- composing -------------------------------------------------------------------------------------


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
        register_configs()
        GlobalHydra.instance().clear()
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
        _hydra_ready = True
    return validate(hydra_compose(config_name="config", overrides=overrides), overrides)
