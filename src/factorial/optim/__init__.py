"""factorial's optimizers: Adafactor with every ablation switch of the paper."""

from .adafactor import Adafactor, validate_hyperparameters, validate_paths

__all__ = ["Adafactor", "validate_hyperparameters", "validate_paths"]
