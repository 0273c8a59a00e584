"""benchmarks/bench_augment.py: the scratch copy leaves the source run alone and makes up N sources."""

from __future__ import annotations

import pytest

from benchmarks.bench_augment import copy_sources
from sensecf.records import CFRecord, RecordWriter, read_records
from sensecf.rundir import RunDir


def _record(window_id: str, method: str) -> CFRecord:
    return CFRecord(window_id=window_id, participant_id="p1", method=method, factual={"a": 1.0}, factual_pred=0,
                    desired_class=1, cf={"a": 2.0}, parse_status="ok", cf_pred=1)


def test_copy_sources_renames_copies_up_to_n(tmp_path):
    run, scratch = RunDir(tmp_path / "run"), RunDir(tmp_path / "scratch")
    for method, ids in {"nice": ["w1", "w2"], "teacher": ["w3"]}.items():
        with RecordWriter(run.cfs / "train" / f"{method}.jsonl") as writer:
            writer.write_all(_record(i, method) for i in ids)

    names = copy_sources(run, scratch, 5)

    assert names == ["nice", "teacher", "nice_copy1", "teacher_copy1", "nice_copy2"]
    for name, ids in {"nice": ["w1", "w2"], "teacher_copy1": ["w3"], "nice_copy2": ["w1", "w2"]}.items():
        records = read_records(scratch.cfs / "train" / f"{name}.jsonl")
        assert [r.window_id for r in records] == ids and {r.method for r in records} == {name}
    visible = sorted(p.name for p in (run.cfs / "train").iterdir() if not p.name.startswith("."))  # not locks
    assert visible == ["nice.jsonl", "teacher.jsonl"]
    assert len(copy_sources(run, RunDir(tmp_path / "two"), 1)) == 2  # never fewer than the run has
    only = copy_sources(run, RunDir(tmp_path / "only"), 3, only="teacher")
    assert only == ["teacher", "teacher_copy1", "teacher_copy2"]
    with pytest.raises(FileNotFoundError, match="no CF file dice.jsonl"):
        copy_sources(run, RunDir(tmp_path / "none"), 3, only="dice")
