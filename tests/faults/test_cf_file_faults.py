"""CF files that cannot lie: a resume with other settings, two writers, duplicates, bad rows.

Today's failures these rows pin (issue #11): re-running eval.generate with another temperature,
adapter, classifier, few-shot count or cohort said "0 new, 20 already done" and kept the old
records under the new provenance; two writers appended the same records and readers counted
them twice; an answer with a non-finite number stopped the whole generation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings

import pytest
from harness import REPO, Fault, assert_one_line_error, params, run_module
from test_hf_backend import tiny_llama

from eval.baselines import BaselineConfig, run_baselines
from eval.classifier import train_and_evaluate
from eval.generate import generate, make_records, record_parts
from sensecf.atomic import file_lock, run_lock
from sensecf.generate.result import GenResult
from sensecf.models import load_tokenizer
from sensecf.records import CFRecord, FingerprintMismatch, RecordWriter, read_records
from sensecf.rundir import write_provenance


@pytest.fixture
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture
def run(trained_run):
    return trained_run


def _hf(model_dir, **kw):
    return {"model": str(model_dir), "device": "cpu", **kw}


def _retrain_classifier(run, model_dir):
    train_and_evaluate(run, seed=1)  # another seed: another model.skops


def _change_cohort(run, model_dir):
    df, spec = run.load_cohort()
    df.loc[0, "steps_mean"] = df.loc[0, "steps_mean"] + 1.0
    df.to_parquet(run.features, index=False)


def _copy_model_with_other_weights(run, model_dir):
    import torch

    other = run.root / "other-model"
    model = tiny_llama(load_tokenizer("smollm2"))
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    model.save_pretrained(other)
    load_tokenizer("smollm2").save_pretrained(other)
    return other


# Each row: what changes between the first run and the resume, and the part the message names.
RESUME_FAULTS = [
    Fault("temperature", "re-run with --temperature 0.9", "stop",
          {"second": {"temperature": 0.9}, "names": "temperature"}),
    Fault("group-bounds", "re-run with --no-group-bounds", "stop",
          {"second": {"bound_groups": False}, "names": "bound_groups"}),
    Fault("enforcer", "re-run with --enforcer lmfe", "stop", {"second": {"enforcer": "lmfe"}, "names": "enforcer"}),
    Fault("seed", "re-run with another --seed", "stop", {"seed": 5, "names": "seed"}),
    Fault("classifier", "classifier re-trained between runs", "stop",
          {"change": _retrain_classifier, "names": "classifier"}),
    Fault("cohort", "cohort table edited between runs", "stop", {"change": _change_cohort, "names": "cohort"}),
    Fault("model", "another model with the same config", "stop",
          {"model": _copy_model_with_other_weights, "names": "model"}),
]


def _parts(run, model_dir, seed=0, **options):
    from eval.baselines import factuals_file

    return record_parts(run, "hf", factuals_file(run, "test"), seed, 0, _hf(model_dir, **options), {})


@pytest.mark.parametrize("fault", params(RESUME_FAULTS))
def test_a_resume_with_other_settings_stops_and_names_them(fault, run, model_dir):
    """The CF file's fingerprint covers each setting: a file begun with the first settings
    refuses the second and names the part that changed."""
    generate(run, "tiny", n=2, seed=0, hf_options=_hf(model_dir), progress=False)
    before = run.cf_file("tiny+grammar").read_bytes()
    if "change" in fault.args:
        fault.args["change"](run, model_dir)
    second = dict(fault.args.get("second", {}))
    if "model" in fault.args:
        second["model"] = str(fault.args["model"](run, model_dir))
    parts = _parts(run, model_dir, fault.args.get("seed", 0), **second)
    with pytest.raises(FingerprintMismatch, match=fault.args["names"]) as info:
        RecordWriter(run.cf_file("tiny+grammar"), parts)
    assert "--overwrite" in str(info.value)
    assert run.cf_file("tiny+grammar").read_bytes() == before  # nothing written under the wrong name


def test_overwrite_moves_the_old_records_aside_and_provenance_matches_the_new(run, model_dir):
    generate(run, "tiny", n=4, seed=0, hf_options=_hf(model_dir), progress=False)
    before = run.cf_file("tiny+grammar").read_bytes()
    with pytest.raises(FingerprintMismatch, match=r"config.temperature: 0.0 -> 0.9"):
        generate(run, "tiny", n=4, seed=0, hf_options=_hf(model_dir, temperature=0.9), progress=False)
    summary = generate(run, "tiny", n=4, seed=0, hf_options=_hf(model_dir, temperature=0.9), overwrite=True,
                       progress=False)
    kept = list(run.cfs.glob("tiny+grammar.jsonl.replaced-*[0-9]"))
    assert len(kept) == 1 and kept[0].read_bytes() == before  # moved aside, never deleted
    assert summary["already_done"] == 0 and summary["records"] == 4
    assert {r.extra["temperature"] for r in read_records(run.cf_file("tiny+grammar"))} == {0.9}
    fp = json.loads((run.cfs / "tiny+grammar.jsonl.fingerprint.json").read_text())
    prov = json.loads((run.cfs / "generate" / "tiny+grammar" / "provenance.json").read_text())
    assert prov["config"]["fingerprint"] == fp["sha256"]  # provenance describes the records on disk


def test_the_same_settings_resume_and_batch_size_does_not_count(run, model_dir):
    from eval.baselines import select_factuals

    select_factuals(run, "test", 6, 0)  # the shared sample: 6 windows; the first run takes 4 of them
    generate(run, "tiny", n=4, seed=0, batch_size=4, hf_options=_hf(model_dir), progress=False)
    summary = generate(run, "tiny", n=6, seed=0, batch_size=2, hf_options=_hf(model_dir), progress=False)
    assert summary["already_done"] == 4 and summary["records"] == 6


def test_generate_cli_names_the_change_in_one_line(run, model_dir):
    args = ["--run", run.root, "--method", "tiny", "--model", model_dir, "--device", "cpu", "--n", "2", "--quiet"]
    assert run_module("eval.generate", *args).rc == 0
    out = run_module("eval.generate", *args, "--temperature", "0.9")
    line = assert_one_line_error(out, "tiny+grammar.jsonl", "temperature", "--overwrite")
    assert "0.0 -> 0.9" in line


BASELINE_FAULTS = [
    Fault("teacher-per-factual", "teacher re-run with another --teacher-per-factual", "stop",
          {"method": "teacher", "second": {"teacher_per_factual": 3}, "names": "teacher_per_factual"}),
    Fault("baseline-seed", "NICE re-run with another seed", "stop",
          {"method": "nice", "second": {"seed": 4}, "names": "seed"}),
]


@pytest.mark.parametrize("fault", params(BASELINE_FAULTS))
def test_baselines_resume_only_with_the_same_settings(fault, run):
    method = fault.args["method"]
    factuals = run_baselines(run, [method], n=4, cfg=BaselineConfig(), progress=False)
    ids = factuals["n_factuals"]
    assert ids == 4
    from eval.baselines import factuals_file, read_factual_ids

    same_ids = read_factual_ids(factuals_file(run, "test"))
    cfg = BaselineConfig(**fault.args["second"])
    with pytest.raises(FingerprintMismatch, match=fault.args["names"]):
        run_baselines(run, [method], n=4, factual_ids=same_ids, cfg=cfg, progress=False)
    summary = run_baselines(run, [method], n=4, factual_ids=same_ids, cfg=cfg, overwrite=True, progress=False)
    assert summary["methods"][method]["already_done"] == 0
    assert len(list(run.cfs.glob(f"{method}.jsonl.replaced-*[0-9]"))) == 1


def _record(i: int) -> CFRecord:
    return CFRecord(window_id=f"w{i}", participant_id="p", method="m", factual={"x": 1.0}, factual_pred=0,
                    desired_class=1, cf={"x": 2.0}, parse_status="ok", cf_pred=1)


def test_duplicate_records_are_read_once_and_counted_in_a_warning(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [_record(i).model_dump_json() for i in (0, 1, 0, 2, 1)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"m.jsonl: 2 duplicate records"):
        records = read_records(path)
    assert [r.window_id for r in records] == ["w0", "w1", "w2"]


def test_a_second_writer_of_the_same_cf_file_fails_at_once(tmp_path):
    path = tmp_path / "m.jsonl"
    with RecordWriter(path, {"config": 1}) as writer:
        writer.write(_record(0))
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"m.jsonl.lock: another writer holds this lock \(pid \d+"):
            RecordWriter(path, {"config": 1})
        assert time.monotonic() - start < 2
        writer.write(_record(1))
    with RecordWriter(path, {"config": 1}) as again:  # released on close
        assert again.done == {("w0", "m", 0), ("w1", "m", 0)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no duplicates to warn about
        assert len(read_records(path)) == 2


def test_a_second_process_on_a_locked_run_fails_with_one_line(run, model_dir):
    """Two writers of one run directory: the second CLI ends in one error line naming the lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys,time; from sensecf.atomic import run_lock\n"
         f"with run_lock({str(run.root)!r}):\n print('held', flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        out = run_module("eval.generate", "--run", run.root, "--method", "tiny", "--model", model_dir,
                         "--device", "cpu", "--n", "2", "--quiet")
        assert_one_line_error(out, ".lock", "another writer holds this lock", f"pid {holder.pid}")
        assert not run.cf_file("tiny+grammar").exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_runner_holding_the_lock_lets_its_stages_write(run, monkeypatch):
    with run_lock(run.root) as runner:
        holder = runner.info_file.read_text()
        monkeypatch.setenv("SENSECF_RUN_LOCK_HELD", str(run.root / ".lock"))
        with run_lock(run.root) as stage, file_lock(run.root / "x.jsonl") as cf_file:
            assert stage._lock is None  # inherited from the runner, not taken again
            assert cf_file._lock is not None and cf_file.lock_file.name == ".x.jsonl.lock"
        assert runner.info_file.read_text() == holder  # the runner still holds it
        monkeypatch.delenv("SENSECF_RUN_LOCK_HELD")
        with pytest.raises(RuntimeError, match="another writer holds this lock"):
            run_lock(run.root).__enter__()  # anyone else still waits


ROW_FAULTS = [
    Fault("inf", "an answer whose number overflowed to inf reaches the records", "row", {"value": float("inf")}),
    Fault("nan", "an answer with NaN reaches the records", "row", {"value": float("nan")}),
]


@pytest.mark.parametrize("fault", params(ROW_FAULTS))
def test_a_non_finite_cf_is_that_rows_parse_error_and_the_batch_goes_on(fault, run):
    from eval.generate import choose_factuals
    from sensecf.rundir import ID_COL

    chosen, spec, blackbox, _, _ = choose_factuals(run, "test", 2, 0, None)
    jobs = [(row, {n: row[n] for n in spec.names}, 0, 0) for _, row in chosen.iterrows()]
    good = dict(jobs[1][1])
    bad = {**jobs[0][1], "steps_mean": fault.args["value"]}
    results = [GenResult("x", bad, "ok", None, None), GenResult("y", good, "ok", None, None)]
    records = make_records(spec, blackbox, "m", jobs, results, {})
    assert [r.parse_status for r in records] == ["parse_error", "ok"]
    assert records[0].cf is None and records[0].cf_pred is None and records[1].cf_pred in (0, 1)
    assert records[0].window_id == str(chosen.loc[0, ID_COL])


def test_a_fingerprint_without_records_is_replaced_quietly(tmp_path):
    """An empty file left by a run that wrote nothing: no records to protect, so new settings start it."""
    path = tmp_path / "m.jsonl"
    RecordWriter(path, {"a": 1}).close()
    assert path.stat().st_size == 0
    with RecordWriter(path, {"a": 2}) as writer:
        writer.write(_record(0))
    assert json.loads((tmp_path / "m.jsonl.fingerprint.json").read_text())["parts"] == {"a": 2}


def test_provenance_records_output_hashes(tmp_path):
    (tmp_path / "a.txt").write_text("abc")
    prov = json.loads(write_provenance(tmp_path, config={}).read_text())
    # sha256("abc"), by hand from the standard test vector
    assert prov["outputs"] == {"a.txt": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
