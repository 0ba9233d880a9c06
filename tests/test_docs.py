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
# the generated ones too: CLAIMS-<scale>.md and every study's REPORT.md link to reports, runs and figures
GENERATED_MARKDOWN = [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("results/**/*.md")) if p.name != "README.md"]


@pytest.mark.parametrize("name", USER_FACING)
def test_no_user_facing_file_points_outside_the_repository(name):
    assert "../shared" not in (ROOT / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", MARKDOWN + GENERATED_MARKDOWN)
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


def test_every_logged_metric_and_summary_key_is_explained():
    """Every metric, summary key and status word of the run-file schema (tests/test_train.py checks that a run
    writes exactly those) has its line in docs/METRICS.md."""
    from factorial import runfiles as RF

    logged = {v for k, v in vars(RF).items() if k.isupper() and isinstance(v, str) and "/" in v} | set(RF.RMS_KEYS)
    assert {"train/lr", "opt/clip_frac", "opt/rms_u_mean", "rms_u/tok_emb"} <= logged
    metrics = (ROOT / "docs" / "METRICS.md").read_text(encoding="utf-8")
    for name in sorted(logged | set(RF.SUMMARY_KEYS) | set(RF.STATUSES) | set(RF.KEPT)):
        assert f"`{name}`" in metrics, name


def test_readme_commands_run_as_written_from_a_fresh_clone():
    """Outside make, the project's Python and wandb are in .venv/bin (no activation is assumed): in the
    README and in the guides it links (docs/)."""
    guides = ("OPTIMIZER", "TRAINING", "STUDIES", "SLURM", "GPU", "REPORTS", "WANDB", "TROUBLESHOOTING")
    readme = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *(ROOT / "docs" / f"{g}.md" for g in guides)])
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    inline = re.findall(r"`((?:python|wandb|pip) [^`]*)`", readme)
    bare = [x for x in lines + inline if re.match(r"(python3?|wandb|pip) ", x) and not x.startswith("python3 -m venv")]
    assert not bare, bare
    assert "`.venv/bin/wandb sync runs/" in readme


def test_the_readme_fits_a_screen_or_two_and_starts_with_the_three_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.splitlines()
    assert len(lines) <= 200, len(lines)
    first_screen = "\n".join(lines[:40])
    for command in ("make smoke", "make sweep", "make test"):
        assert command in first_screen, command
    for guide in ("GPU.md", "SLURM.md", "WANDB.md", "STUDIES.md", "REPORTS.md"):
        assert f"(docs/{guide})" in readme, guide


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


@pytest.mark.parametrize("name", ["README.md", "results/README.md"])
def test_readme_headline_table_is_the_generated_one(name):
    """The claims tables of README.md and results/README.md are generated (factorial.report.summary.
    readme_block) from the committed results/claims-cpu.csv: edited by hand or left stale, they fail here."""
    import pandas as pd

    from factorial.report import summary

    readme = (ROOT / name).read_text(encoding="utf-8")
    checked = []
    for csv in sorted((ROOT / "results").glob("claims-*.csv")):
        scale = csv.stem.removeprefix("claims-")
        begin, end = summary._markers(scale)
        if begin not in readme:
            continue
        block = readme.split(begin, 1)[1].split(end, 1)[0]
        frame = pd.read_csv(csv, keep_default_na=False)
        assert block == "\n" + summary.readme_block(frame, scale), scale
        checked.append(scale)
    assert "cpu" in checked  # the headline scale's block is there


SIGNED_INTERVAL = re.compile(r"\[[−+-]\d+(?:\.\d+)?,\s*[−+-]?\d+(?:\.\d+)?\]|\[[−+-]?\d+(?:\.\d+)?,\s*[−+-]\d+(?:\.\d+)?\]")


@pytest.mark.parametrize("name", ["README.md", "results/README.md"])
def test_every_interval_the_prose_quotes_is_in_a_generated_file(name):
    """An interval of a difference quoted in prose ("+2.3 % [+0.3, +4.2]") must appear, as written (signs
    and digits), in a generated file under results/ (a REPORT.md, claims.csv, CLAIMS-*.md, lr_sensitivity.csv
    …): a number that was retyped, rounded differently or left behind by a rebuild fails here."""
    generated = "".join(p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("results/**/*"))
                        if p.suffix in (".md", ".csv") and p.name != "README.md")

    def norm(text: str) -> str:
        return text.replace("−", "-").replace(" ", "")

    haystack = norm(generated)
    quoted = SIGNED_INTERVAL.findall((ROOT / name).read_text(encoding="utf-8"))
    assert quoted, "no interval quoted: the pattern is broken"
    missing = [q for q in quoted if norm(q) not in haystack]
    assert not missing, f"{name} quotes intervals that no generated file holds: {missing}"


def test_the_readme_single_cell_runs_are_ignored_by_git():
    """The README's single-cell commands write runs/adhoc/ (exp=adhoc): neither tracked nor left untracked."""
    import subprocess

    from factorial.config import Config

    assert Config.exp == "adhoc"
    for probe in ("runs/adhoc/custom/row=H/seed0/config.yaml", "runs/multirun/multirun.yaml"):  # and -m's default
        proc = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT)
        assert proc.returncode == 0, f"{probe} is not ignored by .gitignore"
