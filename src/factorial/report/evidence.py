"""Confirmatory or exploratory: the runs a verdict rests on, and whether its rules were fixed before them.

A study that names pre-registered rules (``rules: paper`` → experiments/rules/paper.yaml) is judged twice,
on two disjoint sets of its runs (*passes*), each with its own cells, seed noise and verdicts:

- the **confirmation**: the runs on the rules' ``confirmatory_seeds``. Its verdicts are *confirmatory* when
  every one of those runs was trained under the fingerprint of the rules as they are now (factorial.report.
  prereg: recorded in meta.json by the sweep), from a clean commit, and every planned run has finished;
  *incomplete* while runs are missing; *exploratory* — with the reason — when any run was trained under
  other rules, under none, or from a dirty tree (a rule changed after the runs: the verdict was decided
  afterwards).
- the **exploration**: every other run (seeds read before the rules were fixed): always *exploratory*.

A study without rules has one pass, all exploratory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from . import rules as R
from .data import ReportError

CONFIRMATION, EXPLORATION = "confirmation", "exploration"
CONFIRMATORY, EXPLORATORY, INCOMPLETE = "confirmatory", "exploratory", "incomplete"


@dataclass(frozen=True)
class Pass:
    name: str  # CONFIRMATION | EXPLORATION
    runs: pd.DataFrame
    status: str  # CONFIRMATORY | EXPLORATORY | INCOMPLETE
    note: str  # why, in words
    seeds: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.name} (seed{'s' if len(self.seeds) != 1 else ''} {seed_list(self.seeds)})"


def seed_list(seeds) -> str:
    seeds = sorted({int(s) for s in seeds})
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(str(s) for s in seeds) or "none"


def study_rules(study_file: Path | None) -> R.RuleSet | None:
    """The rules a study file names (``rules:``), checked; None when it names none or there is no file."""
    if study_file is None or not Path(study_file).is_file():
        return None
    raw = yaml.safe_load(Path(study_file).read_text(encoding="utf-8")) or {}
    name = raw.get("rules") if isinstance(raw, dict) else None
    if name is None:
        return None
    try:
        return R.load_rules(str(name))
    except R.RulesError as err:
        raise ReportError(f"study file {study_file}: {err}") from None


def registration(rules: R.RuleSet) -> str:
    from .prereg import fingerprint

    return f"{rules.name} {fingerprint(rules)}"


def _seeds_of(runs: pd.DataFrame) -> tuple[int, ...]:
    return tuple(sorted({int(s) for s in runs["seed"] if s is not None})) if "seed" in runs else ()


def _confirmation_status(runs: pd.DataFrame, rules: R.RuleSet, planned: int | None) -> tuple[str, str]:
    want = registration(rules)
    finished = runs[runs["outcome"].isin(["ok", "diverged"])] if "outcome" in runs else runs.iloc[0:0]
    recorded = [r if isinstance(r, str) and r else None for r in (runs["rules"] if "rules" in runs else [None] * len(runs))]
    none = sum(r is None for r in recorded)
    other = sorted({r for r in recorded if r is not None and r != want})
    dirty = sum(str(d).lower() == "true" for d in (runs["git_dirty"] if "git_dirty" in runs else []))
    problems = []
    if none:
        problems.append(f"{none} of {len(runs)} runs were trained under no registered rules")
    if other:
        n_other = sum(r in other for r in recorded)
        problems.append(f"{n_other} of {len(runs)} runs were trained under other rules ({', '.join(other)}), "
                        f"not the rules that judge them now ({want}): a rule changed after the runs")
    if dirty:
        problems.append(f"{dirty} of {len(runs)} runs came from a dirty working tree")
    if problems:
        return EXPLORATORY, "; ".join(problems)
    if planned is not None and len(finished) < planned:
        return INCOMPLETE, (f"{len(finished)} of the {planned} planned confirmatory runs have finished; the verdicts "
                            "become confirmatory when all have")
    return CONFIRMATORY, (f"{len(finished)} runs on the confirmatory seeds, every one trained under the rules that "
                          f"judge it ({want}) from a clean commit")


def passes(runs: pd.DataFrame, rules: R.RuleSet | None, planned_confirmatory: int | None = None) -> list[Pass]:
    """The study's runs split into its confirmation and its exploration (see the module's text)."""
    if rules is None:
        return [Pass(EXPLORATION, runs, EXPLORATORY, "the study names no pre-registered rules", _seeds_of(runs))]
    confirm = set(rules.confirmatory_seeds)
    on = runs["seed"].map(lambda s: s is not None and int(s) in confirm)
    out = []
    conf_runs = runs[on].reset_index(drop=True)
    if len(conf_runs):
        status, note = _confirmation_status(conf_runs, rules, planned_confirmatory)
        out.append(Pass(CONFIRMATION, conf_runs, status, note, tuple(sorted(confirm))))
    rest = runs[~on].reset_index(drop=True)
    if len(rest):
        out.append(Pass(EXPLORATION, rest, EXPLORATORY,
                        f"seeds {seed_list(_seeds_of(rest))} are not the confirmatory seeds of the rules "
                        f"({rules.name}): they were read before the rules were fixed", _seeds_of(rest)))
    return out
