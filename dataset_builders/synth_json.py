"""JSON text of the release's wearable files (v3 layout, format notes §3), built fast.

A dict per record + json.dumps is ~5 µs a record; 40k records per participant x 1,067
participants makes that minutes. Here each record is a fixed template with its variable
parts (timestamp, value) spliced in as precomputed strings: ~0.2 µs a record.
"""

from __future__ import annotations

import numpy as np
import orjson

from dataset_builders.synth_model import ACTIVITIES, SLEEP_STAGES
from dataset_builders.synth_quirks import (
    CGM_HIGH,
    CGM_LOW,
    SLEEP_UNKNOWN,
    STEPS_EMPTY,
    STEPS_FLOAT,
    STEPS_STRING,
    Table,
)

_INT_OFFSET = 2  # token table starts at -2 (the stress sentinel)
_INT_TOKENS = np.array([str(i) for i in range(-_INT_OFFSET, 1001)], dtype=object)
_STAGE_TOKENS = np.array([*SLEEP_STAGES, "unknown"], dtype=object)
assert _STAGE_TOKENS[SLEEP_UNKNOWN] == "unknown"
_ACTIVITY_TOKENS = np.array(ACTIVITIES, dtype=object)

# Header schema ids, verbatim from the official pipeline (notes §3.2-3.7).
SCHEMA_IDS = {
    "heart_rate": {"namespace": "omh", "name": "heart-rate", "version": 2.0},
    "stress": {"namespace": "", "name": "", "version": ""},
    "sleep": {"namespace": "omh", "name": "sleep-stages", "version": 2.0},
    "activity": {"namespace": "", "name": "", "version": ""},
}


def int_tokens(values: np.ndarray) -> np.ndarray:
    return _INT_TOKENS[values + _INT_OFFSET]


def garmin_header(person_id: str, created: str, modality: str, tz_code: str) -> bytes:
    return orjson.dumps(
        {
            "uuid": f"AIREADI-{person_id}",
            "creation_date_time": created,
            "user_id": f"AIREADI-{person_id}",
            "schema_id": SCHEMA_IDS[modality],
            "timezone": tz_code,
        }
    )


def _garmin_file(header: bytes, list_key: str, records: list[str]) -> bytes:
    body = ",".join(records).encode()
    return b'{"header":' + header + b',"body":{"' + list_key.encode() + b'":[' + body + b"]}}"


def cgm_file(
    table: Table, t0: np.datetime64, person_id: str, created: str, tz_code: str, device_id: str, transmitter_id: str
) -> bytes:
    """`<pid>_DEX.json`. The header is the official pipeline's string template, misspelled
    `acquistion_rate` and spacing included (notes §3.1); `t0` + table["second"] is each reading's UTC time."""
    header = (
        f'{{"header":{{"uuid":"AIREADI-{person_id}","creation_date_time":"{created}",'
        f'"patient_id":"AIREADI-{person_id}"'
        ',"schema_id":{"namespace":"omh","name":"blood-glucose","version":3.0},"modality":"sensed",'
        '"acquistion_rate":{"number_of_times":1, "time_window":{"value":5, "unit":"min"}},'
        '"external_datasheets":{"datasheet_type":"source_device","datasheet_reference":"iri-of-cgm-device"}'
        f',"timezone": "{tz_code}"}}, "body": {{"cgm": ['
    )
    values = int_tokens(table["value"])
    values[table["flag"] == CGM_LOW] = '"Low"'
    values[table["flag"] == CGM_HIGH] = '"High"'
    times = np.datetime_as_string(t0 + table["second"], unit="s").tolist()
    a = '{"effective_time_frame":{"time_interval":{"start_date_time":"'
    b = 'Z","end_date_time":"'
    c = f'Z"}}}},"event_type":"EGV","source_device_id":"{device_id}","blood_glucose":{{"unit":"mg/dL","value":'
    d = '},"transmitter_time":{"unit":"long integer","value":'
    e = f'}},"transmitter_id":"{transmitter_id}"}}'
    transmitter = [str(v) for v in table["transmitter_time"].tolist()]
    records = [a + t + b + t + c + v + d + tt + e for t, v, tt in zip(times, values.tolist(), transmitter, strict=True)]
    return (header + ",".join(records) + "]}}").encode()


def point_file(table: Table, stamps: np.ndarray, header: bytes, modality: str) -> bytes:
    """Heart rate or stress: {"<key>": {"value", "unit"}, "effective_time_frame": {"date_time"}}."""
    unit = {"heart_rate": "beats/min", "stress": "stress level"}[modality]
    a = f'{{"{modality}":{{"value":'
    b = f',"unit":"{unit}"}},"effective_time_frame":{{"date_time":"'
    c = '"}}'
    values = int_tokens(table["value"]).tolist()
    times = stamps[table["minute"]].tolist()
    return _garmin_file(header, modality, [a + v + b + t + c for v, t in zip(values, times, strict=True)])


def activity_file(table: Table, stamps: np.ndarray, header: bytes) -> bytes:
    """Chained intervals with activity_name and base_movement_quantity (steps)."""
    names = _ACTIVITY_TOKENS[table["code"]]
    values = int_tokens(table["steps"])
    form = table["form"]
    string, flt, empty = form == STEPS_STRING, form == STEPS_FLOAT, form == STEPS_EMPTY
    values[string] = ['"' + v + '"' for v in values[string].tolist()]
    values[flt] = [v + ".0" for v in values[flt].tolist()]
    values[empty] = '""'
    names[empty] = ""
    a = '{"activity_name":"'
    b = '","base_movement_quantity":{"value":'
    c = ',"unit":"steps"},"effective_time_frame":{"time_interval":{"start_date_time":"'
    d = '","end_date_time":"'
    e = '"}}}'
    records = [
        a + n + b + v + c + s + d + t + e
        for n, v, s, t in zip(
            names.tolist(), values.tolist(), stamps[table["start"]].tolist(), stamps[table["end"]].tolist(), strict=True
        )
    ]
    return _garmin_file(header, "activity", records)


def sleep_file(table: Table, stamps: np.ndarray, header: bytes) -> bytes:
    """v3 sleep records: sleep_stage_state + effective_time_frame.time_interval."""
    a = '{"sleep_stage_state":"'
    b = '","effective_time_frame":{"time_interval":{"start_date_time":"'
    c = '","end_date_time":"'
    d = '"}}}'
    records = [
        a + s + b + t0 + c + t1 + d
        for s, t0, t1 in zip(
            _STAGE_TOKENS[table["stage"]].tolist(),
            stamps[table["start"]].tolist(),
            stamps[table["end"]].tolist(),
            strict=True,
        )
    ]
    return _garmin_file(header, "sleep", records)
