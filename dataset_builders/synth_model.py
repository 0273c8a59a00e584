"""Latent physiology of the synthetic AI-READI cohort: numbers only, no file formats.

One participant is simulated on a UTC minute grid that runs from local noon of the study-visit
day (day -1, when the devices are handed out) to local midnight after `days` full local days
(day 0 .. days-1). Night n (bedtime on day n-1, wake-up on day n) precedes day n.

What the downstream features can learn (all effects are on the day's latent stress level):
  study group          -> glucose level, meal excursions and drift (healthy ~100 mg/dL,
                          insulin-dependent ~170 mg/dL with large excursions)
  previous night       -> more awake %, less deep + REM %  => higher stress
  daily steps          -> more steps                       => lower stress
  time above 180 mg/dL -> more hyperglycaemia              => higher stress
  participant          -> a stress propensity (partly from age and sex, mostly unobserved)
A day is "high stress" when the mean of its valid per-minute Garmin stress values exceeds 75.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from scipy.signal import lfilter

GROUPS = (
    "healthy",
    "pre_diabetes_lifestyle_controlled",
    "oral_medication_and_or_non_insulin_injectable_medication_controlled",
    "insulin_dependent",
)
MEDICATION = {
    "healthy": "none",
    "pre_diabetes_lifestyle_controlled": "none",
    "oral_medication_and_or_non_insulin_injectable_medication_controlled": "oral_or_noninsulin_injectable",
    "insulin_dependent": "insulin",
}
# site -> (first digits of its ids, IANA zone, Garmin/Dexcom header code); from the format notes §2.2.
SITES = {
    "UW": ((1, 2), "America/Los_Angeles", "pst"),
    "UCSD": ((4, 5), "America/Los_Angeles", "pst"),
    "UAB": ((7, 8), "America/Chicago", "cst"),
}
SITE_SHARES = {"UW": 0.35, "UCSD": 0.30, "UAB": 0.35}
MAX_PER_SITE = 2 * 999  # two id ranges of 999 ids each (e.g. 1001-1999 and 2001-2999)
SPLIT_SHARES = {"train": 0.70, "val": 0.15, "test": 0.15}

SLEEP_STAGES = ("awake", "light", "deep", "rem")  # codes 0..3
AWAKE, LIGHT, DEEP, REM = range(4)
ACTIVITIES = ("sedentary", "generic", "walking", "running")  # codes 0..3
SEDENTARY, GENERIC, WALKING, RUNNING = range(4)

HIGH_STRESS_THRESHOLD = 75.0
CGM_PERIOD_S = 300
GLUCOSE_MIN, GLUCOSE_MAX = 40, 400  # Dexcom G6 reporting range; outside it reads "Low"/"High"
HYPER_MG_DL = 180
TIR_RANGE = (70, 180)

# Per study group: baseline glucose, its between-participant sd, meal excursion amplitude,
# time to excursion peak (min), sd of the slow drift.
GLUCOSE_BY_GROUP = {
    "healthy": (93.0, 7.0, 28.0, 40.0, 5.0),
    "pre_diabetes_lifestyle_controlled": (101.0, 9.0, 40.0, 48.0, 8.0),
    "oral_medication_and_or_non_insulin_injectable_medication_controlled": (118.0, 14.0, 58.0, 58.0, 14.0),
    "insulin_dependent": (140.0, 18.0, 78.0, 65.0, 22.0),
}
WALKING_BY_GROUP = {  # log-scale shift of daily walking minutes
    "healthy": 0.10,
    "pre_diabetes_lifestyle_controlled": 0.0,
    "oral_medication_and_or_non_insulin_injectable_medication_controlled": -0.08,
    "insulin_dependent": -0.15,
}

# Day-level stress: mean + propensity + effects of the drivers (standardised) + day noise.
STRESS_MEAN = 71.5
STRESS_PROPENSITY_SD = 6.0
STRESS_DAY_SD = 4.5
STRESS_AWAKE = 4.5  # per (awake % - 9) / 5
STRESS_RESTORATIVE = -3.5  # per (deep + REM % - 37) / 7
STRESS_STEPS = -3.0  # per (daily steps - 6500) / 3000
STRESS_HYPER = 14.0  # per share of the day's readings above 180 mg/dL


@dataclass(frozen=True)
class Participant:
    index: int
    person_id: str
    site: str
    study_group: str
    age: int
    sex: str
    visit_date: date
    split: str
    stress_propensity: float

    @property
    def timezone(self) -> str:
        return SITES[self.site][1]

    @property
    def tz_code(self) -> str:
        return SITES[self.site][2]

    @property
    def medication(self) -> str:
        return MEDICATION[self.study_group]


def draw_cohort(n: int, seed: int) -> list[Participant]:
    """`n` participants: sites ~35/30/35, study groups balanced, ages 40-85, split 70/15/15."""
    if n < 1:
        raise ValueError(f"participants must be >= 1, got {n}")
    if n > MAX_PER_SITE * len(SITES):
        raise ValueError(f"participants must be <= {MAX_PER_SITE * len(SITES)} (4-digit ids per site), got {n}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    sites = rng.choice(list(SITE_SHARES), size=n, p=list(SITE_SHARES.values()))
    groups = rng.permutation(np.resize(np.arange(len(GROUPS)), n))
    ages = np.clip(np.round(rng.normal(56 + 4 * groups, 9)), 40, 85).astype(int)
    sexes = rng.choice(["female", "male"], size=n)
    n_val = round(n * SPLIT_SHARES["val"])
    n_test = round(n * SPLIT_SHARES["test"])
    splits = rng.permutation(["val"] * n_val + ["test"] * n_test + ["train"] * (n - n_val - n_test))
    visit_offsets = rng.integers(0, 365, size=n)
    propensity = rng.normal(0, STRESS_PROPENSITY_SD, size=n) + 2.0 * (sexes == "female") - 0.12 * (ages - 60)
    out, per_site = [], dict.fromkeys(SITES, 0)
    for i in range(n):
        site = str(sites[i])
        if per_site[site] >= MAX_PER_SITE:  # spill into the next site with room
            site = next(s for s in SITES if per_site[s] < MAX_PER_SITE)
        k = per_site[site]
        per_site[site] += 1
        first_digit = SITES[site][0][k % 2]  # alternate 1xxx/2xxx so both id ranges occur
        out.append(
            Participant(
                index=i,
                person_id=str(first_digit * 1000 + k // 2 + 1),
                site=site,
                study_group=GROUPS[groups[i]],
                age=int(ages[i]),
                sex=str(sexes[i]),
                visit_date=date(2023, 7, 1) + timedelta(days=int(visit_offsets[i])),
                split=str(splits[i]),
                stress_propensity=float(propensity[i]),
            )
        )
    return sorted(out, key=lambda p: int(p.person_id))


@dataclass
class Grid:
    """UTC minute grid of one participant with each minute's local day and local time of day."""

    t0: datetime  # UTC, tz-aware; minute 0
    n_minutes: int
    local_day: np.ndarray  # -1 (visit day) .. days-1
    local_minute: np.ndarray  # minutes since local midnight
    midnight: np.ndarray  # grid index of local midnight of day 0 .. days (the last = n_minutes)

    def timestamps(self) -> list[str]:
        """'YYYY-MM-DDTHH:MM:SSZ' for grid minutes 0..n_minutes (inclusive: interval ends)."""
        t0 = np.datetime64(self.t0.replace(tzinfo=None), "m")
        stamps = np.datetime_as_string(t0 + np.arange(self.n_minutes + 1), unit="s")
        return [s + "Z" for s in stamps.tolist()]


def make_grid(p: Participant, days: int) -> Grid:
    tz = ZoneInfo(p.timezone)
    start = datetime.combine(p.visit_date, time(12), tz).astimezone(UTC)
    end = datetime.combine(p.visit_date + timedelta(days=days + 1), time(0), tz).astimezone(UTC)
    n = int((end - start).total_seconds() // 60)
    local = pd.date_range(start, periods=n, freq="min").tz_convert(p.timezone).tz_localize(None)
    local_day = ((local.normalize() - pd.Timestamp(p.visit_date)).days - 1).to_numpy(np.int32)
    local_minute = (local.hour * 60 + local.minute).to_numpy(np.int32)
    midnight = np.searchsorted(local_day, np.arange(days + 1))
    return Grid(start, n, local_day, local_minute, midnight)


@dataclass
class Streams:
    """Everything one participant's devices would record, before any quirk is injected."""

    grid: Grid
    cgm_second: np.ndarray  # seconds since grid t0
    cgm_value: np.ndarray  # mg/dL, int, within 40..400
    cgm_transmitter_time: np.ndarray  # seconds since the transmitter started
    heart_rate: np.ndarray  # bpm per grid minute
    stress: np.ndarray  # 0..100 per grid minute
    activity_code: np.ndarray  # per grid minute: SEDENTARY .. RUNNING
    steps: np.ndarray  # per grid minute
    activity_start: np.ndarray  # activity records (chained intervals), grid minutes
    activity_end: np.ndarray
    activity_record_code: np.ndarray
    activity_record_steps: np.ndarray
    sleep_start: np.ndarray  # sleep-stage records, grid minutes
    sleep_end: np.ndarray
    sleep_stage: np.ndarray  # AWAKE .. REM
    nights: pd.DataFrame  # realised stage % of night n (precedes day n)
    day_stress_level: np.ndarray  # latent level of day -1 .. days-1


def participant_rng(seed: int, person_id: str, stream: int) -> np.random.Generator:
    """Independent generator per (seed, participant, purpose): results do not depend on worker order."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(person_id), stream)))


def _ar1(rng: np.random.Generator, n: int, timescale: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise with the given sd and correlation time (in samples)."""
    phi = np.exp(-1.0 / timescale)
    shocks = rng.normal(0, sd * np.sqrt(1 - phi**2), n)
    shocks[0] = rng.normal(0, sd)
    return lfilter([1.0], [1.0, -phi], shocks)


def _sleep(rng: np.random.Generator, grid: Grid, days: int, quality: float):
    """Stage records of nights 0..days-1, an asleep mask per minute and each night's realised %."""
    starts, ends, stages, asleep = [], [], [], np.zeros(grid.n_minutes, bool)
    bed_habit, wake_habit = rng.normal(0, 25), rng.normal(0, 25)
    rows = []
    for night in range(days):
        mid = grid.midnight[night]
        bed = int(mid + round(-75 + bed_habit + rng.normal(0, 30)))
        wake = int(mid + round(405 + wake_habit + rng.normal(0, 30)))
        q = quality + rng.normal(0, 1)
        p_awake = np.clip(0.08 - 0.03 * q, 0.02, 0.30)
        p_deep = np.clip(0.16 + 0.03 * q, 0.04, 0.30)
        p_rem = np.clip(0.21 + 0.025 * q, 0.08, 0.32)
        probs = np.array([p_awake, 1 - p_awake - p_deep - p_rem, p_deep, p_rem])
        lengths = np.round(rng.gamma(2.0, 4.0, size=160) + 2).astype(int)
        bounds = bed + np.concatenate([[0], np.cumsum(lengths)])
        n_seg = int(np.searchsorted(bounds, wake))  # segments that start before wake-up
        bounds = np.append(bounds[:n_seg], wake)
        seg_stage = rng.choice(4, size=n_seg, p=probs)
        seg_stage[0] = LIGHT  # sleep onset
        keep = np.concatenate([[True], seg_stage[1:] != seg_stage[:-1]])  # merge repeats
        rec_start = bounds[:-1][keep]
        rec_end = np.append(rec_start[1:], wake)
        rec_stage = seg_stage[keep]
        minutes = np.bincount(rec_stage, weights=rec_end - rec_start, minlength=4)
        pct = 100 * minutes / minutes.sum()
        rows.append(
            {
                "night": night,
                "awake_pct": pct[AWAKE],
                "light_pct": pct[LIGHT],
                "deep_pct": pct[DEEP],
                "rem_pct": pct[REM],
                "bed": bed,
                "wake": wake,
            }
        )
        starts.append(rec_start)
        ends.append(rec_end)
        stages.append(rec_stage)
        asleep[bed:wake] = True
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(stages), asleep, pd.DataFrame(rows)


def _activity(rng: np.random.Generator, p: Participant, grid: Grid, days: int, nights: pd.DataFrame):
    """Per-minute activity code and steps: short generic bouts, walks, the odd run; none asleep."""
    n = grid.n_minutes
    code = np.zeros(n, np.int8)
    walk_median = np.exp(np.log(55) + WALKING_BY_GROUP[p.study_group] + rng.normal(0, 0.35))
    run_prob = rng.beta(1, 6)
    awake_from = np.concatenate([[0], nights.wake.to_numpy()])  # day -1 .. days-1
    awake_to = np.concatenate([nights.bed.to_numpy(), [n]])
    for lo, hi in zip(awake_from, awake_to, strict=True):
        lo, hi = int(lo) + 20, int(hi) - 20
        if hi - lo < 60:
            continue
        share = min(1.0, (hi - lo) / 900)  # the visit day is only half a day
        bouts = [(GENERIC, rng.poisson(8 * share), 2, 4)]
        walk_minutes = walk_median * share * np.exp(rng.normal(0, 0.45))
        bouts.append((WALKING, max(1, rng.poisson(walk_minutes / 12)), 3, 9))
        if rng.random() < run_prob:
            bouts.append((RUNNING, 1, 15, 10))
        for activity, count, min_len, mean_extra in bouts:
            for _ in range(count):
                length = min_len + rng.poisson(mean_extra)
                start = int(rng.integers(lo, max(lo + 1, hi - length)))
                code[start : start + length] = activity
    steps = np.zeros(n, np.int32)
    for activity, mean, sd, low, high in (
        (GENERIC, 25, 10, 1, 60),
        (WALKING, 100, 12, 40, 140),
        (RUNNING, 160, 10, 120, 200),
    ):
        idx = np.flatnonzero(code == activity)
        steps[idx] = np.clip(np.round(rng.normal(mean, sd, idx.size)), low, high)
    return code, steps


def _activity_records(rng: np.random.Generator, code: np.ndarray, steps: np.ndarray):
    """Chained activity records: one per active minute, sedentary stretches cut every ~6 min.

    Record i covers [end of record i-1, its own end]; the first record has start == end (as in
    the release).
    """
    n = code.size
    is_end = np.ones(n, bool)
    sedentary_run = (code[:-1] == SEDENTARY) & (code[1:] == SEDENTARY)
    is_end[:-1] = ~sedentary_run | (rng.random(n - 1) < 1 / 6)
    last_minute = np.flatnonzero(is_end)
    end = np.concatenate([[0], last_minute + 1])
    start = np.concatenate([[0], end[:-1]])
    rec_code = np.concatenate([[SEDENTARY], code[last_minute]])
    rec_steps = np.concatenate([[0], steps[last_minute]])
    return start, end, rec_code, rec_steps


def _glucose(rng: np.random.Generator, p: Participant, grid: Grid, days: int, code: np.ndarray):
    """Per-minute glucose: baseline + slow drift + meal excursions - exercise, in mg/dL."""
    base_mean, base_sd, meal_amp, tau, drift_sd = GLUCOSE_BY_GROUP[p.study_group]
    n = grid.n_minutes
    meals = np.zeros(n)
    mid = np.concatenate([[grid.midnight[0] - 1440], grid.midnight[:-1]])  # day -1 .. days-1
    for day_start in mid:
        day_factor = np.exp(rng.normal(0, 0.35))  # days with bigger / sweeter meals
        for meal_time, sd in ((450, 40), (750, 40), (1125, 50)):
            t = int(day_start + meal_time + rng.normal(0, sd))
            if 0 <= t < n:
                meals[t] += meal_amp * day_factor * np.exp(rng.normal(0, 0.3))
    x = np.arange(int(6 * tau))
    kernel = (x / tau) * np.exp(1 - x / tau)  # peaks at 1 after `tau` minutes
    active = np.isin(code, (WALKING, RUNNING)).astype(float)
    exercise = lfilter([0.8], [1.0, -np.exp(-1 / 60)], active)
    level = base_mean + rng.normal(0, base_sd)
    return level + _ar1(rng, n, 180, drift_sd) + np.convolve(meals, kernel)[:n] - exercise


def count_runs(mask: np.ndarray, min_length: int) -> int:
    """Number of runs of at least `min_length` consecutive True values."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.diff(padded)
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return int((lengths >= min_length).sum())


def simulate(p: Participant, days: int, seed: int) -> Streams:
    """All device streams of one participant (deterministic for (seed, person_id))."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    rng = participant_rng(seed, p.person_id, 0)
    grid = make_grid(p, days)
    n = grid.n_minutes
    sleep_start, sleep_end, sleep_stage, asleep, nights = _sleep(rng, grid, days, rng.normal(0, 0.6))
    code, steps = _activity(rng, p, grid, days, nights)
    act_start, act_end, act_code, act_steps = _activity_records(rng, code, steps)

    glucose = _glucose(rng, p, grid, days, code)
    offset = int(rng.integers(0, CGM_PERIOD_S))
    cgm_second = np.arange(offset, n * 60, CGM_PERIOD_S)
    cgm_latent = glucose[cgm_second // 60]
    cgm_value = np.clip(np.round(cgm_latent + rng.normal(0, 3 + 0.02 * cgm_latent)), GLUCOSE_MIN, GLUCOSE_MAX)
    cgm_value = cgm_value.astype(np.int32)
    cgm_day = grid.local_day[cgm_second // 60]

    # Day-level stress from the drivers; day -1 (half a day, no previous night) has no driver terms.
    day_steps = np.bincount(grid.local_day + 1, weights=steps, minlength=days + 1)
    hyper_share = np.array([np.mean(cgm_value[cgm_day == d] > HYPER_MG_DL) for d in range(-1, days)])
    drivers = (
        STRESS_AWAKE * (nights.awake_pct.to_numpy() - 9) / 5
        + STRESS_RESTORATIVE * (nights.deep_pct.to_numpy() + nights.rem_pct.to_numpy() - 37) / 7
        + STRESS_STEPS * (day_steps[1:] - 6500) / 3000
        + STRESS_HYPER * hyper_share[1:]
    )
    level = STRESS_MEAN + p.stress_propensity + rng.normal(0, STRESS_DAY_SD, days + 1)
    level[1:] += drivers

    circadian = 4 * np.sin(2 * np.pi * (grid.local_minute - 600) / 1440)
    active = np.isin(code, (WALKING, RUNNING))
    stress = level[grid.local_day + 1] + circadian - 10 * asleep + 6 * active
    stress = stress + _ar1(rng, n, 15, 10) + rng.normal(0, 4, n)
    stress = np.clip(np.round(stress), 0, 100).astype(np.int32)

    heart_rate = (
        rng.normal(66, 7)
        + 3 * np.sin(2 * np.pi * (grid.local_minute - 900) / 1440)
        - 6 * asleep
        + np.choose(code, [0, 10, 28, 60])
        + 0.15 * (stress - 50)
        + _ar1(rng, n, 5, 3)
    )
    heart_rate = np.clip(np.round(heart_rate), 38, 190).astype(np.int32)

    return Streams(
        grid=grid,
        cgm_second=cgm_second,
        cgm_value=cgm_value,
        cgm_transmitter_time=cgm_second - cgm_second[0] + int(rng.integers(50_000, 800_000)),
        heart_rate=heart_rate,
        stress=stress,
        activity_code=code,
        steps=steps,
        activity_start=act_start,
        activity_end=act_end,
        activity_record_code=act_code,
        activity_record_steps=act_steps,
        sleep_start=sleep_start,
        sleep_end=sleep_end,
        sleep_stage=sleep_stage,
        nights=nights,
        day_stress_level=level,
    )


def day_table(p: Participant, streams: Streams, stress_valid: np.ndarray | None = None) -> pd.DataFrame:
    """Day-level truth for days 0..days-1: previous night's stage %, daily activity and glucose,
    and the label (mean of the day's valid stress values > 75).

    `stress_valid` marks grid minutes whose stress value is written as a real value (not a -1/-2
    sentinel); by default every minute counts.
    """
    grid = streams.grid
    days = len(streams.nights)
    if stress_valid is None:
        stress_valid = np.ones(grid.n_minutes, bool)
    cgm_day = grid.local_day[streams.cgm_second // 60]
    record_day = grid.local_day[np.maximum(streams.activity_end - 1, 0)]
    rows = []
    for d in range(days):
        g = streams.cgm_value[cgm_day == d]
        in_day = grid.local_day == d
        valid = in_day & stress_valid
        stress_mean = float(streams.stress[valid].mean()) if valid.any() else float("nan")
        night = streams.nights.iloc[d]
        rows.append(
            {
                "person_id": p.person_id,
                "day": (p.visit_date + timedelta(days=d + 1)).isoformat(),
                "awake_pct": night.awake_pct,
                "light_pct": night.light_pct,
                "deep_pct": night.deep_pct,
                "rem_pct": night.rem_pct,
                "steps_total": int(streams.steps[in_day].sum()),
                "steps_per_record": float(streams.activity_record_steps[record_day == d].mean()),
                "glucose_mean": float(g.mean()),
                "hyper_events": count_runs(g > HYPER_MG_DL, 3),
                "tir_pct": float(100 * np.mean((g >= TIR_RANGE[0]) & (g <= TIR_RANGE[1]))),
                "stress_level": float(streams.day_stress_level[d + 1]),
                "stress_mean": stress_mean,
                "high_stress": int(stress_mean > HIGH_STRESS_THRESHOLD),
            }
        )
    return pd.DataFrame(rows)
