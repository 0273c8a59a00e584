"""Wall time of the full Table IV grid (3 scenarios x 5 ratios x 5 seeds x N sources) -> JSON.

    python -m benchmarks.bench_augment --run runs/demo [--sources 6] [--jobs 2]

Works on a scratch copy (--scratch) of RUN's cohort, classifier and CFs of training factuals
(RUN/cfs/train/*.jsonl), so RUN's own Table IV is left alone. With fewer than N sources there,
renamed copies of them make up N (the grid's cost depends on the sources' sizes, not on where
their CFs came from). Without a cohort in RUN, for a self-contained measurement, it writes a
synthetic AI-READI-spec cohort with the test fixtures' generator (tests/conftest.py,
--participants x 20 windows), trains the classifier, and writes N teacher-copy sources
(sensecf.teacher's CF for every training window). Cells a source cannot fill are skipped, as in
a real run; the JSON gives the fits run and the seconds per fit. Fig. 1's fits (4 classifiers x
10 reductions x seeds) are timed separately.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import typer

from augment.scarcity import cf_dir_of, run_scarcity
from eval.classifier import train_and_evaluate
from sensecf.blackbox import BlackBox
from sensecf.records import CFRecord, RecordWriter, read_records
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


def copy_sources(run: RunDir, scratch: RunDir, n_sources: int, only: str | None = None) -> list[str]:
    """RUN's training-factual CF files (or just ONLY's) in SCRATCH, plus renamed copies
    (<name>_copy<k>) up to N."""
    found = sorted(p for p in cf_dir_of(run).glob("*.jsonl") if only is None or p.stem == only)
    if not found:
        raise FileNotFoundError(f"{cf_dir_of(run)}: no CF file{f' {only}.jsonl' if only else 's'}")
    target = cf_dir_of(scratch)
    target.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(max(n_sources, len(found))):
        path = found[i % len(found)]
        base, plus, variant = path.stem.partition("+")  # the copy keeps the row's variant suffix
        name = path.stem if i < len(found) else f"{base}_copy{i // len(found)}{plus}{variant}"
        with RecordWriter(target / f"{name}.jsonl") as writer:
            writer.write_all(CFRecord(**{**r.model_dump(), "method": name, "protocol": None})
                             for r in read_records(path))
        names.append(name)
    return names


def prepare(run: RunDir, scratch: RunDir, participants: int, n_sources: int, only: str | None = None) -> bool:
    """SCRATCH with a cohort, classifier and N CF sources; True when the cohort was synthesised."""
    if scratch.root.exists():
        shutil.rmtree(scratch.root)
    if not run.features.exists():
        build_synthetic_run(scratch, participants)
        write_teacher_sources(scratch, n_sources)
        return True
    if not run.model.exists():
        raise FileNotFoundError(f"{run.model}: no classifier (python -m eval.classifier --run {run.root})")
    shutil.copytree(run.cohort, scratch.cohort)
    shutil.copytree(run.classifier, scratch.classifier)
    if list(cf_dir_of(run).glob("*.jsonl")):
        copy_sources(run, scratch, n_sources, only)
    else:
        write_teacher_sources(scratch, n_sources)
    return False


def main(
    run: Path = typer.Option(Path("runs/demo"), help="run with cohort, classifier, cfs/train (read only)"),
    scratch: Path = typer.Option(Path("runs/bench/augment-scratch"), help="scratch run directory (replaced)"),
    participants: int = typer.Option(150, help="participants (x 20 windows) of a synthetic cohort, if RUN has none"),
    sources: int = typer.Option(6, help="CF sources in the grid (renamed copies make up the number)"),
    only: str = typer.Option(None, help="copy only this source of RUN (e.g. one that fills every cell)"),
    seeds: int = typer.Option(5),
    jobs: int = typer.Option(2),
    out: Path = typer.Option(None, help="JSON result (default SCRATCH/bench_augment.json)"),
) -> None:
    """Time the Table IV grid and the Fig. 1 curve on a copy of RUN; write the timings as JSON."""
    rd = RunDir(scratch)
    built = prepare(RunDir(run), rd, participants, sources, only)
    df, _ = rd.load_cohort()

    start = time.perf_counter()
    summary = run_scarcity(rd, "all", [0.2, 0.4, 0.6, 0.8, 1.0], seeds, ["A", "B", "C"], None, jobs, fig1=True)
    total_s = time.perf_counter() - start

    result = {
        "benchmark": "augment_table4_grid",
        "run": str(run),
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
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
    }
    path = out or rd.root / "bench_augment.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(main)
