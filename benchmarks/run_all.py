"""`make bench`: every benchmark, each writing JSON under runs/bench/.

    python -m benchmarks.run_all [--run runs/demo] [--quick]

The CF benchmarks need a cohort and classifier (`make demo` builds runs/demo). --quick runs
small sizes to check the benchmarks themselves; figures worth quoting come without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer


def main(
    run: Path = typer.Option(Path("runs/demo"), help="run directory with cohort/ and classifier/ (make demo)"),
    out: Path = typer.Option(Path("runs/bench"), help="folder for the JSON results"),
    quick: bool = typer.Option(False, help="small sizes: a smoke test of the benchmarks, not figures"),
) -> None:
    if not (run / "classifier" / "model.skops").exists():
        raise typer.BadParameter(f"{run}: no classifier; run `make demo` first (or pass --run)")
    size = ["--participants", "20", "--days", "2"] if quick else []
    n = ["--n", "10"] if quick else ["--n", "100"]
    jobs = [
        ["benchmarks.bench_aireadi_io", *size, "--out", out / "aireadi_io.json"],
        ["benchmarks.bench_baselines", "--run", run, *n, "--out", out / "baselines.json"],
        ["benchmarks.bench_generate", "--run", run, *n, "--adapter", run / "checkpoints" / "smollm2-cpu",
         "--out", out / "generate.json"],
        # fp32 against bf16 fine-tuning, same pairs and steps (bf16 only where the CPU has it natively)
        ["benchmarks.bench_train_precision", "--run", run, "--steps", "4" if quick else "20",
         "--out", out / "train_precision.json"],
        # The fine-tune's learning curve: one run checkpointed at each point (about 2 hours at full size)
        ["benchmarks.bench_finetune", "--run", run, *(["--examples", "0,20", "--n", "10"] if quick else []),
         "--out", out / "finetune.json"],
        # Record writing: an fsync per record against at most one a second
        ["benchmarks.bench_records", "--out", out / "records.json"],
        # Six copies of the teacher's CFs: it fills every cell, so the whole grid is fitted and timed.
        ["benchmarks.bench_augment", "--run", run, "--only", "teacher", *(["--seeds", "2"] if quick else []),
         "--out", out / "augment.json"],
    ]
    failed = []
    for module, *args in jobs:
        typer.secho(f"== {module}", bold=True)
        if subprocess.run([sys.executable, "-m", module, *map(str, args)]).returncode != 0:
            failed.append(module)
    if failed:
        typer.secho(f"failed: {failed}", fg="red")
        raise typer.Exit(1)
    typer.echo(f"results in {out}/")


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(main)
