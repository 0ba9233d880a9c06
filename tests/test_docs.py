"""The project's own documentation stands alone: no reference outside the repository, links that
resolve, README commands that run as written from a fresh clone, and every logged metric explained."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_FACING = ["README.md", "results/README.md", "Makefile", *(str(p.relative_to(ROOT)) for p in sorted(
    [*ROOT.glob("docs/*.md"), *ROOT.glob("conf/**/*.yaml"), *ROOT.glob("experiments/*.yaml"),
     *ROOT.glob("src/factorial/**/*.py"), *ROOT.glob("src/factorial/**/*.c")]))]
MARKDOWN = ["README.md", "results/README.md", *(str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("docs/*.md")))]


@pytest.mark.parametrize("name", USER_FACING)
def test_no_user_facing_file_points_outside_the_repository(name):
    assert "../shared" not in (ROOT / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", MARKDOWN)
def test_relative_links_resolve(name):
    path = ROOT / name
    for target in re.findall(r"\]\(([^)#\s]+)", path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        assert (path.parent / target).exists(), f"{name}: link {target} does not resolve"


def test_docs_cover_the_paper_and_are_linked_from_readme_studies_and_rows():
    paper = (ROOT / "docs" / "PAPER.md").read_text(encoding="utf-8")
    for section in range(1, 10):
        assert re.search(rf"^## {section}\. ", paper, re.M), f"§{section}"
    for claim in range(1, 16):
        assert f"**C{claim}**" in paper
    from factorial.rows import TABLE2

    for letter in TABLE2:
        assert f"| {letter} |" in paper, letter
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/PAPER.md)" in readme and "(docs/METRICS.md)" in readme
    assert "docs/PAPER.md" in (ROOT / "src" / "factorial" / "rows.py").read_text(encoding="utf-8")
    for study in ROOT.glob("experiments/*.yaml"):
        assert "docs/PAPER.md" in study.read_text(encoding="utf-8"), study.name


def test_every_logged_metric_is_explained():
    source = (ROOT / "src" / "factorial" / "train.py").read_text(encoding="utf-8")
    logged = set(re.findall(r'"((?:train|val|test|opt|perf|model|data)/[a-z_]+)"', source))
    logged |= {f"rms_u/{m}" for m in ("tok_emb", "attn_proj.0", "ff1.0")}
    assert {"train/lr", "opt/clip_frac", "opt/rms_u_mean"} <= logged
    metrics = (ROOT / "docs" / "METRICS.md").read_text(encoding="utf-8")
    for name in sorted(logged):
        assert f"`{name}`" in metrics, name


def test_readme_commands_run_as_written_from_a_fresh_clone():
    """Outside make, the project's Python and wandb are in .venv/bin (no activation is assumed)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    inline = re.findall(r"`((?:python|wandb|pip) [^`]*)`", readme)
    bare = [x for x in lines + inline if re.match(r"(python3?|wandb|pip) ", x)]
    assert not bare, bare
    assert "`.venv/bin/wandb sync runs/" in readme


def test_readme_layout_names_every_module_and_folder():
    """README's Layout section is the map a newcomer reads first: every tracked module of src/factorial
    (and of its packages), every script and every top-level folder appears in it."""
    import subprocess

    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    names = {f"{path.split('/')[0]}/" for path in tracked if "/" in path and not path.startswith(".")}
    names |= {Path(path).name for path in tracked
              if (path.startswith("src/factorial/") and Path(path).suffix in (".py", ".c")) or path.startswith("scripts/")}
    names.discard("__init__.py")
    missing = sorted(n for n in names if n not in layout and n.removesuffix(".py") + " " not in layout
                     and n.removesuffix(".py") + "," not in layout)
    assert not missing, f"README's Layout section does not mention: {missing}"


def test_the_readme_single_cell_runs_are_ignored_by_git():
    """The README's single-cell commands write runs/adhoc/ (exp=adhoc): neither tracked nor left untracked."""
    import subprocess

    from factorial.config import Config

    assert Config.exp == "adhoc"
    for probe in ("runs/adhoc/custom/row=H/seed0/config.yaml", "runs/multirun/multirun.yaml"):  # and -m's default
        proc = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT)
        assert proc.returncode == 0, f"{probe} is not ignored by .gitignore"
