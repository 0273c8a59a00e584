"""CF metrics against values computed by hand on a 5-feature toy spec and a rule black box."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from eval.metrics import (
    cf_metrics,
    changed_matrix,
    coherent,
    feature_frame,
    validity_at_k,
    verified_records,
    wilson_interval,
    with_verified,
)
from sensecf.records import CFRecord
from sensecf.spec import DatasetSpec

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
            {"name": "k", "prompt_name": "K", "kind": "categorical", "mutable": True, "categories": ["x", "y", "z"]},
            {"name": "age", "prompt_name": "Age", "kind": "integer", "mutable": False, "min": 20, "max": 80},
        ],
        "groups": [{"name": "bc", "members": ["b", "c"], "total": 100}],
    }
)

# Four training rows; "z" is a declared category never seen in training.
TRAIN = pd.DataFrame(
    [
        {"a": 1.0, "b": 40.0, "c": 60.0, "k": "x", "age": 50},  # predicted 0
        {"a": 6.5, "b": 40.0, "c": 60.0, "k": "x", "age": 50},  # predicted 1
        {"a": 9.0, "b": 30.0, "c": 70.0, "k": "y", "age": 50},  # predicted 1
        {"a": 4.0, "b": 50.0, "c": 50.0, "k": "x", "age": 20},  # predicted 0
    ]
)


class RuleBox:
    """Predicts 1 exactly when a >= 5."""

    def predict(self, X):
        return (pd.DataFrame(X)["a"].astype(float) >= 5).astype(int).to_numpy()


def row(a, b=40.0, c=60.0, k="x", age=50):
    return {"a": a, "b": b, "c": c, "k": k, "age": age}


def rec(wid, factual, cf, *, pred=0, method="m", candidate=0, seconds=0.0, status=None):
    cf_pred = None if cf is None else int(RuleBox().predict([cf])[0])
    return CFRecord(
        window_id=wid, participant_id="p", method=method, candidate=candidate, factual=factual, factual_pred=pred,
        desired_class=1 - pred, cf=cf, cf_pred=cf_pred, seconds=seconds,
        parse_status=status or ("ok" if cf is not None else "parse_error"),
    )


RECORDS = [
    # class 0 (desired 1)
    rec("w1", row(2.0), row(6.0), seconds=1.0),  # valid, 1 change
    rec("w2", row(3.0, 30.0, 70.0), row(7.0, 35.0, 65.0, "y", 51), seconds=2.0),  # valid, 5 changes, immutable moved
    rec("w3", row(2.0), None, seconds=3.0),  # failed to parse
    rec("w4", row(1.34), row(1.3400001)),  # equal at 2 decimals: unchanged, invalid
    rec("w5", row(4.34), row(4.35)),  # changed at 2 decimals, still invalid
    rec("w6", row(2.0), row(12.0, 50.0, 60.0)),  # valid, a out of range, group sums to 110
    # class 1 (desired 0)
    rec("w7", row(8.0), row(3.0, k="z"), pred=1, seconds=4.0),  # valid, unseen category
    rec("w8", row(8.0), None, pred=1, status="error", seconds=2.0),
]


@pytest.fixture(scope="module")
def table():
    return cf_metrics(RECORDS, SPEC, TRAIN, RuleBox(), ynn_k=2).set_index(["method", "class"])


def test_class0_counts_parse_rate_validity(table):
    r = table.loc[("m", 0)]
    assert (r.n, r.n_parsed, r.n_valid) == (6, 5, 3)
    assert r.parse_rate == pytest.approx(5 / 6)
    assert r.validity == pytest.approx(3 / 6)  # the unparsed w3 counts as invalid


def test_class0_distance(table):
    d = [
        0.4,  # |6-2| / 10
        math.sqrt(0.4**2 + 0.05**2 + 0.05**2 + (1 / 60) ** 2) + 1,  # + Hamming 1 for k: x -> y
        1e-8,  # 1e-7 / 10
        0.001,  # 0.01 / 10
        math.sqrt(1.0**2 + 0.1**2),
    ]
    assert table.loc[("m", 0), "distance"] == pytest.approx(np.mean(d))


def test_class0_sparsity_plausibility_immutables_coherence_actionability(table):
    r = table.loc[("m", 0)]
    assert r.sparsity == pytest.approx((1 + 5 + 0 + 1 + 2) / 5)
    assert r.plausibility == pytest.approx(4 / 5)  # w6: a = 12 > max 10
    assert r.immutables_violated == pytest.approx(1 / 5)  # w2: age 50 -> 51
    assert r.coherence == pytest.approx(4 / 5)  # w6: b + c = 110
    assert r.actionability == pytest.approx(8 / 9)  # 9 changes, 1 of them on age


def test_class0_seconds_redundancy_ynn(table):
    r = table.loc[("m", 0)]
    assert r.seconds_per_cf == pytest.approx(6 / 6)
    # w1: reverting a breaks it (0); w2: b, c, k, age each revertible (4); w6: only b (1).
    assert r.redundancy == pytest.approx(5 / 3)
    # 2 nearest training rows: w1 -> rows 2 (pred 1), 1 (pred 0); w2 -> rows 3, 2 (both 1); w6 -> rows 2, 4.
    assert r.ynn == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_class1(table):
    r = table.loc[("m", 1)]
    assert (r.n, r.n_parsed, r.n_valid) == (2, 1, 1)
    assert r.validity == pytest.approx(0.5)
    assert r.distance == pytest.approx(0.5 + 1)
    assert r.sparsity == 2
    assert r.plausibility == 0  # "z" never seen in training
    assert r.immutables_violated == 0 and r.coherence == 1 and r.actionability == 1
    assert r.redundancy == 1  # k can go back to x, a cannot
    assert r.ynn == pytest.approx(0.5)  # nearest rows 1 (pred 0) and 2 (pred 1)
    assert r.seconds_per_cf == pytest.approx(3.0)


def test_class0_over_valid_cfs_and_intervals(table):
    r = table.loc[("m", 0)]
    # valid: w1, w2, w6 (distances as in test_class0_distance); w4, w5 are parsed but invalid
    d_valid = [0.4, math.sqrt(0.4**2 + 0.05**2 + 0.05**2 + (1 / 60) ** 2) + 1, math.sqrt(1.0**2 + 0.1**2)]
    assert r.distance_valid == pytest.approx(np.mean(d_valid))
    assert r.sparsity_valid == pytest.approx((1 + 5 + 2) / 3)
    assert r.plausibility_valid == pytest.approx(2 / 3)  # w6 out of range
    # Wilson, z = 1.959964, z^2 = 3.841459. Validity 3 of 6: centre (0.5 + z^2/12) / (1 + z^2/6) = 0.5,
    # half-width z * sqrt(0.25/6 + z^2/144) / (1 + z^2/6) = 0.512384 / 1.640243 = 0.312383.
    assert (r.validity_ci_low, r.validity_ci_high) == pytest.approx((0.187617, 0.812383), abs=1e-5)
    # Plausibility 4 of 5 parsed: centre (0.8 + z^2/10) / (1 + z^2/5) = 1.184146 / 1.768292 = 0.669655,
    # half-width z * sqrt(0.16/5 + z^2/100) / 1.768292 = 0.294120.
    assert (r.plausibility_ci_low, r.plausibility_ci_high) == pytest.approx((0.375535, 0.963775), abs=1e-5)
    assert (r.plausibility_valid_ci_low, r.plausibility_valid_ci_high) == pytest.approx(wilson_interval(2, 3))


def test_class1_over_valid_cfs(table):
    r = table.loc[("m", 1)]  # w7 valid (distance 1.5, 2 changes, unseen category), w8 unparsed
    assert (r.distance_valid, r.sparsity_valid, r.plausibility_valid) == pytest.approx((1.5, 2, 0))
    assert (r.validity_ci_low, r.validity_ci_high) == pytest.approx(wilson_interval(1, 2))
    # plausibility 0 of 1: [0, z^2 / (1 + z^2)] = [0, 3.841459 / 4.841459]
    assert (r.plausibility_ci_low, r.plausibility_ci_high) == pytest.approx((0.0, 0.793451), abs=1e-5)


def test_wilson_interval_by_hand():
    # 3 of 10: centre (0.3 + z^2/20) / (1 + z^2/10) = 0.492073 / 1.384146 = 0.355506,
    # half-width z * sqrt(0.021 + z^2/400) / 1.384146 = 1.959964 * 0.174939 / 1.384146 = 0.247716.
    assert wilson_interval(3, 10) == pytest.approx((0.107791, 0.603222), abs=1e-5)
    # 6 of 20: centre 0.396036 / 1.192073 = 0.332225, half-width 1.959964 * 0.113582 / 1.192073 = 0.186746.
    assert wilson_interval(6, 20) == pytest.approx((0.145477, 0.518973), abs=1e-5)
    # 0 of 20: [0, z^2 / (20 + z^2)] = [0, 3.841459 / 23.841459]; 20 of 20 mirrors it.
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.161125), abs=1e-5)
    assert wilson_interval(20, 20) == pytest.approx((0.838875, 1.0), abs=1e-5)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_copying_the_factual_wins_distance_only_over_all_parsed_cfs():
    recs = [rec("w1", row(2.0), row(2.0), method="copy"), rec("w2", row(3.0), row(3.0), method="copy")]
    r = cf_metrics(recs, SPEC, TRAIN, RuleBox()).set_index(["method", "class"]).loc[("copy", 0)]
    assert (r.validity, r.distance, r.sparsity, r.plausibility) == (0, 0, 0, 1)
    # no valid CF: the valid-CF means are missing, never 0
    assert r.n_valid == 0 and np.isnan(r.distance_valid) and np.isnan(r.sparsity_valid)
    assert np.isnan(r.plausibility_valid) and np.isnan(r.plausibility_valid_ci_low)
    assert (r.validity_ci_low, r.validity_ci_high) == pytest.approx((0.0, 3.841459 / 5.841459), abs=1e-5)


def test_display_precision_decides_changed():
    a = feature_frame([row(12.34), row(12.34)], SPEC, "a")
    b = feature_frame([row(12.3400001), row(12.35)], SPEC, "b")
    assert changed_matrix(a, b, SPEC)[:, 0].tolist() == [False, True]


def test_coherence_tolerance_is_half_a_unit_per_member():
    cfs = feature_frame([row(1, 40.0, 60.1), row(1, 40.05, 60.1), row(1, 50.0, 60.0)], SPEC, "cfs")
    # two members at 1 decimal: |sum - 100| <= 0.1
    assert coherent(cfs, SPEC).tolist() == [True, False, False]


def test_only_candidate_zero_and_black_box_prediction_count():
    extra = rec("w1", row(2.0), row(1.0), candidate=1)  # invalid candidate 1 is not the raw answer
    table = cf_metrics([RECORDS[0], extra], SPEC, TRAIN, RuleBox()).set_index(["method", "class"])
    assert table.loc[("m", 0), "n"] == 1 and table.loc[("m", 0), "validity"] == 1.0

    stale = RECORDS[0].model_copy(update={"cf_pred": 0})
    with pytest.warns(UserWarning, match="1 CF records store a cf_pred"):
        table = cf_metrics([stale], SPEC, TRAIN, RuleBox()).set_index(["method", "class"])
    assert table.loc[("m", 0), "validity"] == 1.0


def test_no_parsed_cf_gives_zero_validity_and_nan_quality():
    table = cf_metrics([RECORDS[2]], SPEC, TRAIN, RuleBox()).set_index(["method", "class"])
    r = table.loc[("m", 0)]
    assert r.validity == 0 and r.parse_rate == 0 and r.n_valid == 0
    assert np.isnan(r.distance) and np.isnan(r.ynn) and np.isnan(r.distance_valid)
    # validity 0 of 1 record still has an interval, [0, z^2 / (1 + z^2)]; plausibility has no CF to count
    assert (r.validity_ci_low, r.validity_ci_high) == pytest.approx((0.0, 0.793451), abs=1e-5)
    assert np.isnan(r.plausibility_ci_low) and np.isnan(r.plausibility_ci_high)


def test_bad_cf_is_named():
    broken = rec("w9", row(2.0), {"a": 6.0, "b": 40.0}, method="llm")
    with pytest.raises(ValueError, match=r"method=llm window=w9 candidate=0: cf lacks features \['c', 'k', 'age'\]"):
        cf_metrics([broken], SPEC, TRAIN, RuleBox())
    wordy = rec("w9", row(2.0), row(6.0), method="llm").model_copy(update={"cf": row("six")})
    with pytest.raises(ValueError, match="window=w9 candidate=0: cf feature 'a' = 'six' is not a number"):
        cf_metrics([wordy], SPEC, TRAIN, RuleBox())


def test_spec_without_ranges_is_refused():
    bare = SPEC.model_copy(update={"features": [f.model_copy(update={"min": None, "max": None})
                                                if f.is_numeric else f for f in SPEC.features]})
    with pytest.raises(ValueError, match="no learned min/max"):
        cf_metrics(RECORDS, bare, TRAIN, RuleBox())


def test_verified_picks_nearest_valid_candidate():
    f = row(2.0)
    recs = [
        rec("w1", f, row(3.0), method="v", candidate=0, seconds=1.0),  # invalid
        rec("w1", f, row(9.0), method="v", candidate=1, seconds=1.0),  # valid, distance 0.7
        rec("w1", f, row(5.5), method="v", candidate=2, seconds=1.0),  # valid, distance 0.35
        rec("w2", f, row(3.0), method="v", candidate=0, seconds=2.0),  # nothing valid: candidate 0
        rec("w2", f, None, method="v", candidate=1, seconds=2.0),
    ]
    picked = {r.window_id: r for r in verified_records(recs, SPEC)}
    assert picked["w1"].cf["a"] == 5.5 and picked["w1"].extra["verified_candidate"] == 2
    assert picked["w1"].candidate == 0 and picked["w1"].seconds == 3.0 and picked["w1"].method == "v"
    assert picked["w2"].cf["a"] == 3.0 and picked["w2"].extra["verified_candidate"] == 0

    table = cf_metrics(with_verified(recs + RECORDS[:1], SPEC), SPEC, TRAIN, RuleBox()).set_index(["method", "class"])
    assert table.loc[("v", 0), "validity"] == 0.0
    assert table.loc[("v+verified", 0), "validity"] == 0.5
    assert table.loc[("v+verified", 0), "seconds_per_cf"] == pytest.approx((3.0 + 4.0) / 2)
    assert ("m+verified", 0) not in table.index  # a single-candidate method gets no verified row


def test_validity_at_k_by_hand():
    f = row(2.0)
    recs = [
        rec("w1", f, row(3.0), method="v", candidate=0, seconds=1.0),  # invalid
        rec("w1", f, row(9.0), method="v", candidate=1, seconds=1.0),  # valid: w1 counts from k = 2
        rec("w1", f, row(6.0), method="v", candidate=2, seconds=1.0),  # valid
        rec("w2", f, row(7.0), method="v", candidate=0, seconds=3.0),  # valid from k = 1
        rec("w2", f, None, method="v", candidate=1, seconds=3.0),
        rec("w2", f, row(1.0), method="v", candidate=2, seconds=3.0),
        rec("w3", row(8.0), row(6.0), pred=1, method="v", candidate=0),  # class 1, never valid (a stays >= 5)
        rec("w3", row(8.0), row(7.0), pred=1, method="v", candidate=1),
        *RECORDS[:2],  # a single-candidate method: no curve
    ]
    curve = validity_at_k(recs).set_index(["method", "class", "k"])
    assert list(curve.index) == [("v", 0, 1), ("v", 0, 2), ("v", 0, 3), ("v", 1, 1), ("v", 1, 2)]
    assert curve["validity_at_k"].tolist() == [0.5, 1.0, 1.0, 0.0, 0.0]
    assert curve.loc[("v", 0, 1), "candidate_validity"] == pytest.approx(3 / 6)
    assert curve.loc[("v", 0, 3), "seconds_per_factual"] == pytest.approx(2.0 * 3)  # mean 2 s a candidate
    low, high = curve.loc[("v", 0, 1), ["validity_at_k_ci_low", "validity_at_k_ci_high"]]
    assert (low, high) == pytest.approx(wilson_interval(1, 2))
