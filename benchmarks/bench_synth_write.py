"""How fast the synthetic AI-READI release is written (target: 1,067 participants x 10 days in < 3 min).

    python -m benchmarks.bench_synth_write --participants 1067 --days 10 --out runs/bench/synth_write.json

Writes the release into a temporary directory, measures wall-clock seconds, counts files and
bytes, deletes the release and writes the figures as JSON.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import orjson
import typer

from dataset_builders.synth import write_release

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
def main(
    participants: int = typer.Option(1067, min=1, help="participants (v2 release size by default)"),
    days: int = typer.Option(10, min=1, help="full days of wearable data per participant"),
    seed: int = typer.Option(0, help="random seed"),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), min=1, help="writer processes"),
    out: Path = typer.Option(Path("runs/bench/synth_write.json"), help="where the JSON result goes"),
) -> None:
    """Time one full synthetic release write."""
    release_dir = Path(tempfile.mkdtemp(prefix="synth_release_"))
    try:
        start = time.perf_counter()
        release = write_release(release_dir, participants, days, seed, workers=workers, force=True)
        seconds = time.perf_counter() - start
        sizes = [f.stat().st_size for f in release_dir.rglob("*") if f.is_file()]
    finally:
        shutil.rmtree(release_dir, ignore_errors=True)
    result = {
        "participants": participants,
        "days": days,
        "seconds": round(seconds, 2),
        "bytes": sum(sizes),
        "files": len(sizes),
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "seed": seed,
        "high_stress_day_share": release["high_stress_day_share"],
        "python": platform.python_version(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    typer.echo(orjson.dumps(result).decode())


if __name__ == "__main__":
    app()
