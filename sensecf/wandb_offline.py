"""Read W&B's offline run files back: each run's id, group, job type, config and logged artifacts.

    for run in read_offline_runs(Path("runs/demo/wandb")):
        print(run.job_type, run.group, [a.name for a in run.artifacts])

wandb 0.31 writes a run's records from its Go core and its Python package no longer ships a reader,
so this reads the file format directly: a 7-byte header (":W&B", 0xBEE1, version 0), then 32 KiB
blocks in LevelDB's log format, each chunk a 7-byte header (CRC-32C, little-endian length, type:
1 full, 2 first, 3 middle, 4 last); a record is a `wandb_internal_pb2.Record`. The sync command
(sensecf.wandb_sync) and the tests use it; nothing here writes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineArtifact:
    name: str
    type: str
    aliases: list[str]
    metadata: dict
    files: dict[str, str]  # name in the artifact -> "" (an uploaded file) or the reference URI


@dataclass
class OfflineRun:
    id: str
    folder: Path
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    config: dict = field(default_factory=dict)
    artifacts: list[OfflineArtifact] = field(default_factory=list)
    history_keys: set[str] = field(default_factory=set)
    exit_code: int | None = None
    started_ns: int = 0


def records(path: Path):
    """The protobuf records of one .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a W&B run file (header {data[:7]!r})")
    pos, pending = len(HEADER), b""
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # the block's tail is padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 0 and length == 0:  # zero padding
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def _config_items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def read_offline_run(folder: Path) -> OfflineRun:
    """One offline-run-<time>-<id> folder."""
    files = sorted(folder.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{folder}: no run-*.wandb file")
    run = OfflineRun(id=files[0].stem.removeprefix("run-"), folder=folder)
    for record in records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.project, run.group, run.job_type, run.name = r.project, r.run_group, r.job_type, r.display_name
            run.config.update(_config_items(r.config.update))
            run.started_ns = r.start_time.ToNanoseconds()
        elif kind == "config":
            run.config.update(_config_items(record.config.update))
        elif kind == "history":
            run.history_keys.update(item.key or "/".join(item.nested_key) for item in record.history.item)
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append(OfflineArtifact(
                name=a.name, type=a.type, aliases=list(a.aliases),
                metadata=json.loads(a.metadata) if a.metadata else {},
                files={entry.path: entry.ref for entry in a.manifest.contents}))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def read_offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every offline run under a W&B folder (RUN/wandb), oldest first (folder names have whole seconds)."""
    runs = [read_offline_run(folder) for folder in Path(wandb_dir).glob("offline-run-*")]
    return sorted(runs, key=lambda r: (r.started_ns, r.folder.name))
