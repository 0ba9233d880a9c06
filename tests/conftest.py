"""Shared test setup: the data cache every tiny cell trains from, and a fresh W&B session per test.

Helpers for training tiny cells and running sweeps are in cells.py (``from cells import smoke, run``)."""

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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """A data cache shared by every test of the session, built once with the smoke scale's tokenizer
    (Shakespeare, 512 BPE pieces), so no test module trains its own."""
    from factorial.data import load_corpus

    path = tmp_path_factory.mktemp("cache")
    load_corpus("shakespeare", vocab_size=512, model_type="bpe", cache_dir=path)
    return str(path)


@pytest.fixture
def rules_with():
    """``with rules_with(min_seeds=1, rms={"band": 2.0}): ...`` judges with the default rules changed as
    given (nested mappings merged), then restores the rules that were active."""
    import contextlib
    import copy

    from factorial.report import rules as R

    @contextlib.contextmanager
    def changed(**changes):
        before = R.ACTIVE
        data = copy.deepcopy(dict(before.data))
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        R._check_rules(data, R.RULE_SCHEMA, "test rules")
        R.activate(R.RuleSet("test", before.path, data))
        try:
            yield R.ACTIVE
        finally:
            R.activate(before)

    return changed
