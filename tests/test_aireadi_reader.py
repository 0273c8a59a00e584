"""The AI-READI reader and the cohort CLI on tiny hand-written releases in the v1, v2 and v3 layouts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import typer
import yaml
from conftest import AIREADI_SPEC
from typer.testing import CliRunner

from dataset_builders.aireadi import build_cohort, finish_cohort
from dataset_builders.aireadi import main as aireadi_main
from dataset_builders.aireadi_reader import (
    AireadiFormatError,
    ReadLog,
    find_root,
    medication_from_observation,
    parse_utc,
    read_participant,
    read_participants,
)
from dataset_builders.window_features import LabelRule
from sensecf.cli import run_cli
from sensecf.spec import DatasetSpec

SPEC = DatasetSpec.from_yaml(AIREADI_SPEC)
SITE_TZ = {"UW": "America/Los_Angeles", "UCSD": "America/Los_Angeles", "UAB": "America/Chicago"}
GARMIN = "wearable_activity_monitor/{mod}/garmin_vivosmart5/{pid}/{pid}_{suffix}.json"
PATHS = {
    "cgm": "wearable_blood_glucose/continuous_glucose_monitoring/dexcom_g6/{pid}/{pid}_DEX.json",
    "activity": GARMIN.replace("{mod}", "physical_activity").replace("{suffix}", "activity"),
    "sleep": GARMIN.replace("{mod}", "sleep").replace("{suffix}", "sleep"),
    "stress": GARMIN.replace("{mod}", "stress").replace("{suffix}", "stress"),
    "heart_rate": GARMIN.replace("{mod}", "heart_rate").replace("{suffix}", "heartrate"),
}


# --- a minimal release writer (the format notes' §1-§3, per version) ---------------------------
def utc(local: str, tz: str) -> str:
    """Local wall-clock time -> the release's UTC string "YYYY-MM-DDTHH:MM:SSZ"."""
    return pd.Timestamp(local).tz_localize(tz).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def person(pid: str, site: str = "UW", group: str = "healthy", age: int = 55, split: str = "train",
           stress: float = 50.0) -> dict:
    """A participant with one good morning on 2023-09-02 (local): an 8-h night, CGM 08:00-11:55 at 120,
    1-min walking records of 10 steps 08:00-12:00, stress at `stress` each minute 08:00-08:59.
    Records hold UTC strings; tests edit them to plant quirks."""
    tz = SITE_TZ[site]
    rng = pd.date_range("2023-09-02 08:00", periods=48, freq="5min")
    minutes = pd.date_range("2023-09-02 08:00", periods=241, freq="1min")
    night = [("2023-09-01 23:00", "2023-09-01 23:30", "awake"), ("2023-09-01 23:30", "2023-09-02 03:30", "light"),
             ("2023-09-02 03:30", "2023-09-02 05:00", "deep"), ("2023-09-02 05:00", "2023-09-02 06:30", "rem"),
             ("2023-09-02 06:30", "2023-09-02 07:00", "awake")]
    return {
        "pid": pid, "site": site, "group": group, "age": age, "split": split, "tz": tz,
        "cgm": [[utc(t, tz), 120] for t in rng],
        "activity": [[utc(a, tz), utc(b, tz), 10, "walking"] for a, b in zip(minutes[:-1], minutes[1:], strict=True)],
        "sleep": [[utc(a, tz), utc(b, tz), s] for a, b, s in night],
        "stress": [[utc(t, tz), stress] for t in minutes[:60]],
    }


def _garmin(pid, list_key, records, version, tz):
    header = {"uuid": f"AIREADI-{pid}", "creation_date_time": "2024-01-01T00:00:00Z", "user_id": f"AIREADI-{pid}",
              "schema_id": {"namespace": "omh", "name": "x", "version": 2.0}}
    if version == "v3":
        header["timezone"] = tz
    return {"header": header, "body": {list_key: records}}


def file_docs(p: dict, version: str) -> dict:
    """{modality: JSON document} for one participant in the given release version."""
    pid, tz = p["pid"], ("cst" if p["site"] == "UAB" else "pst")
    cgm = [{"effective_time_frame": {"time_interval": {"start_date_time": t, "end_date_time": t}},
            "event_type": "EGV", "source_device_id": "X", "blood_glucose": {"unit": "mg/dL", "value": v},
            "transmitter_time": {"unit": "long integer", "value": 1}, "transmitter_id": "T"} for t, v in p["cgm"]]
    cgm_header = {"uuid": f"AIREADI-{pid}", "patient_id": f"AIREADI-{pid}", "acquistion_rate": {}}
    if version == "v3":
        cgm_header["timezone"] = tz
    flat = (lambda s: s.replace("T", " ").rstrip("Z")) if version == "v1" else (lambda s: s)
    activity = [{"activity_name": n, "base_movement_quantity": {"value": v, "unit": "steps"},
                 "effective_time_frame": {"time_interval": {"start_date_time": flat(a), "end_date_time": flat(b)}}}
                for a, b, v, n in p["activity"]]
    if version == "v1":
        sleep = [{"sleep_duration": {"value": 0.5, "unit": "h"},
                  "effective_time_frame": {"time_interval": {"start_date_time": a, "end_date_time": b}}}
                 for a, b, _ in p["sleep"]]
    else:
        frame_key = "effective_time_frame" if version == "v3" else "sleep_stage_time_frame"
        sleep = [{"sleep_stage_state": s, frame_key: {"time_interval": {"start_date_time": a, "end_date_time": b}}}
                 for a, b, s in p["sleep"]]
    stress = [{"stress": {"value": v, "unit": "stress level"}, "effective_time_frame": {"date_time": t}}
              for t, v in p["stress"]]
    heart = [{"heart_rate": {"value": v, "unit": "beats/min"}, "effective_time_frame": {"date_time": t}}
             for t, v in p.get("heart_rate", [])]
    return {
        "cgm": {"header": cgm_header, "body": cgm if version == "v1" else {"cgm": cgm}},
        "activity": _garmin(pid, "activity", activity, version, tz),
        "sleep": _garmin(pid, "sleep", sleep, version, tz),
        "stress": _garmin(pid, "stress", stress, version, tz),
        "heart_rate": _garmin(pid, "heart_rate", heart, version, tz),
    }


def write_release(root, people: list[dict], version: str = "v3", manifests: bool | None = None,
                  skip_files: dict | None = None, observation: list | None = None):
    """Write participants.tsv and the wearable files; v3 also writes manifests (paths with a leading
    "/"). skip_files {pid: [modality]} leaves files out."""
    root.mkdir(parents=True, exist_ok=True)
    id_col = "person_id" if version == "v3" else "participant_id"
    rows = [{id_col: p["pid"], "clinical_site": p["site"], "study_group": p["group"], "age": p["age"],
             "study_visit_date": "2023-08-30", "recommended_split": p["split"], "wearable_activity_monitor": "TRUE",
             "wearable_blood_glucose": "TRUE"} for p in people]
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    for p in people:
        for mod, doc in file_docs(p, version).items():
            if mod in (skip_files or {}).get(p["pid"], []) or (mod == "heart_rate" and "heart_rate" not in p):
                continue
            path = root / PATHS[mod].format(pid=p["pid"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(orjson.dumps(doc))
    if manifests if manifests is not None else version == "v3":
        pd.DataFrame({id_col: [p["pid"] for p in people],
                      "glucose_filepath": ["/" + PATHS["cgm"].format(pid=p["pid"]) for p in people]}).to_csv(
            root / "wearable_blood_glucose" / "manifest.tsv", sep="\t", index=False)
        cols = {"stress_level_filepath": "stress", "sleep_filepath": "sleep", "physical_activity_filepath": "activity"}
        pd.DataFrame({id_col: [p["pid"] for p in people],
                      **{c: ["/" + PATHS[m].format(pid=p["pid"]) for p in people] for c, m in cols.items()}}).to_csv(
            root / "wearable_activity_monitor" / "manifest.tsv", sep="\t", index=False)
    if observation is not None:
        (root / "clinical_data").mkdir(exist_ok=True)
        pd.DataFrame(observation, columns=["person_id", "observation_source_value", "value_as_string"]).to_csv(
            root / "clinical_data" / "observation.csv", index=False)
    return root


def cohort(root, strict=False, scope="day", **kw):
    return build_cohort(root, spec=SPEC, rule=LabelRule(scope, 75.0, 30), strict=strict, workers=kw.pop("workers", 1),
                        progress=False, **kw)


# --- layout, ids and key variants -------------------------------------------------------------
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_v2_and_v3_give_the_same_windows(tmp_path, version):
    write_release(tmp_path / version, [person("1001"), person("7002", site="UAB")], version)
    frame, _, quality = cohort(tmp_path / version)
    # each participant: windows 08, 09, 10 local; 8-h night = awake 60, light 240, deep 90, rem 90 min:
    # 12.5, 50, 18.75 -> 18.8 (half to even), 18.8, and light absorbs the rounding: 49.9
    assert quality["windows"] == {"built": 6, "kept": 6, "dropped_by_first_reason": {
        "cgm_coverage": 0, "no_activity": 0, "no_sleep_night": 0, "few_stress_values": 0},
        "drop_reason_order": ["cgm_coverage", "no_activity", "no_sleep_night", "few_stress_values"]}
    assert frame["window_start"].dt.strftime("%m-%d %H:%M").tolist() == ["09-02 08:00", "09-02 09:00",
                                                                         "09-02 10:00"] * 2
    row = frame.iloc[0]
    assert (row.awake_pct, row.light_pct, row.deep_pct, row.rem_pct) == (12.5, 49.9, 18.8, 18.8)
    assert (row.glucose_mean, row.tir_pct, row.hyper_events, row.steps_mean) == (120.0, 100.0, 0, 10.0)
    assert quality["quirks"] == {} and quality["failed_files"] == []


def test_v1_layout_parses_bare_cgm_list_space_timestamps_and_unstaged_sleep(tmp_path):
    write_release(tmp_path / "v1", [person("1001")], "v1")
    log = ReadLog()
    root = find_root(tmp_path / "v1")
    data, reason = read_participant(root, "1001", "America/Los_Angeles", {}, {}, log)
    assert reason is None
    assert len(data.glucose) == 48 and len(data.activity) == 240 and len(data.stress) == 60
    # v1 activity stamps "2023-09-02 15:00:00" are UTC like the "Z" ones: 08:00 local PDT
    assert str(data.activity.start[0]) == "2023-09-02T08:00:00"
    # v1 sleep has durations but no stages: counted, and no night can be built
    assert log.quirks == {"sleep_no_stage": 5}
    frame, _, quality = cohort(root)
    assert len(frame) == 0 and quality["windows"]["dropped_by_first_reason"]["no_sleep_night"] == 3


def test_participants_id_column_person_id_or_participant_id(tmp_path):
    write_release(tmp_path / "a", [person("1001")], "v3")
    write_release(tmp_path / "b", [person("1001")], "v2")
    assert read_participants(tmp_path / "a")["participant_id"].tolist() == ["1001"]
    assert read_participants(tmp_path / "b")["participant_id"].tolist() == ["1001"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "participants.tsv").write_text("id\tage\n1001\t50\n")
    with pytest.raises(AireadiFormatError, match="participants.tsv: column 'person_id': missing"):
        read_participants(tmp_path / "c")


def test_participants_tsv_tolerates_bom_crlf_blank_lines_and_extra_columns(tmp_path):
    write_release(tmp_path / "r", [person("1001"), person("1002")])
    text = (tmp_path / "r" / "participants.tsv").read_text().splitlines()
    rows = [text[0] + "\tnote", text[1] + "\tx", "", text[2] + "\t"]
    (tmp_path / "r" / "participants.tsv").write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n\r\n").encode())
    table = read_participants(tmp_path / "r")
    assert table["participant_id"].tolist() == ["1001", "1002"] and table["note"].tolist() == ["x", ""]
    (tmp_path / "r" / "participants.tsv").write_text("\n".join([rows[0], rows[1], text[2]]) + "\n")
    with pytest.raises(AireadiFormatError, match=r"participants.tsv: line 3: 8 fields where the header has 9"):
        read_participants(tmp_path / "r")


def test_root_is_found_below_the_download_folder(tmp_path):
    write_release(tmp_path / "download" / "1234" / "dataset", [person("1001")])
    assert find_root(tmp_path / "download") == tmp_path / "download" / "1234" / "dataset"
    with pytest.raises(AireadiFormatError, match="no participants.tsv"):
        find_root(tmp_path / "download" / "1234" / "dataset" / "wearable_blood_glucose")


def test_local_time_from_header_then_site_then_id_digit(tmp_path):
    # the same UTC instant 15:00Z: header "cst" -> 10:00 CDT even though the site says UW
    p = person("1001")
    write_release(tmp_path / "hdr", [p], "v3")
    doc = orjson.loads((tmp_path / "hdr" / PATHS["cgm"].format(pid="1001")).read_bytes())
    doc["header"]["timezone"] = "cst"
    (tmp_path / "hdr" / PATHS["cgm"].format(pid="1001")).write_bytes(orjson.dumps(doc))
    data, _ = read_participant(tmp_path / "hdr", "1001", "America/Los_Angeles", {}, {}, ReadLog())
    assert str(data.glucose.time[0]) == "2023-09-02T10:00:00"
    assert str(data.activity.start[0]) == "2023-09-02T08:00:00"  # activity header still says pst
    # no header (v2): the site decides; a blank site falls back to the id's first digit (7 -> Chicago)
    q = person("7002", site="UAB")
    write_release(tmp_path / "v2", [q], "v2")
    tsv = (tmp_path / "v2" / "participants.tsv").read_text().replace("UAB", "")
    (tmp_path / "v2" / "participants.tsv").write_text(tsv)
    frame, _, _ = cohort(tmp_path / "v2")
    assert frame["window_start"].dt.hour.tolist() == [8, 9, 10]


def test_daylight_saving_fall_back_keeps_the_repeated_hour(tmp_path):
    p = person("1001")
    # 07:00Z-10:55Z on 2023-11-05 = 00:00 PDT .. 01:55 PDT, then 01:00 PST .. 02:55 PST
    stamps = pd.date_range("2023-11-05 07:00", periods=48, freq="5min", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    p["cgm"] = [[t, 120] for t in stamps]
    root = write_release(tmp_path / "r", [p])
    log = ReadLog()
    data, _ = read_participant(root, "1001", "America/Los_Angeles", {}, {}, log)
    assert len(data.glucose) == 48 and "duplicates_cgm" not in log.quirks  # same local time, different instant
    hours = pd.DatetimeIndex(data.glucose.time).hour
    assert np.bincount(hours).tolist() == [12, 24, 12]
    assert (np.diff(data.glucose.time.astype(np.int64)) >= 0).all()


def test_manifest_paths_win_and_none_means_absent(tmp_path):
    root = write_release(tmp_path / "r", [person("1001"), person("1002")], "v3")
    # move 1001's CGM file and point the manifest at the new place; mark 1002's as "None"
    old = root / PATHS["cgm"].format(pid="1001")
    new = root / "elsewhere" / "1001_DEX.json"
    new.parent.mkdir()
    old.rename(new)
    man = pd.read_csv(root / "wearable_blood_glucose" / "manifest.tsv", sep="\t", dtype=str)
    man["glucose_filepath"] = ["/elsewhere/1001_DEX.json", "None"]
    man.to_csv(root / "wearable_blood_glucose" / "manifest.tsv", sep="\t", index=False)
    frame, _, quality = cohort(root, strict=True)  # "None" is the release saying so: not an input error
    assert frame["participant_id"].unique().tolist() == ["1001"]
    assert quality["participants"]["skipped_ids"] == {"1002": "no cgm data in the release"}
    assert quality["quirks"] == {"missing_files_cgm": 1}


# --- quirks, each with its exact count --------------------------------------------------------
def test_every_quirk_is_repaired_and_counted(tmp_path):
    p = person("1001")
    p["heart_rate"] = [[p["stress"][i][0], v] for i, v in enumerate([70, 0, 0, 65])]
    p["cgm"][0][1], p["cgm"][1][1], p["cgm"][2][1] = "Low", "Low", "High"
    p["cgm"].append(list(p["cgm"][5]))  # duplicate reading
    for i, v in enumerate([-1, -1, -2, 101, -1]):
        p["stress"][i][1] = v
    p["stress"].append(list(p["stress"][10]))
    p["sleep"].insert(2, [p["sleep"][1][1], p["sleep"][1][1], "unknown"])
    p["sleep"].append([p["sleep"][-1][1], utc("2023-09-02 07:05", p["tz"]), "unknown"])
    for i in (0, 1, 2):
        p["activity"][i][2] = str(p["activity"][i][2])  # "10"
    p["activity"][3][2] = ""
    p["activity"][4][2] = ""
    p["activity"].append(list(p["activity"][7]))
    p["activity"].append(list(p["activity"][8]))
    p["activity"].append([p["activity"][9][1], p["activity"][9][0], 10, "walking"])  # end < start
    p["activity"].append([utc("2023-09-01 00:00", p["tz"]), utc("2023-09-02 01:00", p["tz"]), 10, "walking"])  # 25 h
    p["activity"].append(["2023-09-02T15:xx:00Z", p["activity"][9][1], 10, "walking"])  # does not parse
    write_release(tmp_path / "q", [p])
    frame, _, quality = cohort(tmp_path / "q", count_heart_rate=True)
    assert quality["quirks"] == {
        "glucose_low": 2, "glucose_high": 1, "duplicates_cgm": 1,
        "stress_sentinel": 4, "stress_over_100": 1, "duplicates_stress": 1,
        "sleep_unknown": 2,
        "steps_string": 3, "steps_empty": 2, "duplicates_activity": 2,
        "bad_intervals_activity": 2, "bad_timestamps_activity": 1,
        "hr_zero": 2,
    }
    # Low -> 40 and High -> 400 in the mean: 08-10 window (40 + 40 + 400 + 21 * 120) / 24 = 125.0;
    # TIR 21/24 = 87.5 %. Steps: "" records are left out, "10" strings count: mean stays 10.
    first = frame.iloc[0]
    assert (first.glucose_mean, first.tir_pct, first.steps_mean) == (125.0, 87.5, 10.0)
    # the unknown stage is not in the percentages: still 60/240/90/90 of 480 staged minutes
    assert (first.awake_pct, first.light_pct, first.deep_pct, first.rem_pct) == (12.5, 49.9, 18.8, 18.8)
    # stress: 60 values minus 5 invalid, all 50 -> mean 50
    assert first.stress_mean == 50.0


def test_malformed_records_are_counted_or_raise_when_strict(tmp_path):
    root = write_release(tmp_path / "r", [person("1001")])
    path = root / PATHS["cgm"].format(pid="1001")
    doc = orjson.loads(path.read_bytes())
    del doc["body"]["cgm"][7]["blood_glucose"]
    path.write_bytes(orjson.dumps(doc))
    log = ReadLog()
    data, _ = read_participant(root, "1001", "America/Los_Angeles", {}, {}, log)
    assert len(data.glucose) == 47 and log.quirks == {"malformed_records_cgm": 1}
    with pytest.raises(AireadiFormatError, match=r"1001_DEX.json: record 7: lacks the expected cgm fields"):
        read_participant(root, "1001", "America/Los_Angeles", {}, {}, ReadLog(strict=True))


def test_parse_utc_accepts_both_forms_and_counts_the_rest():
    log = ReadLog()
    out = parse_utc(["2023-08-31T17:57:00Z", "2023-08-31 17:58:00", "31/08/2023", None], "f.json", "stress", log)
    assert [str(x) for x in out] == ["2023-08-31T17:57:00", "2023-08-31T17:58:00", "NaT", "NaT"]
    assert log.quirks == {"bad_timestamps_stress": 2}


# --- the four bad inputs, strict and lenient --------------------------------------------------
def _corrupt_json(root):
    (root / PATHS["stress"].format(pid="1002")).write_text('{"header": {}, "body": {"stress": [')
    return PATHS["stress"].format(pid="1002"), "not valid JSON"


def _missing_folder(root):
    import shutil

    shutil.rmtree((root / PATHS["activity"].format(pid="1002")).parent)
    return PATHS["activity"].format(pid="1002"), "activity file not found for participant 1002"


def _empty_list(root):
    path = root / PATHS["sleep"].format(pid="1002")
    doc = orjson.loads(path.read_bytes())
    doc["body"]["sleep"] = []
    path.write_bytes(orjson.dumps(doc))
    return PATHS["sleep"].format(pid="1002"), "empty list of records"


def _bad_timestamp(root):
    path = root / PATHS["cgm"].format(pid="1002")
    doc = orjson.loads(path.read_bytes())
    doc["body"]["cgm"][3]["effective_time_frame"]["time_interval"]["start_date_time"] = "yesterday at noon"
    path.write_bytes(orjson.dumps(doc))
    return PATHS["cgm"].format(pid="1002"), "timestamp does not parse: 'yesterday at noon'"


@pytest.mark.parametrize("damage", [_corrupt_json, _missing_folder, _empty_list, _bad_timestamp])
def test_bad_input_strict_fails_with_path_and_reason(tmp_path, damage):
    root = write_release(tmp_path / "r", [person("1001"), person("1002")], manifests=False)
    rel, reason = damage(root)
    with pytest.raises(AireadiFormatError) as err:
        cohort(root, strict=True)
    assert str(root / rel) in str(err.value) and reason in str(err.value)


@pytest.mark.parametrize(
    "damage, skipped, quirks",
    [
        (_corrupt_json, "stress file unusable", {}),
        (_missing_folder, "activity file not found", {"missing_files_activity": 1}),
        (_empty_list, "sleep file unusable", {}),
        (_bad_timestamp, None, {"bad_timestamps_cgm": 1}),
    ],
)
def test_bad_input_lenient_skips_and_counts(tmp_path, damage, skipped, quirks):
    root = write_release(tmp_path / "r", [person("1001"), person("1002")], manifests=False)
    rel, reason = damage(root)
    frame, _, quality = cohort(root)
    assert quality["quirks"] == quirks
    if skipped is None:  # one reading dropped, the participant stays: 23 readings in 08-10 still pass 50 %
        assert quality["failed_files"] == [] and quality["participants"]["skipped"] == 0
        assert frame["participant_id"].value_counts().to_dict() == {"1001": 3, "1002": 3}
    else:
        assert quality["participants"]["skipped_ids"] == {"1002": skipped}
        assert [f["path"] for f in quality["failed_files"]] == [str(root / rel)]
        assert reason in quality["failed_files"][0]["reason"]
        assert frame["participant_id"].unique().tolist() == ["1001"]


# --- sex and medication ---------------------------------------------------------------------
def test_medication_from_cmtrt_items(tmp_path):
    obs = [
        ["1001", "cmtrt_insln, Do you inject insulin", "Yes"], ["1001", "cmtrt_a1c, pills", "Yes"],
        ["1002", "cmtrt_insln, Do you inject insulin", "No"], ["1002", "cmtrt_a1c, pills", "No"],
        ["1002", "cmtrt_glcs, other injections", "Yes"],
        ["1003", "cmtrt_insln, x", "No"], ["1003", "cmtrt_a1c, x", "No"], ["1003", "cmtrt_glcs, x", "No"],
        ["1004", "cmtrt_insln, x", "No"], ["1004", "cmtrt_lfst, lifestyle", "Yes"],
        ["1005", "bmi_vsorres, BMI", "31"],
    ]
    root = write_release(tmp_path / "r", [person(f"100{i}") for i in range(1, 6)], observation=obs)
    assert medication_from_observation(root) == {
        "1001": "insulin", "1002": "oral_or_noninsulin_injectable", "1003": "none", "1004": "unknown"}
    frame, _, quality = cohort(root)
    meds = frame.groupby("participant_id")["medication"].first().to_dict()
    assert meds == {"1001": "insulin", "1002": "oral_or_noninsulin_injectable", "1003": "none",
                    "1004": "unknown", "1005": "unknown"}
    assert set(frame["sex"]) == {"unknown"}
    demo = quality["demographics"]
    assert (demo["sex_unknown"], demo["medication_unknown"]) == (5, 2)
    assert demo["medication_source"] == {"cmtrt_* screening items": 4, "none": 1}


def test_demographics_file_overrides_and_bad_values_are_named(tmp_path):
    root = write_release(tmp_path / "r", [person("1001"), person("1002")],
                         observation=[["1001", "cmtrt_insln, x", "Yes"]])
    demo = tmp_path / "demo.csv"
    demo.write_text("person_id,sex,medication\n1001,F,none\n1002,male,\n9999,F,insulin\n")
    frame, _, quality = cohort(root, demographics_path=demo)
    got = frame.groupby("participant_id")[["sex", "medication"]].first().to_dict("index")
    assert got == {"1001": {"sex": "female", "medication": "none"}, "1002": {"sex": "male", "medication": "unknown"}}
    assert quality["demographics"]["medication_source"] == {"demographics file": 1, "none": 1}
    assert quality["demographics"]["demographics_rows_not_in_participants_tsv"] == 1
    demo.write_text("person_id,sex,medication\n1001,F,metformin\n")
    with pytest.raises(AireadiFormatError, match=r"demo.csv: row 2 \(participant 1001\): medication 'metformin'"):
        cohort(root, demographics_path=demo)


# --- the CLI stage --------------------------------------------------------------------------
def _cli(args):
    app = typer.Typer()
    app.command()(aireadi_main)
    return CliRunner().invoke(app, [str(a) for a in args])


def _cohort_release(root):
    people = [person(f"{site_digit}{i:03d}", site=site, group=group, split=split, stress=stress)
              for site_digit, site in (("1", "UW"), ("7", "UAB"))
              for i, (group, split, stress) in enumerate([("healthy", "train", 80.0), ("healthy", "test", 40.0),
                                                          ("insulin_dependent", "val", 75.0),
                                                          ("insulin_dependent", "train", 90.0),
                                                          ("pre_diabetes_lifestyle_controlled", "test", 60.0)])]
    write_release(root, people)
    (root / "synthetic_release.json").write_text(json.dumps({"synthetic": True, "seed": 3}))
    (root / "dataset_description.json").write_text(json.dumps({"version": "3.0.0-synthetic"}))
    return root


def test_cli_writes_the_cohort_contract(tmp_path):
    root = _cohort_release(tmp_path / "rel")
    out = tmp_path / "run" / "cohort"
    res = _cli(["--root", tmp_path / "rel", "--out", out, "--split-seed", "3"])
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(out / "features.parquet")
    assert list(frame.columns) == ["window_id", "participant_id", "window_start", "split", *SPEC.names,
                                   "high_stress", "stress_mean"]
    assert len(frame) == 30 and frame["window_id"].is_unique
    # label = day mean > 75: stress 80 and 90 -> 1; 75 (boundary), 60, 40 -> 0
    by_pid = frame.groupby("participant_id")["high_stress"].first()
    assert by_pid.to_dict() == {"1000": 1, "1001": 0, "1002": 0, "1003": 1, "1004": 0,
                                "7000": 1, "7001": 0, "7002": 0, "7003": 1, "7004": 0}
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])
    assert set(split["train"]) | set(split["test"]) == set(by_pid.index)
    assert (frame.groupby("participant_id")["split"].nunique() == 1).all()
    learned = yaml.safe_load((out / "spec.yaml").read_text())
    steps = next(f for f in learned["features"] if f["name"] == "steps_mean")
    assert (steps["min"], steps["max"]) == (10.0, 10.0)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["source"] == {"synthetic": True, "root": str(root), "release_version": "3.0.0-synthetic"}
    assert prov["seed"] == 3
    quality = json.loads((out / "quality.json").read_text())
    assert quality["split"]["train"]["participants"] + quality["split"]["test"]["participants"] == 10


def test_cli_recommended_split_and_determinism(tmp_path):
    _cohort_release(tmp_path / "rel")
    runs = []
    for name, workers in (("a", 1), ("b", 2)):
        res = _cli(["--root", tmp_path / "rel", "--out", tmp_path / name, "--use-recommended-split",
                    "--workers", workers])
        assert res.exit_code == 0, res.output
        runs.append(pd.read_parquet(tmp_path / name / "features.parquet"))
    pd.testing.assert_frame_equal(runs[0], runs[1])  # same input -> identical frame, 1 or 2 processes
    split = json.loads((tmp_path / "a" / "split.json").read_text())
    assert split["method"] == "recommended_split"
    assert split["test"] == ["1001", "1004", "7001", "7004"]  # "val" joins train


def test_cli_strict_error_is_a_clear_message(tmp_path, capsys):
    root = _cohort_release(tmp_path / "rel")
    (root / PATHS["stress"].format(pid="7003")).write_text("{not json")
    with pytest.raises(SystemExit) as ended:
        run_cli(aireadi_main, ["--root", str(root), "--out", str(tmp_path / "out"), "--strict"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "7003_stress.json: line 1 column 2: not valid JSON" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "features.parquet").exists()
    res = _cli(["--root", root, "--out", tmp_path / "out"])
    assert res.exit_code == 0
    quality = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert quality["participants"]["skipped_ids"] == {"7003": "stress file unusable"}


def test_empty_cohort_is_an_error_not_an_empty_file(tmp_path):
    write_release(tmp_path / "r", [person("1001")], "v1")  # v1: no staged sleep -> no window survives
    frame, participants, _ = cohort(tmp_path / "r")
    with pytest.raises(AireadiFormatError, match="no window survived"):
        finish_cohort(frame, participants, SPEC, use_recommended=False, test_fraction=0.2, seed=0)


def test_module_help():
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    res = subprocess.run([sys.executable, "-m", "dataset_builders.aireadi", "--help"], capture_output=True, text=True,
                         env=env, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--label-scope" in res.stdout and "--use-recommended-split" in res.stdout


def test_age_and_group_errors_name_the_file(tmp_path):
    root = write_release(tmp_path / "r", [person("1001"), person("1002", group="diabetic")])
    with pytest.raises(AireadiFormatError, match=r"participants.tsv: participant 1002: study_group 'diabetic'"):
        cohort(root, strict=True)
    frame, _, quality = cohort(root)
    assert quality["participants"]["skipped_ids"] == {"1002": "unknown study_group in participants.tsv"}
    assert np.array_equal(frame["participant_id"].unique(), ["1001"])
