"""One verdict per claim C1–C15 for a scale, across the studies committed in ``results/*/<scale>/``.

A home study that names pre-registered rules is judged on two passes of its runs (factorial.report.
evidence): its confirmation (the rules' confirmatory seeds) and its exploration (every other seed). The
**headline counts confirmatory verdicts only**; the exploratory verdicts stand beside them, and a claim
whose verdict is not confirmatory (no confirmation, an incomplete one, or rules changed after its runs) is
listed apart with the reason.

Each study's ``claims.csv`` holds the verdicts it can give (one per context). A claim's *headline*
verdict comes from its first home study that has results at the scale — the studies whose file in
experiments/ lists the claim under ``report.claims``, then under ``report.backup_claims``, each by name
(``spec.claim_homes``: table2 for C1–C12 and C15, fig1 for C13, table3 for C14) — and only when that study
has a single context; a home study with several contexts (a multiplier sweep) gives a headline only when
every context agrees. Any other study's
verdicts on the claim are listed beside it as further evidence, never mixed into the headline.

Written by ``python -m factorial.table`` after each study (and by ``--summary`` alone) to
``<out>/CLAIMS-<scale>.md`` and ``<out>/claims-<scale>.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..runio import atomic_write_text
from .claims import CLAIMS
from .spec import claim_homes

NOT_RUN = "not run"


def _study_claims(out: Path, scale: str) -> dict[str, pd.DataFrame]:
    found = {}
    for path in sorted(Path(out).glob(f"*/{scale}/claims.csv")):
        exp = path.parent.parent.name
        frame = pd.read_csv(path, keep_default_na=False)
        if {"claim", "context", "verdict", "reason"} <= set(frame.columns):
            frame["context"] = frame["context"].astype(str)
            found[exp] = frame
    return found


def _pass(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    if "pass" not in rows:  # a claims.csv written before passes existed: all exploratory
        return rows if name == "exploration" else rows.iloc[0:0]
    return rows[rows["pass"] == name]


def _standing(rows: pd.DataFrame) -> tuple[str, str]:
    """The registration of a pass's verdicts (one value per pass) and its reason."""
    rows = rows[rows["verdict"] != "not covered"]
    if rows.empty or "registration" not in rows:
        return "exploratory", "no registration recorded"
    return str(rows["registration"].iloc[0]), str(rows["registration_note"].iloc[0])


def _headline(rows: pd.DataFrame) -> tuple[str, str]:
    rows = rows[rows["verdict"] != "not covered"].drop_duplicates(subset=["context"])  # one row per part
    if rows.empty:
        return NOT_RUN, "the study holds none of the claim's cells"
    verdicts = set(rows["verdict"])
    if len(rows) == 1:
        return rows["verdict"].iloc[0], rows["reason"].iloc[0]
    if len(verdicts) == 1:
        return verdicts.pop(), f"the same in all {len(rows)} contexts"
    counts = rows["verdict"].value_counts()
    return "inconclusive", "contexts disagree: " + ", ".join(f"{n} {v}" for v, n in counts.items())


def _intervals(rows: pd.DataFrame) -> str:
    """Each judged part's estimate and interval (in % of the reference), with n on both sides."""
    out = []
    for r in rows.to_dict("records"):
        est, lo, hi = (r.get(k) for k in ("estimate_pct", "ci_low_pct", "ci_high_pct"))
        if est in (None, "") or lo in (None, "") or hi in (None, ""):
            continue
        n = f"n {_int(r.get('n_x'))}/{_int(r.get('n_ref'))}, " if r.get("n_x") not in (None, "") else ""
        out.append(f"{r['part']}: {float(est):+.1f} % [{float(lo):+.1f}, {float(hi):+.1f}] ({n}{'paired' if str(r.get('paired')) == 'True' else 'unpaired'})")
    return "; ".join(out)


def _int(x) -> str:
    try:
        return str(int(float(x)))
    except (TypeError, ValueError):
        return "?"


NO_RESULTS = "no results for"  # how a claim's reason starts when no home study has run at the scale


def summarize(out: Path, scale: str) -> pd.DataFrame | None:
    """The claim-by-claim frame for ``scale``; None when no study of that scale has a claims.csv."""
    studies = _study_claims(out, scale)
    if not studies:
        return None
    rows = []
    homes = claim_homes()
    for claim in CLAIMS:
        its = homes.get(claim.id, [])
        home = next((h for h in its if h in studies), None)
        standing, why = "", ""
        explore, explore_reason = NOT_RUN, ""
        intervals = explore_intervals = ""
        if home is None:
            verdict, where = NOT_RUN, (its[0] if its else "–")
            reason = f"{NO_RESULTS} {', '.join(its)} at this scale" if its else "no study in experiments/ is home to it"
        else:
            frame = studies[home]
            mine = frame[frame["claim"] == claim.id]
            confirm = _pass(mine, "confirmation")
            if (confirm["verdict"] != "not covered").any():
                verdict, reason = _headline(confirm)
                standing, why = _standing(confirm)
                intervals = _intervals(confirm) if "part" in confirm else ""
            else:
                verdict, reason = NOT_RUN, "no confirmation: the home study's runs on the rules' confirmatory seeds are missing"
                standing, why = "not run", "no run on the confirmatory seeds"
            explored = _pass(mine, "exploration")
            if (explored["verdict"] != "not covered").any():
                explore, explore_reason = _headline(explored)
                explore_intervals = _intervals(explored) if "part" in explored else ""
            where = home
        others = []
        for exp, frame in studies.items():
            if exp == home:
                continue
            sub = frame[(frame["claim"] == claim.id) & (frame["verdict"] != "not covered")].drop_duplicates(subset=["context"])
            for r in sub.to_dict("records"):
                ctx = f" @ {r['context']}" if r["context"] else ""
                others.append(f"{exp}{ctx}: {r['verdict']}")
        rows.append({"claim": claim.id, "paper": claim.where, "statement": claim.text, "study": where,
                     "verdict": verdict, "standing": standing, "standing_reason": why, "reason": reason,
                     "intervals": intervals, "exploratory_verdict": explore, "exploratory_reason": explore_reason,
                     "exploratory_intervals": explore_intervals,
                     "other_studies": "; ".join(others)})
    return pd.DataFrame(rows)


def _counts(verdicts) -> str:
    c = pd.Series(list(verdicts), dtype=object).value_counts()
    return (f"{c.get('reproduced', 0)} reproduced, {c.get('not reproduced', 0)} not reproduced, "
            f"{c.get('inconclusive', 0)} inconclusive, {c.get('untestable here', 0)} untestable here")


def headline(frame: pd.DataFrame) -> str:
    """The sentence CLAIMS-<scale>.md opens with: confirmatory verdicts only."""
    n = len(frame)
    conf = frame[frame["standing"] == "confirmatory"]
    c = conf["verdict"].value_counts()
    text = (f"**Confirmatory: {c.get('reproduced', 0)} of {n} reproduced**, {c.get('not reproduced', 0)} not reproduced, "
            f"{c.get('inconclusive', 0)} inconclusive, {c.get('untestable here', 0)} untestable here (a precondition "
            f"absent at this scale); {n - len(conf)} without a confirmatory verdict.")
    explored = frame[frame["exploratory_verdict"] != NOT_RUN]
    if len(explored):
        text += f" Exploratory (seeds read before the rules were fixed): {_counts(explored['exploratory_verdict'])}."
    return text


def to_markdown(frame: pd.DataFrame, scale: str) -> str:
    lines = [
        f"# Claims C1–C15 at scale `{scale}`",
        "",
        headline(frame),
        "",
        "Generated by `python -m factorial.table` from each study's `claims.csv` (do not edit by hand). A claim's "
        "verdict is its home study's: **confirmatory** when judged on the runs of the rules' confirmatory seeds, every "
        "one trained under the rules that judge it now (their fingerprint in its meta.json) from a clean commit; the "
        "verdict on the study's other seeds, read before the rules were fixed, is **exploratory** and stands beside "
        "it. Other studies that hold some of the cells are listed as further evidence.",
        "",
        "| claim | paper | statement | study | verdict | standing | why | exploratory verdict | other studies |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in frame.to_dict("records"):
        # a home study with no results at this scale has no report to link to
        linked = r["study"] not in ("–", "") and not str(r["reason"]).startswith(NO_RESULTS)
        link = f"[{r['study']}]({r['study']}/{scale}/REPORT.md)" if linked else r["study"]
        cells = [r["claim"], r["paper"], r["statement"], link, f"**{r['verdict']}**", r["standing"] or "–", r["reason"],
                 r["exploratory_verdict"], r["other_studies"] or "–"]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    apart = frame[(frame["standing"] != "confirmatory")]
    if len(apart):
        lines += ["", "## Not confirmatory", ""]
        lines += [f"- **{r['claim']}** ({r['standing'] or 'no confirmation'}): {r['standing_reason'] or r['reason']}"
                  for r in apart.to_dict("records")]
    return "\n".join(lines) + "\n"


def signatures_markdown(out: Path, scale: str) -> str:
    """A section for CLAIMS-<scale>.md: the verdict of each pre-registered signature of the no-warmup pattern
    (the studies' signature.csv, factorial.report.signature), per pass and context, with each row's ratio to
    A with warmup; "" when no study of the scale states one."""
    rows = []
    for path in sorted(Path(out).glob(f"*/{scale}/signature.csv")):
        exp = path.parent.parent.name
        frame = pd.read_csv(path, keep_default_na=False)
        for (judged, ctx), g in frame.groupby(["runs judged", "context"], sort=False):
            def part(r) -> str:
                est, lo, hi = r["ratio_pct"], r["ci_low_pct"], r["ci_high_pct"]
                if est in ("", None):
                    return r["row"]
                ci = f" [{float(lo):+.1f}, {float(hi):+.1f}]" if lo not in ("", None) and hi not in ("", None) else ""
                return f"{r['row']} {float(est):+.1f} %{ci}"

            # rows the study has no runs of (deep_lr runs 4 of the 16): undetermined, named apart; a signature.csv
            # written before the column existed has every row's runs
            runs = g["has_runs"].astype(str) != "False" if "has_runs" in g else pd.Series(True, index=g.index)

            def listed(matches: str) -> str:
                return "; ".join(part(r) for r in g[(g["matches"] == matches) & runs].to_dict("records"))

            absent = ", ".join(g.loc[~runs, "row"])
            undetermined = "; ".join(x for x in (listed("undetermined"), absent and f"no runs of {absent}") if x)
            rows.append([f"[{exp}]({exp}/{scale}/REPORT.md)", str(judged), str(ctx) or "–",
                         f"**{g['signature'].iloc[0]}**", listed("yes") or "–", listed("no") or "–",
                         undetermined or "–"])
    if not rows:
        return ""
    lines = ["## Pre-registered signatures", "",
             "The pattern of the paper's Table 2 without warmup, as each study's rules stated it before its runs: A "
             "and the rows the paper has failing fail against A with warmup, the rows it has training do not. Each row "
             "is its cell without warmup over A with warmup, in %, with the 90 % interval; the rules and every reason "
             "are in the study's REPORT.md.", "",
             "| study | runs judged | context | signature | rows as the paper has them | rows against the paper | "
             "undetermined |", "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def readme_block(frame: pd.DataFrame, scale: str) -> str:
    """The headline table README.md shows for a scale (between its markers), from claims-<scale>.csv."""
    lines = [headline(frame), "", "Intervals: each part's x vs its reference in %, 90 % CI, n seeds on each side.", "",
             "| claim | verdict | standing | intervals | exploratory verdict | exploratory intervals |",
             "|---|---|---|---|---|---|"]
    for r in frame.to_dict("records"):
        cells = [f"{r['claim']} ({r['paper']})", f"**{r['verdict']}**", r["standing"] or "–",
                 r.get("intervals") or "–", r["exploratory_verdict"], r.get("exploratory_intervals") or "–"]
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _markers(scale: str) -> tuple[str, str]:
    return (f"<!-- claims-{scale}: generated by make table from results/claims-{scale}.csv; do not edit -->",
            f"<!-- end claims-{scale} -->")


def update_readme(readme: Path, frame: pd.DataFrame, scale: str) -> bool:
    """Replace README's generated block for ``scale`` (if it has the markers); True when it changed."""
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    begin, end = _markers(scale)
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{begin}\n{readme_block(frame, scale)}{end}{tail}"
    if new != text:
        atomic_write_text(readme, new)
    return new != text


def write(out: Path, scale: str) -> Path | None:
    """Write CLAIMS-<scale>.md and claims-<scale>.csv atomically (and the generated block for the scale in
    README.md and results/README.md when ``out`` is this repository's results/); None when there is nothing
    to summarise."""
    frame = summarize(out, scale)
    if frame is None:
        return None
    out = Path(out)
    atomic_write_text(out / f"claims-{scale}.csv", frame.to_csv(index=False))
    path = out / f"CLAIMS-{scale}.md"
    signatures = signatures_markdown(out, scale)
    atomic_write_text(path, to_markdown(frame, scale) + (f"\n{signatures}" if signatures else ""))
    from ..layout import REPO_ROOT

    if out.resolve() == (REPO_ROOT / "results").resolve():  # the generated blocks of the two READMEs
        for readme in (REPO_ROOT / "README.md", out / "README.md"):
            update_readme(readme, frame, scale)
    return path
