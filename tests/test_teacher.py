"""Teacher CFs: hand-traced small cases, and the contract's properties on both fixture cohorts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sensecf.blackbox import BlackBox, build_pipeline
from sensecf.spec import DatasetSpec
from sensecf.teacher import teacher_cfs

SPEC = DatasetSpec.model_validate(
    {
        "name": "toy",
        "label": {"name": "y", "classes": {0: "low", 1: "high"}},
        "features": [
            {"name": "a", "prompt_name": "A", "kind": "continuous", "mutable": True, "decimals": 2, "min": 0,
             "max": 10},
            {"name": "b", "prompt_name": "B", "kind": "continuous", "mutable": True, "decimals": 1, "min": 0,
             "max": 100},
            {"name": "c", "prompt_name": "C", "kind": "continuous", "mutable": True, "decimals": 1, "min": 0,
             "max": 100},
            {"name": "k", "prompt_name": "K", "kind": "categorical", "mutable": True, "categories": ["x", "y"]},
            {"name": "age", "prompt_name": "Age", "kind": "integer", "mutable": False, "min": 20, "max": 80},
        ],
        "groups": [{"name": "bc", "members": ["b", "c"], "total": 100}],
    }
)


class RuleBox:
    def __init__(self, rule):
        self.rule = rule

    def predict(self, X):
        df = pd.DataFrame(X)
        return np.asarray(self.rule(df.astype({"a": float, "b": float, "c": float, "age": float})), int)


def row(a, b=40.0, c=60.0, k="x", age=50):
    return {"a": a, "b": b, "c": c, "k": k, "age": age}


def test_nearest_neighbour_then_sparsified_by_units():
    box = RuleBox(lambda d: d.a >= 5)
    train = pd.DataFrame([row(1.0), row(6.0, 30.0, 70.0, "y"), row(9.0, 20.0, 80.0, "y")])
    out = teacher_cfs(pd.DataFrame([row(2.0)]), train, SPEC, box)
    # Neighbour 1 (6, 30/70, y); reverting the sleep-like group (smallest change) keeps class 1,
    # reverting a does not, reverting k does: only a stays changed.
    assert out.status == ["ok"] and out.neighbour == [1]
    assert out.cfs[0] == {"a": 6.0, "b": 40.0, "c": 60.0, "k": "x", "age": 50}
    assert out.factual_pred.tolist() == [0] and out.desired_class.tolist() == [1]


def test_invalid_neighbour_with_copied_immutables_falls_to_the_next():
    box = RuleBox(lambda d: d.a >= 5 + (d.age - 50) / 10)  # older windows need a larger a
    train = pd.DataFrame([row(5.5), row(8.0), row(1.0)])  # both 5.5 and 8.0 are class 1 at age 50
    out = teacher_cfs(pd.DataFrame([row(2.0, age=60)]), train, SPEC, box)
    assert out.neighbour == [1] and out.cfs[0]["a"] == 8.0 and out.cfs[0]["age"] == 60


def test_no_valid_neighbour_is_reported_not_dropped():
    box = RuleBox(lambda d: d.a >= 5 + (d.age - 50) / 10)
    train = pd.DataFrame([row(5.5), row(1.0)])
    out = teacher_cfs(pd.DataFrame([row(2.0, age=70), row(1.0)]), train, SPEC, box)
    assert out.cfs[0] is None and out.status[0] == "no_cf" and "no valid CF among" in out.detail[0]
    assert out.status[1] == "ok" and out.cfs[1]["a"] == 5.5
    assert out.counts == {"ok": 1, "no_valid_neighbour": 1, "invalid_after_rounding": 0}


def test_group_rounding_residue_goes_to_the_largest_member():
    box = RuleBox(lambda d: d.b <= 35)
    train = pd.DataFrame([row(2.0, 33.35, 66.65)])  # rounds to 33.4 + 66.7 = 100.1
    out = teacher_cfs(pd.DataFrame([row(2.0)]), train, SPEC, box)
    assert out.cfs[0]["b"] == 33.4 and out.cfs[0]["c"] == pytest.approx(66.6)
    assert round(out.cfs[0]["b"] + out.cfs[0]["c"], 6) == 100


def test_invalid_after_rounding_is_reported():
    box = RuleBox(lambda d: d.a >= 5.004)
    train = pd.DataFrame([row(5.004)])  # valid raw, but rounds to 5.00
    out = teacher_cfs(pd.DataFrame([row(2.0)]), train, SPEC, box)
    assert out.cfs == [None] and out.detail == ["invalid after rounding to display precision"]
    assert out.counts["invalid_after_rounding"] == 1


def _changed(spec, a: dict, b: dict) -> int:
    n = 0
    for f in spec.features:
        if f.is_numeric:
            n += round(float(a[f.name]), f.decimals) != round(float(b[f.name]), f.decimals)
        else:
            n += str(a[f.name]) != str(b[f.name])
    return n


@pytest.mark.parametrize("fixture", ["tiny_run", "generic_run"])
def test_contract_properties_on_cohorts(fixture, request):
    df, spec = request.getfixturevalue(fixture).load_cohort()
    train, test = df[df.split == "train"].reset_index(drop=True), df[df.split == "test"].reset_index(drop=True)
    bb = BlackBox(build_pipeline(spec, seed=0).fit(train[spec.names], train[spec.label.name]), spec)
    out = teacher_cfs(test, train, spec, bb)

    assert len(out) == len(test) == len(out.status) == len(out.seconds)
    ok = [i for i, c in enumerate(out.cfs) if c is not None]
    assert len(ok) >= 0.9 * len(test)
    assert sum(out.counts.values()) == len(test) and out.counts["ok"] == len(ok)
    assert all((c is None) == (s == "no_cf") for c, s in zip(out.cfs, out.status, strict=True))

    cfs = pd.DataFrame([out.cfs[i] for i in ok])
    facts = test.iloc[ok].reset_index(drop=True)
    assert (bb.predict(cfs) == out.desired_class[ok]).all()  # every CF is valid
    assert (out.desired_class == 1 - bb.predict(test)).all()
    for f in spec.immutable:  # immutables copied exactly
        assert cfs[f.name].tolist() == facts[f.name].tolist()
    for f in spec.mutable:
        if f.is_numeric:  # at display precision
            assert np.allclose(cfs[f.name], cfs[f.name].round(f.decimals), atol=1e-9)
        else:
            assert set(cfs[f.name]) <= set(f.categories)
    for g in spec.groups:
        assert (cfs[g.members].sum(axis=1).round(6) == g.total).all()

    # Sparsifying never adds changes to the neighbour it started from, and removes some overall.
    teacher_changes, neighbour_changes = [], []
    mutable = [f.name for f in spec.mutable]
    for i, cf in zip(ok, cfs.to_dict("records"), strict=True):
        neighbour = {**test.iloc[i][spec.names].to_dict(), **train.iloc[out.neighbour[i]][mutable].to_dict()}
        teacher_changes.append(_changed(spec, cf, test.iloc[i]))
        neighbour_changes.append(_changed(spec, neighbour, test.iloc[i]))
    assert all(t <= n for t, n in zip(teacher_changes, neighbour_changes, strict=True))
    assert sum(teacher_changes) < sum(neighbour_changes)


def test_spec_without_mutables_or_ranges_is_refused():
    frozen = SPEC.model_copy(update={"features": [f.model_copy(update={"mutable": False}) for f in SPEC.features],
                                     "groups": []})
    with pytest.raises(ValueError, match="no mutable feature"):
        teacher_cfs(pd.DataFrame([row(1.0)]), pd.DataFrame([row(6.0)]), frozen, RuleBox(lambda d: d.a >= 5))
    bare = SPEC.model_copy(update={"features": [f.model_copy(update={"min": None, "max": None}) if f.is_numeric
                                                else f for f in SPEC.features]})
    with pytest.raises(ValueError, match="no learned min/max"):
        teacher_cfs(pd.DataFrame([row(1.0)]), pd.DataFrame([row(6.0)]), bare, RuleBox(lambda d: d.a >= 5))


def test_several_cfs_per_factual_nearest_first_and_distinct():
    box = RuleBox(lambda d: d.a >= 5)
    train = pd.DataFrame([row(1.0), row(6.0, 30.0, 70.0, "y"), row(9.0, 20.0, 80.0, "y")])
    out = teacher_cfs(pd.DataFrame([row(2.0)]), train, SPEC, box, per_factual=2)
    # Neighbour 1 as in the single case; neighbour 2 (9, 20/80, y): reverting the group keeps
    # class 1, reverting a does not, reverting k does: a = 9 stays.
    assert out.cfs[0] == {"a": 6.0, "b": 40.0, "c": 60.0, "k": "x", "age": 50}
    assert out.more == [[{"a": 9.0, "b": 40.0, "c": 60.0, "k": "x", "age": 50}]]
    assert out.neighbour == [1] and out.counts["ok"] == 1


def test_neighbours_that_sparsify_to_the_same_cf_count_once():
    box = RuleBox(lambda d: d.a >= 5)
    train = pd.DataFrame([row(6.0, 30.0, 70.0, "y"), row(6.0, 20.0, 80.0, "x"), row(1.0)])
    out = teacher_cfs(pd.DataFrame([row(2.0)]), train, SPEC, box, per_factual=2)
    assert out.cfs[0] == {"a": 6.0, "b": 40.0, "c": 60.0, "k": "x", "age": 50} and out.more == [[]]
    single = teacher_cfs(pd.DataFrame([row(2.0)]), train, SPEC, box)
    assert single.cfs == out.cfs and single.more == [[]]
    with pytest.raises(ValueError, match="per_factual must be between 1 and k=3"):
        teacher_cfs(pd.DataFrame([row(2.0)]), train, SPEC, box, k=3, per_factual=4)
