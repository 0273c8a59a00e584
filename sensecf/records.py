"""CF records: one JSON line per factual x method x candidate (DESIGN.md "Contracts").

Writers append and flush per record; re-opening skips ids already present, so a killed run
resumes with nothing lost and nothing duplicated.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

ParseStatus = Literal[
    "ok",  # a complete CF was parsed
    "parse_error",  # model text without a usable <new> block
    "incoherent",  # a composition group could not be completed in range
    "no_cf",  # the method returned nothing (baseline found no counterfactual)
    "timeout",  # the method ran out of its time budget
    "error",  # the method raised; `error` holds the message
]


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

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.window_id, self.method, self.candidate)

    @property
    def valid(self) -> bool:
        return self.cf is not None and self.cf_pred is not None and self.cf_pred == self.desired_class


def read_records(path: str | Path) -> list[CFRecord]:
    """All complete records of a file. A torn last line (killed writer) is ignored; a broken line
    elsewhere is an error naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(CFRecord.model_validate_json(line))
        except ValueError as e:
            if i == len(lines) - 1:  # no trailing newline: the writer died mid-line
                break
            raise ValueError(f"{path}:{i + 1}: not a CF record: {e}") from None
    return out


class RecordWriter:
    """Append-only JSONL writer that knows which ids are done."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        self.done: set[tuple[str, str, int]] = {r.key for r in read_records(self.path)}
        self._fh = open(self.path, "a", encoding="utf-8")

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
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.done.add(record.key)

    def write_all(self, records: Iterable[CFRecord]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

