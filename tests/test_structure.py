"""How the modules depend on each other: what a reader of results needs is light, and report/ has no cycle.

`make table` reads run files and study files only, so it must not import torch or Hydra (a results
machine, CI's table steps and a notebook reading cells.csv need neither); the report reads studies through
factorial.study, never through the launcher; and report/ has no import cycle (counting imports inside
functions too: a lazy import that closes a cycle is still one).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import omegaconf

from factorial import schema
from factorial.report import claims as CL
from factorial.report import rules as R

SRC = Path(__file__).resolve().parents[1] / "src" / "factorial"
FIG1_RUNS = Path(__file__).parent / "fixtures" / "runs" / "fig1" / "tiny"


def module_graph() -> dict[str, set[str]]:
    """factorial's modules -> the factorial modules each imports, at the top or inside a function."""
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = ("factorial",) + path.relative_to(SRC).with_suffix("").parts
        mods[".".join(parts).removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                full = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                for alias in node.names:
                    deps.add(f"{full}.{alias.name}" if f"{full}.{alias.name}" in mods else full)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle_and_the_cycle_finder_finds_one():
    graph = module_graph()
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_report_reads_studies_through_factorial_study_never_the_launcher():
    graph = module_graph()
    readers = [m for m in graph if m.startswith("factorial.report")] + ["factorial.table", "factorial.dashboard",
                                                                       "factorial.study", "factorial.schema"]
    launcher = {"factorial.sweep", "factorial.train", "factorial.slurm"}
    assert {m: sorted(graph[m] & launcher) for m in readers if graph[m] & launcher} == {}
    assert "factorial.study" in graph["factorial.table"] and "factorial.study" in graph["factorial.sweep"]


def test_make_table_imports_neither_torch_nor_hydra(tmp_path):
    """A whole build of a study with its report (table, plots, claims) in a fresh interpreter."""
    study = tmp_path / "mine.yaml"
    study.write_text("grid:\n  row: [A, G]\n  schedule.warmup: [true]\nfixed: [train.rms_every=1]\n"
                     "report:\n  table: fig1\n  plots: [fig1]\n  claims: [C13]\n")
    runs = tmp_path / "runs" / "mine" / "tiny"
    runs.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(FIG1_RUNS, runs)
    code = ("import json, sys\nfrom factorial import table\n"
            f"rc = table.main(['--exp', {str(study)!r}, '--scale', 'tiny', '--runs-root', {str(tmp_path / 'runs')!r}, "
            f"'--out', {str(tmp_path / 'out')!r}])\n"
            "print(json.dumps({'rc': rc, 'loaded': sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'hydra', 'omegaconf'))}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"rc": 0, "loaded": []}
    assert (tmp_path / "out" / "mine" / "tiny" / "claims.csv").is_file()  # it did build the report


def test_the_schema_stands_alone_and_agrees_with_what_it_replaces():
    assert schema.MISSING == omegaconf.MISSING  # Hydra reads the schema's MISSING as its own
    assert CL.CLAIM_IDS == [c.id for c in CL.CLAIMS] == list(R.CLAIM_IDS)
