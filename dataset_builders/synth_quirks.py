"""The real release's data quirks, injected into one participant's streams at known rates.

Each quirk picks k ~ Binomial(eligible, rate) records without replacement, so its count is
exact and recorded. Duplicates copy only records that carry no other quirk, so every value
count below is the same before and after a reader drops exact duplicates.

The tables returned hold numbers and codes, one row per record as it will be written
(duplicates included); `synth_json` turns them into JSON text.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dataset_builders.synth_model import SEDENTARY, WALKING, Streams

MODALITIES = ("cgm", "heart_rate", "stress", "activity", "sleep")

# Codes in the tables.
CGM_NUMBER, CGM_LOW, CGM_HIGH = 0, 1, 2
STEPS_INT, STEPS_STRING, STEPS_FLOAT, STEPS_EMPTY = 0, 1, 2, 3
SLEEP_UNKNOWN = 4  # next to synth_model's AWAKE..REM = 0..3

# What each key of synthetic_release.json "injected" counts (over every file written).
INJECTED_MEANING = {
    "cgm_low": 'CGM records written with blood_glucose.value "Low" (the participant\'s lowest readings)',
    "cgm_high": 'CGM records written with blood_glucose.value "High" (the participant\'s highest readings)',
    "stress_neg1": "stress records written with value -1 (sentinel; at a minute without walking/running)",
    "stress_neg2": "stress records written with value -2 (sentinel; at a walking/running minute)",
    "heart_rate_zero": "heart-rate records written with value 0 (device-off sentinel)",
    "sleep_unknown": 'sleep records written with sleep_stage_state "unknown"',
    "steps_string": 'activity records whose base_movement_quantity.value is a numeric string, e.g. "70"',
    "steps_float": "activity records whose base_movement_quantity.value is a float, e.g. 70.0",
    "steps_empty": 'activity records with activity_name "" and base_movement_quantity.value ""',
    **{
        f"duplicate_{m}": f"extra exact copies of {m} records, each right after its original "
        f"(the file holds this many more records than distinct ones)"
        for m in MODALITIES
    },
    **{f"missing_{m}": f'participants whose {m} file was not written (manifest path "None")' for m in MODALITIES},
}


class QuirkRates(BaseModel):
    """Probability per eligible record (per participant file for `missing_file`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cgm_low: float = Field(0.005, ge=0, le=0.5, description='share of CGM readings written as "Low"')
    cgm_high: float = Field(0.005, ge=0, le=0.5, description='share of CGM readings written as "High"')
    stress_sentinel: float = Field(0.5, ge=0, le=1, description="share of stress rows written as -1/-2")
    heart_rate_zero: float = Field(0.05, ge=0, le=1, description="share of heart-rate rows written as 0")
    sleep_unknown: float = Field(0.01, ge=0, le=1, description='share of sleep records with stage "unknown"')
    steps_string: float = Field(0.02, ge=0, le=1, description="share of stepping records with a string value")
    steps_float: float = Field(0.02, ge=0, le=1, description="share of stepping records with a float value")
    steps_empty: float = Field(0.005, ge=0, le=1, description='share of activity records blanked to ""')
    duplicate: float = Field(0.01, ge=0, le=1, description="share of clean records written twice")
    missing_file: float = Field(0.02, ge=0, le=1, description="share of participant files not written")

    @classmethod
    def none(cls) -> QuirkRates:
        return cls(**dict.fromkeys(cls.model_fields, 0.0))


Table = dict[str, np.ndarray]


def _pick(rng: np.random.Generator, eligible: np.ndarray, rate: float) -> np.ndarray:
    """Sorted indices: k ~ Binomial(len(eligible), rate) of `eligible`, without replacement."""
    k = int(rng.binomial(eligible.size, rate)) if eligible.size else 0
    return np.sort(rng.choice(eligible, size=k, replace=False)) if k else np.empty(0, np.int64)


def _duplicate(rng: np.random.Generator, table: Table, clean: np.ndarray, rate: float) -> tuple[Table, int]:
    """Write the picked clean rows twice, the copy right after the original."""
    picked = _pick(rng, np.flatnonzero(clean), rate)
    repeats = np.ones(clean.size, np.int64)
    repeats[picked] = 2
    return {key: np.repeat(col, repeats) for key, col in table.items()}, int(picked.size)


def inject(streams: Streams, rates: QuirkRates, rng: np.random.Generator):
    """Tables to write per modality (None = file not written), exact quirk counts, and the
    per-minute mask of stress values written as real values (for the day labels)."""
    counts: Counter[str] = Counter()
    tables: dict[str, Table | None] = {}
    missing = {m: bool(rng.random() < rates.missing_file) for m in MODALITIES}
    n_minutes = streams.grid.n_minutes
    minutes = np.arange(n_minutes)

    # CGM: the lowest readings become "Low", the highest "High" (sensor saturation).
    value = streams.cgm_value
    flag = np.zeros(value.size, np.int8)
    order = np.argsort(value, kind="stable")
    n_low = int(rng.binomial(value.size, rates.cgm_low))
    n_high = min(int(rng.binomial(value.size, rates.cgm_high)), value.size - n_low)
    flag[order[:n_low]] = CGM_LOW
    flag[order[value.size - n_high :]] = CGM_HIGH
    cgm = {"second": streams.cgm_second, "value": value, "flag": flag, "transmitter_time": streams.cgm_transmitter_time}
    tables["cgm"], dup = _duplicate(rng, cgm, flag == CGM_NUMBER, rates.duplicate)
    if not missing["cgm"]:
        counts["cgm_low"] += n_low
        counts["cgm_high"] += n_high
        counts["duplicate_cgm"] += dup

    # Heart rate: 0 = no reading.
    hr = streams.heart_rate.copy()
    zero = _pick(rng, minutes, rates.heart_rate_zero)
    hr[zero] = 0
    tables["heart_rate"], dup = _duplicate(rng, {"minute": minutes, "value": hr}, hr != 0, rates.duplicate)
    if not missing["heart_rate"]:
        counts["heart_rate_zero"] += zero.size
        counts["duplicate_heart_rate"] += dup

    # Stress: sentinels; -2 ("too much motion") while walking or running, else -1.
    stress = streams.stress.copy()
    sentinel = _pick(rng, minutes, rates.stress_sentinel)
    moving = streams.activity_code[sentinel] >= WALKING
    stress[sentinel] = np.where(moving, -2, -1)
    stress_valid = stress >= 0
    tables["stress"], dup = _duplicate(rng, {"minute": minutes, "value": stress}, stress_valid, rates.duplicate)
    if not missing["stress"]:
        counts["stress_neg1"] += int((~moving).sum())
        counts["stress_neg2"] += int(moving.sum())
        counts["duplicate_stress"] += dup

    # Activity: blank records ("" name and value), then string / float step values on stepping records.
    form = np.zeros(streams.activity_start.size, np.int8)
    empty = _pick(rng, np.arange(1, form.size), rates.steps_empty)  # the first record anchors the chain
    form[empty] = STEPS_EMPTY
    stepping = (streams.activity_record_code != SEDENTARY) & (form == STEPS_INT)
    as_string = _pick(rng, np.flatnonzero(stepping), rates.steps_string)
    form[as_string] = STEPS_STRING
    stepping[as_string] = False
    as_float = _pick(rng, np.flatnonzero(stepping), rates.steps_float)
    form[as_float] = STEPS_FLOAT
    activity = {
        "start": streams.activity_start,
        "end": streams.activity_end,
        "code": streams.activity_record_code,
        "steps": streams.activity_record_steps,
        "form": form,
    }
    tables["activity"], dup = _duplicate(rng, activity, form == STEPS_INT, rates.duplicate)
    if not missing["activity"]:
        counts["steps_empty"] += empty.size
        counts["steps_string"] += as_string.size
        counts["steps_float"] += as_float.size
        counts["duplicate_activity"] += dup

    # Sleep: stages Garmin could not classify.
    stage = streams.sleep_stage.copy()
    unknown = _pick(rng, np.arange(stage.size), rates.sleep_unknown)
    stage[unknown] = SLEEP_UNKNOWN
    sleep = {"start": streams.sleep_start, "end": streams.sleep_end, "stage": stage}
    tables["sleep"], dup = _duplicate(rng, sleep, stage != SLEEP_UNKNOWN, rates.duplicate)
    if not missing["sleep"]:
        counts["sleep_unknown"] += unknown.size
        counts["duplicate_sleep"] += dup

    for m in MODALITIES:
        if missing[m]:
            tables[m] = None
            counts[f"missing_{m}"] += 1
    return tables, counts, stress_valid
