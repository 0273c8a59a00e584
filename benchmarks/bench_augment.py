"""Wall time of the full Table IV grid (3 scenarios x 5 ratios x 5 seeds x N sources) -> JSON.

    python -m benchmarks.bench_augment --run runs/bench-augment [--participants 150] [--sources 6] [--jobs 2]

Uses RUN's cohort and its CFs of training factuals (RUN/cfs/train/*.jsonl) when present.
Otherwise, for a self-contained measurement, it writes a synthetic AI-READI-spec cohort with
the test fixtures' generator (tests/conftest.py, N participants x 20 windows), trains the
classifier, and writes N fake-but-valid CF sources: copies of the teacher's CF
(sensecf.teacher) for every training window. Cells a source cannot fill are skipped, as in a
real run; the JSON gives the fits run and the seconds per fit. Fig. 1's fits (4 classifiers x
10 reductions x seeds) are timed separately.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import typer

from augment.scarcity import cf_dir_of, run_scarcity
from eval.classifier import train_and_evaluate
from sensecf.blackbox import BlackBox
from sensecf.records import CFRecord, RecordWriter
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir
from sensecf.spec import DatasetSpec
from sensecf.teacher import teacher_cfs

REPO = Path(__file__).resolve().parents[1]


def _fixture_module():
    # tests/ is not a package (cfnow's wheel ships a top-level `tests`), so load the file itself.
    spec = importlib.util.spec_from_file_location("sensecf_test_fixtures", REPO / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_synthetic_run(run: RunDir, participants: int, seed: int = 0) -> None:
    fx = _fixture_module()
    frame = fx._aireadi_frame(np.random.default_rng(seed), participants, 20)
    fx.write_cohort(run, frame, DatasetSpec.from_yaml(fx.AIREADI_SPEC), seed)
    train_and_evaluate(run, seed)


def write_teacher_sources(run: RunDir, n_sources: int) -> list[str]:
    """N copies of the teacher's CFs for every training factual (sensecf.teacher), named teacher_1..N.

    The copies differ only in name, which seeds the order CFs are drawn in at each ratio; the
    grid's cost depends on the sizes of the sources, not on where their CFs came from.
    """
    df, spec = run.load_cohort()
    blackbox = BlackBox.load(run.model, spec)
    train = df[df[SPLIT_COL] == "train"].reset_index(drop=True)
    result = teacher_cfs(train, train, spec, blackbox)
    cf_pred = blackbox.predict([cf for cf in result.cfs if cf is not None])
    factuals = train[spec.names].to_dict("records")
    names = [f"teacher_{i}" for i in range(1, n_sources + 1)]
    for name in names:
        preds = iter(cf_pred)
        with RecordWriter(cf_dir_of(run) / f"{name}.jsonl") as writer:
            for i, cf in enumerate(result.cfs):
                writer.write(CFRecord(
                    window_id=str(train.at[i, ID_COL]), participant_id=str(train.at[i, GROUP_COL]), method=name,
                    factual=factuals[i], factual_pred=int(result.factual_pred[i]),
                    desired_class=int(result.desired_class[i]), cf=cf, parse_status=result.status[i],
                    cf_pred=None if cf is None else int(next(preds)), error=result.detail[i],
                ))
    return names


def main(
    run: Path = typer.Option(..., help="run directory; a synthetic cohort and CF sources are written if absent"),
    participants: int = typer.Option(150, help="participants (x 20 windows) of the synthetic cohort, if built"),
    sources: int = typer.Option(6, help="teacher-copy CF sources to write, if RUN/cfs/train has none"),
    seeds: int = typer.Option(5),
    jobs: int = typer.Option(2),
    out: Path = typer.Option(None, help="JSON result (default RUN/bench_augment.json)"),
) -> None:
    """Time the Table IV grid and the Fig. 1 curve on RUN; write the timings as JSON."""
    rd = RunDir(run)
    built = not rd.features.exists()
    if built:
        build_synthetic_run(rd, participants)
    if not list(cf_dir_of(rd).glob("*.jsonl")):
        write_teacher_sources(rd, sources)
    df, _ = rd.load_cohort()

    start = time.perf_counter()
    summary = run_scarcity(rd, "all", [0.2, 0.4, 0.6, 0.8, 1.0], seeds, ["A", "B", "C"], None, jobs, fig1=True)
    total_s = time.perf_counter() - start

    result = {
        "benchmark": "augment_table4_grid",
        "run": str(rd.root),
        "synthetic_cohort_built": built,
        "windows": {"train": int((df[SPLIT_COL] == "train").sum()), "test": int((df[SPLIT_COL] == "test").sum())},
        "sources": sorted(p.stem for p in cf_dir_of(rd).glob("*.jsonl")),
        "seeds": seeds,
        "jobs": jobs,
        "grid_fits": summary["grid_fits"],
        "insufficient_cells": summary["insufficient_cells"],
        "grid_seconds": round(summary["grid_seconds"], 1),
        "seconds_per_grid_fit": round(summary["grid_seconds"] / max(summary["grid_fits"], 1), 3),
        "fig1_fits": summary["fig1_fits"],
        "fig1_seconds": round(summary["fig1_seconds"], 1),
        # Whole stage: loading, CF filtering, both sets of fits, tables and figures.
        "stage_seconds": round(total_s, 1),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
    }
    path = out or rd.root / "bench_augment.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
