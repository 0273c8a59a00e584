"""Read an AI-READI release (v1, v2 or v3 layout) into tidy numpy arrays, one participant at a time.

Format facts come from the project's AI-READI format notes (reference/aireadi-format.md):
participants.tsv with `person_id` (v3) or `participant_id` (v1/v2); wearable files under
datatype/modality/device/<pid>/, located through each datatype's manifest.tsv when it names
them; CGM body a bare list (v1) or `body.cgm` (v2/v3); sleep time frames under
`effective_time_frame` (v3) or `sleep_stage_time_frame` (v2); timestamps "...Z" or
"YYYY-MM-DD HH:MM:SS", both UTC, converted to the participant's local clock.

Every quirk the reader repairs is counted in a `ReadLog`; every file it cannot use either
raises `AireadiFormatError` naming the file, the place in it and the reason (strict) or is
recorded with its reason (lenient). Nothing is dropped without a count.

Tables (participants.tsv, the manifests, the demographics file) must have one field per
header column on every line (a ragged line is an error naming the file and line); extra
columns are ignored, a missing required column is an error naming it.

Plausibility: readings that parse but cannot be real are dropped and counted per reason in
`ReadLog.dropped` (quality.json `dropped_readings`), in strict and lenient mode alike:
- dates: every reading must lie in the study period STUDY_PERIOD (AI-READI began collecting
  in July 2023 and runs to 2026; a margin on both sides), and a CGM reading within
  CGM_MAX_DAYS_FROM_MEDIAN days of the participant's median CGM time (a Dexcom G6 session
  lasts 10 days). CGM readings set the window grid, so one stray date (9999-01-01) would
  otherwise make it span millennia. Reason `<modality>_date_out_of_range`.
- glucose outside GLUCOSE_PLAUSIBLE mg/dL (Dexcom reports 40-400 and writes "Low"/"High"
  beyond; meters read up to 600): `glucose_out_of_range`.
- steps negative or above STEPS_PER_MINUTE_MAX per minute of the record (a record shorter
  than a minute counts as one minute; the fastest sprint cadence is ~250/min):
  `steps_out_of_range`.
- heart rate (read only with --count-heart-rate) outside HEART_RATE_PLAUSIBLE bpm, the 0
  "no reading" sentinel aside: `heart_rate_out_of_range`.
- stress: negative codes and values over 100 become "no value" (counted in the quirks as
  `stress_sentinel` / `stress_over_100`); sleep and activity intervals with end < start or
  longer than 24 h are dropped (quirks `bad_intervals_<modality>`).
"""

from __future__ import annotations

import csv
import gc
import io
import os
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from sensecf.cli import InputError

LOS_ANGELES = "America/Los_Angeles"
CHICAGO = "America/Chicago"
TZ_BY_HEADER = {"pst": LOS_ANGELES, "cst": CHICAGO}
TZ_BY_SITE = {"UW": LOS_ANGELES, "UCSD": LOS_ANGELES, "UAB": CHICAGO}
# The pipeline's rule when no site is given: 1***/2*** UW, 4***/5*** UCSD, 7***/8*** UAB.
TZ_BY_FIRST_DIGIT = {"1": LOS_ANGELES, "2": LOS_ANGELES, "4": LOS_ANGELES, "5": LOS_ANGELES, "7": CHICAGO, "8": CHICAGO}

# Dexcom writes readings below 40 mg/dL as "Low" and above 400 as "High". For range counts
# (TIR, hyperglycaemia) they sit just outside the sensor range; means clip them to 40/400.
GLUCOSE_LOW = 39.0
GLUCOSE_HIGH = 401.0

SLEEP_STAGES = {"awake": 0, "light": 1, "deep": 2, "rem": 3}
UNKNOWN_STAGE = -1
MAX_RECORD_SECONDS = 24 * 3600

# Plausibility bounds (module docstring).
STUDY_PERIOD = (np.datetime64("2023-01-01T00:00:00", "s"), np.datetime64("2028-01-01T00:00:00", "s"))  # [start, end)
CGM_MAX_DAYS_FROM_MEDIAN = 60
GLUCOSE_PLAUSIBLE = (20.0, 600.0)  # mg/dL, inclusive; Low/High stand at 39/401 inside it
STEPS_PER_MINUTE_MAX = 300.0
HEART_RATE_PLAUSIBLE = (25.0, 250.0)  # bpm, inclusive
DROPPED_READING_REASONS = (
    "cgm_date_out_of_range", "activity_date_out_of_range", "sleep_date_out_of_range", "stress_date_out_of_range",
    "glucose_out_of_range", "steps_out_of_range", "heart_rate_out_of_range",
)  # fmt: skip
PLAUSIBILITY_RULES = {
    "study_period": [str(STUDY_PERIOD[0]), str(STUDY_PERIOD[1]) + " (exclusive)"],
    "cgm_max_days_from_participant_median": CGM_MAX_DAYS_FROM_MEDIAN,
    "glucose_mg_dl": list(GLUCOSE_PLAUSIBLE),
    "steps_per_minute_max": STEPS_PER_MINUTE_MAX,
    "heart_rate_bpm": list(HEART_RATE_PLAUSIBLE),
}


@dataclass(frozen=True)
class Modality:
    name: str
    datatype: str  # top-level folder, also the participants.tsv flag column
    standard_path: str  # relative to the dataset root, {pid} filled in
    manifest_columns: tuple[str, ...]  # v3 `*_filepath`; the docs' `*_filename` accepted too


_GARMIN = "wearable_activity_monitor/{folder}/garmin_vivosmart5/{{pid}}/{{pid}}_{suffix}.json"
MODALITIES = {
    "cgm": Modality(
        "cgm",
        "wearable_blood_glucose",
        "wearable_blood_glucose/continuous_glucose_monitoring/dexcom_g6/{pid}/{pid}_DEX.json",
        ("glucose_filepath", "glucose_filename"),
    ),
    "activity": Modality(
        "activity",
        "wearable_activity_monitor",
        _GARMIN.format(folder="physical_activity", suffix="activity"),
        ("physical_activity_filepath", "physical_activity_filename"),
    ),
    "sleep": Modality(
        "sleep",
        "wearable_activity_monitor",
        _GARMIN.format(folder="sleep", suffix="sleep"),
        ("sleep_filepath", "sleep_filename"),
    ),
    "stress": Modality(
        "stress",
        "wearable_activity_monitor",
        _GARMIN.format(folder="stress", suffix="stress"),
        ("stress_level_filepath", "stress_level_filename"),
    ),
    "heart_rate": Modality(
        "heart_rate",
        "wearable_activity_monitor",
        _GARMIN.format(folder="heart_rate", suffix="heartrate"),
        ("heartrate_filepath", "heartrate_filename"),
    ),
}
# The modalities the window features need; a participant without one of them is skipped.
REQUIRED = ("cgm", "activity", "sleep", "stress")


class AireadiFormatError(InputError):
    """Input the reader cannot use: `AireadiFormatError(file, where, reason)` reads
    `file: where: reason` (where may be None)."""

    def __reduce__(self):  # rebuilt from its three parts, so a worker process can send it back
        return type(self), (self.file, self.where, self.reason)


@dataclass
class ReadLog:
    """Counts of repaired quirks, of implausible readings dropped, and the files that could not be used."""

    strict: bool = False
    quirks: Counter = field(default_factory=Counter)
    failures: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.quirks[key] += int(n)

    def drop(self, reason: str, n: int) -> None:
        """Readings that parse but cannot be real (module docstring), dropped in either mode."""
        if n:
            self.dropped[reason] += int(n)

    def fail(self, path: Path | str, where: str | None, reason: str) -> None:
        """A file (or a record in it) that cannot be used: raise when strict, else record it."""
        if self.strict:
            raise AireadiFormatError(path, where, reason)
        self.failures.append({"path": str(path), "reason": ": ".join(x for x in (where, reason) if x)})


# --- release-level files -------------------------------------------------------------------
def find_root(directory: str | Path, max_depth: int = 6) -> Path:
    """The folder holding participants.tsv: DIR itself, or the shallowest one below it (the
    fairhub download nests the release under `.../dataset/`)."""
    level = [Path(directory)]
    if not level[0].is_dir():
        reason = "is a file, not a folder" if level[0].exists() else "no such folder"
        raise AireadiFormatError(directory, "--root", reason)
    for _ in range(max_depth + 1):
        found = sorted(d for d in level if (d / "participants.tsv").is_file())
        if found:
            return found[0]
        nxt = []
        for d in level:
            try:
                nxt.extend(Path(e.path) for e in os.scandir(d) if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
        level = sorted(nxt)
        if not level:
            break
    raise AireadiFormatError(directory, "--root", f"no participants.tsv in it or in its subfolders (depth {max_depth})")


def _id_column(columns, path: Path) -> str:
    for name in ("person_id", "participant_id"):
        if name in columns:
            return name
    raise AireadiFormatError(path, "column 'person_id'",
                             f"missing (v3; v1/v2 call it 'participant_id'); the columns are {list(columns)}")


def read_table(path: Path, sep: str | None = None) -> pd.DataFrame:
    """A delimited text table as strings (tab-separated when the header has a tab, else
    comma-separated, unless `sep` says), every line checked against the header: a line with
    more or fewer fields is an error naming the file and line. Blank lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AireadiFormatError(path, None, "file not found") from None
    except IsADirectoryError:
        raise AireadiFormatError(path, None, "is a folder, not a file") from None
    except UnicodeDecodeError as e:
        raise AireadiFormatError(path, f"byte {e.start}", "not UTF-8 text") from None
    first_line = text.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text), delimiter=sep or ("\t" if "\t" in first_line else ","))
    header = [h.strip() for h in next(reader, [])]
    if not any(header):
        raise AireadiFormatError(path, "line 1", "no header row (the file is empty)")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise AireadiFormatError(path, "line 1", f"column names repeated in the header: {twice}")
    rows = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise AireadiFormatError(path, f"line {reader.line_num}",
                                     f"{len(row)} fields where the header has {len(header)}")
        rows.append(row)
    return pd.DataFrame(rows, columns=header, dtype=str)


def require_columns(df: pd.DataFrame, path: Path, columns: tuple[str, ...], why: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise AireadiFormatError(path, f"column '{missing[0]}'", f"missing; {why}")


PARTICIPANT_COLUMNS = ("age", "study_group")  # besides the id column


def read_participants(root: Path) -> pd.DataFrame:
    """participants.tsv with the id column normalised to `participant_id` (str) and the
    datatype flag columns ("TRUE"/"FALSE") as booleans. Columns beyond the required ones are kept
    and otherwise ignored."""
    path = root / "participants.tsv"
    df = read_table(path, sep="\t")
    df = df.rename(columns={_id_column(df.columns, path): "participant_id"})
    require_columns(df, path, PARTICIPANT_COLUMNS, "participants.tsv needs person_id (or participant_id), "
                    "age and study_group")
    if df.empty:
        raise AireadiFormatError(path, "line 2", "no participants listed (the file has only a header)")
    df["participant_id"] = df["participant_id"].str.strip()
    blank = df.index[df["participant_id"] == ""]
    if len(blank):
        raise AireadiFormatError(path, f"line {blank[0] + 2}", "empty participant id")
    dupes = df["participant_id"][df["participant_id"].duplicated()].tolist()
    if dupes:
        raise AireadiFormatError(path, "column 'participant_id'", f"participant ids listed twice: {dupes[:10]}")
    for flag in {m.datatype for m in MODALITIES.values()}:
        if flag in df.columns:
            df[flag] = df[flag].str.strip().str.upper().map({"TRUE": True, "FALSE": False})
    return df


def read_manifest_paths(root: Path) -> dict[str, dict[str, str | None]]:
    """{modality: {participant_id: path relative to root, or None where the manifest says
    "None"}} from the datatype manifests that exist (they are optional)."""
    out: dict[str, dict[str, str | None]] = {}
    for datatype in sorted({m.datatype for m in MODALITIES.values()}):
        path = root / datatype / "manifest.tsv"
        if not path.is_file():
            continue
        df = read_table(path, sep="\t")
        ids = df[_id_column(df.columns, path)].str.strip()
        for mod in MODALITIES.values():
            if mod.datatype != datatype:
                continue
            col = next((c for c in mod.manifest_columns if c in df.columns), None)
            if col is None:
                continue
            values = df[col].str.strip()
            missing = values.str.lower().isin(["none", ""])
            out[mod.name] = {pid: (None if miss else val) for pid, val, miss in zip(ids, values, missing, strict=True)}
    return out


def release_version(root: Path) -> str | None:
    """The release's version from dataset_description.json, else the first version in CHANGELOG.md."""
    desc = root / "dataset_description.json"
    if desc.is_file():
        try:
            doc = orjson.loads(desc.read_bytes())
        except orjson.JSONDecodeError:
            doc = {}
        if isinstance(doc, dict):
            for key, value in doc.items():
                if key.lower() in ("version", "datasetversion", "dataset_version") and isinstance(value, str | int):
                    return str(value)
    changelog = root / "CHANGELOG.md"
    if changelog.is_file():
        match = re.search(r"v?(\d+\.\d+\.\d+)", changelog.read_text(errors="replace"))
        if match:
            return match.group(1)
    return None


def is_synthetic_release(root: Path) -> bool:
    """True iff ROOT/synthetic_release.json exists and says `"synthetic": true`."""
    marker = root / "synthetic_release.json"
    if not marker.is_file():
        return False
    try:
        doc = orjson.loads(marker.read_bytes())
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and doc.get("synthetic") is True


def participant_timezone(pid: str, site: str | None) -> str | None:
    """The local time zone from the clinical site, else from the id's first digit."""
    if site and site.strip().upper() in TZ_BY_SITE:
        return TZ_BY_SITE[site.strip().upper()]
    return TZ_BY_FIRST_DIGIT.get(pid[:1])


def locate(
    root: Path, pid: str, modality: str, manifests: dict, flags: dict[str, bool | None]
) -> tuple[Path | None, bool]:
    """(file, expected): the file from the manifest, else the standard path; `expected` is
    False when the release itself says the data is absent (manifest "None" or flag FALSE),
    so a missing file is then not an input error."""
    mod = MODALITIES[modality]
    listed = manifests.get(modality, {})
    if pid in listed and listed[pid] is None:
        return None, False
    if listed.get(pid):
        candidate = root / listed[pid].lstrip("/")
        if candidate.is_file():
            return candidate, True
    standard = root / mod.standard_path.format(pid=pid)
    if standard.is_file():
        return standard, True
    return None, flags.get(mod.datatype) is not False


def standard_path(root: Path, pid: str, modality: str) -> Path:
    return root / MODALITIES[modality].standard_path.format(pid=pid)


# --- one file ------------------------------------------------------------------------------
@contextmanager
def _no_gc():
    """Pause the cyclic garbage collector: a wearable file decodes into ~10^5 small dicts, and
    the collector's repeated passes over them cost more than decoding them (they hold no
    cycles; reference counting frees them)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _load_records(path: Path, list_key: str, log: ReadLog) -> tuple[list | None, str | None]:
    """(records, header timezone) of one wearable JSON; None records when it failed."""
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as e:
        log.fail(path, None, f"cannot read: {e.strerror}")
        return None, None
    except orjson.JSONDecodeError as e:
        log.fail(path, f"line {e.lineno} column {e.colno}", f"not valid JSON: {e.msg}")
        return None, None
    if not isinstance(doc, dict):
        log.fail(path, "top level", "not a JSON object")
        return None, None
    header = doc.get("header") if isinstance(doc.get("header"), dict) else {}
    tz = header.get("timezone")
    body = doc.get("body")
    if isinstance(body, dict):
        # v2/v3: exactly one list under body; the key names the modality.
        records = body.get(list_key)
        if records is None and len(body) == 1:
            records = next(iter(body.values()))
    else:
        records = body  # v1 CGM: body is the bare list
    if not isinstance(records, list):
        log.fail(path, "body", f"no list of records (expected body.{list_key} or a bare list)")
        return None, None
    if not records:
        log.fail(path, "body", "empty list of records")
        return None, None
    return records, tz if isinstance(tz, str) else None


def _pluck_slowly(records: list, fields, path: Path, modality: str, log: ReadLog) -> list[tuple]:
    """Per-record extraction for files the fast comprehension choked on: malformed records
    are counted (or raise when strict)."""
    out = []
    for i, rec in enumerate(records):
        try:
            out.append(fields(rec))
        except (KeyError, TypeError, AttributeError, IndexError):
            if log.strict:
                log.fail(path, f"record {i}", f"lacks the expected {modality} fields: {str(rec)[:200]}")
            log.count(f"malformed_records_{modality}")
    return out


def _parse_simple_stamps(stamps: list) -> np.ndarray | None:
    """Vectorised parse when every stamp is "YYYY-MM-DDTHH:MM:SS" (or a space for the T), with
    or without a trailing "Z"; None when any is not, so the caller takes the careful path."""
    arr = np.asarray(stamps)
    if arr.ndim != 1 or arr.dtype.kind != "U" or arr.dtype.itemsize > 20 * 4:
        return None
    if len(arr) == 0:
        return np.empty(0, dtype="datetime64[s]")
    c = arr.astype("U20").view(np.uint32).reshape(len(arr), 20)
    shape_ok = (
        (c[:, 4] == ord("-")) & (c[:, 7] == ord("-")) & ((c[:, 10] == ord("T")) | (c[:, 10] == ord(" ")))
        & (c[:, 13] == ord(":")) & (c[:, 16] == ord(":")) & (c[:, 18] != 0) & ((c[:, 19] == ord("Z")) | (c[:, 19] == 0))
    )
    if not shape_ok.all():
        return None
    try:
        return arr.astype("U19").astype("datetime64[s]")
    except ValueError:  # right shape, impossible value (month 13, letters for digits)
        return None


def parse_utc(stamps: list, path: Path, modality: str, log: ReadLog) -> np.ndarray:
    """UTC datetime64[s] from "YYYY-MM-DDTHH:MM:SSZ" or "YYYY-MM-DD HH:MM:SS" strings; NaT
    (counted as bad_timestamps_<modality>, or raised when strict) for anything else."""
    fast = _parse_simple_stamps(stamps)
    if fast is not None:
        return fast
    # Careful path, rare: pandas parses each ISO-8601 form and marks the rest NaT.
    as_text = [s if isinstance(s, str) else "" for s in stamps]
    parsed = pd.to_datetime(pd.Series(as_text, dtype=object), format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        if log.strict:
            at = int(np.argmax(bad))
            log.fail(path, f"record {at}", f"timestamp does not parse: {stamps[at]!r}")
        log.count(f"bad_timestamps_{modality}", int(bad.sum()))
    return parsed.dt.tz_localize(None).to_numpy().astype("datetime64[s]")


def to_local(utc: np.ndarray, tz: str) -> np.ndarray:
    """Wall-clock (tz-naive) datetime64[s] in `tz` for UTC datetime64[s]."""
    idx = pd.DatetimeIndex(utc).tz_localize("UTC").tz_convert(tz).tz_localize(None)
    return idx.to_numpy().astype("datetime64[s]")


def _keep_unique_sorted(keys: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Indices that sort records by `keys` (first key primary) keeping the first of records
    whose keys repeat, and the number of repeats dropped."""
    order = np.lexsort(keys[::-1])
    if len(order) < 2:
        return order, 0
    same = np.ones(len(order) - 1, dtype=bool)
    for k in keys:
        ks = k[order]
        same &= ks[1:] == ks[:-1]
    keep = np.concatenate([[True], ~same])
    return order[keep], int(same.sum())


def _zone(header_tz: str | None, fallback: str) -> str:
    """The file header's time zone ("pst"/"cst", v3) if it has one, else the participant's."""
    return TZ_BY_HEADER.get((header_tz or "").strip().lower(), fallback)


def _unique_local(keys_utc: list[np.ndarray], zone: str, modality: str, log: ReadLog):
    """(indices of the records to keep, their keys in local time), ordered by local time.

    A record whose UTC keys repeat an earlier one's is a duplicate (counted). Deduplicating in
    UTC, not local time, keeps both copies of the hour a daylight-saving fall-back repeats."""
    keep, dups = _keep_unique_sorted(keys_utc)
    log.count(f"duplicates_{modality}", dups)
    local = [to_local(k[keep], zone) for k in keys_utc]
    order = np.argsort(local[0], kind="stable")
    return keep[order], [k[order] for k in local]


def _drop_bad_intervals(start, end, modality: str, log: ReadLog) -> np.ndarray:
    """Mask of intervals to keep: end >= start and at most 24 h long; the rest counted."""
    bad = (end < start) | ((end - start).astype(np.int64) > MAX_RECORD_SECONDS)
    log.count(f"bad_intervals_{modality}", int(bad.sum()))
    return ~bad


def plausible_dates(times: list[np.ndarray], usable: np.ndarray, modality: str, log: ReadLog,
                    max_days_from_median: int | None = None) -> np.ndarray:
    """Mask of the `usable` records whose every time (UTC datetime64[s]) lies in STUDY_PERIOD
    and, given `max_days_from_median`, within that many days of the median of the first times;
    the usable records outside are counted as `<modality>_date_out_of_range`."""
    ok = usable.copy()
    for t in times:
        ok &= (t >= STUDY_PERIOD[0]) & (t < STUDY_PERIOD[1])  # NaT compares False
    if max_days_from_median is not None and ok.any():
        seconds = times[0].astype(np.int64)
        median = np.median(seconds[ok])
        ok &= np.abs(np.where(ok, seconds, median) - median) <= max_days_from_median * 86400
    log.drop(f"{modality}_date_out_of_range", int((usable & ~ok).sum()))
    return ok


def plausible_values(values: np.ndarray, usable: np.ndarray, low: float, high: float, reason: str,
                     log: ReadLog) -> np.ndarray:
    """Mask of the `usable` records whose value lies in [low, high]; the rest counted as `reason`."""
    with np.errstate(invalid="ignore"):
        ok = usable & (values >= low) & (values <= high)
    log.drop(reason, int((usable & ~ok).sum()))
    return ok


@dataclass
class Glucose:
    time: np.ndarray  # local datetime64[s], sorted
    value: np.ndarray  # mg/dL; "Low" -> GLUCOSE_LOW, "High" -> GLUCOSE_HIGH

    def __len__(self) -> int:
        return len(self.time)


@dataclass
class Activity:
    start: np.ndarray  # local datetime64[s]
    end: np.ndarray
    steps: np.ndarray  # float, NaN where the record has no step value

    def __len__(self) -> int:
        return len(self.start)


@dataclass
class Sleep:
    start: np.ndarray  # local datetime64[s]
    end: np.ndarray
    stage: np.ndarray  # int8: SLEEP_STAGES codes, UNKNOWN_STAGE for unknown or unstaged

    def __len__(self) -> int:
        return len(self.start)


@dataclass
class Stress:
    time: np.ndarray  # local datetime64[s]
    value: np.ndarray  # 0..100, NaN for sentinels

    def __len__(self) -> int:
        return len(self.time)


def _point_time(rec: dict) -> str:
    etf = rec["effective_time_frame"]
    return etf["date_time"] if "date_time" in etf else etf["time_interval"]["start_date_time"]


def read_glucose(path: Path, tz: str, log: ReadLog) -> Glucose | None:
    records, header_tz = _load_records(path, "cgm", log)
    if records is None:
        return None
    try:
        stamps = [r["effective_time_frame"]["time_interval"]["start_date_time"] for r in records]
        values = [r["blood_glucose"]["value"] for r in records]
    except (KeyError, TypeError):
        rows = _pluck_slowly(records, lambda r: (_point_time(r), r["blood_glucose"]["value"]), path, "cgm", log)
        stamps, values = [r[0] for r in rows], [r[1] for r in rows]
    n_low, n_high = values.count("Low"), values.count("High")
    log.count("glucose_low", n_low)
    log.count("glucose_high", n_high)
    if n_low or n_high:
        values = [GLUCOSE_LOW if v == "Low" else GLUCOSE_HIGH if v == "High" else v for v in values]
    try:
        value = np.array(values, dtype=float)
    except (ValueError, TypeError):
        value = np.array([_number(v) for v in values], dtype=float)
    bad_value = np.isnan(value)
    if bad_value.any():
        if log.strict:
            at = int(np.argmax(bad_value))
            log.fail(path, f"record {at}", f"glucose value is not a number, 'Low' or 'High': {values[at]!r}")
        log.count("bad_values_cgm", int(bad_value.sum()))
    utc = parse_utc(stamps, path, "cgm", log)
    ok = ~np.isnat(utc) & ~bad_value
    ok = plausible_values(value, ok, *GLUCOSE_PLAUSIBLE, "glucose_out_of_range", log)
    ok = plausible_dates([utc], ok, "cgm", log, CGM_MAX_DAYS_FROM_MEDIAN)
    idx, (time,) = _unique_local([utc[ok]], _zone(header_tz, tz), "cgm", log)
    return Glucose(time, value[ok][idx])


def _number(v) -> float:
    """float(v) for numbers and numeric strings; NaN otherwise."""
    if isinstance(v, bool):
        return np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _interval(rec: dict, frame_key: str = "effective_time_frame") -> tuple[str, str]:
    ti = rec[frame_key]["time_interval"]
    return ti["start_date_time"], ti["end_date_time"]


def read_activity(path: Path, tz: str, log: ReadLog) -> Activity | None:
    records, header_tz = _load_records(path, "activity", log)
    if records is None:
        return None
    try:
        starts = [r["effective_time_frame"]["time_interval"]["start_date_time"] for r in records]
        ends = [r["effective_time_frame"]["time_interval"]["end_date_time"] for r in records]
        values = [r["base_movement_quantity"]["value"] for r in records]
        names = [r.get("activity_name") for r in records]
    except (KeyError, TypeError, AttributeError):
        rows = _pluck_slowly(
            records,
            lambda r: (*_interval(r), r["base_movement_quantity"]["value"], r.get("activity_name")),
            path,
            "activity",
            log,
        )
        starts, ends, values, names = ([r[i] for r in rows] for i in range(4))
    # Steps arrive as int, float, numeric string or "" (no value): coerce and count.
    n_str = sum(type(v) is str for v in values)
    if n_str:
        n_empty = sum(1 for v in values if v == "" or v is None)
        numbers = [_number(v) for v in values]
        n_unparseable = sum(1 for v, x in zip(values, numbers, strict=True) if v not in ("", None) and np.isnan(x))
        log.count("steps_empty", n_empty)
        log.count("steps_string", n_str - n_empty - n_unparseable)
        log.count("steps_unparseable", n_unparseable)
        steps = np.array(numbers, dtype=float)
    else:
        try:
            steps = np.array(values, dtype=float)
        except (TypeError, ValueError):
            steps = np.array([_number(v) for v in values], dtype=float)
        log.count("steps_empty", int(np.isnan(steps).sum()))
    sedentary = np.array([n == "sedentary" for n in names], dtype=bool)
    steps[sedentary] = 0.0  # Garmin writes sedentary minutes as 0 steps; hold to that
    if len(starts) > 1 and starts[1:] == ends[:-1]:
        # Garmin chains activity intervals (each starts where the last ended): parse once
        edges = parse_utc([*starts, ends[-1]], path, "activity", log)
        start, end = edges[:-1], edges[1:]
    else:
        start = parse_utc(starts, path, "activity", log)
        end = parse_utc(ends, path, "activity", log)
    ok = ~np.isnat(start) & ~np.isnat(end)
    start, end, steps = start[ok], end[ok], steps[ok]
    ok = _drop_bad_intervals(start, end, "activity", log)
    ok = plausible_dates([start, end], ok, "activity", log)
    # a plausible step value: 0 .. STEPS_PER_MINUTE_MAX per minute of the record (at least one minute)
    minutes = np.maximum((end - start).astype(np.int64) / 60.0, 1.0)
    has_steps = ok & ~np.isnan(steps)
    with np.errstate(invalid="ignore"):
        ok &= ~(has_steps & ((steps < 0) | (steps > STEPS_PER_MINUTE_MAX * minutes)))
    log.drop("steps_out_of_range", int((has_steps & ~ok).sum()))
    idx, (start, end) = _unique_local([start[ok], end[ok]], _zone(header_tz, tz), "activity", log)
    return Activity(start, end, steps[ok][idx])


def _sleep_fields(rec: dict) -> tuple[str, str, object]:
    key = "effective_time_frame" if "effective_time_frame" in rec else "sleep_stage_time_frame"
    return (*_interval(rec, key), rec.get("sleep_stage_state"))


def read_sleep(path: Path, tz: str, log: ReadLog) -> Sleep | None:
    records, header_tz = _load_records(path, "sleep", log)
    if records is None:
        return None
    rows = _pluck_slowly(records, _sleep_fields, path, "sleep", log)  # a few hundred records: no fast path needed
    states = [r[2] for r in rows]
    stage = np.array([SLEEP_STAGES.get(s, UNKNOWN_STAGE) for s in states], dtype=np.int8)
    n_unstaged = sum(s is None for s in states)  # v1 sleep_duration records carry no stage
    log.count("sleep_no_stage", n_unstaged)
    log.count("sleep_unknown", int((stage == UNKNOWN_STAGE).sum()) - n_unstaged)
    start = parse_utc([r[0] for r in rows], path, "sleep", log)
    end = parse_utc([r[1] for r in rows], path, "sleep", log)
    ok = ~np.isnat(start) & ~np.isnat(end)
    start, end, stage = start[ok], end[ok], stage[ok]
    ok = _drop_bad_intervals(start, end, "sleep", log)
    ok = plausible_dates([start, end], ok, "sleep", log)
    idx, (start, end) = _unique_local([start[ok], end[ok]], _zone(header_tz, tz), "sleep", log)
    return Sleep(start, end, stage[ok][idx])


def read_stress(path: Path, tz: str, log: ReadLog) -> Stress | None:
    records, header_tz = _load_records(path, "stress", log)
    if records is None:
        return None
    try:
        stamps = [r["effective_time_frame"]["date_time"] for r in records]
        values = [r["stress"]["value"] for r in records]
    except (KeyError, TypeError):
        rows = _pluck_slowly(records, lambda r: (_point_time(r), r["stress"]["value"]), path, "stress", log)
        stamps, values = [r[0] for r in rows], [r[1] for r in rows]
    try:
        value = np.array(values, dtype=float)
    except (TypeError, ValueError):
        value = np.array([_number(v) for v in values], dtype=float)
    unparseable = np.isnan(value)
    log.count("bad_values_stress", int(unparseable.sum()))
    # -1/-2 (and any negative) are Garmin's "no value" codes; a few v3 rows read 101.
    sentinel, over = value < 0, value > 100
    log.count("stress_sentinel", int(sentinel.sum()))
    log.count("stress_over_100", int(over.sum()))
    value[sentinel | over] = np.nan
    utc = parse_utc(stamps, path, "stress", log)
    ok = plausible_dates([utc], ~np.isnat(utc) & ~unparseable, "stress", log)
    idx, (time,) = _unique_local([utc[ok]], _zone(header_tz, tz), "stress", log)
    return Stress(time, value[ok][idx])


def count_heart_rate_zeros(path: Path, log: ReadLog) -> None:
    """Heart rate is not a feature; read only to count the 0 = 'no reading' sentinel."""
    records, _ = _load_records(path, "heart_rate", log)
    if records is None:
        return
    try:
        values = [r["heart_rate"]["value"] for r in records]
    except (KeyError, TypeError):
        values = [r[0] for r in _pluck_slowly(records, lambda r: (r["heart_rate"]["value"],), path, "heart_rate", log)]
    log.count("hr_zero", sum(1 for v in values if v == 0))
    bpm = np.array([_number(v) for v in values], dtype=float)
    plausible_values(bpm, ~np.isnan(bpm) & (bpm != 0), *HEART_RATE_PLAUSIBLE, "heart_rate_out_of_range", log)


READERS = {"cgm": read_glucose, "activity": read_activity, "sleep": read_sleep, "stress": read_stress}


@dataclass
class ParticipantData:
    participant_id: str
    glucose: Glucose
    activity: Activity
    sleep: Sleep
    stress: Stress


def read_participant(
    root: Path,
    pid: str,
    tz: str,
    manifests: dict,
    flags: dict[str, bool | None],
    log: ReadLog,
    count_heart_rate: bool = False,
) -> tuple[ParticipantData | None, str | None]:
    """(data, None), or (None, reason) when a required modality is missing or unusable."""
    with _no_gc():  # the decoded files are freed by reference counting before the collector returns
        return _read_participant(root, pid, tz, manifests, flags, log, count_heart_rate)


def _read_participant(root, pid, tz, manifests, flags, log, count_heart_rate):
    parts, reason = {}, None
    for modality in REQUIRED:
        path, expected = locate(root, pid, modality, manifests, flags)
        if path is None:
            log.count(f"missing_files_{modality}")
            if expected:
                log.fail(standard_path(root, pid, modality), None, f"{modality} file not found for participant {pid}")
                reason = reason or f"{modality} file not found"
            else:
                reason = reason or f"no {modality} data in the release"
            continue
        data = READERS[modality](path, tz, log)
        if data is None:
            reason = reason or f"{modality} file unusable"
        elif len(data) == 0:
            log.fail(path, None, f"no usable {modality} records after cleaning")
            reason = reason or f"no usable {modality} records"
        parts[modality] = data
    if count_heart_rate:
        path, expected = locate(root, pid, "heart_rate", manifests, flags)
        if path is None:
            log.count("missing_files_heart_rate")
        else:
            count_heart_rate_zeros(path, log)
    if reason:
        return None, reason
    return ParticipantData(pid, parts["cgm"], parts["activity"], parts["sleep"], parts["stress"]), None


# --- sex and medication (not in the public release) -------------------------------------------
SEX_VALUES = {"f": "female", "female": "female", "woman": "female", "m": "male", "male": "male", "man": "male"}
MEDICATIONS = ("none", "oral_or_noninsulin_injectable", "insulin", "unknown")


def read_demographics(path: Path) -> dict[str, dict[str, str | None]]:
    """{participant_id: {"sex": ..., "medication": ...}} from the controlled-access file
    (CSV or TSV with person_id or participant_id, sex and optionally medication); blank cells -> None.

    The `sex` column is required: sex is the reason this file exists (nothing public holds it),
    so a file without it is a mistake to report, not a cohort to build with sex "unknown" for
    everyone. Without a `medication` column, medication comes from the cmtrt_* items."""
    df = read_table(path)
    id_col = _id_column(df.columns, path)
    require_columns(df, path, ("sex",), "the demographics file needs person_id (or participant_id), sex and "
                    "optionally medication (leave a cell blank where it is unknown)")
    out: dict[str, dict[str, str | None]] = {}
    for i, row in df.iterrows():
        pid = row[id_col].strip()
        where = f"row {i + 2} (participant {pid})"
        entry: dict[str, str | None] = {"sex": None, "medication": None}
        if row["sex"].strip():
            sex = SEX_VALUES.get(row["sex"].strip().lower())
            if sex is None:
                raise AireadiFormatError(path, where, f"sex {row['sex']!r} is not one of female/male (or f/m)")
            entry["sex"] = sex
        if "medication" in df.columns and row["medication"].strip():
            med = row["medication"].strip().lower()
            if med not in MEDICATIONS:
                raise AireadiFormatError(path, where, f"medication {row['medication']!r} is not one of {MEDICATIONS}")
            entry["medication"] = med
        out[pid] = entry
    return out


_YES = {"yes", "y", "1", "true"}
_NO = {"no", "n", "0", "false"}
CMTRT_DRUG_ITEMS = ("cmtrt_insln", "cmtrt_a1c", "cmtrt_glcs")


def _answer(text: str) -> bool | None:
    """Yes/No from an answer cell ("Yes", "1, Yes", "no" ...); None when it says neither."""
    tokens = re.split(r"[^a-z0-9]+", text.strip().lower())
    first = next((t for t in tokens if t), "")
    return True if first in _YES else False if first in _NO else None


def medication_from_observation(root: Path) -> dict[str, str] | None:
    """{participant_id: medication} from the public cmtrt_* screening items in
    clinical_data/observation.csv (None when that file is absent).

    insulin yes -> insulin; pills (a1c) or other injections (glcs) yes -> oral_or_noninsulin_injectable;
    every drug item answered, all no -> none; otherwise (no rows, unanswered) -> unknown."""
    path = root / "clinical_data" / "observation.csv"
    if not path.is_file():
        return None
    answer_cols = ["value_as_string", "value_source_value", "value_as_number"]
    try:  # pandas here: the real table has millions of rows
        df = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            usecols=lambda c: c in {"person_id", "participant_id", "observation_source_value", *answer_cols},
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise AireadiFormatError(path, None, " ".join(str(e).split())) from None
    if "observation_source_value" not in df.columns:
        raise AireadiFormatError(path, "column 'observation_source_value'",
                                 "missing; the cmtrt_* items are found by it")
    id_col = _id_column(df.columns, path)
    item = df["observation_source_value"].str.split(",", n=1).str[0].str.strip().str.lower()
    df = df.assign(item=item)[item.isin(CMTRT_DRUG_ITEMS)]
    present = [c for c in answer_cols if c in df.columns]
    answers: dict[str, dict[str, bool | None]] = {}
    for pid, it, *cells in df[[id_col, "item", *present]].itertuples(index=False):
        said = next((a for a in (_answer(c) for c in cells if c.strip()) if a is not None), None)
        answers.setdefault(pid.strip(), {})[it] = said
    out = {}
    for pid, items in answers.items():
        if items.get("cmtrt_insln"):
            out[pid] = "insulin"
        elif items.get("cmtrt_a1c") or items.get("cmtrt_glcs"):
            out[pid] = "oral_or_noninsulin_injectable"
        elif all(items.get(k) is False for k in CMTRT_DRUG_ITEMS):
            out[pid] = "none"
        else:
            out[pid] = "unknown"
    return out
