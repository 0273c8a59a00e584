"""The synthetic AI-READI release writer: layout, formats, quirks, determinism, latent structure.

Paths, column lists and record shapes are spelled out literally from the format notes
(/work/shared/reference/aireadi-format.md, v3) rather than imported, so a drift in the writer fails.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dataset_builders.synth import app, write_release
from dataset_builders.synth_model import GROUPS, Participant, day_table, draw_cohort, make_grid, simulate
from dataset_builders.synth_quirks import QuirkRates
from sensecf.cli import run_cli

STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
FLAGS = [
    "cardiac_ecg", "clinical_data", "environment", "retinal_flio", "retinal_oct", "retinal_octa",
    "retinal_photography", "wearable_activity_monitor", "wearable_blood_glucose",
]  # fmt: skip
PARTICIPANT_COLUMNS = [
    "person_id", "clinical_site", "study_group", "age", "study_visit_date", "recommended_split", *FLAGS
]  # fmt: skip
# modality -> (manifest path column, path pattern)
FILES = {
    "cgm": ("glucose_filepath", "/wearable_blood_glucose/continuous_glucose_monitoring/dexcom_g6/{p}/{p}_DEX.json"),
    "heart_rate": (
        "heartrate_filepath",
        "/wearable_activity_monitor/heart_rate/garmin_vivosmart5/{p}/{p}_heartrate.json",
    ),
    "stress": ("stress_level_filepath", "/wearable_activity_monitor/stress/garmin_vivosmart5/{p}/{p}_stress.json"),
    "sleep": ("sleep_filepath", "/wearable_activity_monitor/sleep/garmin_vivosmart5/{p}/{p}_sleep.json"),
    "activity": (
        "physical_activity_filepath",
        "/wearable_activity_monitor/physical_activity/garmin_vivosmart5/{p}/{p}_activity.json",
    ),
}  # fmt: skip
LIST_KEY = {"cgm": "cgm", "heart_rate": "heart_rate", "stress": "stress", "sleep": "sleep", "activity": "activity"}
ROOT_FILES = {
    "participants.tsv", "participants.json", "README.md", "dataset_description.json", "synthetic_release.json",
    "wearable_blood_glucose/manifest.tsv", "wearable_activity_monitor/manifest.tsv", "clinical_data/person.csv",
    "clinical_data/observation.csv", "controlled/demographics.tsv", "synthetic_truth/days.csv",
}  # fmt: skip
# High enough that a 6 x 3 release shows every quirk, including missing files.
RATES = QuirkRates(
    cgm_low=0.01, cgm_high=0.01, stress_sentinel=0.5, heart_rate_zero=0.05, sleep_unknown=0.05,
    steps_string=0.05, steps_float=0.05, steps_empty=0.02, duplicate=0.02, missing_file=0.3,
)  # fmt: skip
SEED = 2  # with these rates, every modality has a missing file and none is missing for all


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release")
    write_release(out, participants=6, days=3, seed=SEED, rates=RATES)
    return out


def _read(root: Path) -> dict:
    return {
        "participants": pd.read_csv(root / "participants.tsv", sep="\t", dtype=str, keep_default_na=False),
        "cgm": pd.read_csv(root / "wearable_blood_glucose/manifest.tsv", sep="\t", dtype=str, keep_default_na=False),
        "garmin": pd.read_csv(
            root / "wearable_activity_monitor/manifest.tsv", sep="\t", dtype=str, keep_default_na=False
        ),
        "release": json.loads((root / "synthetic_release.json").read_text()),
    }


def _manifest_paths(root: Path) -> dict[str, dict[str, str]]:
    """modality -> person_id -> manifest path ("None" when not written)."""
    data = _read(root)
    out = {}
    for modality, (column, _) in FILES.items():
        table = data["cgm"] if modality == "cgm" else data["garmin"]
        out[modality] = dict(zip(table.person_id, table[column], strict=True))
    return out


def _records(root: Path, modality: str) -> list[tuple[str, dict, list[dict]]]:
    """(person_id, header, records) of every written file of one modality."""
    out = []
    for pid, path in _manifest_paths(root)[modality].items():
        if path != "None":
            doc = json.loads((root / path.lstrip("/")).read_text())
            assert list(doc) == ["header", "body"] and list(doc["body"]) == [LIST_KEY[modality]]
            out.append((pid, doc["header"], doc["body"][LIST_KEY[modality]]))
    return out


def test_layout_is_exactly_the_v3_tree(release):
    pids = _read(release)["participants"].person_id.tolist()
    assert len(pids) == 6
    expected = set(ROOT_FILES)
    paths = _manifest_paths(release)
    for modality, (_, pattern) in FILES.items():
        assert set(paths[modality]) == set(pids), "every participant is listed in both manifests"
        for pid, path in paths[modality].items():
            if path != "None":
                assert path == pattern.format(p=pid)
                expected.add(path.lstrip("/"))
    written = {str(f.relative_to(release)) for f in release.rglob("*") if f.is_file()}
    assert written == expected


def test_participants_tsv_columns_and_values(release):
    data = _read(release)
    table = data["participants"]
    assert table.columns.tolist() == PARTICIPANT_COLUMNS
    site_of_digit = {"1": "UW", "2": "UW", "4": "UCSD", "5": "UCSD", "7": "UAB", "8": "UAB"}
    for row in table.itertuples():
        assert re.fullmatch(r"\d{4}", row.person_id) and site_of_digit[row.person_id[0]] == row.clinical_site
        assert row.study_group in GROUPS
        assert 40 <= int(row.age) <= 85
        assert date.fromisoformat(row.study_visit_date)
        assert row.recommended_split in {"train", "val", "test"}
    assert set(table[FLAGS].to_numpy().ravel()) <= {"TRUE", "FALSE"}
    assert (table.clinical_data == "TRUE").all()
    paths = _manifest_paths(release)
    has_cgm = [paths["cgm"][p] != "None" for p in table.person_id]
    assert (table.wearable_blood_glucose == "TRUE").tolist() == has_cgm
    garmin = ("heart_rate", "stress", "sleep", "activity")
    has_garmin = [any(paths[m][p] != "None" for m in garmin) for p in table.person_id]
    assert (table.wearable_activity_monitor == "TRUE").tolist() == has_garmin


def test_cohort_is_balanced_and_split_70_15_15():
    cohort = draw_cohort(1000, seed=0)
    assert Counter(p.split for p in cohort) == {"train": 700, "val": 150, "test": 150}
    assert set(Counter(p.study_group for p in cohort).values()) == {250}
    assert {p.site for p in cohort} == {"UW", "UCSD", "UAB"}
    assert {p.person_id[0] for p in cohort} == set("124578")
    assert len({p.person_id for p in cohort}) == 1000
    assert min(p.age for p in cohort) >= 40 and max(p.age for p in cohort) <= 85


def test_cgm_file_shape(release):
    tz_of_site = {"UW": "pst", "UCSD": "pst", "UAB": "cst"}
    site = dict(_read(release)["participants"][["person_id", "clinical_site"]].to_numpy())
    files = _records(release, "cgm")
    assert files
    for pid, header, records in files:
        raw = (release / FILES["cgm"][1].format(p=pid).lstrip("/")).read_text()
        assert '"acquistion_rate":{"number_of_times":1, "time_window":{"value":5, "unit":"min"}}' in raw
        assert header["patient_id"] == header["uuid"] == f"AIREADI-{pid}"
        assert header["timezone"] == tz_of_site[site[pid]]
        assert header["schema_id"] == {"namespace": "omh", "name": "blood-glucose", "version": 3.0}
        assert STAMP.match(header["creation_date_time"])
        starts = []
        for r in records:
            assert list(r) == [
                "effective_time_frame", "event_type", "source_device_id", "blood_glucose", "transmitter_time",
                "transmitter_id",
            ]  # fmt: skip
            interval = r["effective_time_frame"]["time_interval"]
            assert STAMP.match(interval["start_date_time"]) and interval["start_date_time"] == interval["end_date_time"]
            assert r["event_type"] == "EGV" and r["blood_glucose"]["unit"] == "mg/dL"
            value = r["blood_glucose"]["value"]
            assert value in ("Low", "High") or (isinstance(value, int) and 40 <= value <= 400)
            assert r["transmitter_time"]["unit"] == "long integer"
            starts.append(interval["start_date_time"])
        assert starts == sorted(starts)
        distinct = sorted(set(starts))
        gaps = np.diff(pd.to_datetime(distinct).astype("int64") // 10**9)
        assert set(gaps.tolist()) == {300}, "one reading every 5 minutes"


def test_garmin_point_files_shape(release):
    for modality, unit, low in (("heart_rate", "beats/min", 0), ("stress", "stress level", -2)):
        files = _records(release, modality)
        assert files
        for pid, header, records in files:
            assert list(header) == ["uuid", "creation_date_time", "user_id", "schema_id", "timezone"]
            assert header["uuid"] == header["user_id"] == f"AIREADI-{pid}"
            for r in records:
                assert list(r) == [modality, "effective_time_frame"]
                assert r[modality]["unit"] == unit and isinstance(r[modality]["value"], int)
                assert low <= r[modality]["value"] <= (100 if modality == "stress" else 250)
                assert STAMP.match(r["effective_time_frame"]["date_time"])
            times = [r["effective_time_frame"]["date_time"] for r in records]
            assert times == sorted(times)


def test_sleep_file_shape(release):
    files = _records(release, "sleep")
    assert files
    for _, header, records in files:
        assert header["schema_id"] == {"namespace": "omh", "name": "sleep-stages", "version": 2.0}
        for r in records:
            assert list(r) == ["sleep_stage_state", "effective_time_frame"]
            assert r["sleep_stage_state"] in {"awake", "light", "deep", "rem", "unknown"}
            interval = r["effective_time_frame"]["time_interval"]
            assert STAMP.match(interval["start_date_time"]) and interval["start_date_time"] < interval["end_date_time"]


def test_activity_file_shape_and_chaining(release):
    files = _records(release, "activity")
    assert files
    for _, header, records in files:
        assert header["schema_id"] == {"namespace": "", "name": "", "version": ""}
        first = records[0]["effective_time_frame"]["time_interval"]
        assert first["start_date_time"] == first["end_date_time"]
        for r in records:
            assert list(r) == ["activity_name", "base_movement_quantity", "effective_time_frame"]
            assert r["activity_name"] in {"sedentary", "generic", "walking", "running", ""}
            value = r["base_movement_quantity"]["value"]
            assert r["base_movement_quantity"]["unit"] == "steps"
            assert isinstance(value, int | float) or value == "" or (isinstance(value, str) and value.isdigit())
            if r["activity_name"] == "sedentary":
                assert value == 0
            if r["activity_name"] == "":
                assert value == ""
        previous = records[0]
        for r in records[1:]:
            if r == previous:  # an injected duplicate
                continue
            # chained: each record starts where the previous one ended
            interval = r["effective_time_frame"]["time_interval"]
            assert interval["start_date_time"] == previous["effective_time_frame"]["time_interval"]["end_date_time"]
            assert STAMP.match(interval["end_date_time"]) and interval["start_date_time"] < interval["end_date_time"]
            previous = r


def test_injected_counts_are_exact(release):
    data = _read(release)
    injected = data["release"]["injected"]
    counted = Counter()
    for modality in FILES:
        files = _records(release, modality)
        counted[f"missing_{modality}"] = 6 - len(files)
        for _, _, records in files:
            counted[f"duplicate_{modality}"] += len(records) - len({json.dumps(r, sort_keys=True) for r in records})
            for r in records:
                if modality == "cgm":
                    counted["cgm_low"] += r["blood_glucose"]["value"] == "Low"
                    counted["cgm_high"] += r["blood_glucose"]["value"] == "High"
                elif modality == "stress":
                    counted["stress_neg1"] += r["stress"]["value"] == -1
                    counted["stress_neg2"] += r["stress"]["value"] == -2
                elif modality == "heart_rate":
                    counted["heart_rate_zero"] += r["heart_rate"]["value"] == 0
                elif modality == "sleep":
                    counted["sleep_unknown"] += r["sleep_stage_state"] == "unknown"
                else:
                    value = r["base_movement_quantity"]["value"]
                    counted["steps_empty"] += value == ""
                    counted["steps_string"] += isinstance(value, str) and value != ""
                    counted["steps_float"] += isinstance(value, float)
    assert set(counted) <= set(injected)
    assert {key: counted[key] for key in injected} == injected
    assert all(v > 0 for v in injected.values()), f"the fixture should exercise every quirk: {injected}"
    assert set(data["release"]["injected_meaning"]) == set(injected)
    assert data["release"]["synthetic"] is True and data["release"]["seed"] == SEED


COUNT_COLUMNS = {
    "cgm": "glucose_level_record_count",
    "heart_rate": "heartrate_record_count",
    "stress": "stress_level_record_count",
    "sleep": "sleep_record_count",
}


def test_zero_rates_inject_nothing(tmp_path):
    release = write_release(tmp_path, participants=2, days=1, seed=0, rates=QuirkRates.none())
    assert set(release["injected"].values()) == {0}
    for modality in FILES:
        for _, _, records in _records(tmp_path, modality):
            assert len(records) == len({json.dumps(r, sort_keys=True) for r in records})
        assert len(_records(tmp_path, modality)) == 2


def test_manifest_counts_match_the_files(release):
    data = _read(release)
    for modality, column in COUNT_COLUMNS.items():
        table = (data["cgm"] if modality == "cgm" else data["garmin"]).set_index("person_id")
        files = _records(release, modality)
        for pid, _, records in files:
            assert int(table.loc[pid, column]) == len(records)
        missing = table[table[FILES[modality][0]] == "None"]
        assert len(missing) == 6 - len(files) and (missing[column] == "None").all()
    cgm = data["cgm"].set_index("person_id")
    for pid, _, records in _records(release, "cgm"):
        assert cgm.loc[pid, "glucose_sensor_id"] == records[0]["source_device_id"]
        assert (cgm.loc[pid, "manufacturer"], cgm.loc[pid, "manufacturer_model_name"]) == ("Dexcom", "G6")
    garmin = data["garmin"]
    for column in ("oxygen_saturation_filepath", "respiratory_rate_filepath", "active_calories_filepath"):
        assert (garmin[column] == "None").all()  # modalities the generator does not write


def test_same_seed_same_bytes_and_different_seed_differs(release, tmp_path):
    again = tmp_path / "again"
    write_release(again, participants=6, days=3, seed=SEED, rates=RATES, workers=2)
    files = sorted(str(f.relative_to(release)) for f in release.rglob("*") if f.is_file())
    assert files == sorted(str(f.relative_to(again)) for f in again.rglob("*") if f.is_file())
    for rel in files:
        assert (release / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    write_release(other, participants=6, days=3, seed=SEED + 1, rates=RATES)
    assert (other / "participants.tsv").read_bytes() != (release / "participants.tsv").read_bytes()
    assert (other / "synthetic_release.json").read_bytes() != (release / "synthetic_release.json").read_bytes()


def _participant(site: str, visit: date, person_id: str) -> Participant:
    return Participant(0, person_id, site, GROUPS[0], 60, "female", visit, "train", 0.0)


def test_uab_local_midnight_is_05_or_06_utc():
    for visit, hour in ((date(2023, 7, 10), 5), (date(2024, 1, 10), 6)):
        grid = make_grid(_participant("UAB", visit, "7001"), days=3)
        t0 = pd.Timestamp(grid.t0)
        midnight = t0 + pd.Timedelta(minutes=int(grid.midnight[0]))
        assert midnight == pd.Timestamp(f"{visit.isoformat()} {hour:02d}:00", tz="UTC") + pd.Timedelta(days=1)
        assert t0.hour == 12 + hour  # recording starts at local noon of the visit day
        assert grid.local_minute[grid.midnight[0]] == 0 and grid.local_day[grid.midnight[0]] == 0


def test_pacific_grid_across_the_dst_change():
    # Sunday 2023-11-05 02:00 PDT -> 01:00 PST: that local day has 25 hours.
    grid = make_grid(_participant("UW", date(2023, 11, 3), "1001"), days=3)
    assert pd.Timestamp(grid.t0) == pd.Timestamp("2023-11-03 19:00", tz="UTC")  # noon PDT
    assert np.diff(grid.midnight).tolist() == [1440, 1500, 1440]
    assert grid.n_minutes == 720 + 1440 + 1500 + 1440
    assert grid.midnight[-1] == grid.n_minutes


def test_written_timestamps_start_at_local_noon(release):
    table = _read(release)["participants"].set_index("person_id")
    for pid, _, records in _records(release, "heart_rate"):
        visit = table.loc[pid, "study_visit_date"]
        zone = "America/Chicago" if table.loc[pid, "clinical_site"] == "UAB" else "America/Los_Angeles"
        noon = pd.Timestamp(f"{visit} 12:00", tz=zone).tz_convert("UTC")
        assert records[0]["effective_time_frame"]["date_time"] == noon.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_clinical_and_controlled_files_agree_with_the_study_group(release):
    data = _read(release)
    table = data["participants"].set_index("person_id")
    person = pd.read_csv(release / "clinical_data/person.csv", dtype={"person_id": str})
    assert (person.gender_concept_id == 0).all()
    for row in person.itertuples():
        visit_year = int(table.loc[row.person_id, "study_visit_date"][:4])
        assert visit_year - int(table.loc[row.person_id, "age"]) - row.year_of_birth in (0, 1)
    obs = pd.read_csv(release / "clinical_data/observation.csv", dtype={"person_id": str})
    obs["key"] = obs.observation_source_value.str.split(",").str[0]
    assert set(obs.key) == {"cmtrt_insln", "cmtrt_a1c", "cmtrt_glcs", "cmtrt_lfst"}
    assert set(obs.value_as_string) <= {"Yes", "No"} and (obs.value_as_string == obs.value_source_value).all()
    demographics = pd.read_csv(release / "controlled/demographics.tsv", sep="\t", dtype=str)
    assert demographics.columns.tolist() == ["person_id", "sex", "medication"]
    assert set(demographics.sex) <= {"female", "male"}
    for pid, answers in obs.groupby("person_id"):
        yes = set(answers.key[answers.value_as_string == "Yes"])
        derived = "insulin" if "cmtrt_insln" in yes else "oral_or_noninsulin_injectable" if yes & {
            "cmtrt_a1c", "cmtrt_glcs"} else "none"  # fmt: skip
        assert derived == demographics.set_index("person_id").loc[pid, "medication"]
        group = table.loc[pid, "study_group"]
        assert derived == {GROUPS[0]: "none", GROUPS[1]: "none", GROUPS[2]: "oral_or_noninsulin_injectable",
                           GROUPS[3]: "insulin"}[group]  # fmt: skip


def test_latent_model_balance_structure_and_learnability():
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    frames = []
    for p in draw_cohort(60, seed=11):
        days = day_table(p, simulate(p, 10, seed=11))
        days["group"], days["age"] = GROUPS.index(p.study_group), p.age
        frames.append(days)
    days = pd.concat(frames, ignore_index=True)
    assert 0.2 <= days.high_stress.mean() <= 0.4, "high-stress days are the minority"
    by_group = days.groupby("group").glucose_mean.mean()
    assert by_group.is_monotonic_increasing and 90 < by_group[0] < 110 and 150 < by_group[3] < 195
    sleep = (days.awake_pct + days.light_pct + days.deep_pct + days.rem_pct).to_numpy()
    np.testing.assert_allclose(sleep, 100.0)

    # direction of each driver on the day's stress level
    drivers = pd.DataFrame({"awake": days.awake_pct, "restorative": days.deep_pct + days.rem_pct,
                            "steps": days.steps_total / 1000, "hyper": days.hyper_events})  # fmt: skip
    coef = dict(zip(drivers, LinearRegression().fit(drivers, days.stress_level).coef_, strict=True))
    assert coef["awake"] > 0 and coef["restorative"] < 0 and coef["steps"] < 0 and coef["hyper"] > 0, coef

    features = pd.concat([drivers, days[["glucose_mean", "tir_pct", "age"]]], axis=1)
    features = (features - features.mean()) / features.std()
    scores = cross_val_predict(LogisticRegression(max_iter=1000), features, days.high_stress,
                               groups=days.person_id, cv=GroupKFold(5), method="predict_proba")[:, 1]  # fmt: skip
    assert 0.75 <= roc_auc_score(days.high_stress, scores) <= 0.97, "learnable, not trivially separable"


def test_cli_writes_release_with_provenance_and_refuses_a_non_empty_dir(tmp_path, capsys):
    out = tmp_path / "rel"
    runner = CliRunner()
    args = ["--participants", "3", "--days", "1", "--seed", "5", "--out", str(out), "--workers", "1"]
    result = runner.invoke(app, [*args, "--no-controlled"])
    assert result.exit_code == 0, result.output
    assert not (out / "controlled").exists()
    assert json.loads((out / "synthetic_release.json").read_text())["controlled_file"] is None
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["source"] == {"synthetic": True, "seed": 5} and provenance["seed"] == 5

    wide = {"COLUMNS": "1000"}  # keep error messages on one line
    with pytest.raises(SystemExit) as ended:  # through the CLI's error boundary, as `python -m` runs it
        run_cli(app, args)
    err = capsys.readouterr().err
    assert ended.value.code == 2
    assert err == f"error: {out}: --out: output directory is not empty (use --force to replace a synthetic release)\n"
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0 and (out / "controlled/demographics.tsv").exists()
    # written beside --out and renamed onto it: no staging or old copy is left behind
    assert [p.name for p in tmp_path.iterdir()] == ["rel"]

    bad = runner.invoke(app, [*args, "--force", "--quirk-rate-duplicate", "1.5"], env=wide)
    assert bad.exit_code == 2 and "duplicate" in bad.output and "less than or equal to 1" in bad.output
