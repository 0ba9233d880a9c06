"""factorial: reproducible ablation studies of the Adafactor optimizer (Shazeer & Stern, 2018)."""

__version__ = "0.1.0"
