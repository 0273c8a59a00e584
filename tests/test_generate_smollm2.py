"""The real SmolLM2-135M-Instruct under the grammar: every constrained answer parses, keeps the
immutables, stays in range and completes its groups; both enforcers give the same greedy answers;
jump-forward saves forward calls without changing validity."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import AIREADI_SPEC, _aireadi_frame, write_cohort
from test_hf_backend import check_valid, cohort_requests

from sensecf.generate.hf_backend import DecodeConfig, HFGenerator
from sensecf.models import load_embedded_model
from sensecf.rundir import RunDir
from sensecf.spec import DatasetSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("smollm2") / "run")
    write_cohort(run, _aireadi_frame(np.random.default_rng(7), 30, 20), DatasetSpec.from_yaml(AIREADI_SPEC))
    model, tokenizer = load_embedded_model()
    requests, spec = cohort_requests(run, tokenizer, 50)
    return model, tokenizer, spec, requests


@pytest.fixture(scope="module")
def xgrammar_answers(setup):
    model, tokenizer, spec, requests = setup
    gen = HFGenerator(model, tokenizer, spec, DecodeConfig(enforcer="xgrammar"))
    return [r for i in range(0, 50, 25) for r in gen.generate_batch(requests[i : i + 25])]


def test_fifty_greedy_answers_are_all_valid(setup, xgrammar_answers):
    _, _, spec, requests = setup
    check_valid(spec, requests, xgrammar_answers)  # 100% parsed, 0 immutable violations, in range, coherent
    assert all(r.decode_steps == r.sampled_tokens for r in xgrammar_answers)


def test_lmfe_gives_the_same_greedy_answers(setup, xgrammar_answers):
    model, tokenizer, spec, requests = setup
    answers = HFGenerator(model, tokenizer, spec, DecodeConfig(enforcer="lmfe")).generate_batch(requests[:16])
    check_valid(spec, requests[:16], answers)
    assert [r.text for r in answers] == [r.text for r in xgrammar_answers[:16]]


def test_jump_forward_needs_fewer_forward_calls(setup, xgrammar_answers):
    model, tokenizer, spec, requests = setup
    plain = HFGenerator(model, tokenizer, spec, DecodeConfig(jump_forward=False)).generate_batch(requests[:8])
    check_valid(spec, requests[:8], plain)
    fast = xgrammar_answers[:8]
    assert all(f.decode_steps < p.decode_steps for f, p in zip(fast, plain, strict=True))
    identical = sum(f.text == p.text for f, p in zip(fast, plain, strict=True))
    steps = np.mean([f.decode_steps for f in fast]), np.mean([p.decode_steps for p in plain])
    print(f"greedy answers identical with and without jump-forward: {identical}/8; forward calls per CF {steps}")
