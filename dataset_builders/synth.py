"""Write a synthetic AI-READI release in the v3 layout (format notes §1-4, §6), for tests and demos.

    python -m dataset_builders.synth --participants 60 --days 10 --seed 0 --out runs/synth-release

Files under DIR (paths in manifests start with "/" and are relative to DIR):
  participants.tsv                person_id, clinical_site, study_group, age, study_visit_date,
                                  recommended_split, then 9 TRUE/FALSE datatype flags (alphabetical)
  participants.json               CDS-style column descriptions
  README.md, dataset_description.json
  wearable_blood_glucose/manifest.tsv
  wearable_blood_glucose/continuous_glucose_monitoring/dexcom_g6/<pid>/<pid>_DEX.json
  wearable_activity_monitor/manifest.tsv
  wearable_activity_monitor/{heart_rate,stress,sleep,physical_activity}/garmin_vivosmart5/<pid>/
      <pid>_{heartrate,stress,sleep,activity}.json
  clinical_data/person.csv        OMOP person: gender_concept_id 0, only year_of_birth real
  clinical_data/observation.csv   cmtrt_insln / cmtrt_a1c / cmtrt_glcs / cmtrt_lfst screening answers
                                  (value_as_string and value_source_value "Yes"/"No"), consistent with
                                  the study group
  controlled/demographics.tsv     person_id, sex (female/male), medication (none /
                                  oral_or_noninsulin_injectable / insulin): stands in for the
                                  controlled-access file (sex and medication are not public); the
                                  reader takes it via --demographics. Omitted with --no-controlled.
  synthetic_release.json          {"synthetic": true, seed, participants, days, quirk_rates,
                                  injected: {quirk: exact count}, injected_meaning, ...}
  synthetic_truth/days.csv        latent day-level truth (previous night's stage %, daily steps and
                                  glucose, stress mean and the high_stress label), to check a reader
  provenance.json                 write_provenance record; the only file with wall-clock time

Not written: the other datatypes (their participants.tsv flags are FALSE) and the SpO2,
respiratory-rate and calorie Garmin files (their manifest columns read "None").
Same seed -> byte-identical files (except provenance.json), whatever the number of workers.
The release is written into a hidden sibling folder and renamed onto DIR when complete, so a
killed run never leaves a partial release under DIR.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import typer
from pydantic import ValidationError
from tqdm import tqdm

from dataset_builders.synth_json import activity_file, cgm_file, garmin_header, point_file, sleep_file
from dataset_builders.synth_model import (
    GROUPS,
    HIGH_STRESS_THRESHOLD,
    Participant,
    day_table,
    draw_cohort,
    participant_rng,
    simulate,
)
from dataset_builders.synth_quirks import INJECTED_MEANING, MODALITIES, STEPS_EMPTY, QuirkRates, inject
from sensecf.cli import InputError, run_cli
from sensecf.rundir import RunDir, write_provenance
from sensecf.wandb_log import stage_run

DATATYPES = (
    "cardiac_ecg",
    "clinical_data",
    "environment",
    "retinal_flio",
    "retinal_oct",
    "retinal_octa",
    "retinal_photography",
    "wearable_activity_monitor",
    "wearable_blood_glucose",
)
CGM_DIR = "wearable_blood_glucose/continuous_glucose_monitoring/dexcom_g6"
# modality -> (folder under wearable_activity_monitor/, file suffix)
GARMIN_FILES = {
    "heart_rate": ("heart_rate", "heartrate"),
    "stress": ("stress", "stress"),
    "sleep": ("sleep", "sleep"),
    "activity": ("physical_activity", "activity"),
}
CONTROLLED_FILE = "controlled/demographics.tsv"
RELEASE_FILE = "synthetic_release.json"
TRUTH_FILE = "synthetic_truth/days.csv"
NONE = "None"  # how the release writes a missing file in a manifest

CGM_MANIFEST_COLUMNS = [
    "person_id",
    "glucose_filepath",
    "glucose_level_record_count",
    "average_glucose_level_mg_dl",
    "glucose_sensor_sampling_duration_days",
    "glucose_sensor_id",
    "manufacturer",
    "manufacturer_model_name",
]
GARMIN_MANIFEST_COLUMNS = [
    "person_id", "wrist_worn_on", "dominant_hand",
    "heartrate_filepath", "heartrate_record_count", "average_heartrate_bpm",
    "oxygen_saturation_filepath", "oxygen_saturation_record_count", "average_oxygen_saturation_pct",
    "stress_level_filepath", "stress_level_record_count", "average_stress_level",
    "sleep_filepath", "sleep_record_count", "average_sleep_hours",
    "respiratory_rate_filepath", "respiratory_rate_record_count", "average_respiratory_rate_bpm",
    "physical_activity_filepath", "physical_activity_num_days", "average_daily_activity",
    "active_calories_filepath", "active_calories_record_count", "average_active_calories_kcal",
    "sensor_sampling_duration_days", "manufacturer", "manufacturer_model_name",
]  # fmt: skip

# Public screening items (format notes §4.3): key -> (question, OMOP concept of a "Yes").
SCREENING = {
    "cmtrt_insln": ("Do you inject insulin to control your blood glucose levels?", 440922),
    "cmtrt_a1c": ("Do you take pills to control your A1C and blood glucose levels? (e.g., Metformin)", 4016042),
    "cmtrt_glcs": (
        "Do you use other injections to control your blood glucose levels? (e.g., Victoza, Ozempic)",
        36714369,
    ),
    "cmtrt_lfst": ("Do you use lifestyle changes to control your blood glucose levels? (e.g., diet, exercise)", 0),
}
YES_CONCEPT, NO_CONCEPT = 4188539, 4188540
PERSON_COLUMNS = [
    "person_id", "gender_concept_id", "year_of_birth", "month_of_birth", "day_of_birth", "birth_datetime",
    "race_concept_id", "ethnicity_concept_id", "location_id", "provider_id", "care_site_id",
    "person_source_value", "gender_source_value", "gender_source_concept_id", "race_source_value",
    "race_source_concept_id", "ethnicity_source_value", "ethnicity_source_concept_id",
]  # fmt: skip
OBSERVATION_COLUMNS = [
    "observation_id", "person_id", "observation_concept_id", "observation_date", "observation_datetime",
    "observation_type_concept_id", "value_as_number", "value_as_string", "value_as_concept_id",
    "qualifier_concept_id", "unit_concept_id", "provider_id", "visit_occurrence_id", "visit_detail_id",
    "observation_source_value", "observation_source_concept_id", "unit_source_value", "qualifier_source_value",
    "value_source_value", "observation_event_id", "obs_event_field_concept_id",
]  # fmt: skip
SURVEY_CONCEPT = 45905771  # "Observation recorded from a survey"


def cgm_path(pid: str) -> str:
    return f"/{CGM_DIR}/{pid}/{pid}_DEX.json"


def garmin_path(pid: str, modality: str) -> str:
    folder, suffix = GARMIN_FILES[modality]
    return f"/wearable_activity_monitor/{folder}/garmin_vivosmart5/{pid}/{pid}_{suffix}.json"


def screening_answers(p: Participant, seed: int) -> dict[str, bool]:
    """cmtrt_* answers consistent with the study group (insulin > pills/injections > none)."""
    rng = participant_rng(seed, p.person_id, 3)
    draws = rng.random(4)
    group = GROUPS.index(p.study_group)
    answers = dict.fromkeys(SCREENING, False)
    if group == 1:
        answers["cmtrt_lfst"] = True
    elif group >= 2:
        answers["cmtrt_insln"] = group == 3
        answers["cmtrt_a1c"] = bool(draws[0] < (0.85 if group == 2 else 0.45))
        answers["cmtrt_glcs"] = bool(draws[1] < (0.35 if group == 2 else 0.2))
        answers["cmtrt_lfst"] = bool(draws[2] < 0.6)
        if group == 2 and not (answers["cmtrt_a1c"] or answers["cmtrt_glcs"]):
            answers["cmtrt_a1c"] = True
    return answers


@dataclass
class ParticipantResult:
    person_id: str
    written: dict[str, bool]
    cgm_row: dict
    garmin_row: dict
    counts: Counter
    days: pd.DataFrame


def _round(x: float) -> float:
    return round(float(x), 2)


def write_participant(p: Participant, days: int, seed: int, rates: QuirkRates, out: Path) -> ParticipantResult:
    """Simulate one participant, inject quirks, write their wearable files; return manifest rows."""
    streams = simulate(p, days, seed)
    tables, counts, stress_valid = inject(streams, rates, participant_rng(seed, p.person_id, 1))
    rng = participant_rng(seed, p.person_id, 2)
    device_id = "PL" + "".join(map(str, rng.integers(0, 10, 8)))
    transmitter_id = "8" + "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"), 5))
    wrist = "left" if rng.random() < 0.8 else "right"
    hand = "right" if rng.random() < 0.9 else "left"
    grid = streams.grid
    end = grid.t0 + timedelta(minutes=grid.n_minutes)
    created = (end + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")  # release processing date
    stamps = np.array(grid.timestamps(), dtype=object)
    span_days = _round(grid.n_minutes / 1440)

    def write(rel: str, data: bytes) -> None:
        path = out / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    cgm_row = dict.fromkeys(CGM_MANIFEST_COLUMNS[1:6], NONE) | {
        "manufacturer": "Dexcom",
        "manufacturer_model_name": "G6",
    }
    cgm = tables["cgm"]
    if cgm is not None:
        t0 = np.datetime64(grid.t0.replace(tzinfo=None), "s")
        write(cgm_path(p.person_id), cgm_file(cgm, t0, p.person_id, created, p.tz_code, device_id, transmitter_id))
        as_manifest = np.choose(cgm["flag"], [cgm["value"], 70, 200])  # the official manifest's Low/High mapping
        cgm_row |= {
            "glucose_filepath": cgm_path(p.person_id),
            "glucose_level_record_count": cgm["value"].size,
            "average_glucose_level_mg_dl": _round(as_manifest.mean()),
            "glucose_sensor_sampling_duration_days": _round((cgm["second"][-1] - cgm["second"][0]) / 86400),
            "glucose_sensor_id": device_id,
        }

    garmin_row = {"wrist_worn_on": wrist, "dominant_hand": hand} | dict.fromkeys(GARMIN_MANIFEST_COLUMNS[3:24], NONE)
    garmin_row |= {
        "sensor_sampling_duration_days": span_days,
        "manufacturer": "Garmin",
        "manufacturer_model_name": "Vivosmart 5",
    }
    for modality in GARMIN_FILES:
        table = tables[modality]
        if table is None:
            continue
        header = garmin_header(p.person_id, created, modality, p.tz_code)
        path = garmin_path(p.person_id, modality)
        if modality == "heart_rate":
            write(path, point_file(table, stamps, header, "heart_rate"))
            valid = table["value"][table["value"] > 0]
            garmin_row |= {
                "heartrate_filepath": path,
                "heartrate_record_count": table["value"].size,
                "average_heartrate_bpm": _round(valid.mean()) if valid.size else NONE,
            }
        elif modality == "stress":
            write(path, point_file(table, stamps, header, "stress"))
            valid = table["value"][table["value"] >= 0]
            garmin_row |= {
                "stress_level_filepath": path,
                "stress_level_record_count": table["value"].size,
                "average_stress_level": _round(valid.mean()) if valid.size else NONE,
            }
        elif modality == "sleep":
            write(path, sleep_file(table, stamps, header))
            hours = (table["end"] - table["start"]) / 60
            garmin_row |= {
                "sleep_filepath": path,
                "sleep_record_count": hours.size,
                "average_sleep_hours": _round(hours.mean()),
            }  # per record, as the official code
        else:
            write(path, activity_file(table, stamps, header))
            record_day = grid.local_day[np.maximum(table["end"] - 1, 0)]
            n_days = np.unique(record_day).size
            steps = table["steps"][table["form"] != STEPS_EMPTY].sum()
            garmin_row |= {
                "physical_activity_filepath": path,
                "physical_activity_num_days": n_days,
                "average_daily_activity": _round(steps / n_days),
            }

    days_df = day_table(p, streams, stress_valid)
    days_df["stress_file_written"] = tables["stress"] is not None
    written = {m: tables[m] is not None for m in MODALITIES}
    return ParticipantResult(p.person_id, written, cgm_row, garmin_row, counts, days_df)


def _root_files(
    out: Path, cohort: list[Participant], results: list[ParticipantResult], seed: int, days: int, controlled: bool
) -> None:
    rows = []
    for p, r in zip(cohort, results, strict=True):
        flags = dict.fromkeys(DATATYPES, "FALSE")
        flags["clinical_data"] = "TRUE"
        flags["wearable_blood_glucose"] = "TRUE" if r.written["cgm"] else "FALSE"
        garmin = any(r.written[m] for m in GARMIN_FILES)
        flags["wearable_activity_monitor"] = "TRUE" if garmin else "FALSE"
        rows.append(
            {
                "person_id": p.person_id,
                "clinical_site": p.site,
                "study_group": p.study_group,
                "age": p.age,
                "study_visit_date": p.visit_date.isoformat(),
                "recommended_split": p.split,
            }
            | flags
        )
    pd.DataFrame(rows).to_csv(out / "participants.tsv", sep="\t", index=False)

    participants_json = {
        "person_id": {
            "description": "Participant study id (4 digits; first digit 1/2 UW, 4/5 UCSD, 7/8 UAB)",
            "data_type": "string",
        },
        "clinical_site": {
            "description": "Data acquisition site",
            "data_type": "string",
            "levels": {
                "UW": "University of Washington",
                "UCSD": "University of California San Diego",
                "UAB": "University of Alabama at Birmingham",
            },
        },
        "study_group": {
            "description": "Diabetes status at recruitment",
            "data_type": "string",
            "levels": {
                "healthy": "No diabetes",
                "pre_diabetes_lifestyle_controlled": "Pre-diabetes or lifestyle-controlled type 2",
                GROUPS[2]: "Type 2 controlled by oral and/or non-insulin injectable medication",
                "insulin_dependent": "Type 2 treated with insulin",
            },
        },
        "age": {"description": "Age at the study visit", "data_type": "integer", "unit": "years"},
        "study_visit_date": {"description": "Date of the study visit (YYYY-MM-DD)", "data_type": "string"},
        "recommended_split": {
            "description": "Recommended data split",
            "data_type": "string",
            "levels": {"train": "training", "val": "validation", "test": "test"},
        },
    } | {
        d: {
            "description": f"Whether {d} data exist for the participant",
            "data_type": "string",
            "levels": {"TRUE": "present", "FALSE": "absent"},
        }
        for d in DATATYPES
    }
    (out / "participants.json").write_bytes(orjson.dumps(participants_json, option=orjson.OPT_INDENT_2))
    (out / "dataset_description.json").write_bytes(
        orjson.dumps(
            {
                "Title": "AI-READI flagship dataset (SYNTHETIC stand-in, v3 layout)",
                "Version": "3.0.0-synthetic",
                "Synthetic": True,
                "Seed": seed,
                "Participants": len(cohort),
                "Days": days,
                "Generator": "dataset_builders.synth (SenseCF)",
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    (out / "README.md").write_text(
        "# Synthetic AI-READI release\n\n"
        "Generated by `python -m dataset_builders.synth` (SenseCF). **Not health data**: every value comes\n"
        "from a latent model of glucose, sleep, activity and stress. The layout and file formats follow\n"
        "the v3 release (wearable and clinical datatypes only). See `synthetic_release.json` for the seed,\n"
        "the injected data quirks and their exact counts.\n"
    )

    person, observation = [], []
    for p in cohort:
        rng = participant_rng(seed, p.person_id, 4)
        year_of_birth = p.visit_date.year - p.age - int(rng.random() < 0.5)  # birthday before/after the visit
        person.append(
            {
                "person_id": p.person_id,
                "gender_concept_id": 0,
                "year_of_birth": year_of_birth,
                "month_of_birth": 0,
                "day_of_birth": 0,
                "birth_datetime": "1970-01-01 00:00:00",
                "race_concept_id": 0,
                "ethnicity_concept_id": 0,
                "person_source_value": p.person_id,
                "gender_source_value": " ",
                "gender_source_concept_id": 0,
                "race_source_concept_id": 0,
                "ethnicity_source_concept_id": 0,
            }
        )
        date = f"{p.visit_date.month}/{p.visit_date.day}/{p.visit_date.year % 100:02d}"  # M/D/YY as in v3
        for key, yes in screening_answers(p, seed).items():
            question, concept = SCREENING[key]
            answer = "Yes" if yes else "No"
            observation.append(
                {
                    "observation_id": len(observation) + 1,
                    "person_id": p.person_id,
                    "observation_concept_id": concept if yes else 0,
                    "observation_date": date,
                    "observation_datetime": f"{p.visit_date.isoformat()} 00:00:00",
                    "observation_type_concept_id": SURVEY_CONCEPT,
                    "value_as_string": answer,
                    "value_as_concept_id": YES_CONCEPT if yes else NO_CONCEPT,
                    "observation_source_value": f"{key}, {question}",
                    "observation_source_concept_id": 0,
                    "value_source_value": answer,
                }
            )
    (out / "clinical_data").mkdir(exist_ok=True)
    pd.DataFrame(person, columns=PERSON_COLUMNS).to_csv(out / "clinical_data/person.csv", index=False)
    pd.DataFrame(observation, columns=OBSERVATION_COLUMNS).to_csv(out / "clinical_data/observation.csv", index=False)

    if controlled:
        (out / CONTROLLED_FILE).parent.mkdir(exist_ok=True)
        demographics = [{"person_id": p.person_id, "sex": p.sex, "medication": p.medication} for p in cohort]
        pd.DataFrame(demographics).to_csv(out / CONTROLLED_FILE, sep="\t", index=False)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "--out", "exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise InputError(out, "--out", "output directory is not empty (use --force to replace a synthetic release)")
        if not (out / RELEASE_FILE).is_file():
            raise InputError(out, "--out", f"not empty and holds no {RELEASE_FILE}; refusing to delete it")


def _staging_dir(out: Path) -> Path:
    """A fresh hidden folder beside `out` (same file system, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out.parent.glob(f".{glob.escape(out.name)}.*.*"):  # of writers killed part-way
        pid = leftover.name[len(out.name) + 2 :].split(".")[0]
        if leftover.suffix in (".tmp", ".old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    staging = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _publish(staging: Path, out: Path) -> None:
    """Put the complete release at `out`; an old one (or an empty folder) is moved aside, then deleted."""
    aside = None
    if out.exists():
        aside = out.parent / f".{out.name}.{os.getpid()}.old"
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(out, aside)
    os.rename(staging, out)
    if aside is not None:
        shutil.rmtree(aside)


def write_release(
    out: str | Path,
    participants: int,
    days: int,
    seed: int,
    rates: QuirkRates | None = None,
    controlled: bool = True,
    workers: int = 1,
    force: bool = False,
    progress: bool = False,
) -> dict:
    """Write the whole release under `out`; returns the content of synthetic_release.json."""
    out = Path(out)
    rates = rates or QuirkRates()
    if days < 1:
        raise InputError("synth", "--days", f"must be >= 1, got {days}")
    cohort = draw_cohort(participants, seed)
    _check_out(out, force)
    staging = _staging_dir(out)
    try:
        release = _write_release_files(staging, cohort, participants, days, seed, rates, controlled, workers, progress)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return release


def _write_release_files(
    out: Path,
    cohort: list[Participant],
    participants: int,
    days: int,
    seed: int,
    rates: QuirkRates,
    controlled: bool,
    workers: int,
    progress: bool,
) -> dict:
    task = partial(write_participant, days=days, seed=seed, rates=rates, out=out)
    results = []
    with tqdm(total=len(cohort), desc="participants", unit="p", disable=not progress) as bar:
        if workers <= 1:
            for p in cohort:
                results.append(task(p))
                bar.update(1)
        else:  # imap keeps participant order, so the output does not depend on scheduling
            with get_context("fork").Pool(workers) as pool:
                for r in pool.imap(task, cohort, chunksize=4):
                    results.append(r)
                    bar.update(1)

    cgm_manifest = [{"person_id": r.person_id} | r.cgm_row for r in results]
    pd.DataFrame(cgm_manifest, columns=CGM_MANIFEST_COLUMNS).to_csv(
        out / "wearable_blood_glucose/manifest.tsv", sep="\t", index=False
    )
    garmin_manifest = [{"person_id": r.person_id} | r.garmin_row for r in results]
    (out / "wearable_activity_monitor").mkdir(exist_ok=True)
    pd.DataFrame(garmin_manifest, columns=GARMIN_MANIFEST_COLUMNS).to_csv(
        out / "wearable_activity_monitor/manifest.tsv", sep="\t", index=False
    )
    _root_files(out, cohort, results, seed, days, controlled)

    truth = pd.concat([r.days for r in results], ignore_index=True)
    (out / TRUTH_FILE).parent.mkdir(exist_ok=True)
    truth.to_csv(out / TRUTH_FILE, index=False, float_format="%.4f")

    counts = sum((r.counts for r in results), Counter())
    release = {
        "synthetic": True,
        "generator": "dataset_builders.synth",
        "layout": "aireadi-v3",
        "seed": seed,
        "participants": participants,
        "days": days,
        "controlled_file": CONTROLLED_FILE if controlled else None,
        "truth_file": TRUTH_FILE,
        "high_stress_threshold": HIGH_STRESS_THRESHOLD,
        "high_stress_day_share": round(float(truth.high_stress.mean()), 4),
        "quirk_rates": rates.model_dump(),
        "injected": {key: int(counts[key]) for key in INJECTED_MEANING},
        "injected_meaning": INJECTED_MEANING,
    }
    (out / RELEASE_FILE).write_bytes(orjson.dumps(release, option=orjson.OPT_INDENT_2))
    return release


app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
def main(
    out: Path = typer.Option(..., "--out", help="release directory to create (must be empty or absent)"),
    participants: int = typer.Option(60, min=1, help="number of participants"),
    days: int = typer.Option(10, min=1, help="full days of wearable data after the visit day"),
    seed: int = typer.Option(0, help="random seed; same seed -> byte-identical files"),
    controlled: bool = typer.Option(
        True, "--controlled/--no-controlled", help=f"write the controlled-access stand-in {CONTROLLED_FILE}"
    ),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), min=1, help="processes writing participants"),
    force: bool = typer.Option(False, "--force", help="replace an existing synthetic release in --out"),
    quirk_rate_cgm_low: float = typer.Option(QuirkRates().cgm_low, help='share of CGM readings written "Low"'),
    quirk_rate_cgm_high: float = typer.Option(QuirkRates().cgm_high, help='share of CGM readings written "High"'),
    quirk_rate_stress_sentinel: float = typer.Option(
        QuirkRates().stress_sentinel, help="share of stress rows written -1/-2"
    ),
    quirk_rate_heart_rate_zero: float = typer.Option(
        QuirkRates().heart_rate_zero, help="share of heart-rate rows written 0"
    ),
    quirk_rate_sleep_unknown: float = typer.Option(
        QuirkRates().sleep_unknown, help='share of sleep records with stage "unknown"'
    ),
    quirk_rate_steps_string: float = typer.Option(
        QuirkRates().steps_string, help='share of stepping records with a string value ("70")'
    ),
    quirk_rate_steps_float: float = typer.Option(
        QuirkRates().steps_float, help="share of stepping records with a float value (70.0)"
    ),
    quirk_rate_steps_empty: float = typer.Option(
        QuirkRates().steps_empty, help='share of activity records blanked to ""'
    ),
    quirk_rate_duplicate: float = typer.Option(QuirkRates().duplicate, help="share of clean records written twice"),
    quirk_rate_missing_file: float = typer.Option(
        QuirkRates().missing_file, help="share of participant files not written"
    ),
) -> None:
    """Write a synthetic AI-READI release (v3 layout) with a learnable stress signal and known quirks."""
    try:
        rates = QuirkRates(
            cgm_low=quirk_rate_cgm_low,
            cgm_high=quirk_rate_cgm_high,
            stress_sentinel=quirk_rate_stress_sentinel,
            heart_rate_zero=quirk_rate_heart_rate_zero,
            sleep_unknown=quirk_rate_sleep_unknown,
            steps_string=quirk_rate_steps_string,
            steps_float=quirk_rate_steps_float,
            steps_empty=quirk_rate_steps_empty,
            duplicate=quirk_rate_duplicate,
            missing_file=quirk_rate_missing_file,
        )
    except ValidationError as err:
        raise typer.BadParameter(f"quirk rates: {err}") from err
    # W&B: the release's parent is the run directory (RUN/release in the recipes)
    with stage_run(RunDir(out.resolve().parent), "release", outputs=[out / "synthetic_release.json"],
                   creates_run=True):
        release = write_release(out, participants, days, seed, rates, controlled, workers, force, progress=True)
        write_provenance(
            out,
            config={k: v for k, v in release.items() if k != "injected_meaning"},
            seed=seed,
            source={"synthetic": True, "seed": seed},
        )
    typer.echo(
        f"wrote {participants} participants x {days} days to {out}; "
        f"high-stress days {release['high_stress_day_share']:.1%}; injected {release['injected']}"
    )


if __name__ == "__main__":
    run_cli(app)
