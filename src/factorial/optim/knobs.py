"""The knobs of the paper's optimizer space, once: name, default, type, what is allowed, whose knob it is.

Everything that lists Adafactor's knobs reads them from KNOBS: the config schema (factorial.schema builds
``OptimSchema``'s knob fields and their KEYS entries from it), the optimizer's constructor and its checks
(factorial.optim.adafactor), the trainer, the benchmark's Alg. 6 setting and the tests of Table 2's rows
(factorial.rows sets only these). The defaults are Alg. 6, the paper's recommended Adafactor (§9):
β1 = 0, β̂2t = 1 − t^−0.8, factored second moment, update clipping at d = 1, relative step.
Adding a knob: a Knob here, its math in functional.py and the three step paths, and a test.

Imports nothing of torch, so the schema (and ``make table``) can read it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

SECOND_MOMENTS = ("factored", "row", "col", "full")
MOMENTUM_KINDS = ("gradient", "update")
OPTIMIZERS = ("adafactor", "adam", "sgd")
_ADAFACTOR = ("adafactor",)
_ADAM_LIKE = ("adafactor", "adam")


def _real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Knob:
    name: str
    default: Any  # Alg. 6's value
    type: Any  # the config schema's annotation (Optional: another optimizer's cell records None)
    ok: Callable[[Any], bool]  # whether a value is allowed
    allowed: str  # what an error says is allowed
    why: str  # what it is (the config's KEYS)
    optimizers: tuple[str, ...] = _ADAFACTOR  # the optimizers that have it


KNOBS: tuple[Knob, ...] = (
    Knob("beta1", 0.0, Optional[float], lambda v: _real(v) and 0.0 <= v < 1.0, "0 <= beta1 < 1",
         "first-moment decay (Adam's beta1; Adafactor's momentum)", _ADAM_LIKE),
    Knob("momentum", "gradient", Optional[str], lambda v: v in MOMENTUM_KINDS, " | ".join(map(repr, MOMENTUM_KINDS)),
         "where Adafactor's beta1 acts: on the gradient or on the update"),
    Knob("beta2", 0.999, Optional[float], lambda v: _real(v) and 0.0 < v < 1.0, "0 < beta2 < 1",
         "second-moment decay", _ADAM_LIKE),
    Knob("beta2_exponent", 0.8, Optional[float], lambda v: v is None or (_real(v) and v > 0),
         "None (constant beta2) or c > 0 (beta2_t = 1 - t^-c)",
         "Adafactor's increasing decay 1 - t^-c (null: constant beta2)"),
    Knob("second_moment", "factored", Optional[str], lambda v: v in SECOND_MOMENTS,
         " | ".join(map(repr, SECOND_MOMENTS)), "Adafactor's full, factored, row or column second moment"),
    Knob("clip_threshold", 1.0, Optional[float], lambda v: v is None or (_real(v) and v > 0),
         "None (no clipping) or d > 0", "Adafactor's update clipping d (null: off)"),
    Knob("relative_step", True, Optional[bool], lambda v: isinstance(v, bool), "True or False",
         "Adafactor's step relative to the parameter scale"),
    Knob("eps1", 1e-30, Optional[float], lambda v: _real(v) and v >= 0, "eps1 >= 0",
         "Adafactor's epsilon in the second moment"),
    Knob("eps2", 1e-3, Optional[float], lambda v: _real(v) and v >= 0, "eps2 >= 0",
         "Adafactor's floor of the parameter scale"),
    Knob("weight_decay", 0.0, float, lambda v: _real(v) and v >= 0, "weight_decay >= 0", "decoupled weight decay",
         OPTIMIZERS),
)
NAMES = tuple(k.name for k in KNOBS)
DEFAULTS = {k.name: k.default for k in KNOBS}  # Alg. 6
BY_NAME = {k.name: k for k in KNOBS}


def invalid(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"invalid {name}={value!r}; allowed: {allowed}")


def check(values: Mapping[str, Any], *, lr: Any = None, prefix: str = "") -> None:
    """Raise ValueError naming the first bad knob (as ``<prefix><name>``), its value and what is allowed: a
    knob that is not one of NAMES, or a value its Knob refuses; ``lr`` too when given (a finite number >= 0)."""
    if lr is not None or "lr" in values:
        value = values.get("lr", lr)
        if not (_real(value) and value >= 0):
            raise invalid(prefix + "lr", value, "lr >= 0")
    for name, value in values.items():
        if name == "lr":
            continue
        knob = BY_NAME.get(name)
        if knob is None:
            raise invalid(prefix + name, value, f"a knob of Adafactor: {', '.join(NAMES)}")
        if not knob.ok(value):
            raise invalid(prefix + name, value, knob.allowed)
