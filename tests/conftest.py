"""Shared test setup."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _fresh_wandb_session():
    """W&B remembers a login (and its global settings) for the whole process: shut it down after
    each test that used it, so that one test's credentials never decide another's W&B mode."""
    yield
    if "wandb" in sys.modules:
        import wandb

        wandb.teardown()
