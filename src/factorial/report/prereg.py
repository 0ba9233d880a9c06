"""Pre-registration: the fingerprint of the rules that judge a study, recorded by every run it trains.

A study names a rules file (``rules: paper`` → experiments/rules/paper.yaml: every margin, band, seed set,
precondition and the divergence rule, as data). Its fingerprint hashes that data together with the *rule
card*: every claim's parts as the code defines them (text, which rule compares which cells, which parts are
stability parts). ``make sweep`` passes ``"<rules name> <fingerprint>"`` to each cell it trains
(environment variable ``FACTORIAL_RULES``), and the trainer writes it into the run's meta.json.

``make table`` then calls a verdict **confirmatory** only when every run it rests on
- is on one of the rules' ``confirmatory_seeds``,
- was trained under the fingerprint of the rules that judge it now (nothing changed since), and
- came from a clean commit;
every other verdict is **exploratory**, with the reason. Changing a threshold after the runs exist changes
the fingerprint, so what it judges becomes exploratory; adding seeds after a read is a change of
``confirmatory_seeds`` and does the same.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import rules as R


def card() -> list[dict[str, Any]]:
    """The claims' definitions as data: id, text, and per part its text, its rule and cells, whether it is a
    stability part (which the rules' preconditions apply to) and its own precondition."""
    from . import claims as CL

    out = []
    for c in CL.CLAIMS:
        out.append({"id": c.id, "text": c.text, "free": list(c.free), "whole": c.whole, "parts": [
            {"text": p.text, "check": getattr(p.check, "kind", p.check.__name__), "stability": p.stability,
             "requires": p.requires.text if p.requires is not None else None}
            for p in c.parts]})
    out.append({"id": "sweep", "text": CL.SWEEP_RULE_KIND})
    return out


def fingerprint(rules: R.RuleSet) -> str:
    """16 hex digits of sha256 over the rules' data and the rule card (canonical JSON)."""
    text = json.dumps({"rules": rules.data, "card": card()}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parse_registration(value: Any) -> tuple[str, str] | None:
    """``"paper 0123456789abcdef"`` → (name, fingerprint); None for anything else."""
    if not isinstance(value, str) or " " not in value.strip():
        return None
    name, fp = value.strip().rsplit(" ", 1)
    return name, fp
