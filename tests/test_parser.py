"""Lenient parsing of free-text answers: never an exception, always (cf or None, status)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_grammar import FACTUAL, SPEC  # tests/ is on sys.path (no tests/__init__.py)

from sensecf.cfblock import render_block
from sensecf.generate.parser import parse_block, parse_cf

CF = {
    **FACTUAL,
    "awake_pct": 8.0,
    "deep_pct": 21.5,
    "rem_pct": 15.5,
    "steps_mean": 12.75,
    "glucose_mean": 118.2,
    "hyper_events": 0,
    "tir_pct": 92.3,
}


def test_the_exact_block_parses_to_the_same_values():
    cf, status = parse_cf(SPEC, render_block(SPEC, CF))
    assert status == "ok"
    assert cf == {**CF, "age": 61}
    assert isinstance(cf["hyper_events"], int) and isinstance(cf["age"], int)


def test_prose_markdown_case_spacing_and_units():
    text = """Sure! Here is a counterfactual that would lower the stress prediction:

```
<NEW>
- **awake (%)** :  8 %
* Light Sleep (%) = 55.0%
1. deep sleep(%): 21.5 percent
- REM sleep (%): 15.5
- Avg Steps: 12.75 steps/min
- Avg CGM (mg/dL): 118.2 mg/dL
- Hyperglycemia events: 0 events
- TIR (%): 92.3 %
- Age: 61 years
- Sex: Female
- Medication: Insulin
- Patient subgroup: insulin dependent
</new>
```
These changes reduce glucose variability."""
    r = parse_block(SPEC, text)
    assert r.status == "ok", r.note
    assert r.cf == {**CF, "age": 61}


def test_old_to_new_values_numbers_with_commas_and_extra_lines():
    text = (
        "<new>\nAwake (%): 12.5 -> 8.0\nLight sleep (%): 55,0\nNote: sleep more\nDeep sleep (%): 21.5\n"
        "REM sleep (%): 15.5\nAvg steps: 1,012.75\nAvg CGM (mg/dL): 118.24\nHyperglycemia events: 0.0\n"
        "TIR (%): 92.3\nAge: 61\nSex: female\nMedication: insulin\nPatient subgroup: insulin_dependent\n</new>"
    )
    cf, status = parse_cf(SPEC, text)
    assert status == "ok"
    assert cf["awake_pct"] == 8.0 and cf["light_pct"] == 55.0 and cf["steps_mean"] == 1012.75
    assert cf["glucose_mean"] == 118.2  # rounded to display precision
    assert cf["hyper_events"] == 0


def test_missing_lines_are_filled_from_the_factual_and_reported():
    text = "<new>\nAvg steps: 20.00\nDeep sleep (%): unchanged\n</new>"
    r = parse_block(SPEC, text, FACTUAL)
    assert r.status == "ok"
    assert r.cf["steps_mean"] == 20.0
    assert r.cf["deep_pct"] == FACTUAL["deep_pct"]
    assert set(r.filled) == set(SPEC.names) - {"steps_mean"}
    # without a factual a partial block cannot be completed
    assert parse_cf(SPEC, text) == (None, "parse_error")


def test_json_answers_and_the_last_block_wins():
    json_text = '{"awake_pct": "8.0", "light_pct": "55.0", "steps_mean": 3}'
    r = parse_block(SPEC, json_text, FACTUAL)
    assert r.status == "ok" and r.cf["awake_pct"] == 8.0 and r.cf["steps_mean"] == 3.0
    two = "<new>\nAvg steps: 1.00\n</new> hmm, better:\n<new>\nAvg steps: 2.00\n</new>"
    assert parse_block(SPEC, two, FACTUAL).cf["steps_mean"] == 2.0


def test_categories_in_prose_match_whole_words_only():
    def medication(value):
        return parse_block(SPEC, f"<new>\nAvg steps: 2.00\nMedication: {value}\n</new>", FACTUAL).cf["medication"]

    assert medication("Insulin (unchanged)") == "insulin"
    assert medication("none, as before") == "none"
    assert medication("oral or noninsulin injectable") == "oral_or_noninsulin_injectable"
    assert medication("insulin_dependent") == "insulin_dependent"  # not a medication category: kept as is
    long = "oral_or_noninsulin_injectable_medication_controlled"
    assert medication(long) == long


def test_unknown_categories_are_kept_for_plausibility_not_dropped():
    r = parse_block(SPEC, "<new>\nAvg steps: 2.00\nSex: woman\n</new>", FACTUAL)
    assert r.status == "ok" and r.cf["sex"] == "woman"
    assert parse_block(SPEC, "<new>\nSex: not male\n</new>", FACTUAL).status == "parse_error"  # no mutable line


def test_failures_are_statuses_not_exceptions():
    for text in (
        None,
        "",
        "   ",
        "I cannot help with that.",
        "<new>\n</new>",
        "<new>\nAwake (%): lots\n</new>",
        "{not json",
        "<new>\nAge: 60\n</new>",
    ):
        cf, status = parse_cf(SPEC, text, FACTUAL)
        assert (cf, status) == (None, "parse_error"), text
    assert "Awake" in parse_block(SPEC, "<new>\nAwake (%): lots\n</new>", FACTUAL).note


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises(text):
    cf, status = parse_cf(SPEC, text, FACTUAL)
    assert status in ("ok", "parse_error")
    assert (cf is None) == (status == "parse_error")


def _steps(value: str):
    return parse_block(SPEC, f"<new>\nAvg steps: {value}\n</new>", FACTUAL)


def test_numbers_with_exponents():
    assert _steps("1.2e4").cf["steps_mean"] == 12000.0
    assert _steps("3E-2").cf["steps_mean"] == 0.03
    assert _steps("1.5e+1 steps/min").cf["steps_mean"] == 15.0
    assert _steps("12.0 -> 2e1").cf["steps_mean"] == 20.0
    assert _steps("1,234.5e-2").cf["steps_mean"] == 12.35  # thousands comma, then the exponent
    json_text = '{"awake_pct": 8, "steps_mean": 1e-05}'  # json.dumps writes small floats this way
    assert parse_block(SPEC, json_text, FACTUAL).cf["steps_mean"] == 0.0


def test_non_finite_and_absurd_numbers_make_the_answer_a_parse_error_naming_the_feature():
    for value in ("1" + "0" * 400, "inf", "-Infinity", "NaN", "1e308", "1e13", "-2e12", "12.0 -> 1e400"):
        r = _steps(value)
        assert (r.cf, r.status) == (None, "parse_error"), value
        assert r.note.startswith("unusable numbers: Avg steps: "), (value, r.note)
    assert "not a finite number" in _steps("9" * 400).note
    assert "magnitude above 1e+12" in _steps("1e308").note
    assert _steps("1e12").cf["steps_mean"] == 1e12  # the bound itself is still a number
    # an integer feature: a 400-digit count once raised OverflowError inside int()
    r = parse_block(SPEC, "<new>\nAvg steps: 3\nHyperglycemia events: " + "9" * 400 + "\n</new>", FACTUAL)
    assert r.status == "parse_error" and "Hyperglycemia events: not a finite number" in r.note
    # JSON accepts NaN, Infinity and 1e400 (-> inf)
    r = parse_block(SPEC, '{"awake_pct": NaN, "steps_mean": 1e400}', FACTUAL)
    assert r.status == "parse_error" and "Awake (%)" in r.note and "Avg steps" in r.note
    # words that merely contain "inf"/"nan" are prose, not numbers
    assert _steps("5 (information: banana)").cf["steps_mean"] == 5.0
