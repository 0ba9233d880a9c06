"""Tables 2 and 3 of the paper as data (docs/PAPER.md §4, §5): settings and the paper's BLEU.

A row is a complete optimizer setting. ``row=H`` on the command line selects it (registered as
options of the Hydra group ``row``, see factorial.config); the results tables read the paper's
columns and BLEU from here, so the row definitions exist exactly once.

Rows A–N use an absolute step α_t = 0.1·s_t; O and P a relative step ρ_t = s_t; the SGD rows
lr = k·s_t. β1 acts on the gradient, Adam-style (the paper's "momentum as in Adam").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DIVERGED = "diverged"


@dataclass(frozen=True)
class Row:
    letter: str  # "A" … "P", and "Q1" … "Q300" for the SGD rows (Q with k = 1 … 300)
    optim: dict[str, Any] = field(default_factory=dict)
    bleu_warmup: float | str = 0.0
    bleu_no_warmup: float | str = 0.0

    @property
    def is_sgd(self) -> bool:
        return self.optim["name"] == "sgd"


def _adafactor(second_moment="full", beta1=0.0, beta2=0.999, beta2_exponent=None, clip_threshold=None, relative=False):
    return dict(
        name="adafactor",
        second_moment=second_moment,
        beta1=beta1,
        momentum="gradient",
        beta2=beta2,
        beta2_exponent=beta2_exponent,
        clip_threshold=clip_threshold,
        relative_step=relative,
        lr_scale=1.0 if relative else 0.1,
    )


def _sgd(k: float):
    return dict(name="sgd", lr_scale=float(k))


TABLE2: dict[str, Row] = {
    r.letter: r
    for r in [
        Row("A", _adafactor(), 25.6, 0.1),
        Row("B", _adafactor(beta1=0.9), 25.4, 23.1),
        Row("C", _adafactor("factored"), 25.4, 0.2),
        Row("D", _adafactor("row"), 25.2, 0.3),
        Row("E", _adafactor("col"), 0.3, 0.5),
        Row("F", _adafactor(beta2=0.99), 25.0, 0.4),
        Row("G", _adafactor(beta2=0.9), 18.4, 15.6),
        Row("H", _adafactor(clip_threshold=1.0), 25.4, 21.5),
        Row("I", _adafactor(clip_threshold=2.0), 25.7, 0.2),
        Row("J", _adafactor("factored", clip_threshold=1.0), 25.6, 22.4),
        Row("K", _adafactor(beta2_exponent=0.5), 25.6, 21.1),
        Row("L", _adafactor(beta2_exponent=0.8), 25.6, 0.1),
        Row("M", _adafactor(beta2_exponent=1.0), 25.4, 0.1),
        Row("N", _adafactor(beta2_exponent=0.8, clip_threshold=1.0), 25.9, 22.4),
        Row("O", _adafactor("factored", beta2_exponent=0.8, clip_threshold=1.0, relative=True), 25.0, 25.5),
        Row("P", _adafactor("factored", beta1=0.9, beta2_exponent=0.8, clip_threshold=1.0, relative=True), 24.9, 25.3),
        Row("Q1", _sgd(1), 0.6, 0.8),
        Row("Q10", _sgd(10), 8.2, 9.1),
        Row("Q100", _sgd(100), 22.9, DIVERGED),
        Row("Q150", _sgd(150), 24.0, DIVERGED),
        Row("Q200", _sgd(200), 24.3, DIVERGED),
        Row("Q300", _sgd(300), DIVERGED, DIVERGED),
    ]
}


# Table 3 (§8.1): (embedding init σ, embedding multiplier) -> (Adam BLEU, Adafactor BLEU); d = d_model.
TABLE3: dict[tuple[str, str], tuple[float, float]] = {
    ("1/√d", "√d"): (26.4, 26.6),
    ("1", "1"): (25.8, 26.4),
    ("1/√d", "1"): (24.2, 25.4),
}
