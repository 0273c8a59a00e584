"""Seconds to write CF records with an fsync per record against at most one a second -> JSON.

    python -m benchmarks.bench_records [--n 3316] [--dir runs/bench/records] [--out runs/bench/records.json]

The teacher stage of `make demo` writes ~3,300 records (40 test factuals and the training split's
1,200 with their neighbours). Both policies write the same records, in one run, to the same disk
as the run directory (fsync cost is the disk's); `per_record` is `RecordWriter(fsync_seconds=0)`,
the behaviour before the writer batched its fsyncs. The files are deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import typer

from sensecf.atomic import write_json
from sensecf.records import CFRecord, RecordWriter, read_records

FEATURES = ["awake", "light", "deep", "rem", "steps", "glucose", "hyper", "tir", "age", "sex", "med", "group"]


def sample_records(n: int) -> list[CFRecord]:
    """Records shaped like the teacher's: 12 features, a CF, a prediction."""
    factual = {f: round(10 + i * 1.7, 1) for i, f in enumerate(FEATURES)}
    cf = {**factual, "steps": 8123.4, "glucose": 131.2}
    return [
        CFRecord(window_id=f"w{i}", participant_id=f"p{i // 23}", method="teacher", candidate=i % 10,
                 factual=factual, factual_pred=1, desired_class=0, cf=cf, parse_status="ok", immutables_ok=True,
                 cf_pred=0, seconds=0.01)
        for i in range(n)
    ]  # fmt: skip


def time_writes(path: Path, records: list[CFRecord], fsync_seconds: float) -> dict:
    path.unlink(missing_ok=True)
    syncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd):
        nonlocal syncs
        syncs += 1
        real_fsync(fd)

    os.fsync = counting_fsync
    try:
        start = time.perf_counter()
        with RecordWriter(path, fsync_seconds=fsync_seconds) as writer:
            writer.write_all(records)
        seconds = time.perf_counter() - start
    finally:
        os.fsync = real_fsync
    written = len(read_records(path))
    if written != len(records):
        raise RuntimeError(f"{path}: {written} records read back, {len(records)} written")
    return {"seconds": seconds, "records_per_second": len(records) / seconds, "fsync_calls": syncs,
            "records_read_back": written}  # fmt: skip


def main(
    n: int = typer.Option(3316, help="records per policy (the demo's teacher stage wrote 3,316)"),
    folder: Path = typer.Option(Path("runs/bench/records"), "--dir", help="scratch folder on the run's disk"),
    out: Path = typer.Option(Path("runs/bench/records.json"), help="JSON output"),
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    records = sample_records(n)
    load_before = os.getloadavg()
    results = {
        "per_record": time_writes(folder / "per_record.jsonl", records, fsync_seconds=0.0),
        "at_most_once_a_second": time_writes(folder / "batched.jsonl", records, fsync_seconds=1.0),
    }
    shutil.rmtree(folder)
    report = {
        "benchmark": "records",
        "n": n,
        "policies": results,
        "speedup": results["per_record"]["seconds"] / results["at_most_once_a_second"]["seconds"],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    write_json(out, report)
    typer.echo(f"per record {results['per_record']['seconds']:.2f} s, batched "
               f"{results['at_most_once_a_second']['seconds']:.2f} s -> {out}")  # fmt: skip


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(main)
