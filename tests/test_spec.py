import copy

import pandas as pd
import pytest
import yaml
from conftest import AIREADI_SPEC, GENERIC_SPEC

from sensecf.spec import DatasetSpec, SpecError


def _write(tmp_path, raw) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_aireadi_spec_has_the_papers_12_features():
    spec = DatasetSpec.from_yaml(AIREADI_SPEC)
    assert len(spec.features) == 12
    assert [f.name for f in spec.immutable] == ["age", "sex", "medication", "study_group"]
    assert len(spec.mutable) == 8
    assert spec.group_of("deep_pct").members == ["awake_pct", "light_pct", "deep_pct", "rem_pct"]
    assert spec.group_of("glucose_mean") is None
    assert spec.label.classes[1] == "high stress"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["features"][0].update(kind="ordinal"), "features.0.kind"),
        (lambda r: r["features"].append(dict(r["features"][0])), "duplicate feature name 'chol'"),
        (lambda r: r["features"][2].pop("categories"), "feature 'smoker': categorical needs"),
        (lambda r: r.update(groups=[{"name": "g", "members": ["chol", "nope"], "total": 1}]), "member 'nope'"),
        (lambda r: r.update(groups=[{"name": "g", "members": ["chol", "age"], "total": 1}]), "must be a mutable"),
        (lambda r: r["features"][1].update(decimals=2), "feature 'bp': an integer feature"),
        (lambda r: r["label"].update(classes={0: "a", 2: "b"}), "classes must be exactly 0 and 1"),
        (lambda r: r["features"][0].update(colour="red"), "features.0.colour"),
        (lambda r: r["features"][0].update(min=5, max=1), "min 5.0 > max 1.0"),
    ],
)
def test_wrong_spec_fails_naming_the_field(tmp_path, mutate, message):
    raw = copy.deepcopy(GENERIC_SPEC)
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(SpecError) as err:
        DatasetSpec.from_yaml(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_and_malformed_files_name_the_path(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        DatasetSpec.from_yaml(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="bad.yaml: line 1, column 16: not valid YAML: expected ',' or ']'"):
        DatasetSpec.from_yaml(bad)


def test_ranges_are_learned_at_display_precision_and_survive_yaml(tmp_path):
    spec = DatasetSpec.model_validate(GENERIC_SPEC)
    train = pd.DataFrame(
        {"chol": [180.04, 250.96], "bp": [101, 170], "smoker": ["no", "yes"], "age": [30, 70], "sex": ["f", "m"]}
    )
    ranged = spec.with_ranges(train)
    assert (ranged.feature("chol").min, ranged.feature("chol").max) == (180.0, 251.0)
    assert (ranged.feature("bp").min, ranged.feature("bp").max) == (101, 170)
    assert ranged.feature("smoker").min is None
    ranged.to_yaml(tmp_path / "s.yaml")
    assert DatasetSpec.from_yaml(tmp_path / "s.yaml") == ranged


def test_display_precision_formatting():
    spec = DatasetSpec.from_yaml(AIREADI_SPEC)
    assert spec.feature("steps_mean").format_value(5.954) == "5.95"
    assert spec.feature("hyper_events").format_value(2.0) == "2"
    assert spec.feature("sex").format_value("female") == "female"
