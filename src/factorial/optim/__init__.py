"""factorial's optimizers: Adafactor with every ablation switch of the paper.

The knob spec (``factorial.optim.knobs``) imports without torch; the optimizer is imported on first use.
"""

__all__ = ["Adafactor", "validate_hyperparameters", "validate_paths"]


def __getattr__(name: str):
    if name in __all__:
        from . import adafactor

        return getattr(adafactor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
