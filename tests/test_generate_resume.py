"""A generation run killed mid-way resumes with nothing lost and nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_hf_backend import tiny_llama

from eval.classifier import train_and_evaluate
from eval.generate import generate
from sensecf.models import load_tokenizer
from sensecf.records import read_records

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_with_model(tiny_run, tmp_path):
    train_and_evaluate(tiny_run, seed=0)
    tokenizer = load_tokenizer("smollm2")
    model_dir = tmp_path / "tiny-llama"
    tiny_llama(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return tiny_run, model_dir


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
def test_killed_run_resumes_without_loss_or_duplicates(run_with_model):
    run, model_dir = run_with_model
    out = run.cf_file("tiny+grammar")
    cmd = [sys.executable, "-m", "eval.generate", "--run", str(run.root), "--method", "tiny", "--model", str(model_dir),
           "--device", "cpu", "--dtype", "float32", "--n", "24", "--batch-size", "1", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    deadline = time.monotonic() + 300
    while lines(out) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    before = read_records(out)
    assert 3 <= len(before) < 24  # killed mid-run

    summary = generate(run, "tiny", hf_options={"model": str(model_dir), "device": "cpu"}, n=24, progress=False)
    assert summary["already_done"] == len(before)
    after = read_records(out)
    keys = [r.key for r in after]
    assert len(keys) == len(set(keys)) == 24
    assert [r.key for r in after[: len(before)]] == [r.key for r in before]  # earlier records untouched

    # nothing lost: the same answers as one uninterrupted (greedy) run
    generate(run, "tiny_once", hf_options={"model": str(model_dir), "device": "cpu"}, n=24, progress=False)
    once = {r.window_id: r.raw_text for r in read_records(run.cf_file("tiny_once+grammar"))}
    assert {r.window_id: r.raw_text for r in after} == once
