"""Speed and quality of every baseline on the same factuals, side by side -> JSON.

    python -m benchmarks.bench_baselines --run runs/demo [--n 100] [--cfnow-seconds 2] [--out FILE]

RUN needs a cohort and a classifier (`make demo` builds both). The CFs are written to a scratch
run directory (default RUN/bench/baselines/, refilled from scratch each time) holding copies of
RUN's cohort and classifier, so RUN/cfs/ is never touched. Reported per method: seconds per CF
(mean and median over all factuals, failures included), record statuses, and per factual class
validity, distance, sparsity, plausibility and coherence (eval/metrics.py definitions).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
from dataclasses import asdict
from pathlib import Path

import typer

from eval.baselines import METHODS, BaselineConfig, records_dir, run_baselines
from eval.metrics import cf_metrics
from sensecf.blackbox import BlackBox
from sensecf.records import read_records
from sensecf.rundir import SPLIT_COL, RunDir

QUALITY = ["validity", "distance", "sparsity", "plausibility", "coherence"]


def scratch_copy(run: RunDir, scratch: RunDir) -> None:
    """A fresh run directory with RUN's cohort and classifier and no CFs."""
    if not run.features.exists() or not run.model.exists():
        raise FileNotFoundError(f"{run.root}: needs cohort/ and classifier/model.skops (`make demo` builds both)")
    if scratch.root.exists():
        shutil.rmtree(scratch.root)
    shutil.copytree(run.cohort, scratch.cohort)
    shutil.copytree(run.classifier, scratch.classifier)


def _finite(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def benchmark(run: RunDir, scratch: RunDir, methods: list[str], n: int, cfg: BaselineConfig) -> dict:
    scratch_copy(run, scratch)
    summary = run_baselines(scratch, methods, n=n, cfg=cfg)
    df, spec = scratch.load_cohort()
    blackbox = BlackBox.load(scratch.model, spec)
    train = df[df[SPLIT_COL] == "train"]
    out: dict = {}
    for method in methods:
        records = read_records(records_dir(scratch, "test") / f"{method}.jsonl")
        if not records:
            out[method] = {"failed_to_start": summary["failed_methods"].get(method)}
            continue
        seconds = [r.seconds for r in records]
        table = cf_metrics(records, spec, train, blackbox)
        out[method] = {
            "seconds_per_cf": {"mean": statistics.fmean(seconds), "median": statistics.median(seconds)},
            "status": summary["methods"][method]["status"],
            "by_class": {
                str(int(row["class"])): {"n": int(row["n"]), **{m: _finite(float(row[m])) for m in QUALITY}}
                for _, row in table.iterrows()
            },
        }
    return {
        "benchmark": "baselines",
        "run": str(run.root),
        "synthetic_cohort": run.is_synthetic(),
        "n_factuals": summary["n_factuals"],
        "sample": summary["sample"],
        "config": {"methods": methods, "n": n, **asdict(cfg)},
        "methods": out,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
    }


def main(
    run: Path = typer.Option(..., help="run directory with cohort/ and classifier/ (`make demo` builds one)"),
    n: int = typer.Option(100, help="factuals, half from each predicted class of the test split"),
    methods: str = typer.Option(",".join(METHODS), help="comma-separated method names"),
    seed: int = typer.Option(0),
    cfnow_seconds: float = typer.Option(2.0, help="cfnow's limit_seconds"),
    timeout_seconds: float = typer.Option(60.0, help="hard limit per CF"),
    scratch: Path | None = typer.Option(None, help="scratch run directory (default RUN/bench/baselines)"),
    out: Path | None = typer.Option(None, help="JSON result (default RUN/bench_baselines.json)"),
) -> None:
    """Run every baseline on the same factuals and write seconds per CF and quality as JSON."""
    rd = RunDir(run)
    names = [m.strip() for m in methods.split(",")]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise typer.BadParameter(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    cfg = BaselineConfig(seed=seed, cfnow_seconds=cfnow_seconds, timeout_seconds=timeout_seconds)
    result = benchmark(rd, RunDir(scratch or rd.root / "bench" / "baselines"), names, n, cfg)
    path = out or rd.root / "bench_baselines.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    typer.echo(f"{'method':14s} {'s/CF mean':>9s} {'median':>7s}  class  " + "  ".join(f"{q:>12s}" for q in QUALITY))
    for method, info in result["methods"].items():
        if "by_class" not in info:
            typer.echo(f"{method:14s} failed to start: {info['failed_to_start']}")
            continue
        s = info["seconds_per_cf"]
        for cls, q in info["by_class"].items():
            cells = "  ".join(f"{q[m]:12.3f}" if q[m] is not None else f"{'-':>12s}" for m in QUALITY)
            typer.echo(f"{method:14s} {s['mean']:9.3f} {s['median']:7.3f}  {cls:>5s}  {cells}")
    typer.echo(f"wrote {path}")


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(main)
