"""Windows, the 12 features and the label on hand-built participants (local times, no files)."""

import numpy as np
import pandas as pd
import pytest
from conftest import AIREADI_SPEC

from dataset_builders.aireadi_reader import GLUCOSE_HIGH, GLUCOSE_LOW, Activity, Glucose, ParticipantData, Sleep, Stress
from dataset_builders.window_features import (
    LabelRule,
    hyper_event_counts,
    participant_windows,
    sleep_nights,
    sleep_percentages,
    steps_windows,
    window_starts,
)
from sensecf.spec import DatasetSpec

SPEC = DatasetSpec.from_yaml(AIREADI_SPEC)
IMMUTABLES = {"age": 61, "sex": "female", "medication": "insulin", "study_group": "insulin_dependent"}
AWAKE, LIGHT, DEEP, REM, UNKNOWN = 0, 1, 2, 3, -1


def ts(*stamps: str) -> np.ndarray:
    return np.array(stamps, dtype="datetime64[s]")


def every(start: str, n: int, minutes: int) -> np.ndarray:
    return np.datetime64(start, "s") + np.arange(n) * np.timedelta64(minutes * 60, "s")


def hand_participant() -> ParticipantData:
    """One participant, one night, 4 hours of CGM on 2023-09-02 (local clock)."""
    hour8 = [100] * 12
    hour9 = [190, 190, 190, 100, 190, 190] + [100] * 6  # one run of 3 highs, one run of 2
    hour10 = [GLUCOSE_HIGH] * 4 + [60, GLUCOSE_LOW] + [100] * 6  # one run of 4 "High"s; 60 and Low out of range
    hour11 = [150] * 12
    glucose = Glucose(every("2023-09-02T08:00", 48, 5), np.array(hour8 + hour9 + hour10 + hour11, dtype=float))
    activity = Activity(
        start=ts("2023-09-02T08:30", "2023-09-02T09:30", "2023-09-02T09:59", "2023-09-02T10:30", "2023-09-02T11:00"),
        end=ts("2023-09-02T08:31", "2023-09-02T09:31", "2023-09-02T10:01", "2023-09-02T10:31", "2023-09-02T11:00"),
        steps=np.array([60, 0, 30, np.nan, 10], dtype=float),  # 0 = sedentary; NaN = "" (no value); last is 0 s long
    )
    sleep = Sleep(
        start=ts("2023-09-01T23:00", "2023-09-01T23:30", "2023-09-02T01:30", "2023-09-02T02:30",
                 "2023-09-02T03:00", "2023-09-02T04:00", "2023-09-02T05:00", "2023-09-02T13:00"),
        end=ts("2023-09-01T23:30", "2023-09-02T01:30", "2023-09-02T02:30", "2023-09-02T03:00",
               "2023-09-02T04:00", "2023-09-02T05:00", "2023-09-02T05:10", "2023-09-02T13:30"),
        stage=np.array([AWAKE, LIGHT, DEEP, UNKNOWN, REM, LIGHT, AWAKE, LIGHT], dtype=np.int8),
    )
    stress = Stress(
        time=np.concatenate([every("2023-09-02T08:00", 20, 1), every("2023-09-02T10:00", 20, 1)]),
        value=np.array([80.0] * 20 + [72.0] * 20),
    )
    return ParticipantData("1023", glucose, activity, sleep, stress)


def test_the_twelve_features_on_a_hand_computed_participant():
    frame, built, dropped = participant_windows(hand_participant(), IMMUTABLES, LabelRule("day", 75, 30), SPEC)
    # CGM 08:00-11:55 -> window starts 08, 09, 10 (each [s, s + 2 h) has 24 readings)
    assert built == 3 and sum(dropped.values()) == 0
    assert frame["window_start"].dt.strftime("%H:%M").tolist() == ["08:00", "09:00", "10:00"]
    assert frame["window_id"].tolist() == ["1023_20230902T08", "1023_20230902T09", "1023_20230902T10"]
    # Night ending 05:10: awake 30+10, light 120+60, deep 60, rem 60 = 340 staged min (unknown 30 min out;
    # the 13:00 nap is 30 min < 120, not a night). awake 40/340 = 11.76 -> 11.8, deep = rem = 60/340 = 17.65
    # -> 17.6, light 52.94 absorbs the rounding: 100 - 11.8 - 17.6 - 17.6 = 53.0.
    for col, value in {"awake_pct": 11.8, "light_pct": 53.0, "deep_pct": 17.6, "rem_pct": 17.6}.items():
        assert frame[col].tolist() == [value] * 3
    # steps: 08-10 -> 60, 0, 30 (the 09:59-10:01 record overlaps) = 30.0; 09-11 -> 0, 30 (10:30 has no value)
    # = 15.0; 10-12 -> 30 and the zero-length 11:00 record 10 = 20.0
    assert frame["steps_mean"].tolist() == [30.0, 15.0, 20.0]
    # glucose: 08-10 (1200 + 5*190 + 7*100)/24 = 118.75 -> 118.8; 09-11 (1650 + 4*400 + 60 + 40 + 600)/24
    # = 164.58 -> 164.6; 10-12 (2300 + 12*150)/24 = 170.83 -> 170.8 (High -> 400, Low -> 40 for the mean)
    assert frame["glucose_mean"].tolist() == [118.8, 164.6, 170.8]
    # TIR: 08-10 (12 + 7)/24 = 79.17; 09-11 (7 + 6)/24 = 54.17; 10-12 (6 + 12)/24 = 75.0
    assert frame["tir_pct"].tolist() == [79.2, 54.2, 75.0]
    # hyper: hour 9 has one run of 3 (the run of 2 does not count), hour 10 one run of 4 "High"s
    assert frame["hyper_events"].tolist() == [1, 2, 1]
    # day-scope label: 2023-09-02 stress (20*80 + 20*72)/40 = 76.0 > 75
    assert frame["stress_mean"].tolist() == [76.0] * 3
    assert frame["high_stress"].tolist() == [1, 1, 1]
    for name, value in IMMUTABLES.items():
        assert frame[name].tolist() == [value] * 3
    assert (frame[["awake_pct", "light_pct", "deep_pct", "rem_pct"]].sum(axis=1).round(1) == 100.0).all()


def test_window_scope_label_uses_the_windows_own_stress():
    frame, _, dropped = participant_windows(hand_participant(), IMMUTABLES, LabelRule("window", 75, 10), SPEC)
    # 08-10 holds the twenty 80s; 09-11 and 10-12 hold the twenty 72s
    assert frame["stress_mean"].tolist() == [80.0, 72.0, 72.0]
    assert frame["high_stress"].tolist() == [1, 0, 0]
    frame, _, dropped = participant_windows(hand_participant(), IMMUTABLES, LabelRule("window", 75, 21), SPEC)
    assert len(frame) == 0 and dropped["few_stress_values"] == 3


@pytest.mark.parametrize("value, label", [(75.0, 0), (75.01, 1), (74.99, 0), (100.0, 1)])
def test_threshold_boundary_75_is_not_high(value, label):
    data = hand_participant()
    data.stress = Stress(every("2023-09-02T00:00", 60, 1), np.full(60, value))
    frame, _, _ = participant_windows(data, IMMUTABLES, LabelRule("day", 75, 30), SPEC)
    assert frame["high_stress"].tolist() == [label] * 3


def test_day_scope_is_the_local_date_of_the_window_start():
    data = hand_participant()
    # 30 values of 90 on 09-01 and 30 of 50 on 09-02: 09-02 windows get 50 -> moderate
    data.stress = Stress(np.concatenate([every("2023-09-01T20:00", 30, 1), every("2023-09-02T06:00", 30, 1)]),
                         np.array([90.0] * 30 + [50.0] * 30))
    frame, _, _ = participant_windows(data, IMMUTABLES, LabelRule("day", 75, 30), SPEC)
    assert frame["stress_mean"].tolist() == [50.0] * 3 and frame["high_stress"].tolist() == [0] * 3


def test_windows_start_every_hour_and_last_two_hours():
    times = every("2023-09-02T06:17", 12 * 24, 5)  # 06:17 .. 06:12 next day
    starts = pd.to_datetime(window_starts(times), unit="s")
    assert starts[0] == pd.Timestamp("2023-09-02T06:00")
    assert (np.diff(starts.values) == np.timedelta64(1, "h")).all()
    # last start one hour before the hour of the last reading (06:12 -> 06:00): [05:00, 07:00) holds it
    assert starts[-1] == pd.Timestamp("2023-09-03T05:00")
    assert len(starts) == 24  # 06:00 .. 23:00 and 00:00 .. 05:00
    frame, built, _ = participant_windows(hand_participant(), IMMUTABLES, LabelRule(), SPEC)
    ends = frame["window_start"] + pd.Timedelta(hours=2)
    assert (ends.iloc[:-1].to_numpy() > frame["window_start"].iloc[1:].to_numpy()).all()  # 50 % overlap


def test_drop_reasons_counted_in_order():
    data = hand_participant()
    # keep hours 8 and 9 and the single reading at 11:00
    t = every("2023-09-02T08:00", 48, 5)
    keep = np.ones(48, dtype=bool)
    keep[24:36] = False  # hour 10 gone
    keep[37:48] = False  # hour 11: only 11:00 left
    data.glucose = Glucose(t[keep], data.glucose.value[keep])
    # windows 08 (24 readings), 09 (12 = half: kept), 10 (1 reading: cgm_coverage)
    frame, built, dropped = participant_windows(data, IMMUTABLES, LabelRule(), SPEC)
    assert built == 3 and len(frame) == 2 and dropped["cgm_coverage"] == 1
    # remove the night: every remaining window fails no_sleep_night
    data.sleep = Sleep(ts(), ts(), np.array([], dtype=np.int8))
    frame, built, dropped = participant_windows(data, IMMUTABLES, LabelRule(), SPEC)
    assert len(frame) == 0 and dict(dropped) == {"cgm_coverage": 1, "no_activity": 0, "no_sleep_night": 2,
                                                 "few_stress_values": 0}
    # activity without any step value: no_activity comes before no_sleep_night
    data.activity = Activity(ts("2023-09-02T08:30"), ts("2023-09-02T08:31"), np.array([np.nan]))
    frame, built, dropped = participant_windows(data, IMMUTABLES, LabelRule(), SPEC)
    assert dict(dropped) == {"cgm_coverage": 1, "no_activity": 2, "no_sleep_night": 0, "few_stress_values": 0}


def test_hyper_events_runs_gaps_and_runs_entering_the_window():
    t = every("2023-09-02T08:00", 8, 5).astype(np.int64)
    v = np.array([190, 190, 190, 190, 190, 100, 181, 181], dtype=float)
    lo, hi = np.array([0, 1, 2, 3, 5]), np.array([8, 8, 8, 8, 8])
    # window from reading 0/1/2: the run (entering or not) has >= 3 readings inside; from 3: only 2 left
    assert hyper_event_counts(t, v, lo, hi).tolist() == [1, 1, 1, 0, 0]
    # a 10-min gap breaks the run; 7.5 min does not
    v3 = np.array([200.0, 200.0, 200.0])
    assert hyper_event_counts(np.array([0, 300, 900]), v3, np.array([0]), np.array([3])).tolist() == [0]
    assert hyper_event_counts(np.array([0, 300, 750]), v3, np.array([0]), np.array([3])).tolist() == [1]
    # exactly 180 is not above 180
    assert hyper_event_counts(np.array([0, 300, 600]), np.array([180.0, 181, 181]), np.array([0]),
                              np.array([3])).tolist() == [0]
    # two separate runs in one window
    v6 = np.array([200.0, 200, 200, 100, 200, 200, 200])
    assert hyper_event_counts(np.arange(7) * 300, v6, np.array([0]), np.array([7])).tolist() == [2]


def test_steps_overlap_counts_partial_and_excludes_missing():
    act = Activity(ts("2023-09-02T07:59", "2023-09-02T10:00", "2023-09-02T09:00"),
                   ts("2023-09-02T08:00", "2023-09-02T10:01", "2023-09-02T09:01"), np.array([5.0, 7.0, np.nan]))
    starts = ts("2023-09-02T08:00").astype(np.int64)
    count, mean = steps_windows(act, starts)
    # 07:59-08:00 ends exactly at the window start (no overlap); 10:00 starts at its end (no overlap)
    assert count.tolist() == [0] and np.isnan(mean[0])
    count, mean = steps_windows(act, ts("2023-09-02T07:00", "2023-09-02T09:00").astype(np.int64))
    assert count.tolist() == [1, 1] and mean.tolist() == [5.0, 7.0]


def test_sleep_percentages_sum_to_exactly_100():
    pct = sleep_percentages(np.array([[40, 180, 60, 60], [1, 1, 1, 0], [10, 0, 5, 5]]))
    assert pct[0].tolist() == [11.8, 53.0, 17.6, 17.6]
    # 33.3 x 3 = 99.9: light absorbs -> 33.4
    assert pct[1].tolist() == [33.3, 33.4, 33.3, 0.0]
    # no light at all: the largest stage (awake) absorbs, light stays 0
    assert pct[2].tolist() == [50.0, 0.0, 25.0, 25.0]
    assert (pct.sum(axis=1).round(1) == 100.0).all()


def test_main_night_is_the_longest_period_ending_before_14h():
    sleep = Sleep(
        # a 3-h period ending 06:00 and a 4-h period ending 13:00 on 09-02; a period ending 15:00 on 09-03
        start=ts("2023-09-02T03:00", "2023-09-02T09:00", "2023-09-03T10:00"),
        end=ts("2023-09-02T06:00", "2023-09-02T13:00", "2023-09-03T15:00"),
        stage=np.array([DEEP, REM, LIGHT], dtype=np.int8),
    )
    nights = sleep_nights(sleep)
    assert len(nights) == 1
    day = ts("2023-09-02T00:00").astype(np.int64)[0] // 86400
    assert nights.loc[day, "rem_pct"] == 100.0 and nights.loc[day, "staged_minutes"] == 240.0
