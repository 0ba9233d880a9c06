"""The command line of a cell (``python -m factorial.train``) beside the training itself: the help text, the
errors a user reads, Hydra's multirun (``-m``: a comma list becomes an ad-hoc study that the sweep runs)
and shell completion. factorial.train.main parses the command line with these; nothing here trains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import config as C
from .layout import runs_root
from .schema import PLAIN_STRING_RE

# --- errors and help -----------------------------------------------------------------------------------


def describe_error(err: BaseException) -> str:
    """One readable message for a bad input: Hydra's own text, its cause, no search-path noise."""
    lines = []
    for line in str(err).splitlines():
        if line.startswith(("Config search path", "To append to your config")):
            break
        lines.append(line.strip())
    text = " ".join(x for x in lines if x).replace("Available options in", "; available options in")
    cause = err.__cause__
    if cause is not None:
        text += f" ({' '.join(x.strip() for x in str(cause).splitlines() if x.strip() and not x.strip().startswith(('reference_type', 'object_type')))})"
    return text + did_you_mean(text)


def did_you_mean(text: str) -> str:
    """'; did you mean ...?' for a misspelled key or group option in Hydra's message, else ''."""
    import difflib

    key = re.search(r"full_key: ([A-Za-z0-9_.]+)", text)
    if key:
        parent, _, name = key.group(1).rpartition(".")
        keys = C.schema_keys(parent)
        if keys:
            close = difflib.get_close_matches(name, keys, n=3, cutoff=0.6)
            allowed = f"keys of {parent or 'the config'}: {', '.join(keys)}"
            if close:
                return f"; did you mean {' or '.join((parent + '.' if parent else '') + c for c in close)}? ({allowed})"
            return f"; allowed: {allowed}"
    option = re.search(r"Could not find '([A-Za-z0-9_]+)/([^']+)'.*available options in '[^']+': ([^;(]+)", text)
    if option:
        group, name, options = option.group(1), option.group(2), option.group(3).split()
        # options differ from a typo in case too (row=h for row=H): compare without case, suggest as spelled
        spelled = {o.lower(): o for o in options}
        close = [spelled[c] for c in ([name.lower()] if name.lower() in spelled else
                                      difflib.get_close_matches(name.lower(), list(spelled), n=3, cutoff=0.6))]
        if close:
            return f"; did you mean {' or '.join(f'{group}={c}' for c in close)}?"
    return ""


def _first_comment(path: Path) -> str:
    """A config file's leading comment (its description), cut at about 150 characters."""
    words = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.startswith("#"):
            break
        if "@package" not in line:
            words.append(line.lstrip("# ").strip())
    text = " ".join(words)
    return text if len(text) <= 150 else text[:149].rsplit(" ", 1)[0] + " …"


def describe_row(letter: str) -> str:
    from .rows import TABLE2

    o = TABLE2[letter].optim
    if o["name"] == "sgd":
        return f"SGD, lr = {o['lr_scale']:g}·s_t"
    beta2 = f"β2_t = 1 - t^-{o['beta2_exponent']:g}" if o["beta2_exponent"] is not None else f"β2 = {o['beta2']:g}"
    clip = f"clipping d = {o['clip_threshold']:g}" if o["clip_threshold"] is not None else "no clipping"
    step = "relative step ρ_t = s_t" if o["relative_step"] else f"absolute step α_t = {o['lr_scale']:g}·s_t"
    moment = {"full": "full V", "factored": "factored V", "row": "row means only", "col": "column means only"}
    return f"{moment[o['second_moment']]}, β1 = {o['beta1']:g}, {beta2}, {clip}, {step}"


def group_options() -> dict[str, list[tuple[str, str]]]:
    """Every config group and its options with a one-line description."""
    from .model import PRESETS
    from .rows import TABLE2

    groups: dict[str, list[tuple[str, str]]] = {}
    for group in ("scale", "optim", "data", "logger"):
        groups[group] = [(p.stem, _first_comment(p)) for p in sorted((C.CONF_DIR / group).glob("*.yaml"))]
    groups["model"] = [(name, ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(preset).items()
                                        if k in ("d_model", "n_layers", "n_heads", "d_ff", "context_length")))
                       for name, preset in PRESETS.items()]
    groups["row"] = [(letter, describe_row(letter)) for letter in TABLE2]
    return groups


def help_text() -> str:
    from omegaconf import OmegaConf

    from .runlog import flatten
    from .layout import available_scales, available_studies

    lines = [
        "usage: python -m factorial.train [--help] [--cfg job] [-m] [KEY=VALUE | GROUP=OPTION ...]",
        "",
        "Train one cell of a study (a Transformer LM with one optimizer setting), resumably: the same",
        "command again resumes it from its last checkpoint; a finished cell is not trained again.",
        "Overrides are Hydra's (conf/config.yaml): GROUP=OPTION picks a config file or preset, KEY=VALUE",
        "sets one value (null for none, true/false). Example:",
        "",
        "  python -m factorial.train scale=smoke row=H schedule.warmup=false logger=none",
        "  python -m factorial.train --cfg job scale=cpu row=O    # print the resolved config, run nothing",
        "",
        "Options:",
        "  -h, --help            this text",
        "  --cfg job             print the cell's resolved config (YAML) and exit; with -m, list the runs",
        "  -m, --multirun        sweep, as Hydra's -m: comma lists (row=A,B), range(0,3), choice(a,b) run every",
        "                        combination as an ad-hoc study through factorial.sweep (resumable, locked, shared",
        "                        runs), written to <runs>/<study>/<study>.yaml; needs scale=NAME. study=NAME names",
        "                        it (default: multirun), train.seed=0,1,2 its seeds, hydra/launcher=submitit_slurm",
        "                        and hydra.launcher.{n_jobs,partition,timeout_min,...} the launcher, hydra.sweep.dir",
        "                        (else $FACTORIAL_RUNS, else runs/) where it goes. Its tables: make table EXP=<file>",
        "  -sc install=bash      shell completion: eval \"$(python -m factorial.train -sc install=bash)\"",
        "",
        "  python -m factorial.train -m model=tiny scale=smoke logger=none row=A,B schedule.warmup=true,false",
        "",
        "Config groups (GROUP=OPTION):",
    ]
    for group, options in group_options().items():
        lines.append(f"  {group}:")
        width = max(len(name) for name, _ in options)
        lines += [f"    {group}={name:<{width}}  {text}" for name, text in options]
    lines += ["", "Keys (KEY=VALUE) and their defaults (without a scale or row):"]
    defaults = flatten(OmegaConf.to_container(OmegaConf.structured(C.compose([]))))
    optim_defaults = C.OptimSchema()
    for key, value in defaults.items():
        only = ""
        if key.startswith("optim.") and set(C.KEYS[key].optimizers) != set(C.OPTIMIZERS):
            only = f"  ({' | '.join(C.KEYS[key].optimizers)} only)"
            value = getattr(optim_defaults, key.split(".", 1)[1]) if value is None else value
        lines.append(f"  {key}={'null' if value is None else str(value).lower() if isinstance(value, bool) else value}{only}")
    lines += [
        "",
        f"Studies (python -m factorial.sweep --exp NAME): {', '.join(available_studies())}",
        f"Scales (scale=NAME, --scale NAME): {', '.join(available_scales())}",
        "",
        "What each knob, row and claim means: docs/PAPER.md; the logged metrics: docs/METRICS.md.",
    ]
    return "\n".join(lines)


# --- Hydra's multirun: a comma list on the command line is an ad-hoc study ---------------------------------

MULTIRUN_FLAGS = ("-m", "--multirun")
MULTIRUN_NAME = "multirun"  # the ad-hoc study's name unless study=NAME gives one
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
# hydra/launcher=... as hydra-submitit-launcher and hydra-joblib-launcher name them -> the sweep's --launcher
HYDRA_LAUNCHERS = {"basic": "local", "joblib": "local", "submitit_local": "submitit_local", "submitit_slurm": "slurm"}
# hydra.launcher.<key>=... -> the sweep's options
HYDRA_LAUNCHER_KEYS = {"n_jobs": "--jobs", "array_parallelism": "--jobs", "partition": "--partition",
                       "timeout_min": "--time-min", "cpus_per_task": "--cpus-per-cell",
                       "gpus_per_node": "--gpus-per-cell", "mem_gb": "--mem-per-cell"}


class MultirunError(ValueError):
    """A multirun command line that cannot become a study: the message names the override and what is allowed."""


def _sweep_value(value: Any, line: str) -> str:
    """One value of a parsed sweep (hydra's Transformer.encode) as an override spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, float) else str(value)
    if not PLAIN_STRING_RE.fullmatch(text):
        raise MultirunError(f"invalid value {text} in {line!r} under --multirun; allowed: plain values (letters, digits "
                            "and . _ + - / : @), or a study file with any value (python -m factorial.sweep --exp FILE)")
    return text


def plan_multirun(overrides: list[str]) -> dict:
    """A multirun command line as an ad-hoc study, parsed by Hydra's own override parser (comma lists,
    range(), choice()): {"name", "scale", "study" (the study file's content), "sweep_args", "runs_root"}.

    Every key that names a cell (config.KEYS) becomes an axis of the study's grid, one value or several (so a
    cell is named as the same overrides name a single cell); the other keys (logging, speed, data.cache_dir)
    are the study's ``fixed`` overrides; ``train.seed`` gives the seeds; ``study=NAME`` (or ``exp=NAME``) the
    study's name; ``scale=`` the sweep's scale; ``hydra/launcher=`` and ``hydra.launcher.*`` the launcher and
    its options, ``hydra.sweep.dir=`` the runs root."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType, Transformer
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise MultirunError(" ".join(str(err).split())) from None
    grid: dict[str, list[str]] = {}
    fixed: list[str] = []
    seeds: list[int] | None = None
    names: dict[str, str] = {}
    sweep_args: list[str] = []
    runs = None
    for o in parsed:
        line = o.input_line
        if o.is_delete():
            raise MultirunError(f"invalid {line!r} under --multirun; allowed: KEY=VALUE and GROUP=OPTION overrides")
        key = o.get_key_element()
        prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(o.type, "")
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise MultirunError(f"invalid {line!r}: an interval is for an optimizing sweeper; allowed under "
                                    "--multirun: a comma list (a,b), range(start, stop[, step]) or choice(a, b)")
            try:
                values = [_sweep_value(v, line) for v in o.sweep_iterator(transformer=Transformer.encode)]
            except HydraException as err:
                raise MultirunError(f"invalid {line!r}: {err}; allowed under --multirun: a comma list (a,b), "
                                    "range(start, stop[, step]) or choice(a, b)") from None
        else:
            values = [o.get_value_element_as_str()]
        single = values[0] if len(values) == 1 else None
        if key in ("study", "exp", "scale", "hydra/launcher", "hydra.sweep.dir") or key.startswith("hydra."):
            if single is None:
                raise MultirunError(f"invalid {line!r}: {key} takes one value in a multirun; allowed: {key}=VALUE "
                                    + ("(one scale per sweep: run one multirun per scale)" if key == "scale" else ""))
        if key in ("study", "exp"):
            if names.setdefault("study", single) != single:
                raise MultirunError(f"invalid {line!r}: the study is already named {names['study']!r}; allowed: one "
                                    "name, by study=NAME (or exp=NAME)")
        elif key == "scale":
            names["scale"] = single
        elif key == "train.seed":
            try:
                seeds = sorted({int(v) for v in values})
            except ValueError:
                seeds = []
            if not seeds or min(seeds) < 0:
                raise MultirunError(f"invalid {line!r}; allowed: integers >= 0, e.g. train.seed=0,1,2 or range(3)")
        elif key in ("cell", "run_dir"):
            raise MultirunError(f"invalid {line!r} under --multirun: the sweep sets {key} for each run; allowed: "
                                "study=NAME to name the study, hydra.sweep.dir=DIR (or $FACTORIAL_RUNS) for where it goes")
        elif key == "hydra/launcher":
            if single not in HYDRA_LAUNCHERS:
                raise MultirunError(f"invalid {line!r}; allowed: hydra/launcher={' | '.join(HYDRA_LAUNCHERS)}")
            sweep_args += ["--launcher", HYDRA_LAUNCHERS[single]]
        elif key.startswith("hydra.launcher.") and key.split(".", 2)[2] in HYDRA_LAUNCHER_KEYS:
            sweep_args += [HYDRA_LAUNCHER_KEYS[key.split(".", 2)[2]], single]
        elif key == "hydra.sweep.dir":
            runs = single
        elif key.startswith("hydra"):
            raise MultirunError(f"invalid {line!r} under --multirun; allowed: hydra/launcher=, hydra.sweep.dir= and "
                                f"hydra.launcher.{{{','.join(HYDRA_LAUNCHER_KEYS)}}}=")
        elif C.key_is(key, "named"):
            for v in values:
                if not PLAIN_STRING_RE.fullmatch(v):
                    raise MultirunError(f"invalid value {v} in {line!r} under --multirun; allowed: plain values "
                                        "(letters, digits and . _ + - / : @), or a study file (python -m factorial.sweep --exp FILE)")
            grid[prefix + key] = values
        elif single is None:
            raise MultirunError(f"invalid {line!r}: {key} changes no result (config.KEYS: {C.key_role(key).why}), so "
                                "its values would be one cell; allowed: one value")
        else:
            fixed.append(line)
    from .layout import available_scales, available_studies

    scale = names.get("scale")
    if scale is None or scale not in available_scales():
        raise MultirunError(f"invalid scale={scale!r} for --multirun: the sweep runs at a scale; allowed: "
                            f"scale={' | scale='.join(available_scales())}")
    name = names.get("study") or MULTIRUN_NAME
    if not NAME_RE.fullmatch(name) or name in available_studies():
        raise MultirunError(f"invalid study={name!r}; allowed: a new name of letters, digits, _ . + - (not one of the "
                            f"studies in experiments/: {', '.join(available_studies())}: python -m factorial.sweep runs those)")
    study: dict[str, Any] = {"description": "ad-hoc: python -m factorial.train -m " + " ".join(overrides)}
    if grid:
        study["grid"] = grid
    else:
        study["cells"] = [{}]  # one cell, named as a single cell without overrides is ("default")
    if seeds is not None:
        study["seeds"] = seeds
    if fixed:
        study["fixed"] = fixed
    return {"name": name, "scale": scale, "study": study, "sweep_args": sweep_args,
            "runs_root": runs_root(Path(runs).expanduser().resolve() if runs else None).resolve()}


def _shown(path: Path) -> str:
    """A path as a command run from the repository (make) can take it: relative when it is inside."""
    try:
        return str(path.relative_to(C.REPO_ROOT))
    except ValueError:
        return str(path)


def multirun(overrides: list[str], dry_run: bool) -> int:
    """``python -m factorial.train -m ...``: write the ad-hoc study file ``<runs>/<name>/<name>.yaml`` and run it
    with ``python -m factorial.sweep`` (resume, locks, shared runs, the launchers); with ``--cfg job``, list its
    runs and write nothing. The sweep is a process of its own (the sweep layer sits above this module)."""
    import tempfile

    import yaml

    try:
        plan = plan_multirun(overrides)
    except MultirunError as err:
        print(f"factorial: error: {err}", file=sys.stderr)
        return 2
    name, root = plan["name"], plan["runs_root"]
    keys = ("grid", "cells", "seeds", "fixed")
    path = root / name / f"{name}.yaml"
    text = yaml.safe_dump(plan["study"], sort_keys=False, default_flow_style=None, allow_unicode=True)
    if path.is_file():
        old = yaml.safe_load(path.read_text()) or {}
        if {k: old.get(k) for k in keys} != {k: plan["study"].get(k) for k in keys}:
            print(f"factorial: error: the study {name!r} ({_shown(path)}) runs another grid "
                  f"({old.get('description', '')!s}); allowed: study=NEW_NAME for this one, or the same command "
                  "line to resume that one", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        created = []
        if dry_run:
            study_file = Path(tmp) / f"{name}.yaml"
            study_file.write_text(text)
        else:
            study_file = path
            if not path.is_file():
                for d in (root, root / name):
                    if not d.exists():
                        created.append(d)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                created.append(path)
        command = [sys.executable, "-m", "factorial.sweep", "--exp", _shown(study_file), "--scale", plan["scale"],
                   "--runs-root", str(root), *plan["sweep_args"], *(["--dry-run"] if dry_run else [])]
        if not dry_run:
            print(f"multirun: study {name!r} ({_shown(path)}), run by python -m factorial.sweep", flush=True)
        rc = _run_foreground(command)
        if rc == 2:  # nothing was run: leave nothing behind either
            for p in reversed(created):
                with contextlib.suppress(OSError):
                    p.unlink() if p.is_file() else p.rmdir()
    return rc


def _run_foreground(command: list[str]) -> int:
    """Run the sweep as the terminal's job: Ctrl-C reaches it from the terminal (this process waits it out),
    SIGTERM is passed on; its exit status is ours."""
    proc = subprocess.Popen(command, cwd=C.REPO_ROOT)
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


# --- shell completion, as Hydra's (-sc install=bash), for `python -m factorial.train` ------------------------

COMPLETION_FLAGS = ("-sc", "--shell-completion")
# Hydra's own bash script completes `python app.py` and installed apps, not `python -m module`: this one hands
# `python -m factorial.train …` to the query below and leaves every other python command line to bash.
BASH_COMPLETION = """_factorial_train_completion()
{
    local words=($COMP_LINE)
    if [ "${words[1]}" == "-m" ] && [ "${words[2]}" == "factorial.train" ]; then
        local choices=$(COMP_LINE=$COMP_LINE ${words[0]} -m factorial.train -sc query=bash 2> /dev/null)
        COMPREPLY=($(compgen -o nospace -o default -W "$choices" -- "${words[$COMP_CWORD]}"))
    fi
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _factorial_train_completion python python3 .venv/bin/python"""


def completion_choices(line: str) -> list[str]:
    """What Hydra's completion offers after ``line`` (a shell command line up to the cursor): groups, their
    options and config keys, from conf/ and the registered rows and presets."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.bash_completion import BashCompletion
    from hydra._internal.utils import create_config_search_path

    C.register_configs()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(C.CONF_DIR)))
    args = re.sub(r"^.*?factorial\.train(\s+|$)", "", line, count=1)
    return BashCompletion(loader)._query(config_name="config", line=args)


def shell_completion(argv: list[str]) -> int:
    """``-sc install=bash`` prints the bash script (``eval "$(python -m factorial.train -sc install=bash)"``);
    ``-sc query=bash`` answers it from $COMP_LINE."""
    value = argv[argv.index(next(a for a in argv if a in COMPLETION_FLAGS)) + 1:][:1]
    if value == ["install=bash"]:
        print(BASH_COMPLETION)
        return 0
    if value == ["query=bash"]:
        print(" ".join(completion_choices(os.environ.get("COMP_LINE", ""))))
        return 0
    if value == ["uninstall=bash"]:
        print("complete -r python python3 .venv/bin/python 2> /dev/null; unset -f _factorial_train_completion")
        return 0
    print(f"factorial: error: invalid --shell-completion {' '.join(value)!r}; allowed: install=bash, uninstall=bash "
          "(eval \"$(python -m factorial.train -sc install=bash)\")", file=sys.stderr)
    return 2
