"""The block grammar: range regexes, line-by-line cursor, group completion, whole-block exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sensecf.cfblock import render_block
from sensecf.generate.grammar import (
    BlockCursor,
    block_regex,
    complete_groups,
    json_schema,
    member_bounds,
    number_text,
    plan_lines,
    range_regex,
    scaled,
)
from sensecf.generate.parser import parse_block
from sensecf.spec import DatasetSpec

REPO = Path(__file__).resolve().parents[1]
RANGES = {
    "awake_pct": (0, 40),
    "light_pct": (20, 85),
    "deep_pct": (0, 35),
    "rem_pct": (0, 35),
    "steps_mean": (0, 60),
    "glucose_mean": (40, 400),
    "hyper_events": (0, 12),
    "tir_pct": (0, 100),
    "age": (20, 90),
}
SLEEP = ["awake_pct", "light_pct", "deep_pct", "rem_pct"]


def aireadi_spec() -> DatasetSpec:
    spec = DatasetSpec.from_yaml(REPO / "dataset_builders" / "aireadi_spec.yaml")
    feats = [
        f.model_copy(update=dict(zip(("min", "max"), RANGES[f.name], strict=True))) if f.is_numeric else f
        for f in spec.features
    ]
    return spec.model_copy(update={"features": feats})


SPEC = aireadi_spec()
FACTUAL = {
    "awake_pct": 12.5,
    "light_pct": 55.0,
    "deep_pct": 17.5,
    "rem_pct": 15.0,
    "steps_mean": 8.25,
    "glucose_mean": 131.4,
    "hyper_events": 1,
    "tir_pct": 80.0,
    "age": 61,
    "sex": "female",
    "medication": "insulin",
    "study_group": "insulin_dependent",
}

factuals = st.fixed_dictionaries(
    {
        **{k: st.just(v) for k, v in FACTUAL.items()},
        "age": st.integers(20, 90),
        "sex": st.sampled_from(SPEC.feature("sex").categories),
        "medication": st.sampled_from(SPEC.feature("medication").categories),
        "study_group": st.sampled_from(SPEC.feature("study_group").categories),
    }
)


# --- range regex against brute force ------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(lo=st.integers(-400, 400), width=st.integers(0, 600), decimals=st.integers(0, 3))
def test_range_regex_accepts_exactly_the_canonical_values_in_range(lo, width, decimals):
    hi = lo + width
    rx = re.compile(range_regex(lo, hi, decimals))
    for n in range(lo - 40, hi + 41):
        text = number_text(n, decimals)
        assert bool(rx.fullmatch(text)) == (lo <= n <= hi), (text, lo, hi, decimals)
        # non-canonical spellings of the same number are never accepted
        if decimals:
            assert not rx.fullmatch(text + "0")
            assert not rx.fullmatch(text[: -decimals - 1])
        sign, magnitude = ("-", text[1:]) if text.startswith("-") else ("", text)
        assert not rx.fullmatch(sign + "0" + magnitude)  # leading zero
        assert not rx.fullmatch("+" + text)
    assert not rx.fullmatch("-" + number_text(0, decimals))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), lo=st.integers(-5000, 5000), width=st.integers(0, 200000), decimals=st.integers(0, 3))
def test_every_string_the_range_regex_generates_is_canonical_and_in_range(data, lo, width, decimals):
    hi = lo + width
    text = data.draw(st.from_regex(range_regex(lo, hi, decimals), fullmatch=True))
    n = scaled(float(text), decimals)
    assert number_text(n, decimals) == text
    assert lo <= n <= hi


def test_range_regex_hand_examples():
    assert range_regex(0, 1000, 1) == r"([0-9]\.[0-9]|[1-9][0-9]\.[0-9]|100\.0)"
    assert range_regex(3, 27, 0) == "([3-9]|1[0-9]|2[0-7])"
    assert re.fullmatch(range_regex(-15, -5, 1), "-1.5") and not re.fullmatch(range_regex(-15, -5, 1), "-0.4")
    with pytest.raises(ValueError, match="empty range"):
        range_regex(5, 4, 0)


# --- the line-by-line cursor --------------------------------------------------------------


def walk(cursor: BlockCursor, draw_value) -> str:
    while True:
        cursor.take_forced()
        if cursor.done:
            return cursor.text
        cursor.accept(draw_value(cursor.free_regex()))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), factual=factuals)
def test_every_block_the_line_grammars_accept_is_a_valid_coherent_cf(data, factual):
    cursor = BlockCursor.start(SPEC, factual)
    text = walk(cursor, lambda rx: data.draw(st.from_regex(rx, fullmatch=True)))
    parsed = parse_block(SPEC, text)
    assert parsed.status == "ok" and parsed.filled == []
    cf = parsed.cf
    assert cf == cursor.cf()
    for f in SPEC.immutable:
        assert f.format_value(cf[f.name]) == f.format_value(factual[f.name])
    for f in SPEC.numeric:
        assert f.min <= cf[f.name] <= f.max
    assert sum(scaled(cf[m], 1) for m in SLEEP) == 1000
    assert cursor.incoherent == []
    assert re.fullmatch(block_regex(SPEC, factual), text)
    assert text == render_block(SPEC, cf)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_without_group_bounds_the_computed_member_stays_in_range_and_incoherence_is_flagged(data):
    cursor = BlockCursor.start(SPEC, FACTUAL, bound_groups=False)
    walk(cursor, lambda rx: data.draw(st.from_regex(rx, fullmatch=True)))
    cf = cursor.cf()
    assert 0 <= cf["rem_pct"] <= 35
    coherent = sum(scaled(cf[m], 1) for m in SLEEP) == 1000
    assert coherent == (cursor.incoherent == [])


@settings(max_examples=150, deadline=None)
@given(
    awake=st.integers(0, 400),
    light=st.integers(200, 850),
    deep=st.integers(0, 350),
    factual=factuals,
    glucose=st.integers(400, 4000),
    tir=st.integers(0, 1000),
)
def test_every_in_range_coherent_cf_rendered_is_accepted(awake, light, deep, factual, glucose, tir):
    rem = 1000 - awake - light - deep
    assume(0 <= rem <= 350)
    cf = {
        **factual,
        "awake_pct": awake / 10,
        "light_pct": light / 10,
        "deep_pct": deep / 10,
        "rem_pct": rem / 10,
        "glucose_mean": glucose / 10,
        "tir_pct": tir / 10,
    }
    text = render_block(SPEC, cf)
    assert re.fullmatch(block_regex(SPEC, factual), text)
    cursor = BlockCursor.start(SPEC, factual)
    lines = iter(text.split("\n")[1:-1])
    values = {f.name: next(lines).split(": ", 1)[1] for f in SPEC.features}
    assert walk(cursor, lambda rx: values[cursor.free_line().feature.name] + "\n") == text


def test_out_of_range_values_and_changed_immutables_are_rejected():
    cursor = BlockCursor.start(SPEC, FACTUAL)
    cursor.take_forced()
    rx = cursor.free_regex()  # awake_pct
    assert re.fullmatch(rx, "40.0\n") and re.fullmatch(rx, "0.0\n")
    for bad in ("40.1\n", "-0.1\n", "12\n", "12.50\n", "012.5\n", "12.5"):
        assert not re.fullmatch(rx, bad)
    with pytest.raises(ValueError, match="does not match"):
        cursor.accept("41.0\n")
    whole = block_regex(SPEC, FACTUAL)
    good = render_block(SPEC, FACTUAL)
    assert re.fullmatch(whole, good)
    assert not re.fullmatch(whole, good.replace("Age: 61", "Age: 60"))
    assert not re.fullmatch(whole, good.replace("Sex: female", "Sex: male"))
    assert not re.fullmatch(whole, good.replace("Avg CGM (mg/dL): 131.4", "Avg CGM (mg/dL): 400.1"))


def test_group_members_are_bounded_so_the_group_can_complete():
    # ranges: awake [0, 40], light [20, 85], deep [0, 35], rem [0, 35]; scaled to 0.1
    assert member_bounds(SPEC, "awake_pct", {}) == (0, 400)
    assert member_bounds(SPEC, "light_pct", {"awake_pct": 30.0}) == (200, 700)
    # after awake 30 and light 20 the rest (50) must be split so that rem <= 35: deep >= 15
    assert member_bounds(SPEC, "deep_pct", {"awake_pct": 30.0, "light_pct": 20.0}) == (150, 350)


def test_computed_member_and_complete_groups_by_hand():
    values, bad = complete_groups(SPEC, {**FACTUAL, "awake_pct": 10.0, "light_pct": 50.0, "deep_pct": 20.0})
    assert values["rem_pct"] == 20.0 and bad == []
    values, bad = complete_groups(SPEC, {**FACTUAL, "awake_pct": 40.0, "light_pct": 80.0, "deep_pct": 20.0})
    assert values["rem_pct"] == 0.0 and bad == ["sleep_stages"]  # -40 clamped to the range's 0
    cursor = BlockCursor.start(SPEC, FACTUAL, bound_groups=False)
    for value in ("40.0\n", "80.0\n", "20.0\n"):
        cursor.take_forced()
        cursor.accept(value)
    assert "- Modified REM sleep (%): 0.0\n- Modified Avg steps: " in cursor.take_forced()
    assert cursor.incoherent == ["sleep_stages"]


def test_forced_text_spans_every_line_up_to_the_next_free_value():
    cursor = BlockCursor.start(SPEC, FACTUAL)
    assert cursor.take_forced() == "<new>\n- Modified Awake (%): "
    assert cursor.take_forced() == ""  # idempotent while a value is pending
    cursor.accept("10.0\n")
    assert cursor.take_forced() == "- Modified Light sleep (%): "
    for value in ("50.0\n", "20.0\n"):
        cursor.accept(value)
        cursor.take_forced()
    assert cursor.text.endswith(
        "- Modified Deep sleep (%): 20.0\n- Modified REM sleep (%): 20.0\n- Modified Avg steps: "
    )
    for value in ("8.25\n", "131.4\n", "1\n"):
        cursor.accept(value)
        cursor.take_forced()
    cursor.accept("80.0\n")
    tail = cursor.take_forced()
    assert tail == (
        "- Modified Age: 61\n- Modified Sex: female\n- Modified Medication: insulin\n"
        "- Modified Patient subgroup: insulin_dependent\n</new>"
    )
    assert cursor.done


def test_mutable_categorical_line_is_limited_to_its_categories(generic_run):
    spec = generic_run.load_spec()
    factual = {"chol": 200.0, "bp": 120, "smoker": "yes", "age": 50, "sex": "m"}
    lines = plan_lines(spec, factual)
    assert [line.kind for line in lines] == ["number", "number", "choice", "fixed", "fixed"]
    cursor = BlockCursor.start(spec, factual)
    cursor.take_forced()
    cursor.accept("200.0\n")
    cursor.take_forced()
    cursor.accept(f"{int(spec.feature('bp').min)}\n")
    cursor.take_forced()
    rx = cursor.free_regex()
    assert re.fullmatch(rx, "no\n") and re.fullmatch(rx, "yes\n")
    assert not re.fullmatch(rx, "maybe\n") and not re.fullmatch(rx, "No\n")


def test_a_spec_without_learned_ranges_is_a_clear_error():
    spec = DatasetSpec.from_yaml(REPO / "dataset_builders" / "aireadi_spec.yaml")
    with pytest.raises(ValueError, match="awake_pct.*no learned min/max"):
        plan_lines(spec, FACTUAL)


def test_json_schema_for_openai_strict_mode():
    schema = json_schema(SPEC, FACTUAL)
    props = schema["properties"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == list(props)
    assert "rem_pct" not in props and "rem_pct" in schema["description"]  # computed from the others
    assert props["age"] == {"type": "string", "enum": ["61"], "description": "Age (years), unchanged"}
    assert props["sex"]["enum"] == ["female"]
    pattern = props["glucose_mean"]["pattern"]
    assert pattern.startswith("^") and pattern.endswith("$")
    assert re.fullmatch(pattern[1:-1], "131.4") and not re.fullmatch(pattern[1:-1], "39.9")
    for name in ("awake_pct", "steps_mean", "hyper_events", "tir_pct"):
        assert props[name]["type"] == "string" and "pattern" in props[name]
