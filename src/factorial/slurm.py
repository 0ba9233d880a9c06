"""What the sweep asks of SLURM, checked against what the cluster has, and the jobs' states without accounting.

* :func:`check_request` reads the partitions and their nodes with ``sinfo`` before anything is submitted:
  a partition that does not exist, or a request (CPUs, memory, GPUs, time limit) that no node of the
  partition can give, is a :class:`SlurmError` naming the knob, the value and what the partition offers.
  It also fills in the defaults the partition can give (CPUs, time limit, GPUs).
* :class:`SqueueWatcher` replaces submitit's ``sacct``-based job watcher: ``squeue`` answers on every
  cluster, with or without an accounting database, and gives the reason a job is pending.
* :func:`stuck_reason` tells a pending reason that cannot resolve itself (the job will never start).
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

SINFO_TIMEOUT_S = 30

# Pending reasons that no amount of waiting resolves: the request exceeds what the partition, its
# nodes or the job's account/QOS allow, or SLURM gave up launching it (a held job after a failed launch).
STUCK_REASONS = {
    "PartitionConfig": "the request exceeds what the partition's nodes or limits allow",
    "PartitionNodeLimit": "the job asks for more nodes than the partition allows",
    "PartitionTimeLimit": "the job's time limit exceeds the partition's",
    "BadConstraints": "no node can satisfy the job's constraints",
    "DependencyNeverSatisfied": "a dependency of the job can never be satisfied",
    "InvalidAccount": "the job's account is not valid",
    "InvalidQOS": "the job's QOS is not valid",
    "AccountNotAllowed": "the job's account may not use the partition",
    "QOSNotAllowed": "the job's QOS may not use the partition",
    "JobHeldAdmin": "an administrator holds the job (also SLURM's reaction to a failed launch)",
}
STUCK_LIMIT_RE = re.compile(r"^(QOS|Assoc)(Max|Min)\w*(PerJob|PerNode|NotSatisfied)\w*$")
# squeue states of a job that may still run (others are final).
NOT_DONE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
            "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED", "SPECIAL_EXIT", "UNKNOWN", "READY"}


class SlurmError(Exception):
    """SLURM cannot run the request (exit 2 of the sweep): the message names the knob and what is allowed."""


@dataclass
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int
    state: str


@dataclass
class Partition:
    name: str
    default: bool
    available: str  # up, down, drain, inactive
    max_time_min: float | None  # None: no limit
    nodes: list[Node] = field(default_factory=list)

    def describe(self) -> str:
        cpus = max((n.cpus for n in self.nodes), default=0)
        mem = max((n.mem_mb for n in self.nodes), default=0)
        gpus = max((n.gpus for n in self.nodes), default=0)
        limit = "no time limit" if self.max_time_min is None else f"jobs of at most {self.max_time_min:g} min"
        return (f"partition {self.name!r}: {len(self.nodes)} node(s), at most {cpus} CPUs, {mem / 1024:.1f} GB "
                f"and {gpus} GPUs per node, {limit}")


def parse_time_min(text: str) -> float | None:
    """A SLURM time limit as sinfo prints it (``infinite``, ``[days-]hours:minutes:seconds``, ``minutes``)."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:  # minutes
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:  # minutes:seconds
        h, (m, s) = 0, parts
    else:
        h, m, s = parts[-3:]
    return days * 1440 + h * 60 + m + s / 60


def parse_gpus(gres: str) -> int:
    """The GPUs of a node's generic resources as sinfo prints them: ``gpu:4``, ``gpu:a100:2(S:0-1),shard:8``, ``(null)``."""
    total = 0
    for item in re.split(r",(?![^()]*\))", gres):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu":
            with_count = [p for p in parts[1:] if p.isdigit()]
            total += int(with_count[-1]) if with_count else 1
    return total


def parse_sinfo(text: str) -> dict[str, Partition]:
    """``sinfo -h -N -o %P|%a|%l|%N|%c|%m|%G|%T`` (a line per node and partition) -> the partitions."""
    partitions: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 8:
            continue
        name, avail, limit, node, cpus, mem, gres, state = fields
        default = name.endswith("*")
        name = name.rstrip("*")
        part = partitions.setdefault(name, Partition(name, default, avail, parse_time_min(limit)))
        part.nodes.append(Node(node, int(re.sub(r"\D", "", cpus) or 0), int(re.sub(r"\D", "", mem) or 0), parse_gpus(gres), state))
    return partitions


def unavailable_reason() -> str | None:
    """Why this machine cannot submit to SLURM, or None."""
    if shutil.which("sbatch") is None:
        return "`sbatch` is not on PATH"
    if shutil.which("sinfo") is None:
        return "`sinfo` is not on PATH"
    return None


def read_partitions() -> dict[str, Partition]:
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%a|%l|%N|%c|%m|%G|%T"], capture_output=True, text=True,
                              timeout=SINFO_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SlurmError(f"invalid --launcher=slurm: SLURM does not answer (sinfo: {err}); "
                         "allowed here: --launcher local | submitit_local") from None
    if proc.returncode != 0:
        lines = [x.strip() for x in proc.stderr.splitlines() if x.strip()]
        msg = lines[-1] if lines else f"exit status {proc.returncode}"
        raise SlurmError(f"invalid --launcher=slurm: SLURM does not answer (sinfo: {msg}); "
                         "allowed here: --launcher local | submitit_local")
    partitions = parse_sinfo(proc.stdout)
    if not partitions:
        raise SlurmError("invalid --launcher=slurm: SLURM lists no partition with a node (sinfo); "
                         "allowed here: --launcher local | submitit_local")
    return partitions


@dataclass
class Request:
    """What one job of the array asks for (after the defaults), and the partition it goes to."""
    partition: Partition
    cpus: int
    gpus: int
    time_min: float
    mem_gb: float | None

    def describe(self) -> str:
        mem = "the partition's default memory" if self.mem_gb is None else f"{self.mem_gb:g} GB"
        return (f"partition {self.partition.name}, per cell {self.cpus} CPU(s), {self.gpus} GPU(s), {mem}, "
                f"{self.time_min:g} min")


def check_request(
    partition: str | None,
    cpus: int | None,
    gpus: int | None,
    time_min: float | None,
    mem_gb: float | None,
    default_cpus: int,
    default_time_min: float,
    partitions: dict[str, Partition] | None = None,
) -> Request:
    """The request with the partition's defaults filled in; a :class:`SlurmError` when no node can run it.

    ``None`` means "not given": CPUs default to min(default_cpus, the partition's largest node), the
    time limit to min(default_time_min, the partition's), GPUs to 1 when the partition's nodes have
    GPUs (else 0)."""
    if partitions is None:
        partitions = read_partitions()
    names = sorted(partitions)
    default = next((p for p in partitions.values() if p.default), None)
    allowed = " | ".join(names) + (f" (default: {default.name})" if default else "")
    if partition is None:
        if default is None:
            raise SlurmError(f"--partition (make sweep PARTITION=) is needed: SLURM has no default partition; allowed: {allowed}")
        part = default
    elif partition not in partitions:
        raise SlurmError(f"invalid --partition={partition!r} (make sweep PARTITION=): SLURM has no such partition; allowed: {allowed}")
    else:
        part = partitions[partition]
    nodes = part.nodes
    max_cpus = max(n.cpus for n in nodes)
    max_gpus = max(n.gpus for n in nodes)
    max_mem_gb = max(n.mem_mb for n in nodes) / 1024
    where = part.describe()

    if cpus is None:
        cpus = min(default_cpus, max_cpus)
    elif cpus > max_cpus:
        raise SlurmError(f"invalid --cpus-per-cell={cpus} (make sweep CPUS=): no node can give a job {cpus} CPUs; "
                         f"allowed: 1..{max_cpus} ({where})")
    if gpus is None:
        gpus = 1 if max_gpus else 0
    elif gpus > max_gpus:
        raise SlurmError(f"invalid --gpus-per-cell={gpus} (make sweep GPUS=): no node can give a job {gpus} GPUs; "
                         f"allowed: 0..{max_gpus} ({where})")
    if mem_gb is not None and mem_gb > max_mem_gb:
        raise SlurmError(f"invalid --mem-per-cell={mem_gb:g} (make sweep MEM=, GB): no node can give a job {mem_gb:g} GB; "
                         f"allowed: at most {max_mem_gb:.1f} ({where})")
    if time_min is None:
        time_min = default_time_min if part.max_time_min is None else min(default_time_min, part.max_time_min)
    elif part.max_time_min is not None and time_min > part.max_time_min:
        raise SlurmError(f"invalid --time-min={time_min:g} (make sweep TIME=, minutes): the partition's time limit is "
                         f"{part.max_time_min:g} min; allowed: 1..{part.max_time_min:g} ({where})")
    fits = [n for n in nodes if n.cpus >= cpus and n.gpus >= gpus and (mem_gb is None or n.mem_mb >= mem_gb * 1024)]
    if not fits:
        asked = f"--cpus-per-cell={cpus} --gpus-per-cell={gpus}" + ("" if mem_gb is None else f" --mem-per-cell={mem_gb:g}")
        raise SlurmError(f"invalid combination {asked}: each fits some node but no node has them all ({where}); allowed: "
                         + "; ".join(f"{n.name}: {n.cpus} CPUs, {n.gpus} GPUs, {n.mem_mb / 1024:.1f} GB" for n in nodes))
    return Request(part, cpus, gpus, time_min, mem_gb)


def stuck_reason(reason: str) -> str | None:
    """Why a job pending for ``reason`` will never start, or None when the reason can resolve itself."""
    if reason in STUCK_REASONS:
        return STUCK_REASONS[reason]
    if STUCK_LIMIT_RE.match(reason):
        return "the job exceeds a per-job limit of its account or QOS"
    return None


class SqueueWatcher:
    """A submitit job watcher that asks ``squeue`` (not ``sacct``) for the state of the sweep's jobs.

    ``squeue -t all`` lists finished jobs too for a while (MinJobAge, 300 s by default); a job it no
    longer lists after having listed it is done (state ``GONE``). Every query covers all the sweep's jobs.
    ``info(job_id)`` also has the job's pending ``Reason``."""

    def __init__(self, delay_s: float = 10.0) -> None:
        self._delay_s = delay_s
        self._registered: set[str] = set()
        self._seen: set[str] = set()
        self._info: dict[str, dict[str, str]] = {}
        self._last = float("-inf")
        self._start = time.time()
        self._user = getpass.getuser()
        self.errors = 0
        self.last_error: str | None = None

    # The interface of submitit.core.core.InfoWatcher that submitit's jobs use.
    def register_job(self, job_id: str) -> None:
        self._registered.add(str(job_id))
        self._start = time.time()
        self._last = float("-inf")

    def clear(self) -> None:
        self._info.clear()
        self._last = float("-inf")

    def get_info(self, job_id: str, mode: str = "standard") -> dict[str, str]:
        if str(job_id) not in self._registered:
            self.register_job(job_id)
        self.update_if_long_enough(mode)
        return self._info.get(str(job_id), {})

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        return self.get_info(job_id, mode).get("State") or "UNKNOWN"

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode).upper() not in NOT_DONE

    @property
    def num_calls(self) -> int:
        return 0

    def update_if_long_enough(self, mode: str = "standard") -> None:
        if mode == "cache":
            return
        since_last = time.time() - self._last
        delay = 0.0 if mode == "force" else min(self._delay_s, max(2.0, (time.time() - self._start) / 2))
        if since_last > delay:
            self.update()

    def update(self) -> None:
        self._last = time.time()
        cmd = ["squeue", "-h", "-r", "-t", "all", "-u", self._user, "-o", "%i|%T|%r|%N"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as err:
            self.errors, self.last_error = self.errors + 1, str(err)
            return
        if proc.returncode != 0:  # the controller is unreachable for a moment: keep the last states
            self.errors, self.last_error = self.errors + 1, " ".join(proc.stderr.split())
            return
        listed = {}
        for line in proc.stdout.splitlines():
            fields = line.strip().split("|")
            if len(fields) == 4:
                listed[fields[0]] = {"JobID": fields[0], "State": fields[1].split()[0], "Reason": fields[2], "NodeList": fields[3]}
        for job_id in self._registered:
            if job_id in listed:
                self._info[job_id] = listed[job_id]
                self._seen.add(job_id)
            elif job_id in self._seen:
                self._info[job_id] = {"JobID": job_id, "State": "GONE", "Reason": "no longer listed by squeue", "NodeList": ""}

    def info(self, job_id: str) -> dict[str, Any]:
        return self._info.get(str(job_id), {})
