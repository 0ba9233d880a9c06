"""A study: the file experiments/<name>.yaml, read and expanded into cells and seeds.

The launcher (factorial.sweep), the table (factorial.table) and the dashboard read studies from here;
nothing here imports torch, Hydra or the launcher. A study file has the keys of STUDY_KEYS:

* ``grid``: one mapping of key: [values] (or a list of them), crossed; a list of mappings on one axis links
  keys (the axis name is then a label);
* ``cells``: explicit cells, each a mapping of key: value, with its own ``seeds`` if it needs more;
* ``seeds``, ``more_seeds`` (``when`` a cell has these values, these ``seeds`` too), ``fixed`` (overrides of
  every cell that do not name it), ``description``, ``report`` (factorial.report.spec) and ``rules`` (the
  pre-registered rules that judge it, experiments/rules/<name>.yaml: every cell then also runs on their
  confirmatory seeds).

A cell's name is made of the overrides that define it (factorial.schema.cell_name); every bad value is
refused with the key, the value and what is allowed, before any cell runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .layout import EXPERIMENTS_DIR, KEY_RE, available_studies, is_path
from .schema import KEYS, PLAIN_STRING_RE, cell_name, key_is

STUDY_KEYS = ("description", "grid", "seeds", "more_seeds", "fixed", "cells", "report", "rules")


class StudyError(Exception):
    """Bad input: a study file, a study name, a key or an override. The message names the key, the value and
    what is allowed (the sweep exits 2)."""


@dataclass
class Cell:
    name: str
    overrides: list[str]  # the study's overrides and the extra ones: they name the cell
    values: dict[str, str]  # key -> value as the override spells it (for more_seeds)
    seeds: list[int]


@dataclass
class Study:
    name: str
    path: Path
    description: str
    cells: list[Cell]
    fixed: list[str]
    rules: Any = None  # the pre-registered rules (factorial.report.rules.RuleSet) that judge it, if it names any

    def registration(self) -> str | None:
        """``"<rules name> <fingerprint>"``, recorded in meta.json by every run this study trains."""
        if self.rules is None:
            return None
        from .report.prereg import fingerprint

        return f"{self.rules.name} {fingerprint(self.rules)}"


def study_path(exp: str) -> Path:
    """``--exp`` is a study name (experiments/<name>.yaml) or a path to a study file."""
    if is_path(exp):
        path = Path(exp)
        if not path.is_file():
            raise StudyError(f"invalid --exp={exp!r}; allowed: an existing study file, or one of: {', '.join(available_studies())}")
        return path
    path = EXPERIMENTS_DIR / f"{exp}.yaml"
    if not path.is_file():
        raise StudyError(f"invalid --exp={exp!r}; allowed: {' | '.join(available_studies())} (files in {EXPERIMENTS_DIR}) or a path to a study file")
    return path


def format_value(value: Any, where: str) -> str:
    """A YAML value as a Hydra override value: null, true/false, numbers, plain or quoted strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if PLAIN_STRING_RE.fullmatch(value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise StudyError(f"invalid {where}={value!r}; allowed: null, a boolean, a number or a string")


def check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise StudyError(f"invalid key {key!r} in {where}; allowed: a config key such as row or optim.beta1")
    bare = key.lstrip("+~")
    if key_is(bare, "reserved") or bare.startswith("hydra"):
        raise StudyError(
            f"invalid key {key!r} in {where}; allowed: any config key except {', '.join(_reserved())} and hydra.* "
            "(the sweep sets them: use --exp, --scale, --seeds, --runs-root)"
        )
    return key


def _reserved() -> tuple[str, ...]:
    return tuple(k for k in KEYS if key_is(k, "reserved"))


def split_override(text: Any, where: str) -> tuple[str, str]:
    if not isinstance(text, str) or "=" not in text:
        raise StudyError(f"invalid {where} entry {text!r}; allowed: key=value")
    key, value = text.split("=", 1)
    return check_key(key, where), value


def _seed_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise StudyError(f"invalid {where}={value!r}; allowed: a non-empty list of integers >= 0")
    return sorted(set(value))


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise StudyError(f"invalid {where}={value!r}; allowed: a mapping of key: value")
    return value


def _grid_cells(grid: Any, where: str) -> list[dict[str, str]]:
    """The combinations of one grid: [{key: formatted value}] in file order."""
    axes = []
    for axis, values in _mapping(grid, where).items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise StudyError(f"invalid {where}.{axis}=[]; allowed: a non-empty list of values")
        if all(isinstance(v, dict) for v in values):  # linked keys; the axis name is a label
            options = []
            for i, v in enumerate(values):
                options.append({check_key(k, f"{where}.{axis}[{i}]"): format_value(x, f"{where}.{axis}[{i}].{k}") for k, x in v.items()})
        elif any(isinstance(v, dict) for v in values):
            raise StudyError(f"invalid {where}.{axis}: mixes mappings and values; allowed: all values, or all mappings")
        else:
            check_key(axis, where)
            options = [{axis: format_value(v, f"{where}.{axis}")} for v in values]
        axes.append(options)
    cells = []
    for combo in itertools.product(*axes):
        merged: dict[str, str] = {}
        for part in combo:
            for k, v in part.items():
                if k in merged:
                    raise StudyError(f"invalid {where}: key {k!r} is set by two axes; allowed: each key on one axis")
                merged[k] = v
        cells.append(merged)
    return cells


def _check_report(raw: Any, path: Path, names: list[str] | None = None) -> None:
    """The study's ``report:`` section (factorial.report.spec), checked before any cell runs; with the study's
    cell names, its controls must name cells of the study."""
    from .report.spec import ReportSpecError, parse_report

    try:
        spec = parse_report(raw)
    except ReportSpecError as err:
        raise StudyError(f"study file {path}: {err}") from None
    for i, pair in enumerate(spec.controls if names is not None else ()):
        for key, value in zip(("cell", "reference"), pair):
            if value not in names:
                raise StudyError(f"study file {path}: invalid report.controls[{i}].{key}={value!r}; allowed: a cell of "
                                 f"the study ({', '.join(names[:6])}{', …' if len(names) > 6 else ''})")


def load_study(
    exp: str,
    extra: list[str] | None = None,
    seeds: list[int] | None = None,
) -> Study:
    """Read a study file and expand it into cells (names, overrides, seeds); no composing yet."""
    path = study_path(exp)
    name = path.stem
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise StudyError(f"study file {path} is not valid YAML: {err}") from None
    raw = _mapping(raw, f"study file {path}")
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    if unknown:
        raise StudyError(f"invalid key {unknown[0]!r} in study file {path}; allowed: {', '.join(STUDY_KEYS)}")

    base_seeds = _seed_list(raw.get("seeds") if raw.get("seeds") is not None else [0], "seeds")
    _check_report(raw.get("report"), path)
    rules = None
    if raw.get("rules") is not None:
        from .report.rules import RulesError, load_rules

        if not isinstance(raw["rules"], str):
            raise StudyError(f"invalid rules={raw['rules']!r} in study file {path}; allowed: the name of a file in "
                             "experiments/rules/ (e.g. paper) or a path to a rules file")
        try:
            rules = load_rules(raw["rules"])
        except RulesError as err:
            raise StudyError(str(err)) from None
        base_seeds = sorted(set(base_seeds) | set(rules.confirmatory_seeds))  # every cell runs on the confirmatory seeds

    # Extra overrides from the command line: named unless they do not change the result.
    extra_named, extra_unnamed = [], []
    for text in extra or []:
        key, _ = split_override(text, "extra overrides")
        (extra_named if key_is(key, "named") else extra_unnamed).append(text)
    extra_keys = {o.split("=", 1)[0].lstrip("+~") for o in extra or []}

    fixed_raw = raw.get("fixed") or []
    if isinstance(fixed_raw, dict):
        fixed = [f"{check_key(k, 'fixed')}={format_value(v, f'fixed.{k}')}" for k, v in fixed_raw.items()]
    elif isinstance(fixed_raw, list):
        fixed = [f"{k}={v}" for k, v in (split_override(o, "fixed") for o in fixed_raw)]
    else:
        raise StudyError(f"invalid fixed={fixed_raw!r}; allowed: a list of key=value strings or a mapping")
    fixed_keys = {o.split("=", 1)[0].lstrip("+~") for o in fixed}

    # The cells: grid combinations, then explicit cells.
    specs: list[tuple[dict[str, str], list[int]]] = []
    grids = raw.get("grid")
    if grids is not None:
        for i, grid in enumerate(grids if isinstance(grids, list) else [grids]):
            where = f"grid[{i}]" if isinstance(grids, list) else "grid"
            specs += [(values, []) for values in _grid_cells(grid, where)]
    for i, entry in enumerate(raw.get("cells") or []):
        entry = dict(_mapping(entry, f"cells[{i}]"))
        own = _seed_list(entry.pop("seeds"), f"cells[{i}].seeds") if "seeds" in entry else []
        specs.append(({check_key(k, f"cells[{i}]"): format_value(v, f"cells[{i}].{k}") for k, v in entry.items()}, own))
    if not specs:
        raise StudyError(f"study file {path} defines no cells; allowed: a grid and/or a list of cells")

    cells: dict[str, Cell] = {}
    for values, own in specs:
        for key in values:
            bare = key.lstrip("+~")
            if bare in extra_keys or bare in fixed_keys:
                what = "extra override" if bare in extra_keys else "fixed override"
                raise StudyError(f"invalid {what} of {bare}: the study sets {bare} for its cells; allowed: keys the study does not set")
        overrides = [f"{k}={v}" for k, v in values.items()] + extra_named
        cname = cell_name(overrides)
        cell = cells.get(cname)
        if cell is None:
            cells[cname] = Cell(cname, overrides, dict(values), sorted(set(base_seeds) | set(own)))
        elif sorted(cell.overrides) != sorted(overrides):
            raise StudyError(f"cells {cell.overrides} and {overrides} get the same name {cname!r}; allowed: distinct cells")
        else:
            cell.seeds = sorted(set(cell.seeds) | set(own))

    for i, rule in enumerate(raw.get("more_seeds") or []):
        rule = _mapping(rule, f"more_seeds[{i}]")
        if set(rule) != {"when", "seeds"}:
            raise StudyError(f"invalid more_seeds[{i}] keys {sorted(rule)}; allowed: when, seeds")
        more = _seed_list(rule["seeds"], f"more_seeds[{i}].seeds")
        when = {
            check_key(k, f"more_seeds[{i}].when"): {format_value(x, f"more_seeds[{i}].when.{k}") for x in (v if isinstance(v, list) else [v])}
            for k, v in _mapping(rule["when"], f"more_seeds[{i}].when").items()
        }
        matched = [c for c in cells.values() if all(c.values.get(k) in allowed for k, allowed in when.items())]
        if not matched:
            raise StudyError(f"invalid more_seeds[{i}].when={rule['when']!r}: it matches no cell of the study; allowed: keys and values of the study's cells")
        for c in matched:
            c.seeds = sorted(set(c.seeds) | set(more))

    if seeds is not None:
        for c in cells.values():
            c.seeds = list(seeds)
    if not extra_named:  # extra named overrides rename every cell; the controls name the study's own cells
        _check_report(raw.get("report"), path, [c.name for c in cells.values()])
    study = Study(name, path, str(raw.get("description") or ""), list(cells.values()), fixed + extra_unnamed, rules)
    return study
