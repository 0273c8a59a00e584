"""benchmarks/bench_records.py: both fsync policies write every record; the counts are the policies'."""

from __future__ import annotations

from benchmarks.bench_records import sample_records, time_writes


def test_fsync_per_record_against_at_most_once_a_second(tmp_path):
    records = sample_records(50)
    assert len({r.key for r in records}) == 50
    every = time_writes(tmp_path / "every.jsonl", records, fsync_seconds=0.0)
    batched = time_writes(tmp_path / "batched.jsonl", records, fsync_seconds=3600.0)
    assert every["records_read_back"] == batched["records_read_back"] == 50
    assert every["fsync_calls"] == 51  # one per record, one on close
    assert batched["fsync_calls"] == 1  # only on close within the hour
    assert (tmp_path / "every.jsonl").read_bytes() == (tmp_path / "batched.jsonl").read_bytes()
