"""The package's layers (README, Layout): every import of a factorial module — at the top of a file or
inside a function — points to the same layer or one below, so a change at the top never reaches down."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "factorial"
LAYERS = [
    {"layout", "runfiles"},
    {"optim", "schema", "model", "data", "schedule", "rows"},
    {"config"},
    {"runio", "runlog", "cli", "store"},
    {"train"},
    {"report"},
    {"study"},
    {"sweep", "slurm", "table", "bench", "dashboard"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _top(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 else Path(rel[0]).stem


def _imports(path: Path) -> set[str]:
    """The top-level factorial modules a file imports (relative or absolute, anywhere in the file)."""
    depth = len(path.relative_to(SRC).parts) - 1  # 0: factorial/x.py, 1: factorial/report/x.py
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb to the package root, then the first name
                up = node.level - 1 - depth
                parts = (node.module or "").split(".") if node.module else []
                if up >= 0 and parts and parts[0]:
                    out.add(parts[0])
                elif up >= 0 and not parts:
                    out |= {a.name for a in node.names}
            elif node.module and node.module.split(".")[0] == "factorial":
                rest = node.module.split(".")[1:]
                out |= {rest[0]} if rest else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("factorial.")}
    return out


def test_every_module_has_a_layer():
    tops = {_top(p) for p in SRC.rglob("*.py") if p.name != "__init__.py" or len(p.relative_to(SRC).parts) > 1}
    tops.discard("__main__")
    assert tops <= set(LEVEL), sorted(tops - set(LEVEL))


def test_no_import_points_upward():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        me = _top(path)
        if me not in LEVEL:
            continue
        for other in _imports(path):
            if other in LEVEL and other != me and LEVEL[other] > LEVEL[me]:
                upward.append(f"{path.relative_to(SRC)} imports {other} (layer {LEVEL[other]} above {LEVEL[me]})")
    assert not upward, "\n".join(upward)
