"""eval.generate: which factuals, candidates, records, provenance and clear errors (tiny random Llama)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from eval.baselines import sample_factuals
from eval.generate import GenerateError, balanced_head, generate, row_seed
from sensecf.blackbox import BlackBox
from sensecf.records import read_records
from sensecf.rundir import ID_COL, SPLIT_COL

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture
def run(trained_run):
    return trained_run


def options(model_dir, **kw):
    return {"model": str(model_dir), "device": "cpu", **kw}


def test_records_for_a_fresh_sample_drawn_like_the_baselines(run, model_dir):
    summary = generate(run, "tiny", n=6, seed=3, hf_options=options(model_dir), progress=False)
    df, spec = run.load_cohort()
    pool = df[df[SPLIT_COL] == "test"].reset_index(drop=True)
    expected, _ = sample_factuals(pool, BlackBox.load(run.model, spec).predict(pool), 6, 3)
    written = json.loads((run.cfs / "factuals_test.json").read_text())
    assert written["window_ids"] == expected
    records = read_records(run.cf_file("tiny+grammar"))
    assert [r.window_id for r in records] == expected
    assert summary["status"] == {"ok": 6} and summary["immutables_violated"] == 0
    for r in records:
        assert r.desired_class == 1 - r.factual_pred and r.cf_pred in (0, 1)
        assert r.immutables_ok is True and r.candidate == 0
        assert r.decode_steps > 0 and r.completion_tokens > r.extra["sampled_tokens"] > 0
        assert r.extra["enforcer"] == "xgrammar" and r.extra["jump_forward"] is True
    prov = json.loads((run.cfs / "generate" / "tiny+grammar" / "provenance.json").read_text())
    assert prov["seed"] == 3 and prov["config"]["method"] == "tiny+grammar"
    assert str(run.cfs / "factuals_test.json") in prov["inputs"]


def _shared_test_sample(run) -> tuple[list[str], dict[str, int]]:
    """The first 12 test windows written as the shared factual file, and their predictions."""
    df, spec = run.load_cohort()
    test = df[df[SPLIT_COL] == "test"]
    predicted = dict(zip(test[ID_COL].astype(str), BlackBox.load(run.model, spec).predict(test), strict=True))
    ids = test[ID_COL].astype(str).tolist()[:12]
    run.cfs.mkdir(parents=True, exist_ok=True)
    (run.cfs / "factuals_test.json").write_text(json.dumps({"window_ids": ids}))
    return ids, predicted


def test_the_shared_factual_file_is_used_and_n_takes_a_balanced_head_of_it(run, model_dir):
    ids, predicted = _shared_test_sample(run)
    generate(run, "all", n=50, hf_options=options(model_dir), progress=False)
    assert [r.window_id for r in read_records(run.cf_file("all+grammar"))] == ids  # fewer than n: all of them
    generate(run, "head", n=4, hf_options=options(model_dir), progress=False)
    head = [r.window_id for r in read_records(run.cf_file("head+grammar"))]
    assert len(head) == 4 and head == [i for i in ids if i in head]  # a subset, in file order
    zeros = sum(predicted[i] == 0 for i in ids)
    ones = len(ids) - zeros
    expected_zeros = min(2, zeros) if ones >= 2 else 4 - ones
    assert sum(predicted[i] == 0 for i in head) == expected_zeros


def test_desired_class_takes_only_factuals_of_the_other_prediction(run, model_dir):
    ids, predicted = _shared_test_sample(run)
    generate(run, "to_one", n=3, desired_class=1, hf_options=options(model_dir), progress=False)
    records = read_records(run.cf_file("to_one+grammar"))
    expected = [i for i in ids if predicted[i] == 0][:3]
    assert expected and [r.window_id for r in records] == expected
    assert {r.desired_class for r in records} == {1}
    with pytest.raises(GenerateError, match="--desired-class must be 0 or 1, got 2"):
        generate(run, "x", desired_class=2, hf_options=options(model_dir))


def test_balanced_head_by_hand():
    frame = pd.DataFrame({ID_COL: list("abcdefg"), "factual_pred": [0, 0, 1, 0, 1, 1, 0]})
    assert balanced_head(frame, 4)[ID_COL].tolist() == ["a", "b", "c", "e"]
    assert balanced_head(frame, 3)[ID_COL].tolist() == ["a", "c", "e"]  # n - n//2 = 2 predicted 1
    short = pd.DataFrame({ID_COL: list("abcde"), "factual_pred": [0, 0, 0, 0, 1]})
    assert balanced_head(short, 4)[ID_COL].tolist() == ["a", "b", "c", "e"]  # class 1 has one: class 0 fills up


def test_candidates_are_seeded_per_factual_and_candidate(run, model_dir):
    generate(run, "tiny_k", n=2, candidates=3, hf_options=options(model_dir, temperature=1.0), progress=False)
    records = read_records(run.cf_file("tiny_k+grammar"))
    assert sorted((r.window_id, r.candidate) for r in records) == sorted(
        (w, c) for w in {r.window_id for r in records} for c in range(3)
    )
    assert len({r.raw_text for r in records}) > 2
    assert row_seed(0, "a", 1) == row_seed(0, "a", 1) != row_seed(0, "a", 2)


def test_training_split_records_go_to_their_own_folder(run, model_dir):
    generate(run, "tiny", split="train", n=2, hf_options=options(model_dir), progress=False)
    assert len(read_records(run.cfs / "train" / "tiny+grammar.jsonl")) == 2
    assert not run.cf_file("tiny+grammar").exists()


def test_bad_inputs_are_clear_errors(run, model_dir, tmp_path):
    with pytest.raises(GenerateError, match="needs --temperature > 0"):
        generate(run, "x", candidates=2, hf_options=options(model_dir))
    bad = tmp_path / "ids.json"
    bad.write_text(json.dumps(["nope-1", "nope-2"]))
    with pytest.raises(GenerateError, match="2 ids are not 'test' windows"):
        generate(run, "x", factuals=bad, hf_options=options(model_dir))
    with pytest.raises(GenerateError, match="no few-shot pool"):
        generate(run, "x", fewshot=2, hf_options=options(model_dir))


def test_cli_help_and_exit_code_on_bad_input(run):
    env = {**os.environ, "COLUMNS": "250"}  # rich wraps option names in a narrow terminal
    help_text = subprocess.run(
        [sys.executable, "-m", "eval.generate", "--help"], cwd=REPO, capture_output=True, text=True, check=True, env=env
    ).stdout
    assert "--no-jump-forward" in help_text and "--allow-external-api" in help_text
    out = subprocess.run(
        [sys.executable, "-m", "eval.generate", "--run", str(run.root), "--method", "x", "--candidates", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 2 and "needs --temperature > 0" in out.stderr


def test_a_peft_adapter_is_applied_and_recorded(run, model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    generate(run, "tiny_lora", n=2, hf_options=options(model_dir, adapter=str(adapter)), progress=False)
    generate(run, "tiny_base", n=2, hf_options=options(model_dir), progress=False)
    with_adapter = read_records(run.cf_file("tiny_lora+grammar"))
    without = read_records(run.cf_file("tiny_base+grammar"))
    assert all(r.parse_status == "ok" and r.extra["adapter"] == str(adapter) for r in with_adapter)
    assert all(r.extra["adapter_merged"] is True for r in with_adapter)  # merged into the weights by default
    assert [r.raw_text for r in with_adapter] != [r.raw_text for r in without]  # random LoRA weights change answers
    generate(run, "tiny_lora_unmerged", n=2, hf_options=options(model_dir, adapter=str(adapter), merge_adapter=False),
             progress=False)  # fmt: skip
    unmerged = read_records(run.cf_file("tiny_lora_unmerged+grammar"))
    assert all(r.extra["adapter_merged"] is False for r in unmerged)
    assert [r.raw_text for r in unmerged] == [r.raw_text for r in with_adapter]  # the same answers, merged or not
    prov = json.loads((run.cfs / "generate" / "tiny_lora+grammar" / "provenance.json").read_text())
    assert str(adapter / "adapter_model.safetensors") in prov["inputs"]


def test_the_compute_dtype_is_recorded_and_a_file_resumes_only_in_its_dtype(run, model_dir):
    from sensecf.records import FingerprintMismatch

    generate(run, "tiny_dtype", n=2, hf_options=options(model_dir, dtype="bfloat16"), progress=False)
    records = read_records(run.cf_file("tiny_dtype+grammar"))
    assert [r.extra["dtype"] for r in records] == ["bfloat16", "bfloat16"]
    assert all(r.parse_status == "ok" for r in records)
    with pytest.raises(FingerprintMismatch, match="config"):  # fp32 answers never join a bf16 file
        generate(run, "tiny_dtype", n=2, hf_options=options(model_dir, dtype="float32"), progress=False)
    generate(run, "tiny_fp32", n=2, hf_options=options(model_dir), progress=False)
    fp32 = read_records(run.cf_file("tiny_fp32+grammar"))
    assert {r.extra["dtype"] for r in fp32} == {"float32"}  # the Python API's default; the CLI's is auto
