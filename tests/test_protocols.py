"""The two protocols: row names, records that say which, and eval.generate decoding by protocol."""

from __future__ import annotations

import pytest

from eval.generate import GenerateError, generate
from eval.metrics import with_verified
from sensecf.protocols import PROTOCOLS, protocol_of, row_name
from sensecf.records import CFRecord, read_records


def test_row_names_by_protocol():
    assert row_name("llama31_ft", "paper", "llm") == "llama31_ft"
    assert row_name("llama31_ft", "sensecf", "llm") == "llama31_ft+grammar"
    assert row_name("dice_random", "paper", "baseline") == "dice_random"
    assert row_name("dice_random", "sensecf", "baseline") == "dice_random+best_of_k"
    with pytest.raises(ValueError, match="base name without"):
        row_name("llama31_ft+grammar", "sensecf", "llm")
    with pytest.raises(ValueError, match="protocol 'ours': unknown"):
        row_name("x", "ours", "llm")


@pytest.mark.parametrize(
    ("row", "protocol"),
    [("gpt4o_zs", "paper"), ("dice_genetic", "paper"), ("nice", "paper"), ("teacher", "sensecf"),
     ("llama31_ft+grammar", "sensecf"), ("cfnow+best_of_k", "sensecf"), ("smollm2_ft+verified", "sensecf"),
     ("smollm2_ft+grammar+verified", "sensecf"), ("teacher_2", "sensecf"), ("teachers", "paper")],
)
def test_protocol_of_a_row(row, protocol):
    assert protocol_of(row) == protocol


def test_unknown_suffix_is_refused():
    with pytest.raises(ValueError, match=r"unknown variant suffix \['\+fast'\]"):
        protocol_of("llama31_ft+fast")


def _record(method, **kw):
    fields = {"window_id": "w", "participant_id": "p", "factual": {}, "factual_pred": 1, "desired_class": 0,
              "parse_status": "ok", "cf": {"a": 1}, "cf_pred": 0, **kw}
    return CFRecord(method=method, **fields)


def test_a_record_carries_its_protocol_and_cannot_contradict_its_name():
    assert _record("llama31_ft").protocol == "paper"
    assert _record("llama31_ft+grammar").protocol == "sensecf"
    assert CFRecord.model_validate_json(_record("dice_random").model_dump_json()).protocol == "paper"
    with pytest.raises(ValueError, match="method 'llama31_ft' is a paper row"):
        _record("llama31_ft", protocol="sensecf")


def test_a_verified_pick_of_a_paper_row_is_ours(tiny_run):
    _, spec = tiny_run.load_cohort()  # with the training ranges
    factual = {f.name: (f.categories[0] if f.categories else 10.0) for f in spec.features}
    records = [_record("m", candidate=c, factual=factual, cf={**factual, "glucose_mean": 100.0 + c})
               for c in (0, 1)]
    verified = [r for r in with_verified(records, spec) if r.method.endswith("+verified")]
    assert verified and {(r.method, r.protocol) for r in verified} == {("m+verified", "sensecf")}


def test_generate_decodes_by_protocol(trained_run, tiny_model_dir):
    """A random-init model: under the paper's protocol it writes free text that mostly fails to parse
    (counted, not dropped); under ours every answer parses and keeps the immutables."""
    opts = {"model": str(tiny_model_dir), "device": "cpu", "max_new_tokens": 48}
    paper = generate(trained_run, "tiny", n=4, protocol="paper", hf_options=opts, progress=False)
    ours = generate(trained_run, "tiny", n=4, protocol="sensecf", hf_options=opts, progress=False)
    assert (paper["method"], paper["protocol"]) == ("tiny", "paper")
    assert (ours["method"], ours["protocol"]) == ("tiny+grammar", "sensecf")
    free = read_records(trained_run.cf_file("tiny"))
    constrained = read_records(trained_run.cf_file("tiny+grammar"))
    assert len(free) == len(constrained) == 4
    assert {r.extra["free"] for r in free} == {True} and {r.extra["free"] for r in constrained} == {False}
    assert sum(paper["status"].values()) == 4  # every factual has a record, parsed or not
    assert ours["status"] == {"ok": 4} and ours["immutables_violated"] == 0
    assert {r.protocol for r in free} == {"paper"} and {r.protocol for r in constrained} == {"sensecf"}
    assert all(r.raw_text != c.raw_text for r, c in zip(free, constrained, strict=True))


def test_openai_constraint_none_is_the_paper_protocol(trained_run):
    with pytest.raises(GenerateError, match="use --protocol paper"):
        generate(trained_run, "gpt", "openai", openai_options={"constraint": "none", "base_url": "http://127.0.0.1:1/v1"})


def test_protocol_table_is_data():
    assert PROTOCOLS["paper"].free_decoding and PROTOCOLS["paper"].baseline_pick == "first"
    assert not PROTOCOLS["sensecf"].free_decoding and PROTOCOLS["sensecf"].baseline_pick == "nearest_valid"
