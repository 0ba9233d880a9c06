"""The results of a study, from what its runs wrote: tables, figures and a verdict per claim of the paper.

    python -m factorial.table --exp table2 --scale cpu        (make table EXP=table2 SCALE=cpu)

Modules, in the order the data flows:

* ``spec``      — what a study reports: the ``report:`` section of its study file (table layout, figures,
                  the claims it is home to), checked before any work.
* ``data``      — runs (local run dirs, cells.csv, or the W&B API) → one row per run; cells = runs grouped by
                  their knob values, with seed statistics.
* ``rules``     — what "≈", "fails", "much worse", "strays far from 1", … mean, as constants and functions.
* ``claims``    — C1–C15 of PAPER.md §8 as comparisons between cells, judged by the rules.
* ``tables``    — the study's table (Table 2's, Table 3's, Figure 1's, a pivot, or one row per cell) in md/csv/tex.
* ``plots``     — the figures (PNG).
* ``document``  — REPORT.md.
* ``output``    — atomic writing of results/<exp>/<scale>/, and the optional W&B summary run.
"""

from .data import ReportError, aggregate, load_csv, load_local, load_wandb  # noqa: F401
