"""REPORT.md: where the numbers came from, the table, the figures, and a verdict per claim with its evidence."""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd

from . import rules as R
from .claims import ClaimResult, Claim
from .tables import Table, to_markdown

# Scales whose verdicts test the plumbing only (a model and a run far too small to say anything about the paper).
PLUMBING_SCALES = ("smoke",)
PLUMBING_CAVEAT = ("> **Plumbing only.** At the `smoke` scale (a 25k-parameter model, 30 steps) the verdicts below "
                   "show that runs, tables and rules work end to end; they say nothing about the paper's claims. "
                   "The `cpu` scale is the smallest that does (README.md, results/README.md).")

VERDICT_MARK = {"reproduced": "✅ reproduced", "not reproduced": "❌ not reproduced", "inconclusive": "❔ inconclusive"}


def _values(runs: pd.DataFrame, key: str) -> list:
    if key not in runs:
        return []
    seen = []
    for v in runs[key]:
        if v is not None and not (isinstance(v, float) and math.isnan(v)) and v not in seen:
            seen.append(v)
    return seen


def _one(runs: pd.DataFrame, key: str, fmt=str) -> str:
    vals = _values(runs, key)
    if not vals:
        return "?"
    shown = ", ".join(fmt(v) for v in vals)
    return shown if len(vals) == 1 else f"varies: {shown}"


def _num(v) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:g}" if isinstance(v, float) else str(v)


def provenance(runs: pd.DataFrame, exp: str, scale: str) -> list[tuple[str, str]]:
    out = Counter(runs["outcome"])
    seeds = sorted({int(s) for s in runs["seed"] if s is not None})
    commits = Counter()
    for c, d in zip(runs["git_commit"], runs["git_dirty"]):
        commits[(c or "unknown", d)] += 1
    commit_txt = "; ".join(
        f"`{c[:12]}`{' (uncommitted changes)' if d is True else ' (clean)' if d is False else ''}: {n} run{'s' if n > 1 else ''}"
        for (c, d), n in sorted(commits.items(), key=lambda kv: -kv[1]))
    tie = _values(runs, "model.tie_embeddings")
    model = (f"d_model = {_one(runs, 'model.d_model', _num)}, {_one(runs, 'model.n_layers', _num)} layers, "
             f"{_one(runs, 'model.n_heads', _num)} heads, d_ff = {_one(runs, 'model.d_ff', _num)}, context "
             f"{_one(runs, 'model.context_length', _num)}, {_one(runs, 'model.norm')}-LN, "
             + ("tied" if tie == [True] else "untied" if tie == [False] else "tied and untied") + " embeddings; "
             f"{_one(runs, 'params', _num)} parameters")
    data = (f"{_one(runs, 'data.source')}, {_one(runs, 'data.model_type')} vocabulary {_one(runs, 'data.vocab_size', _num)}, "
            f"{_one(runs, 'train_tokens', _num)} training tokens")
    batch = _values(runs, "train.batch_size")
    ctx = _values(runs, "model.context_length")
    tokens = f", {batch[0]} × {ctx[0]} = {batch[0] * ctx[0]:,} tokens a step" if len(batch) == 1 and len(ctx) == 1 else ""
    steps = (f"{_one(runs, 'train.steps', _num)}{tokens}; warmup (when on) {_one(runs, 'warmup_steps_resolved', _num)} "
             f"steps; learning-rate multiplier {_one(runs, 'schedule.multiplier', _num)}")
    device = f"{_one(runs, 'device_name')}; torch {_one(runs, 'torch_version')}"
    return [
        ("study / scale", f"`{exp}` / `{scale}`"),
        ("data", data),
        ("model", model),
        ("steps", steps),
        ("seeds", ", ".join(map(str, seeds)) or "?"),
        ("runs", f"{len(runs)}: {out.get('ok', 0)} completed, {out.get('diverged', 0)} diverged, "
                 f"{out.get('failed', 0)} crashed, {out.get('incomplete', 0)} unfinished"),
        ("git commit(s)", commit_txt),
        ("device", device),
    ]


def _result_line(p) -> str:
    v = {True: "**yes**", False: "**no**", None: "**cannot tell**"}[p.judgement.value]
    return f"- *{p.text}* — {v}: {p.judgement.reason}"


def claim_section(r: ClaimResult) -> str:
    c = r.claim
    lines = [f"### {r.title} — {c.text} ({c.where})", "",
             f"**Verdict: {VERDICT_MARK[r.verdict]}** — {r.reason}", ""]
    for p in r.parts:
        lines.append(_result_line(p))
        if p.numbers:
            lines.append(f"  - cells: {'; '.join(p.numbers)}")
        lines.append(f"  - rule: {p.rule}")
    for u in r.uncovered:
        lines.append(f"- *{u}* — not covered by this study (its cells are not here)")
    return "\n".join(lines) + "\n"


def build_report(exp: str, scale: str, source: str, runs: pd.DataFrame, cells: pd.DataFrame, tables: list[Table],
                 plots: list[tuple[str, str]], results: list[ClaimResult], skipped: list[tuple[Claim, str]],
                 command: str) -> str:
    lines = [f"# `{exp}` at scale `{scale}` — reproduction report", "",
             f"Built by `{command}` from {source}: {len(runs)} runs in {len(cells)} cells. Scoring reads only what the "
             "runs wrote (config.yaml, summary.json, meta.json, metrics.jsonl — or the same fields from W&B); "
             "cells are identified by their knob values, not their directory names.", "",
             "## Provenance", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in provenance(runs, exp, scale)]
    lines += ["", "## Reproduce", "", "```bash", f"make sweep EXP={exp} SCALE={scale}   # the runs (resumes; skips finished cells)",
              f"make table EXP={exp} SCALE={scale}   # this folder: {command}", "```", ""]

    lines += ["## Verdicts", ""]
    if scale in PLUMBING_SCALES:
        lines += [PLUMBING_CAVEAT, ""]
    if results:
        lines += ["| claim | paper | verdict | reason |", "|---|---|---|---|"]
        for r in results:
            reason = r.reason.replace("|", "\\|")
            if len(reason) > 220:
                reason = reason[:217] + "…"
            lines.append(f"| {r.title} | {r.claim.where} | {VERDICT_MARK[r.verdict]} | {reason} |")
        counts = Counter(r.verdict for r in results)
        lines += ["", ", ".join(f"{counts.get(v, 0)} {v}" for v in ("reproduced", "not reproduced", "inconclusive")) + "."]
    else:
        lines.append("This study speaks to none of the claims C1–C15.")
    lines += ["", "## Table", "", "Also as [table.csv](table.csv) (numbers) and [table.tex](table.tex); every run in "
              "[cells.csv](cells.csv).", "", to_markdown(tables, "###")]
    if plots:
        lines += ["## Figures", ""]
        for name, caption in plots:
            lines += [f"![{name}]({name})", "", f"*{caption}*", ""]
    if results:
        lines += ["## Claims in detail", ""]
        lines += [claim_section(r) for r in results]
    if skipped:
        lines += ["## Claims this study cannot speak to", ""]
        lines += [f"- **{c.id}** ({c.where}) {c.text} — {why}" for c, why in skipped]
        lines.append("")
    lines += ["## Rules and thresholds", "", "Defined once in `src/factorial/report/rules.py`:", "", R.thresholds_markdown(), ""]
    bad = runs[runs["outcome"].isin(["failed", "incomplete"])]
    if len(bad):
        lines += ["## Runs not counted", ""]
        for rec in bad.to_dict("records"):
            why = "crashed: " + str(rec.get("error") or "?") if rec["outcome"] == "failed" else "unfinished (no final summary)"
            lines.append(f"- `{rec['run_id']}` — {why}")
        lines.append("")
    return "\n".join(lines)
