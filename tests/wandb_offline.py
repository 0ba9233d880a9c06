"""Read back what an offline W&B run recorded, for tests only.

The trainer never reads W&B's files: the local metrics.jsonl is its source of truth, and
``wandb.teardown()`` (public) is how it waits for an offline run to reach the disk. Tests
check what W&B was given, so they parse the offline run's transaction log here; if a wandb
upgrade changes the format, these tests fail, not the trainer.
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path

log = logging.getLogger(__name__)


# ============================================================================ offline reader

# wandb's transaction log (.wandb) is a LevelDB-style record log, written by the Go
# wandb-core. wandb 0.31 ships no Python reader (the old wandb.sdk.internal.datastore is
# gone), so this is a small one. Layout, checked against files wandb 0.31 writes:
#   file header: b":W&B", magic 0xBEE1 (uint16 LE), version 0 (uint8)       -- 7 bytes
#   then 32 KiB blocks (counted from file offset 0, header included); each chunk:
#   crc32 (uint32 LE, zlib/IEEE over type byte + data, unmasked), length (uint16 LE),
#   type (1 full, 2 first, 3 middle, 4 last), data. A block tail shorter than a chunk
#   header is zero padding. Each reassembled record is a wandb_internal_pb2.Record.
_WB_HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_records(path: Path, *, warn: bool = True):
    """Yield the raw protobuf payloads of a .wandb file; stops at a torn/corrupt tail.

    warn=False when the file may still be being written (a torn tail is expected then).
    """
    data = path.read_bytes()
    if data[: len(_WB_HEADER)] != _WB_HEADER:
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r})")
    pos = len(_WB_HEADER)
    pending: list[bytes] | None = None
    while pos < len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER:
            pos += left_in_block  # zero padding at a block's end
            continue
        if pos + _CHUNK_HEADER > len(data):
            break  # torn chunk header: the writer stopped here
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:
            pos += left_in_block  # zero-filled rest of the block
            continue
        start, end = pos + _CHUNK_HEADER, pos + _CHUNK_HEADER + length
        if end > len(data) or end - (pos - pos % _BLOCK) > _BLOCK:
            if warn:
                log.warning("%s: truncated record at byte %d; reading stops there", path, pos)
            break
        payload = data[start:end]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            if warn:
                log.warning("%s: checksum mismatch at byte %d; reading stops there", path, pos)
            break
        pos = end
        if kind == _FULL:
            pending = None
            yield payload
        elif kind == _FIRST:
            pending = [payload]
        elif kind == _MIDDLE and pending is not None:
            pending.append(payload)
        elif kind == _LAST and pending is not None:
            pending.append(payload)
            yield b"".join(pending)
            pending = None
        else:
            if warn:
                log.warning("%s: unexpected chunk type %d at byte %d; skipped", path, kind, pos)
            pending = None


def run_complete(path: Path) -> bool:
    """True once the last record of a .wandb file is the run's exit record (the run is all on disk)."""
    from wandb.proto import wandb_internal_pb2 as pb

    last = None
    try:
        for last in iter_records(path, warn=False):
            pass
    except (OSError, ValueError):  # not there yet / header not written yet
        return False
    if last is None:
        return False
    record = pb.Record()
    try:
        record.ParseFromString(last)
    except Exception:  # protobuf's DecodeError: a record still being written
        return False
    return record.WhichOneof("record_type") == "exit"


def offline_run_order(file: Path) -> tuple[str, int]:
    """Chronological sort key for .../offline-run-<YYYYmmdd_HHMMSS>-<id>[-<n>]/run-<id>.wandb.

    wandb appends "-1", "-2", ... when two runs start within the same second (a quick
    resume); plain string order would put "-10" before "-2". The id is taken from the
    file name, so ids that themselves end in "-<digits>" can't be mistaken for the suffix.
    """
    run_id = file.stem[len("run-"):]
    name = file.parent.name
    timestamp = name[len("offline-run-"):].split("-", 1)[0]
    suffix = name[len(f"offline-run-{timestamp}-{run_id}"):].lstrip("-")
    return timestamp, int(suffix) if suffix.isdigit() else 0


def read_offline_wandb_history(run_dir: Path) -> list[dict]:
    """History rows (what ``wandb.log`` recorded) of the offline W&B run(s) in run_dir/wandb/.

    Returns one ``{key: value}`` dict per logged row, including wandb's own keys (``_step``,
    ``_timestamp``, ``_runtime``); NaN/inf come back as floats. A resumed cell leaves one
    ``offline-run-<time>-<id>`` directory per process; their rows are concatenated in
    chronological order (steps re-logged after a resume appear again, as in W&B).
    """
    import wandb
    from wandb.proto import wandb_internal_pb2 as pb

    wandb.teardown()  # waits until W&B has written out every run of this process
    rows: list[dict] = []
    wandb_root = Path(run_dir) / "wandb"
    for file in sorted(wandb_root.glob("offline-run-*/run-*.wandb"), key=offline_run_order):
        for payload in iter_records(file):
            record = pb.Record()
            record.ParseFromString(payload)
            if record.WhichOneof("record_type") != "history":
                continue
            row = {}
            for item in record.history.item:
                # wandb-core fills nested_key (path of a nested dict); older writers, key.
                key = item.key or ".".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows
