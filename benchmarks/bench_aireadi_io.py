"""Seconds to write and to read an AI-READI-scale synthetic release, in one run.

    python -m benchmarks.bench_aireadi_io [--participants 1067] [--days 10] [--out runs/bench/aireadi_io.json]

Goals (issue 2): the 1,067-participant x 10-day release written in minutes and read into a
cohort in <= 2 minutes on a 2-core machine. CPU seconds and the load average are recorded too,
since a shared CPU makes wall time depend on other jobs. The release is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import typer

from dataset_builders.aireadi import build_cohort
from dataset_builders.synth import write_release
from dataset_builders.window_features import LabelRule
from sensecf.spec import DatasetSpec

SPEC = Path(__file__).resolve().parents[1] / "dataset_builders" / "aireadi_spec.yaml"


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn):
    load, cpu0, t0 = os.getloadavg()[0], _cpu_seconds(), time.perf_counter()
    result = fn()
    return result, {"seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
                    "load_average_before": round(load, 2)}


def main(
    participants: int = typer.Option(1067, min=1, help="participants (the v2 release has 1,067)"),
    days: int = typer.Option(10, min=1, help="days of wearable data per participant"),
    workers: int = typer.Option(2, min=1, help="writer and reader processes"),
    out: Path = typer.Option(Path("runs/bench/aireadi_io.json"), help="JSON result"),
) -> None:
    root = Path(tempfile.mkdtemp(prefix="sensecf_release_"))
    try:
        _, write = _timed(lambda: write_release(root, participants, days, 0, workers=workers, force=True))
        write["bytes"] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        (frame, _, quality), read = _timed(
            lambda: build_cohort(root, spec=DatasetSpec.from_yaml(SPEC), rule=LabelRule(), workers=workers))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {"participants": participants, "days": days, "workers": workers, "cpu_count": os.cpu_count(),
              "write": write, "read": {**read, "participants_read": quality["participants"]["read"],
                                       "windows": len(frame)}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(main)
