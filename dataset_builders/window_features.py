"""Windows and the 12 AI-READI features (paper §II-C), vectorised over each participant's records.

Windows are 2 h long and start on every whole hour of the participant's local clock (50%
overlap), tiling the CGM wear period. All times are local wall-clock seconds (tz-naive).

Definitions (dataset_builders/aireadi_spec.yaml says the same in words):
- night of a window = the main sleep period (the longest in staged minutes, at least
  MIN_NIGHT_MINUTES) whose local end falls on the window's start date between 00:00 and
  14:00; a sleep period is a run of sleep-stage records with gaps of at most SLEEP_GAP_S.
  Stage percentages are over awake+light+deep+rem minutes ("unknown" excluded); each is
  rounded to display precision and light absorbs the rounding so the four sum to exactly 100.
- steps_mean = mean step value of the activity records overlapping the window (sedentary
  records count as 0, records without a value are left out); a zero-length record counts
  where it sits.
- glucose_mean = mean CGM reading in [start, start + 2 h), Low/High clipped to 40/400.
- tir_pct = % of those readings within 70-180 mg/dL (Low and High fall outside).
- hyper_events = runs of >= 3 consecutive readings > 180 mg/dL inside the window, where
  consecutive means at most 7.5 min apart.
- label high_stress = 1 iff the mean of valid Garmin stress values over the participant's
  local day of the window start (scope "day") or over the window (scope "window") is
  > threshold; exactly the threshold is not high.

A window is dropped, counted under the first reason that applies (in DROP_REASONS order),
when it has fewer than half the expected CGM readings, no activity record with a step value,
no night, or too few valid stress values for its label.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from dataset_builders.aireadi_reader import (
    GLUCOSE_HIGH,
    GLUCOSE_LOW,
    SLEEP_STAGES,
    Activity,
    Glucose,
    ParticipantData,
    Sleep,
    Stress,
)
from sensecf.rundir import GROUP_COL, ID_COL
from sensecf.spec import DatasetSpec

HOUR = 3600
DAY = 24 * HOUR
WINDOW_S = 2 * HOUR
STEP_S = HOUR
EXPECTED_CGM_READINGS = WINDOW_S // 300  # one Dexcom G6 reading per 5 min
MIN_CGM_FRACTION = 0.5
TIR_LOW, TIR_HIGH = 70.0, 180.0
HYPER_MGDL = 180.0
HYPER_RUN = 3
HYPER_MAX_GAP_S = 450  # 7.5 min: one missed reading breaks a run, jitter does not
SLEEP_GAP_S = HOUR
NIGHT_END_BEFORE_S = 14 * HOUR
MIN_NIGHT_MINUTES = 120.0
STAGE_COLUMNS = ("awake_pct", "light_pct", "deep_pct", "rem_pct")  # in SLEEP_STAGES code order
DROP_REASONS = ("cgm_coverage", "no_activity", "no_sleep_night", "few_stress_values")


@dataclass(frozen=True)
class LabelRule:
    scope: Literal["day", "window"] = "day"
    threshold: float = 75.0
    min_values: int = 30  # valid stress values needed in the scope for a label


def _seconds(t: np.ndarray) -> np.ndarray:
    return t.astype("datetime64[s]").astype(np.int64)


def window_starts(glucose_time: np.ndarray) -> np.ndarray:
    """Whole local hours from the first CGM reading's hour to one hour before the last's, so
    every window [s, s + 2 h) touches the wear period."""
    if len(glucose_time) == 0:
        return np.empty(0, dtype=np.int64)
    t = _seconds(glucose_time)
    first, last = t.min() // HOUR * HOUR, t.max() // HOUR * HOUR
    return np.arange(first, last, STEP_S, dtype=np.int64)


def _window_sum(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sum of the values between indices lo and hi from their cumulative sum (leading 0)."""
    return cum[hi] - cum[lo]


def _cumsum0(x: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(x)])


def hyper_event_counts(t: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Runs of >= 3 linked readings > 180 mg/dL inside each window [lo, hi) of sorted readings.

    Reading i is linked to i-1 when both are high and at most 7.5 min apart. A run counts
    once, at its first reading inside the window; a run that began before the window
    counts when at least 3 of its readings fall inside."""
    n = len(v)
    high = v > HYPER_MGDL
    link = np.zeros(n, dtype=bool)
    if n > 1:
        link[1:] = high[1:] & high[:-1] & (np.diff(t) <= HYPER_MAX_GAP_S)
    # has3[j]: readings j, j+1, j+2 form a linked high run
    has3 = np.zeros(n, dtype=bool)
    if n > 2:
        has3[:-2] = high[:-2] & link[1:-1] & link[2:]
    run_start3 = has3 & ~link
    # run starts j with j + 2 < hi, i.e. j in [lo, hi - 2)
    upper = np.maximum(hi - (HYPER_RUN - 1), lo)
    counts = _window_sum(_cumsum0(run_start3), lo, upper)
    # a run entering the window from before: its first inside reading is lo
    lo_safe = np.minimum(lo, max(n - 1, 0))
    entering = (hi - lo >= HYPER_RUN) & (has3[lo_safe] & link[lo_safe] if n else False)
    return counts + entering.astype(np.int64)


def glucose_windows(glucose: Glucose, starts: np.ndarray) -> dict[str, np.ndarray]:
    t = _seconds(glucose.time)
    v = glucose.value
    lo = np.searchsorted(t, starts, "left")
    hi = np.searchsorted(t, starts + WINDOW_S, "left")
    n = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = _window_sum(_cumsum0(np.clip(v, GLUCOSE_LOW + 1, GLUCOSE_HIGH - 1)), lo, hi) / n
        in_range = (v >= TIR_LOW) & (v <= TIR_HIGH)
        tir = 100.0 * _window_sum(_cumsum0(in_range), lo, hi) / n
    return {"n": n, "glucose_mean": mean, "tir_pct": tir, "hyper_events": hyper_event_counts(t, v, lo, hi)}


def steps_windows(activity: Activity, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(records with a step value overlapping each window, their mean step value).

    Overlap is start < window end and end > window start, with a zero-length record treated
    as lasting 1 s. Every record that ends before a window starts also starts before it ends,
    so count(overlap) = #(start < window end) - #(end <= window start), no per-window loop."""
    valid = ~np.isnan(activity.steps)
    s = _seconds(activity.start)[valid]
    e = np.maximum(_seconds(activity.end)[valid], s + 1)
    x = activity.steps[valid]
    by_start, by_end = np.argsort(s, kind="stable"), np.argsort(e, kind="stable")
    s_sorted, e_sorted = s[by_start], e[by_end]
    before_end = np.searchsorted(s_sorted, starts + WINDOW_S, "left")
    ended = np.searchsorted(e_sorted, starts, "right")
    count = before_end - ended
    total = _cumsum0(x[by_start])[before_end] - _cumsum0(x[by_end])[ended]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return count, mean


def sleep_percentages(minutes: np.ndarray, decimals: int = 1) -> np.ndarray:
    """Rows of (awake, light, deep, rem) minutes -> percentages at `decimals` summing to
    exactly 100: light takes the rounding (the largest stage does when light is under 1 %,
    so no share goes negative)."""
    minutes = np.atleast_2d(np.asarray(minutes, dtype=float))
    raw = 100.0 * minutes / minutes.sum(axis=1, keepdims=True)
    pct = np.round(raw, decimals)
    light = SLEEP_STAGES["light"]
    absorber = np.where(raw[:, light] >= 1.0, light, raw.argmax(axis=1))
    rows = np.arange(len(pct))
    pct[rows, absorber] = 0.0
    pct[rows, absorber] = np.round(100.0 - pct.sum(axis=1), decimals)
    return pct


def sleep_nights(sleep: Sleep, decimals: int = 1) -> pd.DataFrame:
    """One row per local date that has a night: index = day number (local seconds // DAY),
    columns STAGE_COLUMNS + staged_minutes."""
    columns = [*STAGE_COLUMNS, "staged_minutes"]
    if len(sleep) == 0:
        return pd.DataFrame(columns=columns, index=pd.Index([], dtype=np.int64, name="day"))
    s, e = _seconds(sleep.start), _seconds(sleep.end)
    order = np.lexsort((e, s))
    s, e, stage = s[order], e[order], sleep.stage[order]
    reach = np.maximum.accumulate(e)
    new_period = np.concatenate([[True], s[1:] - reach[:-1] > SLEEP_GAP_S])
    period = np.cumsum(new_period) - 1
    n_periods = period[-1] + 1
    minutes = np.zeros((n_periods, len(STAGE_COLUMNS)))
    staged = stage >= 0
    np.add.at(minutes, (period[staged], stage[staged]), (e[staged] - s[staged]) / 60.0)
    period_end = np.zeros(n_periods, dtype=np.int64)
    np.maximum.at(period_end, period, e)
    total = minutes.sum(axis=1)
    day, time_of_day = period_end // DAY, period_end % DAY
    eligible = (time_of_day < NIGHT_END_BEFORE_S) & (total >= MIN_NIGHT_MINUTES)
    if not eligible.any():
        return pd.DataFrame(columns=columns, index=pd.Index([], dtype=np.int64, name="day"))
    rows = np.flatnonzero(eligible)
    # the main period of each date: most staged minutes, the earlier one on a tie
    rows = rows[np.lexsort((rows, -total[rows], day[rows]))]
    _, first = np.unique(day[rows], return_index=True)
    main = rows[first]
    out = pd.DataFrame(sleep_percentages(minutes[main], decimals), columns=list(STAGE_COLUMNS),
                       index=pd.Index(day[main], name="day"))
    out["staged_minutes"] = total[main]
    return out


def stress_windows(stress: Stress, starts: np.ndarray, rule: LabelRule) -> tuple[np.ndarray, np.ndarray]:
    """(valid stress values in each window's label scope, their mean)."""
    valid = ~np.isnan(stress.value)
    t, v = _seconds(stress.time)[valid], stress.value[valid]
    if rule.scope == "window":
        lo = np.searchsorted(t, starts, "left")
        hi = np.searchsorted(t, starts + WINDOW_S, "left")
        count, total = hi - lo, _window_sum(_cumsum0(v), lo, hi)
    elif rule.scope == "day":
        if len(t) == 0:
            return np.zeros(len(starts), dtype=np.int64), np.full(len(starts), np.nan)
        day, first = t // DAY, t.min() // DAY
        counts = np.bincount(day - first)
        sums = np.bincount(day - first, weights=v)
        wday = starts // DAY - first
        inside = (wday >= 0) & (wday < len(counts))
        idx = np.clip(wday, 0, len(counts) - 1)
        count = np.where(inside, counts[idx], 0)
        total = np.where(inside, sums[idx], 0.0)
    else:
        raise ValueError(f"label scope must be 'day' or 'window', got {rule.scope!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return count, mean


def participant_windows(
    data: ParticipantData, immutables: dict, rule: LabelRule, spec: DatasetSpec
) -> tuple[pd.DataFrame, int, Counter]:
    """(kept windows with the spec's features, label and stress_mean; windows built; dropped
    windows per first failing reason)."""
    starts = window_starts(data.glucose.time)
    glucose = glucose_windows(data.glucose, starts)
    n_steps, steps_mean = steps_windows(data.activity, starts)
    nights = sleep_nights(data.sleep, spec.feature("light_pct").decimals)
    night_row = nights.index.get_indexer(starts // DAY)
    n_stress, stress_mean = stress_windows(data.stress, starts, rule)

    failing = {
        "cgm_coverage": glucose["n"] < MIN_CGM_FRACTION * EXPECTED_CGM_READINGS,
        "no_activity": n_steps == 0,
        "no_sleep_night": night_row < 0,
        "few_stress_values": n_stress < max(rule.min_values, 1),
    }
    dropped: Counter = Counter()
    keep = np.ones(len(starts), dtype=bool)
    for reason in DROP_REASONS:
        now = keep & failing[reason]
        dropped[reason] = int(now.sum())
        keep &= ~failing[reason]

    start_times = pd.to_datetime(starts[keep], unit="s")
    stages = nights.to_numpy()[night_row[keep]]
    columns = {
        ID_COL: [f"{data.participant_id}_{s}" for s in start_times.strftime("%Y%m%dT%H")],
        GROUP_COL: np.full(int(keep.sum()), data.participant_id, dtype=object),
        "window_start": start_times,
        **{col: stages[:, i].astype(float) for i, col in enumerate(STAGE_COLUMNS)},
        "steps_mean": steps_mean[keep],
        "glucose_mean": glucose["glucose_mean"][keep],
        "hyper_events": glucose["hyper_events"][keep],
        "tir_pct": glucose["tir_pct"][keep],
        **{name: np.full(int(keep.sum()), value, dtype=object if isinstance(value, str) else None)
           for name, value in immutables.items()},
        spec.label.name: (stress_mean[keep] > rule.threshold).astype(np.int64),
        "stress_mean": stress_mean[keep],
    }
    frame = pd.DataFrame(columns)
    return round_features(frame, spec), len(starts), dropped


def round_features(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Numeric spec features at display precision (integers as int64)."""
    rounded = {}
    for f in spec.numeric:
        if f.name in frame.columns:
            values = frame[f.name].to_numpy(dtype=float)
            rounded[f.name] = np.round(values).astype(np.int64) if f.kind == "integer" else np.round(values, f.decimals)
    return frame.assign(**rounded)
