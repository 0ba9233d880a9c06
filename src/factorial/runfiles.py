"""The files of one run and the names inside them: written by the trainer, read by the sweep, the report,
the table and the dashboard. Each name is spelled once, here; nothing here imports torch or the rest of
factorial.

A run directory (``runs/<exp>/<scale>/<cell>/seed<k>/``) holds:

* ``config.yaml``   the composed config of the cell (factorial.schema), written before the first step;
* ``meta.json``     provenance: commit and dirty flag, packages, machine, threads, the rules the run was
                    trained under, and one entry per start (a resumed run has several);
* ``metrics.jsonl`` one JSON record per logged step (factorial.runlog): the METRICS below;
* ``summary.json``  written once, atomically, when the run ends: SUMMARY_KEYS, ``status`` one of STATUSES;
* ``train.log``     the process's output; ``checkpoints/`` the newest checkpoints and ``.lock`` the lock of
                    the process training it.

runs/ is a local cache that git ignores: the finished runs a study's results rest on are committed as one
file, ``results/<exp>/<scale>/runs.jsonl.gz`` (STORE; factorial.store), holding the first five files of each.
"""

from __future__ import annotations

# --- files ----------------------------------------------------------------------------------------------

CONFIG = "config.yaml"
META = "meta.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOG = "train.log"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"  # held by the process that trains the run (factorial.runio.CellLock)
KEPT = (CONFIG, META, METRICS, SUMMARY, LOG)  # what the results store keeps of a finished run
STORE = "runs.jsonl.gz"  # results/<exp>/<scale>/STORE: the study's finished runs, one per line (factorial.store)

# --- summary.json -----------------------------------------------------------------------------------------

COMPLETED = "completed"  # ran every step; val_ppl is the last evaluation
DIVERGED = "diverged"  # stopped when the training loss passed train.diverge_loss (or became NaN)
FAILED = "failed"  # an error stopped it (the summary's ``error`` says which); the sweep retries it
STATUSES = (COMPLETED, DIVERGED, FAILED)
FINISHED = (COMPLETED, DIVERGED)  # a result: the sweep skips the run, the report reads it
PENDING = "pending"  # the sweep's word for a run without a summary (never written to a file)

SUMMARY_KEYS = (
    "status", "step", "steps", "tokens", "val_loss", "val_ppl", "best_val_loss", "best_val_ppl", "test_loss",
    "test_ppl", "diverged_at", "wall_time_s", "tokens_per_s", "mfu", "state_bytes", "params", "error",
)

# --- metrics.jsonl ----------------------------------------------------------------------------------------

STEP = "step"  # our optimizer step: every record has it, the x-axis of every curve
PARAMS = "model/params"  # at step 0 of a fresh start: the parameter count
CORPUS_TOKENS = "data/train_tokens"  # at step 0 of a fresh start: tokens in the training split
TRAIN_LOSS = "train/loss"  # mean training loss of the log window (and the loss of a diverging step)
TRAIN_LR = "train/lr"
GRAD_NORM = "train/grad_norm"
TRAIN_TOKENS = "train/tokens"
TOKENS_PER_S = "perf/tokens_per_s"
STATE_BYTES = "opt/state_bytes"  # the optimizer's state, logged once at step 1
BETA2_T = "opt/beta2_t"  # Adafactor's second-moment decay rate at this step
RMS_U_MEAN = "opt/rms_u_mean"  # mean over every tensor of RMS(U_t), the unscaled update
CLIP_FRAC = "opt/clip_frac"  # the fraction of tensors whose RMS(U_t) exceeds the clipping threshold d
VAL_LOSS = "val/loss"
VAL_PPL = "val/ppl"
TEST_LOSS = "test/loss"
TEST_PPL = "test/ppl"

# The matrices whose RMS(U_t) is logged every train.rms_every steps as rms_u/<name> (Figure 1):
# factorial.model.Transformer.figure1_matrices returns exactly these.
FIG1_MATRICES = ("tok_emb", "attn_proj.0", "ff1.0")


def rms_key(matrix: str) -> str:
    """The metric of one Figure-1 matrix's RMS(U_t)."""
    return f"rms_u/{matrix}"


RMS_KEYS = tuple(rms_key(m) for m in FIG1_MATRICES)
