"""Cohort stage: an AI-READI release (real or synthetic) -> RUN/cohort/.

    python -m dataset_builders.aireadi --root DIR --out RUN/cohort [--demographics FILE] [--strict]

Writes features.parquet (one row per kept 2-hour window: window_id, participant_id,
window_start, split, the 12 spec features, high_stress, stress_mean), split.json (by
participant), spec.yaml (min/max from the training split), quality.json (what was read,
skipped, repaired and dropped, with counts; implausible readings under `dropped_readings`,
see dataset_builders/aireadi_reader.py) and provenance.json.

Each file is written atomically, provenance.json last (it records the others' sha256), under
the run directory's lock (the folder above --out). Bad input ends in one line,
`error: <file>: <field or row>: <reason>`, exit code 2.
"""

from __future__ import annotations

import sys
from collections import Counter
from multiprocessing import Pool
from pathlib import Path
from typing import Literal

import pandas as pd
import typer
from tqdm import tqdm

from dataset_builders.aireadi_reader import (
    DROPPED_READING_REASONS,
    MODALITIES,
    PLAUSIBILITY_RULES,
    AireadiFormatError,
    ReadLog,
    find_root,
    is_synthetic_release,
    medication_from_observation,
    participant_timezone,
    read_demographics,
    read_manifest_paths,
    read_participant,
    read_participants,
    release_version,
)
from dataset_builders.patient_split import SplitError, assign_split, recommended_split, stratified_split
from dataset_builders.window_features import DROP_REASONS, LabelRule, participant_windows
from sensecf.atomic import atomic_path, run_lock, write_json
from sensecf.cli import run_cli
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir, write_provenance
from sensecf.spec import DatasetSpec
from sensecf.wandb_log import stage_run

DEFAULT_SPEC = Path(__file__).with_name("aireadi_spec.yaml")


def _participant_task(task: dict) -> dict:
    """Read one participant and build its windows (runs in a worker process)."""
    log = ReadLog(strict=task["strict"])
    data, reason = read_participant(
        task["root"], task["pid"], task["tz"], task["manifests"], task["flags"], log, task["count_heart_rate"]
    )
    out = {"pid": task["pid"], "skipped": reason, "quirks": log.quirks, "failures": log.failures,
           "dropped_readings": log.dropped, "frame": None, "built": 0, "dropped": Counter()}
    if data is not None:
        out["frame"], out["built"], out["dropped"] = participant_windows(data, task["immutables"], task["rule"],
                                                                          task["spec"])
    return out


def _immutables(participants: pd.DataFrame, spec: DatasetSpec, demographics: dict, cmtrt: dict | None,
                log: ReadLog, path: Path) -> tuple[dict[str, dict], dict[str, str], dict[str, dict]]:
    """({pid: {age, sex, medication, study_group}}, {pid: skip reason}, {pid: sources})."""
    groups = spec.feature("study_group").categories
    values, skipped, sources = {}, {}, {}
    for row in participants.itertuples(index=False):
        pid = row.participant_id
        age = pd.to_numeric(getattr(row, "age", ""), errors="coerce")
        group = str(getattr(row, "study_group", "")).strip()
        if pd.isna(age):
            log.fail(path, f"participant {pid}", f"age {getattr(row, 'age', None)!r} is not a number")
            skipped[pid] = "no valid age in participants.tsv"
            continue
        if group not in groups:
            log.fail(path, f"participant {pid}", f"study_group {group!r} is not one of {groups}")
            skipped[pid] = "unknown study_group in participants.tsv"
            continue
        given = demographics.get(pid, {})
        sex = given.get("sex") or "unknown"
        if given.get("medication"):
            medication, med_source = given["medication"], "demographics file"
        elif cmtrt is not None and pid in cmtrt:
            medication, med_source = cmtrt[pid], "cmtrt_* screening items"
        else:
            medication, med_source = "unknown", "none"
        values[pid] = {"age": int(round(float(age))), "sex": sex, "medication": medication, "study_group": group}
        sources[pid] = {"sex": "demographics file" if given.get("sex") else "none", "medication": med_source}
    return values, skipped, sources


def build_cohort(
    root_dir: Path,
    *,
    spec: DatasetSpec,
    rule: LabelRule,
    demographics_path: Path | None = None,
    strict: bool = False,
    workers: int = 2,
    count_heart_rate: bool = False,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(windows frame without split, participants table, quality report) for a release."""
    root = find_root(root_dir)
    participants = read_participants(root)
    manifests = read_manifest_paths(root)
    log = ReadLog(strict=strict)
    demographics = read_demographics(demographics_path) if demographics_path else {}
    cmtrt = medication_from_observation(root)
    immutables, skipped, sources = _immutables(participants, spec, demographics, cmtrt, log,
                                               root / "participants.tsv")

    flag_cols = sorted({m.datatype for m in MODALITIES.values()} & set(participants.columns))
    tasks = []
    for row in participants.to_dict("records"):
        pid = row["participant_id"]
        if pid in skipped:
            continue
        tz = participant_timezone(pid, row.get("clinical_site"))
        if tz is None:
            log.fail(root / "participants.tsv", f"participant {pid}",
                     f"no time zone (clinical_site {row.get('clinical_site')!r}, id digit)")
            skipped[pid] = "no time zone"
            continue
        tasks.append({
            "root": root, "pid": pid, "tz": tz, "strict": strict, "count_heart_rate": count_heart_rate,
            "manifests": {m: {pid: paths[pid]} for m, paths in manifests.items() if pid in paths},
            "flags": {c: (None if pd.isna(row[c]) else bool(row[c])) for c in flag_cols},
            "immutables": immutables[pid], "rule": rule, "spec": spec,
        })

    # the bar closes (ending its line) before an error propagates, so the error line stands alone
    with tqdm(total=len(tasks), desc="participants", unit="pt", disable=not progress, file=sys.stderr) as bar:
        results = []
        if workers > 1 and len(tasks) > 1:
            with Pool(workers) as pool:
                for res in pool.imap(_participant_task, tasks, chunksize=4):
                    results.append(res)
                    bar.update(1)
        else:
            for task in tasks:
                results.append(_participant_task(task))
                bar.update(1)

    frames, quirks, failures = [], Counter(log.quirks), list(log.failures)
    built, dropped = 0, Counter({r: 0 for r in DROP_REASONS})
    dropped_readings = Counter(dict.fromkeys(DROPPED_READING_REASONS, 0))
    for res in results:
        quirks.update(res["quirks"])
        failures.extend(res["failures"])
        dropped_readings.update(res["dropped_readings"])
        if res["skipped"]:
            skipped[res["pid"]] = res["skipped"]
            continue
        built += res["built"]
        dropped.update(res["dropped"])
        if len(res["frame"]):
            frames.append(res["frame"])
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    in_cohort = sorted(frame[GROUP_COL].unique()) if len(frame) else []
    quality = {
        "root": str(root),
        "participants": {
            "listed": len(participants),
            "read": len(results) - sum(1 for r in results if r["skipped"]),
            "with_windows": len(in_cohort),
            "skipped": len(skipped),
            "skipped_by_reason": dict(sorted(Counter(skipped.values()).items())),
            "skipped_ids": {pid: skipped[pid] for pid in sorted(skipped)},
        },
        "windows": {"built": built, "kept": len(frame), "dropped_by_first_reason": dict(dropped),
                    "drop_reason_order": list(DROP_REASONS)},
        "quirks": dict(sorted(quirks.items())),
        "dropped_readings": dict(dropped_readings),
        "dropped_readings_rules": PLAUSIBILITY_RULES,
        "failed_files": failures,
        "demographics": {
            "demographics_file": str(demographics_path) if demographics_path else None,
            "demographics_rows_not_in_participants_tsv": len(set(demographics) - set(participants["participant_id"])),
            "observation_csv_found": cmtrt is not None,
            "counted_over": "participants with at least one kept window",
            "sex_unknown": sum(1 for p in in_cohort if immutables[p]["sex"] == "unknown"),
            "medication_unknown": sum(1 for p in in_cohort if immutables[p]["medication"] == "unknown"),
            "sex_source": dict(Counter(sources[p]["sex"] for p in in_cohort)),
            "medication_source": dict(Counter(sources[p]["medication"] for p in in_cohort)),
        },
        "label": {"name": spec.label.name, "scope": rule.scope, "threshold": rule.threshold,
                  "min_stress_values": rule.min_values, "rule": f"mean valid stress > {rule.threshold} -> 1"},
    }
    return frame, participants, quality


def finish_cohort(frame: pd.DataFrame, participants: pd.DataFrame, spec: DatasetSpec, *, use_recommended: bool,
                  test_fraction: float, seed: int, participants_file: str | Path = "participants.tsv",
                  ) -> tuple[pd.DataFrame, dict, DatasetSpec]:
    """Split by participant, order the columns, learn the spec's ranges from train."""
    if frame.empty:
        raise AireadiFormatError(participants_file, "windows", "no window survived reading and cleaning")
    kept = participants[participants["participant_id"].isin(frame[GROUP_COL])].rename(
        columns={"participant_id": GROUP_COL})
    if use_recommended:
        if "recommended_split" not in kept.columns:
            raise AireadiFormatError(participants_file, "column 'recommended_split'",
                                     "missing; --use-recommended-split needs it")
        split = recommended_split(kept)
    else:
        split = stratified_split(kept, test_fraction, seed)
    frame = frame.copy()
    frame[SPLIT_COL] = assign_split(frame, split)
    for f in spec.categorical:
        bad = sorted(set(frame[f.name].astype(str)) - set(f.categories))
        if bad:
            raise AireadiFormatError(participants_file, f"feature '{f.name}'",
                                     f"values {bad} are not among the spec's {f.categories}")
    columns = [ID_COL, GROUP_COL, "window_start", SPLIT_COL, *spec.names, spec.label.name, "stress_mean"]
    frame = frame[columns].sort_values([GROUP_COL, "window_start"], kind="stable").reset_index(drop=True)
    train = frame[frame[SPLIT_COL] == "train"]
    if train.empty:
        raise SplitError("the training split is empty; cannot learn feature ranges")
    return frame, split, spec.with_ranges(train)


def _split_summary(frame: pd.DataFrame, split: dict, label: str) -> dict:
    out = {"method": split["method"], "seed": split["seed"]}
    for side in ("train", "test"):
        part = frame[frame[SPLIT_COL] == side]
        out[side] = {"participants": len(split[side]), "windows": len(part),
                     "label_counts": {str(k): int(v) for k, v in part[label].value_counts().sort_index().items()}}
    return out


def main(
    root: Path = typer.Option(..., help="AI-READI release folder (participants.tsv here or below, e.g. in dataset/)"),
    out: Path = typer.Option(..., help="output folder, normally RUN/cohort"),
    demographics: Path | None = typer.Option(
        None, help="controlled-access CSV/TSV: person_id (or participant_id), sex, and optionally medication"),
    strict: bool = typer.Option(False, help="fail on the first unusable file instead of skipping and counting it"),
    label_scope: str = typer.Option("day", help="stress mean over the participant's local 'day' or the 'window'"),
    stress_threshold: float = typer.Option(75.0, help="high stress = mean stress above this (75 itself is not high)"),
    min_stress_values: int = typer.Option(30, help="valid stress values the label scope needs, else the window drops"),
    split_seed: int = typer.Option(0, help="seed of the participant split"),
    test_fraction: float = typer.Option(0.2, help="share of participants (per study group) in test"),
    use_recommended_split: bool = typer.Option(False, help="use participants.tsv recommended_split (val -> train)"),
    spec: Path = typer.Option(DEFAULT_SPEC, help="dataset spec YAML"),
    workers: int = typer.Option(2, min=1, help="processes reading participants in parallel"),
    count_heart_rate: bool = typer.Option(False, help="also read heart-rate files, only to count HR-0 sentinels"),
) -> None:
    if label_scope not in ("day", "window"):
        raise typer.BadParameter(f"--label-scope must be 'day' or 'window', got {label_scope!r}")
    if out.exists() and not out.is_dir():
        raise AireadiFormatError(out, "--out", "exists and is not a folder")
    scope: Literal["day", "window"] = label_scope  # type: ignore[assignment]
    rule = LabelRule(scope=scope, threshold=stress_threshold, min_values=min_stress_values)
    base_spec = DatasetSpec.from_yaml(spec)
    run = RunDir(out.resolve().parent)  # --out is RUN/cohort: one writer per run directory
    with run_lock(run.root), stage_run(run, "cohort", inputs=[root / "synthetic_release.json"],
                                       outputs=[out / "features.parquet"], creates_run=True):
        frame, participants, quality = build_cohort(
            root, spec=base_spec, rule=rule, demographics_path=demographics, strict=strict, workers=workers,
            count_heart_rate=count_heart_rate)
        release_root = Path(quality["root"])
        if frame.empty:  # say why in the one error line: quality.json is not written without a cohort
            p, w = quality["participants"], quality["windows"]
            raise AireadiFormatError(
                release_root / "participants.tsv", "windows",
                f"no window survived reading and cleaning (participants skipped: {p['skipped_by_reason']}; "
                f"windows dropped by first reason: {w['dropped_by_first_reason']}; "
                f"files not usable: {len(quality['failed_files'])})")
        frame, split, learned = finish_cohort(frame, participants, base_spec, use_recommended=use_recommended_split,
                                              test_fraction=test_fraction, seed=split_seed,
                                              participants_file=release_root / "participants.tsv")
        quality["split"] = _split_summary(frame, split, base_spec.label.name)
        config = {"label_scope": label_scope, "stress_threshold": stress_threshold,
                  "min_stress_values": min_stress_values, "split_seed": split_seed, "test_fraction": test_fraction,
                  "use_recommended_split": use_recommended_split, "strict": strict,
                  "count_heart_rate": count_heart_rate, "spec": str(spec),
                  "demographics": str(demographics) if demographics else None}
        write_cohort(out, frame, split, learned, quality)
        write_provenance(  # last: it records the sha256 of the files above
            out, config=config, seed=split_seed,
            inputs=[release_root / "participants.tsv", spec, *([demographics] if demographics else [])],
            source={"synthetic": is_synthetic_release(release_root), "root": str(release_root),
                    "release_version": release_version(release_root)},
        )
    p, w = quality["participants"], quality["windows"]
    typer.echo(f"{w['kept']} windows from {p['with_windows']} participants ({p['skipped']} skipped, "
               f"{w['built'] - w['kept']} windows dropped) -> {out}")


def write_cohort(out: Path, frame: pd.DataFrame, split: dict, spec: DatasetSpec, quality: dict) -> None:
    """The cohort's files, each atomically. The old provenance goes first, so a kill part-way
    leaves no provenance vouching for a half-replaced cohort."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "provenance.json").unlink(missing_ok=True)
    with atomic_path(out / "features.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    write_json(out / "split.json", split)
    spec.to_yaml(out / "spec.yaml")  # atomic itself (sensecf.atomic.write_text)
    write_json(out / "quality.json", quality)


if __name__ == "__main__":
    run_cli(main)
