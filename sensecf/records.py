"""CF records: one JSON line per factual x method x candidate (DESIGN.md "Contracts").

Writers append and flush per record and fsync at most once a second (and on close), so a
power loss costs at most the last second; re-opening skips ids already present, so a killed
run resumes with nothing lost and nothing duplicated. A file carries the fingerprint of the
settings that began it (sensecf.fingerprint) and is continued only by the same settings; one
writer at a time holds .FILE.lock.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from sensecf import fingerprint
from sensecf.atomic import file_lock
from sensecf.protocols import ProtocolName, protocol_of

ParseStatus = Literal[
    "ok",  # a complete CF was parsed
    "parse_error",  # model text without a usable <new> block
    "incoherent",  # a composition group could not be completed in range
    "no_cf",  # the method returned nothing (baseline found no counterfactual)
    "timeout",  # the method ran out of its time budget
    "error",  # the method raised, or the endpoint rejected this one request; `error` holds the message
    "refusal",  # the model declined to answer (the provider's refusal field); `error` holds its text
    "empty",  # the endpoint answered with no text (no choices, or empty content)
]


class FingerprintMismatch(ValueError):
    """A CF file exists that other settings began; resuming it would mix two methods."""



class CFRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_id: str
    participant_id: str
    method: str
    candidate: int = 0
    factual: dict[str, Any]
    factual_pred: int
    desired_class: int
    raw_text: str | None = None
    cf: dict[str, Any] | None = None
    parse_status: ParseStatus
    immutables_ok: bool | None = None
    cf_pred: int | None = None
    seconds: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    decode_steps: int | None = None
    error: str | None = None
    extra: dict[str, Any] = {}
    # `paper` or `sensecf`, as the method's name says (sensecf.protocols); filled in when absent
    protocol: ProtocolName | None = None

    @model_validator(mode="after")
    def _protocol_of_the_name(self) -> CFRecord:
        expected = protocol_of(self.method)
        if self.protocol is None:
            self.protocol = expected
        elif self.protocol != expected:
            raise ValueError(
                f"method '{self.method}' is a {expected} row, but the record says protocol '{self.protocol}'"
            )
        return self

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.window_id, self.method, self.candidate)

    @property
    def valid(self) -> bool:
        return self.cf is not None and self.cf_pred is not None and self.cf_pred == self.desired_class


def read_records(path: str | Path) -> list[CFRecord]:
    """All complete records of a file, the first of each key (window, method, candidate); later
    duplicates are dropped with a warning that counts them. A torn last line (killed writer) is
    ignored; a broken line elsewhere is an error naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    out, seen, duplicates = [], set(), 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = CFRecord.model_validate_json(line)
        except ValueError as e:
            if i == len(lines) - 1:  # no trailing newline: the writer died mid-line
                break
            reason = e.errors()[0]["msg"] if hasattr(e, "errors") else str(e)
            raise ValueError(f"{path}: line {i + 1}: not a CF record ({reason})") from None
        if record.key in seen:
            duplicates += 1
            continue
        seen.add(record.key)
        out.append(record)
    if duplicates:
        warnings.warn(f"{path}: {duplicates} duplicate records (same window, method, candidate) ignored; "
                      "the first of each is kept", stacklevel=2)
    return out


def move_aside(path: Path) -> Path:
    """Rename a file (and its fingerprint) to FILE.replaced-<UTC time>: kept, never deleted."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = path.with_name(f"{path.name}.replaced-{stamp}")
    path.rename(target)
    side = fingerprint.sidecar(path)
    if side.exists():
        side.rename(fingerprint.sidecar(target))
    return target


class RecordWriter:
    """Append-only JSONL writer that knows which ids are done.

    With `parts` (what produces the records: config, model, classifier, cohort, prompts,
    factuals), an existing file is resumed only if it was begun with the same parts; otherwise
    FingerprintMismatch names what changed, or, with overwrite=True, the old file is moved
    aside (`moved_aside`) and a new one begun."""

    def __init__(self, path: str | Path, parts: dict | None = None, *, overwrite: bool = False,
                 fsync_seconds: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_seconds = fsync_seconds
        self.moved_aside: Path | None = None
        self._lock = file_lock(self.path).__enter__()
        try:
            self._drop_torn_tail()
            if parts is not None:
                self._check_fingerprint(parts, overwrite)
            self.done: set[tuple[str, str, int]] = {r.key for r in read_records(self.path)}
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self._fh = open(self.path, "a", encoding="utf-8")
        self._last_sync = time.monotonic()

    def _check_fingerprint(self, parts: dict, overwrite: bool) -> None:
        has_records = self.path.exists() and self.path.stat().st_size > 0
        stored = fingerprint.read(self.path)
        if has_records and (stored is None or stored.get("sha256") != fingerprint.digest(parts)):
            if not overwrite:
                changed = (fingerprint.changed_parts(stored.get("parts", {}), fingerprint.normalize(parts))
                           if stored else ["no fingerprint stored (written by an older version)"])
                raise FingerprintMismatch(
                    f"{self.path}: its records were made with other settings ({'; '.join(changed)}); "
                    "re-run with --overwrite to start afresh (the old file is kept beside it)"
                )
            self.moved_aside = move_aside(self.path)
        if not self.path.exists() or self.path.stat().st_size == 0 or stored is None or self.moved_aside:
            fingerprint.write(self.path, parts)

    def _drop_torn_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)

    def is_done(self, window_id: str, method: str, candidate: int = 0) -> bool:
        return (window_id, method, candidate) in self.done

    def write(self, record: CFRecord) -> None:
        if record.key in self.done:
            return
        self._fh.write(record.model_dump_json() + "\n")
        self._fh.flush()  # a killed process loses nothing written so far
        if time.monotonic() - self._last_sync >= self.fsync_seconds:  # power loss: at most the last second
            os.fsync(self._fh.fileno())
            self._last_sync = time.monotonic()
        self.done.add(record.key)

    def write_all(self, records: Iterable[CFRecord]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._lock.__exit__(None, None, None)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

