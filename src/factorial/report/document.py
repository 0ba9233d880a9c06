"""REPORT.md: where the numbers came from, the table, the figures, and a verdict per claim with its evidence."""

from __future__ import annotations

import contextlib
import math
from collections import Counter

import pandas as pd

from ..layout import REPO_ROOT
from . import rules as R
from .data import _finite
from .claims import ClaimResult, Claim
from .tables import Table, to_markdown

# Scales whose verdicts test the plumbing only (a model and a run far too small to say anything about the paper).
PLUMBING_SCALES = ("smoke",)
PLUMBING_CAVEAT = ("> **Plumbing only.** At the `smoke` scale (a 25k-parameter model, 30 steps) the verdicts below "
                   "show that runs, tables and rules work end to end; they say nothing about the paper's claims. "
                   "The `cpu` scale is the smallest that does (README.md, results/README.md).")


VERDICT_MARK = {"reproduced": "✅ reproduced", "not reproduced": "❌ not reproduced", "inconclusive": "❔ inconclusive",
                "untestable here": "⊘ untestable here"}


def provenance_warning(runs: pd.DataFrame) -> str | None:
    """A warning when the runs came from more than one commit or from a working tree with uncommitted changes."""
    n = len(runs)
    dirty = int(sum(1 for d in runs.get("git_dirty", []) if d is True))
    commits = {c for c in runs.get("git_commit", []) if c}
    unknown = int(sum(1 for c in runs.get("git_commit", []) if not c))
    parts = []
    if dirty:
        parts.append(f"{dirty} of {n} runs came from a working tree with uncommitted changes (what they ran cannot be "
                     "recovered from git)")
    if len(commits) > 1:
        parts.append(f"the runs come from {len(commits)} different commits")
    if unknown:
        parts.append(f"{unknown} of {n} runs record no commit")
    for key, what, label in (("device_name", "device models", ""), ("train.threads", "thread counts", "train.threads = ")):
        seen = Counter(_num(v) for v in runs[key] if _present(v)) if key in runs else Counter()
        if len(seen) > 1:
            shown = ", ".join(f"{label}{v} ({k} runs)" for v, k in seen.most_common())
            parts.append(f"the runs ran on {len(seen)} {what} ({shown}); "
                         "the same cell and seed then follows a different trajectory (float sums in another order: up "
                         "to 3 % in final perplexity at cpu scale, results/README.md), so seeds pair less tightly "
                         "across them")
    return "; ".join(parts) if parts else None


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _values(runs: pd.DataFrame, key: str) -> list:
    if key not in runs:
        return []
    seen = []
    for v in runs[key]:
        if _present(v) and v not in seen:
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
    device = (f"{_one(runs, 'device_name')}; {_one(runs, 'train.threads', _num)} thread(s) a run; "
              f"torch {_one(runs, 'torch_version')}")
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
    v = {"yes": "**yes**", "no": "**no**", "inconclusive": "**cannot tell**", "untestable here": "**untestable here**"}[p.verdict]
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


def _cell_label(c: dict, cells: pd.DataFrame) -> str:
    label = c.get("row_match") or c.get("opt") or "?"
    label += ", warmup" if c.get("schedule.warmup") else ", no warmup"
    if c.get("schedule.multiplier") is not None and cells["schedule.multiplier"].nunique() > 1:
        label += f", ×{c['schedule.multiplier']:g}"
    return label


def unigram_table(runs: pd.DataFrame, cells: pd.DataFrame) -> str:
    """Per cell, when its runs recorded the corpus's unigram baseline: the final validation loss (nats, mean ± std
    over the seeds that finished without diverging) against the validation cross-entropy of the training split's
    token frequencies, and the gap per seed. Descriptive: no rule judges it."""
    if runs is None or runs.empty or "validation_unigram_xent" not in runs or "val_loss" not in runs:
        return ""
    by_id = {r["run_id"]: r for r in runs.to_dict("records")}
    rows = []
    for c in cells.to_dict("records"):
        ok = [by_id[i] for i in c.get("run_ids") or [] if i in by_id and by_id[i].get("outcome") == "ok"]
        pairs = [(_finite(r.get("val_loss")), _finite(r.get("validation_unigram_xent"))) for r in ok]
        pairs = [(v, u) for v, u in pairs if v is not None and u is not None]
        if not pairs:
            continue
        losses = [v for v, _ in pairs]
        gaps = sorted(v - u for v, u in pairs)
        mean = sum(losses) / len(losses)
        std = (sum((v - mean) ** 2 for v in losses) / (len(losses) - 1)) ** 0.5 if len(losses) > 1 else None
        xents = {round(u, 6) for _, u in pairs}
        diverged = int(c.get("n_diverged") or 0)
        seeds = f"{len(pairs)}" + (f" of {len(ok)}" if len(pairs) < len(ok) else "")  # older runs lack the baseline
        rows.append([_cell_label(c, cells), seeds + (f" (+{diverged} diverged)" if diverged else ""),
                     f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else ""),
                     " / ".join(f"{u:.3f}" for u in sorted(xents)),
                     f"{sum(gaps) / len(gaps):+.3f}" + (f" [{gaps[0]:+.3f}, {gaps[-1]:+.3f}]" if len(gaps) > 1 else "")])
    if not rows:
        return ""
    head = ["cell", "seeds", "validation loss (nats)", "unigram cross-entropy (nats)", "gap: mean [min, max] over seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def mechanism_table(cells: pd.DataFrame) -> str:
    """Per cell that logged RMS(U): the fraction of logged steps with RMS(U) above 1, 1.5 and 2 per Figure-1
    matrix, and the mean fraction of tensors clipped (mean over seeds)."""
    def mean(xs):
        xs = [x for x in (xs or []) if x is not None and math.isfinite(x)]
        return sum(xs) / len(xs) if xs else None

    rows = []
    for c in cells.to_dict("records"):
        if not any(x is not None for x in c.get("rms_frac_out") or []):
            continue
        cols = [_cell_label(c, cells), str(c.get("n"))]
        for m in R.FIG1_MATRICES:
            vals = [mean(c.get(f"rmsgt{lv:g}_{m}")) for lv in R.RMS_LEVELS]
            cols.append(" / ".join("–" if v is None else f"{v:.0%}" for v in vals))
        out = mean(c.get("rms_frac_out"))
        cols.append("–" if out is None else f"{out:.1%}")
        clipped = [mean(c.get(f"clipped_{m}")) for m in R.FIG1_MATRICES]
        cols.append("–" if all(v is None for v in clipped)
                    else " / ".join("–" if v is None else f"{v:.0%}" for v in clipped))
        clip = mean(c.get("clip_frac"))
        cols.append("–" if clip is None else f"{clip:.1%}")
        rows.append(cols)
    if not rows:
        return ""
    head = (["cell", "seeds"] + [f"{m}: > 1 / > 1.5 / > 2" for m in R.FIG1_MATRICES]
            + [f"outside [{1 / R.RMS_FAR:.2f}, {R.RMS_FAR:g}]", f"clipped: {' / '.join(R.FIG1_MATRICES)}",
               "clipped: all tensors (mean)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def registration_lines(results: list[ClaimResult]) -> list[str]:
    """What each pass of the study's runs is, and why its verdicts are confirmatory or not."""
    seen = {}
    for r in results:
        seen.setdefault(r.pass_label or r.pass_name, (r.registration, r.registration_note))
    out = []
    for label, (status, note) in seen.items():
        out.append(f"- **{label}: {status}** — {note}.")
    return out + [""]


def build_report(exp: str, scale: str, source: str, runs: pd.DataFrame, cells: pd.DataFrame, tables: list[Table],
                 plots: list[tuple[str, str]], results: list[ClaimResult], skipped: list[tuple[Claim, str]],
                 command: str, noise: R.Noise | None = None, sweep_md: str = "", screen_md: str = "", control_md: str = "",
                 signature_md: str = "", extra_md: str = "") -> str:
    lines = [f"# `{exp}` at scale `{scale}` — reproduction report", "",
             f"Built by `{command}` from {source}: {len(runs)} runs in {len(cells)} cells. Scoring reads only what the "
             "runs wrote (config.yaml, summary.json, meta.json, metrics.jsonl — or the same fields from W&B); "
             "cells are identified by their knob values, not their directory names.", ""]
    if extra_md:  # runs the study file does not define (extra overrides of the sweep)
        lines += [extra_md, ""]
    warn = provenance_warning(runs)
    if warn:
        lines += [f"> **Provenance warning:** {warn}. Rerun them from a clean clone at one commit before citing "
                  "these numbers.", ""]
    lines += ["## Provenance", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in provenance(runs, exp, scale)]
    lines += ["", "## Reproduce", "", "```bash", f"make sweep EXP={exp} SCALE={scale}   # the runs (resumes; skips finished cells)",
              f"make table EXP={exp} SCALE={scale}   # this folder: {command}", "```", ""]

    lines += ["## Verdicts", ""]
    if scale in PLUMBING_SCALES:
        lines += [PLUMBING_CAVEAT, ""]
    if results:
        lines += registration_lines(results)
        lines += ["| claim | paper | runs judged | standing | verdict | reason |", "|---|---|---|---|---|---|"]
        for r in results:
            reason = r.reason.replace("|", "\\|")
            if len(reason) > 220:
                reason = reason[:217] + "…"
            lines.append(f"| {r.title} | {r.claim.where} | {r.pass_label or r.pass_name} | {r.registration} | "
                         f"{VERDICT_MARK[r.verdict]} | {reason} |")
        for label in dict.fromkeys(r.pass_label or r.pass_name for r in results):
            counts = Counter(r.verdict for r in results if (r.pass_label or r.pass_name) == label)
            lines += ["", f"{label}: " + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICT_MARK) + "."]
    else:
        lines.append("This study speaks to none of the claims C1–C15.")
    if signature_md:
        lines += ["", "## The pre-registered signature", "", signature_md]
    lines += ["", "## Table", "", "Also as [table.csv](table.csv) (numbers) and [table.tex](table.tex); every run in "
              "[cells.csv](cells.csv).", "", to_markdown(tables, "###")]
    if sweep_md:
        lines += ["## Learning-rate sweep", "",
                  "Per row × warmup setting over the multiplier grid (seeds paired across it): the best multiplier and "
                  "its perplexity (90 % CI over seeds), the learning-rate sensitivity of Wortsman et al. (2023) — the "
                  "mean over the grid of min(final loss, ln vocab) − the best final loss, in nats (90 % CI over seeds) "
                  "— and the largest multiplier at which more than half of the seeds train.", "", sweep_md, ""]
    if screen_md:
        lines += ["## No-warmup screen", "",
                  "Per setting that holds A with and without warmup: each no-warmup cell's final validation perplexity "
                  "over A with warmup's at the same setting, and the share of logged steps with RMS(U) > 1.5 (Figure-1 "
                  f"matrices pooled). The signature: **S1** A without warmup ≥ {R.SCREEN_FAIL:g}× (or diverged); "
                  f"**S2** B and H without warmup < {R.SCREEN_OK:g}× and not diverged; **S3** A without warmup's RMS(U) > 1.5 "
                  f"on ≥ {R.SCREEN_RMS:.0%} of steps, more than with warmup. *pattern* = S1 and S2: a candidate that needs "
                  "three seeds and the interval rules before it counts.", "", screen_md, ""]
    if control_md:
        lines += ["## Positive controls", "",
                  "Cells the study declares (report.controls) that must fail against a reference cell, by the screen's "
                  f"rule S1 (most seeds diverged, or final validation perplexity ≥ {R.SCREEN_FAIL:g}× the reference's): "
                  "a passing control shows the harness can see a failure at all.", "", control_md, ""]
    mech = mechanism_table(cells)
    if mech:
        lines += ["## Mechanism: RMS(U) and clipping", "",
                  "Fraction of logged steps (after step "
                  f"{R.RMS_SKIP_STEPS}) with RMS(U) above 1, 1.5 and 2, per Figure-1 matrix; the fraction outside the "
                  "band that C13 is judged on (all three matrices pooled); for cells that clip at d, the fraction of "
                  "those steps on which each matrix's update was clipped (RMS(U) is logged before clipping: RMS(U) > d), "
                  "and the mean over logged steps of the fraction of all tensors clipped (`opt/clip_frac`). Means over "
                  "seeds; – where a cell does not clip.", "", mech, ""]
    uni = unigram_table(runs, cells)
    if uni:
        lines += ["## Against the unigram baseline", "",
                  "Final validation loss of each cell's seeds that did not diverge, beside the validation cross-entropy of "
                  "a model that knows only the training split's token frequencies (its best possible unigram model); "
                  "gap = loss − that cross-entropy, per seed. A gap near 0 is a model that learned token frequencies "
                  "and little else; negative is better. Descriptive: no pre-registered rule reads this table.", "",
                  uni, ""]
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
    rules_at = R.ACTIVE.path
    with contextlib.suppress(ValueError):
        rules_at = rules_at.relative_to(REPO_ROOT)
    lines += ["## Rules and thresholds", "", f"The rules `{R.ACTIVE.name}` (`{rules_at}`: data, fingerprinted into every run "
              "a study that names them trains; applied by `src/factorial/report/rules.py`):", "", R.thresholds_markdown(noise), ""]
    bad = runs[runs["outcome"].isin(["failed", "incomplete"])]
    if len(bad):
        lines += ["## Runs not counted", ""]
        for rec in bad.to_dict("records"):
            why = "crashed: " + str(rec.get("error") or "?") if rec["outcome"] == "failed" else "unfinished (no final summary)"
            lines.append(f"- `{rec['run_id']}` — {why}")
        lines.append("")
    return "\n".join(lines)
