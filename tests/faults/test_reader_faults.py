"""Faults of the AI-READI reader and its CLIs: implausible readings, malformed tables and files,
a missing root, a second writer, a crash before provenance. Each row states the concrete outcome.

Releases come from `dataset_builders.synth` (4 participants x 2 days, no injected quirks, so
every count below is the fault's own), copied per row and damaged in one place.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import orjson
import pandas as pd
import pytest
from harness import Fault, Outcome, assert_one_line_error, params, run_module

from dataset_builders.aireadi import build_cohort, finish_cohort
from dataset_builders.aireadi import main as aireadi_main
from dataset_builders.aireadi_reader import DROPPED_READING_REASONS
from dataset_builders.synth import CONTROLLED_FILE, cgm_path, garmin_path
from dataset_builders.synth import app as synth_app
from dataset_builders.synth import write_release as write_synthetic_release
from dataset_builders.synth_quirks import QuirkRates
from dataset_builders.window_features import LabelRule
from sensecf.atomic import run_lock
from sensecf.cli import run_cli
from sensecf.rundir import RunDir, file_sha256
from sensecf.spec import DatasetSpec

SPEC_FILE = Path(__file__).resolve().parents[2] / "dataset_builders" / "aireadi_spec.yaml"
SPEC = DatasetSpec.from_yaml(SPEC_FILE)
PID = "1001"  # the participant every damage touches (synth ids: 1001, 2001, 4001, 7001)


# --- the clean release and its cohort, built once ---------------------------------------------
@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, pd.DataFrame, pd.DataFrame, dict]:
    """(release root, its windows, its participants table, its quality report)."""
    root = tmp_path_factory.mktemp("clean") / "release"
    write_synthetic_release(root, participants=4, days=2, seed=1, rates=QuirkRates.none())
    frame, participants, quality = cohort(root)
    assert len(frame) > 100 and quality["participants"]["skipped"] == 0  # the base is healthy
    return root, frame, participants, quality


def cohort(root: Path, **kw) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    return build_cohort(root, spec=SPEC, rule=LabelRule(), workers=1, progress=False, **kw)


def _json_edit(path: Path, edit) -> None:
    doc = orjson.loads(path.read_bytes())
    edit(doc)
    path.write_bytes(orjson.dumps(doc))


def _records(root: Path, rel: str, key: str):
    """(path, editor) for the record list of one wearable file: editor(fn) applies fn to the list."""
    path = root / rel.lstrip("/")
    return path, lambda fn: _json_edit(path, lambda doc: fn(doc["body"][key]))


def _tsv_edit(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


# --- damages: each takes the release root (and the row's args), changes one thing -----------------
def cgm_extra_reading(root: Path, args: dict) -> None:
    """Append a copy of the first CGM reading with another date (the real readings stay)."""
    _, edit = _records(root, cgm_path(PID), "cgm")

    def add(records):
        extra = orjson.loads(orjson.dumps(records[0]))
        stamp = args["stamp"]
        extra["effective_time_frame"]["time_interval"] = {"start_date_time": stamp, "end_date_time": stamp}
        records.append(extra)

    edit(add)


def glucose_values(root: Path, args: dict) -> None:
    _, edit = _records(root, cgm_path(PID), "cgm")

    def set_values(records):
        for i, v in zip((10, 20, 30), args["values"], strict=True):
            records[i]["blood_glucose"]["value"] = v

    edit(set_values)


def step_values(root: Path, args: dict) -> None:
    _, edit = _records(root, garmin_path(PID, "activity"), "activity")

    def set_values(records):
        walking = [r for r in records if r["activity_name"] not in ("sedentary", "")][:len(args["values"])]
        for rec, v in zip(walking, args["values"], strict=True):
            rec["base_movement_quantity"]["value"] = v

    edit(set_values)


def point_extra(root: Path, args: dict) -> None:
    """Append a stress (or heart-rate) reading dated args["stamp"]."""
    _, edit = _records(root, garmin_path(PID, args["modality"]), args["modality"])

    def add(records):
        extra = orjson.loads(orjson.dumps(records[0]))
        extra["effective_time_frame"] = {"date_time": args["stamp"]}
        records.append(extra)

    edit(add)


def sleep_extra(root: Path, args: dict) -> None:
    _, edit = _records(root, garmin_path(PID, "sleep"), "sleep")

    def add(records):
        extra = orjson.loads(orjson.dumps(records[0]))
        interval = {"start_date_time": args["start"], "end_date_time": args["end"]}
        extra["effective_time_frame"]["time_interval"] = interval
        records.append(extra)

    edit(add)


def heart_rate_values(root: Path, args: dict) -> None:
    _, edit = _records(root, garmin_path(PID, "heart_rate"), "heart_rate")

    def set_values(records):
        for i, v in enumerate(args["values"]):
            records[100 + i]["heart_rate"]["value"] = v

    edit(set_values)


def participants_extra_column(root: Path, args: dict) -> None:
    _tsv_edit(root / "participants.tsv", lambda lines: [lines[0] + "\tnote"] + [ln + "\tanything" for ln in lines[1:]])


def participants_ragged(root: Path, args: dict) -> None:
    _tsv_edit(root / "participants.tsv", lambda lines: [*lines[:2], lines[2] + "\tstray", *lines[3:]])


def participants_drop_column(root: Path, args: dict) -> None:
    table = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    table.drop(columns=[args["column"]]).to_csv(root / "participants.tsv", sep="\t", index=False)


def participants_header_only(root: Path, args: dict) -> None:
    _tsv_edit(root / "participants.tsv", lambda lines: lines[:1])


def demographics_drop_sex(root: Path, args: dict) -> None:
    table = pd.read_csv(root / CONTROLLED_FILE, sep="\t", dtype=str)
    table.drop(columns=["sex"]).to_csv(root / CONTROLLED_FILE, sep="\t", index=False)


def demographics_ragged(root: Path, args: dict) -> None:
    _tsv_edit(root / CONTROLLED_FILE, lambda lines: [*lines[:2], lines[2] + "\textra", *lines[3:]])


def cgm_not_json(root: Path, args: dict) -> None:
    (root / cgm_path(PID).lstrip("/")).write_text("{not json")


def remove_root(root: Path, args: dict) -> None:
    shutil.rmtree(root)


def remove_participants_tsv(root: Path, args: dict) -> None:
    (root / "participants.tsv").unlink()


def nothing(root: Path, args: dict) -> None:
    """The release stays as written (the fault is in the arguments, not the files)."""


CGM_FILE = cgm_path(PID).rsplit("/", 1)[1]

FAULTS = [
    # implausible readings: dropped and counted in quality.json `dropped_readings`
    Fault("cgm_date_9999", "one CGM reading dated 9999-01-01 (the window grid would span millennia)", "counted",
          {"damage": cgm_extra_reading, "stamp": "9999-01-01T00:00:00Z", "dropped": {"cgm_date_out_of_range": 1},
           "same_windows": True, "cli": True}),
    Fault("cgm_date_far_from_wear", "one CGM reading a year after the participant's 2-day wear", "counted",
          {"damage": cgm_extra_reading, "stamp": "2024-11-01T12:00:00Z", "dropped": {"cgm_date_out_of_range": 1},
           "same_windows": True}),
    Fault("glucose_impossible", "CGM values 5000, 5000 and 0 mg/dL", "counted",
          {"damage": glucose_values, "values": [5000, 5000, 0], "dropped": {"glucose_out_of_range": 3}}),
    Fault("steps_impossible", "step values -5, -5 and 100000 in 1-minute walking records", "counted",
          {"damage": step_values, "values": [-5, "-5", 100000], "dropped": {"steps_out_of_range": 3}}),
    Fault("stress_date_1970", "a stress reading dated 1970-01-01", "counted",
          {"damage": point_extra, "modality": "stress", "stamp": "1970-01-01T00:00:00Z",
           "dropped": {"stress_date_out_of_range": 1}, "same_windows": True}),
    Fault("sleep_date_9999", "a sleep-stage record dated 9999", "counted",
          {"damage": sleep_extra, "start": "9999-01-01T00:00:00Z", "end": "9999-01-01T00:30:00Z",
           "dropped": {"sleep_date_out_of_range": 1}, "same_windows": True}),
    Fault("heart_rate_impossible", "heart rates 400 and 5 bpm (with --count-heart-rate)", "counted",
          {"damage": heart_rate_values, "values": [400, 5], "dropped": {"heart_rate_out_of_range": 2},
           "count_heart_rate": True, "same_windows": True}),
    Fault("participants_extra_column", "participants.tsv with an extra column 'note'", "counted",
          {"damage": participants_extra_column, "dropped": {}, "same_windows": True}),
    Fault("cgm_not_json_lenient", "a CGM file that is not JSON, lenient mode", "counted",
          {"damage": cgm_not_json, "dropped": {}, "failed": CGM_FILE, "skipped": {PID: "cgm file unusable"}}),
    # bad input: one line `error: <file>: <where>: <reason>`, exit 2, nothing written
    Fault("participants_ragged_row", "participants.tsv line 3 has one field more than the header", "error",
          {"damage": participants_ragged,
           "names": ["participants.tsv", "line 3", "16 fields where the header has 15"]}),
    Fault("participants_missing_age", "participants.tsv without the age column", "error",
          {"damage": participants_drop_column, "column": "age",
           "names": ["participants.tsv", "column 'age'", "missing"]}),
    Fault("participants_missing_id", "participants.tsv without person_id", "error",
          {"damage": participants_drop_column, "column": "person_id",
           "names": ["participants.tsv", "column 'person_id'", "missing"]}),
    Fault("participants_header_only", "participants.tsv with a header and no rows", "error",
          {"damage": participants_header_only, "names": ["participants.tsv", "line 2", "no participants listed"]}),
    Fault("demographics_without_sex", "--demographics file without the sex column", "error",
          {"damage": demographics_drop_sex, "demographics": True,
           "names": ["demographics.tsv", "column 'sex'", "missing"]}),
    Fault("demographics_ragged_row", "--demographics file whose line 3 has an extra field", "error",
          {"damage": demographics_ragged, "demographics": True,
           "names": ["demographics.tsv", "line 3", "4 fields where the header has 3"]}),
    Fault("root_missing", "--root names a folder that does not exist", "error",
          {"damage": remove_root, "names": ["release", "--root", "no such folder"]}),
    Fault("root_without_participants", "--root holds no participants.tsv anywhere", "error",
          {"damage": remove_participants_tsv, "names": ["release", "--root", "no participants.tsv"]}),
    Fault("cgm_not_json_strict", "a CGM file that is not JSON, --strict", "error",
          {"damage": cgm_not_json, "strict": True, "names": [CGM_FILE, "line 1 column 2", "not valid JSON"],
           "cli": True}),
    Fault("synth_out_is_a_file", "the synthetic writer's --out names an existing file", "error",
          {"damage": nothing, "synth": True, "names": ["a_file", "--out", "exists and is not a folder"]}),
]


def _cohort_args(root: Path, out: Path, args: dict) -> list[str]:
    argv = ["--root", str(root), "--out", str(out), "--workers", "1"]
    if args.get("strict"):
        argv.append("--strict")
    if args.get("demographics"):
        argv += ["--demographics", str(root / CONTROLLED_FILE)]
    return argv


def run_inprocess(function, argv: list[str], capsys) -> Outcome:
    """The CLI's error boundary in this process (fast); the `cli` rows go through a subprocess."""
    with pytest.raises(SystemExit) as ended:
        run_cli(function, argv)
    captured = capsys.readouterr()
    return Outcome(int(ended.value.code or 0), captured.out, captured.err)


@pytest.fixture
def damaged(clean, tmp_path) -> Path:
    root = tmp_path / "release"
    shutil.copytree(clean[0], root)
    return root


@pytest.mark.parametrize("fault", params(FAULTS))
def test_reader_fault(fault: Fault, clean, damaged, tmp_path, capsys):
    args = fault.args
    args["damage"](damaged, args)
    out = tmp_path / "run" / "cohort"
    if args.get("synth"):
        target = tmp_path / "a_file"
        target.write_text("keep me")
        outcome = run_inprocess(synth_app, ["--out", str(target), "--participants", "2", "--days", "1"], capsys)
        assert_one_line_error(outcome, *args["names"])
        assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "release"]
        return
    if fault.expect == "error":
        argv = _cohort_args(damaged, out, args)
        outcome = run_module("dataset_builders", "aireadi", *argv) if args.get("cli") else \
            run_inprocess(aireadi_main, argv, capsys)
        line = assert_one_line_error(outcome, *args["names"])
        assert line.startswith("error: ") and len(line.split(": ")) >= 4, line  # error: file: where: reason
        assert not out.exists() or not any(out.iterdir()), "nothing is written on bad input"
        return

    _, clean_frame, clean_participants, clean_quality = clean
    if args.get("cli"):  # end to end through `python -m dataset_builders aireadi`
        started = time.monotonic()
        outcome = run_module("dataset_builders", "aireadi", *_cohort_args(damaged, out, args))
        assert outcome.rc == 0 and "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
        assert time.monotonic() - started < 120, "a stray date must not blow up the window grid"
        quality = orjson.loads((out / "quality.json").read_bytes())
        got = pd.read_parquet(out / "features.parquet")
        expected, _, _ = finish_cohort(clean_frame, clean_participants, SPEC, use_recommended=False,
                                       test_fraction=0.2, seed=0)
        assert got["window_id"].tolist() == expected["window_id"].tolist()
        pd.testing.assert_frame_equal(got[SPEC.names], expected[SPEC.names])
        assert RunDir(out.parent).is_synthetic(), "provenance (written last) vouches for this features.parquet"
    else:
        frame, _, quality = cohort(damaged, count_heart_rate=args.get("count_heart_rate", False))
        if args.get("same_windows"):
            pd.testing.assert_frame_equal(frame, clean_frame)
            assert quality["windows"] == clean_quality["windows"]
    assert quality["dropped_readings"] == {reason: args["dropped"].get(reason, 0) for reason in DROPPED_READING_REASONS}
    if "failed" in args:
        assert [Path(f["path"]).name for f in quality["failed_files"]] == [args["failed"]]
        assert "not valid JSON" in quality["failed_files"][0]["reason"]
        assert quality["participants"]["skipped_ids"] == args["skipped"]
    else:
        assert quality["failed_files"] == [] and quality["participants"]["skipped"] == 0


# --- writers: a second one stops, a crash before provenance leaves nothing vouched for ------------
WRITER_FAULTS = [
    Fault("second_cohort_writer", "a second cohort build while the run directory is locked", "stop",
          {"damage": nothing}),
    Fault("crash_before_provenance", "the cohort build dies after its files, before provenance.json", "resume",
          {"damage": nothing}),
]


@pytest.mark.parametrize("fault", params(WRITER_FAULTS))
def test_writer_fault(fault: Fault, damaged, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    out = run / "cohort"
    argv = _cohort_args(damaged, out, {})
    if fault.id == "second_cohort_writer":
        with run_lock(run):  # the lock is a flock: a second open of it conflicts, in this process too
            outcome = run_inprocess(aireadi_main, argv, capsys)
        assert "Traceback" not in outcome.stderr and outcome.rc != 0, outcome.stderr[-3000:]
        assert len(outcome.error_lines) == 1 and str(run / ".lock") in outcome.error_lines[0], outcome.stderr
        assert not (out / "features.parquet").exists()
        return

    aireadi_main(root=damaged, out=out, **_defaults(split_seed=5))  # an earlier cohort, other split
    import dataset_builders.aireadi as stage

    def killed(*a, **k):
        raise KeyboardInterrupt("killed before provenance")

    monkeypatch.setattr(stage, "write_provenance", killed)
    with pytest.raises(KeyboardInterrupt):
        aireadi_main(root=damaged, out=out, **_defaults())
    assert not (out / "provenance.json").exists(), "no provenance vouches for a half-replaced cohort"
    assert not RunDir(run).is_synthetic()
    monkeypatch.undo()
    aireadi_main(root=damaged, out=out, **_defaults())  # the re-run
    uninterrupted = tmp_path / "other" / "cohort"
    aireadi_main(root=damaged, out=uninterrupted, **_defaults())
    for name in ("features.parquet", "split.json", "spec.yaml", "quality.json"):
        assert file_sha256(out / name) == file_sha256(uninterrupted / name), name
    provenance = orjson.loads((out / "provenance.json").read_bytes())
    assert provenance["outputs"]["features.parquet"] == file_sha256(out / "features.parquet")
    assert RunDir(run).is_synthetic()


def _defaults(**changed) -> dict:
    """aireadi.main's keyword defaults (typer's OptionInfo objects replaced by their values)."""
    import inspect

    values = {name: p.default.default for name, p in inspect.signature(aireadi_main).parameters.items()
              if name not in ("root", "out")}
    values.update(workers=1, **changed)
    return values
