"""Time the AI-READI read: release -> cleaned 2-hour windows with features and labels.

    python -m benchmarks.bench_aireadi_read --root RELEASE [--workers 2] [--out runs/bench/aireadi_read.json]

Times `build_cohort` (discovery, parsing every participant's CGM/activity/sleep/stress file,
windowing, features, labels); the split and the parquet write are left out. The target is a
1,067-participant x 10-day release in <= 120 s on 2 cores. The machine's load average goes
into the JSON because other jobs on a shared CPU slow it down, and so does the CPU time of
this process and its reader processes: cpu_seconds / workers is the wall time the read
would take with the cores to itself.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import typer

from dataset_builders.aireadi import DEFAULT_SPEC, build_cohort
from dataset_builders.window_features import LabelRule
from sensecf.spec import DatasetSpec


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(
    root: Path = typer.Option(..., help="AI-READI release (real or synthetic) to read"),
    out: Path = typer.Option(Path("runs/bench/aireadi_read.json"), help="where the JSON result goes"),
    workers: int = typer.Option(2, min=1, help="reader processes"),
) -> None:
    spec = DatasetSpec.from_yaml(DEFAULT_SPEC)
    load_before = os.getloadavg()[0]
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    frame, _, quality = build_cohort(root, spec=spec, rule=LabelRule(), workers=workers)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    p, w = quality["participants"], quality["windows"]
    result = {
        "root": str(root),
        "participants": p["read"],
        "participants_listed": p["listed"],
        "windows": w["kept"],
        "windows_built": w["built"],
        "seconds": round(seconds, 2),
        "seconds_per_participant": round(seconds / max(p["read"], 1), 4),
        "cpu_seconds": round(cpu, 1),
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(main)
