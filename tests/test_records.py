import pytest

from sensecf.records import CFRecord, RecordWriter, read_records


def _rec(i: int, method: str = "m", candidate: int = 0) -> CFRecord:
    return CFRecord(
        window_id=f"w{i}", participant_id="p", method=method, candidate=candidate, factual={"x": i},
        factual_pred=1, desired_class=0, cf={"x": i + 1}, parse_status="ok", cf_pred=0,
    )


def test_writer_appends_and_resume_skips_done_ids(tmp_path):
    path = tmp_path / "cfs" / "m.jsonl"
    with RecordWriter(path) as w:
        w.write(_rec(0))
        w.write(_rec(1))
    with RecordWriter(path) as w:
        assert w.is_done("w0", "m") and not w.is_done("w2", "m")
        w.write_all([_rec(1), _rec(2), _rec(2, candidate=1)])
    keys = [r.key for r in read_records(path)]
    assert keys == [("w0", "m", 0), ("w1", "m", 0), ("w2", "m", 0), ("w2", "m", 1)]


def test_torn_last_line_from_a_killed_writer_is_dropped_then_rewritten(tmp_path):
    path = tmp_path / "m.jsonl"
    with RecordWriter(path) as w:
        w.write(_rec(0))
    with open(path, "a") as fh:
        fh.write(_rec(1).model_dump_json()[:40])  # killed mid-line
    assert [r.window_id for r in read_records(path)] == ["w0"]
    with RecordWriter(path) as w:
        assert not w.is_done("w1", "m")
        w.write(_rec(1))
    assert [r.window_id for r in read_records(path)] == ["w0", "w1"]


def test_a_broken_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(_rec(0).model_dump_json() + "\n{oops\n" + _rec(1).model_dump_json() + "\n")
    with pytest.raises(ValueError, match=r"m.jsonl: line 2: not a CF record"):
        read_records(path)


def test_validity_follows_the_desired_class():
    assert _rec(0).valid
    assert not _rec(0).model_copy(update={"cf_pred": 1}).valid
    assert not _rec(0).model_copy(update={"cf": None, "parse_status": "parse_error"}).valid
