"""Classifier stage: metrics by hand, the CLI's artifacts, and the saved model's round trip."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from eval.classifier import app, classification_metrics, train_classifier
from sensecf.blackbox import BlackBox, types_record


def test_classification_metrics_by_hand():
    y = [1, 1, 0, 0, 1]
    p = [0.9, 0.4, 0.6, 0.1, 0.8]  # predicted 1, 0, 1, 0, 1: TP 2, FN 1, FP 1, TN 1
    m = classification_metrics(y, p)
    assert m["ACC"] == pytest.approx(3 / 5)
    assert m["PRE"] == pytest.approx(2 / 3)
    assert m["REC"] == pytest.approx(2 / 3)
    assert m["F1"] == pytest.approx(2 / 3)
    # positive-negative pairs ranked right: (0.9,0.6) (0.9,0.1) (0.4,0.1) (0.8,0.6) (0.8,0.1) = 5 of 6
    assert m["AUC"] == pytest.approx(5 / 6)
    assert classification_metrics(y, np.column_stack([1 - np.array(p), p])) == m


def test_one_class_truth_gives_nan_auc_and_no_positive_prediction_gives_zero_precision():
    m = classification_metrics([0, 0], [0.1, 0.2])
    assert np.isnan(m["AUC"]) and m["PRE"] == 0 and m["ACC"] == 1


@pytest.mark.parametrize("fixture", ["tiny_run", "generic_run"])
def test_cli_writes_model_metrics_and_provenance(fixture, request):
    run = request.getfixturevalue(fixture)
    result = CliRunner().invoke(app, ["--run", str(run.root), "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "ACC" in result.output
    metrics = json.loads((run.classifier / "metrics.json").read_text())
    assert {"ACC", "PRE", "REC", "F1", "AUC", "n_train", "n_test", "class_balance", "seed"} <= set(metrics)
    df, spec = run.load_cohort()
    assert metrics["n_train"] + metrics["n_test"] == len(df)
    assert metrics["n_test"] == int((df.split == "test").sum())
    test_y = df[df.split == "test"][spec.label.name]
    assert metrics["class_balance"]["test"] == {"0": int((test_y == 0).sum()), "1": int((test_y == 1).sum())}
    assert 0.5 < metrics["ACC"] <= 1  # the fixtures' labels are learnable
    # Provenance comes after the model, so it records the sha256 a later load checks, and the
    # type record names exactly what skops does not trust by default (the MLP's optimiser).
    outputs = json.loads((run.classifier / "provenance.json").read_text())["outputs"]
    assert outputs["model.skops"] == hashlib.sha256(run.model.read_bytes()).hexdigest()
    record = json.loads(types_record(run.model).read_text())
    assert record["sha256"] == outputs["model.skops"]
    assert record["untrusted_types"] == ["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"]

    # The saved model predicts exactly what the freshly trained one measured.
    loaded = BlackBox.load(run.model, spec)
    test = df[df.split == "test"]
    again = classification_metrics(test_y, loaded.predict_proba(test))
    assert again["ACC"] == pytest.approx(metrics["ACC"]) and again["AUC"] == pytest.approx(metrics["AUC"])


def test_persistence_round_trip_is_exact(tiny_run, tmp_path):
    df, spec = tiny_run.load_cohort()
    bb = train_classifier(df[df.split == "train"], spec, seed=3)
    bb.save(tmp_path / "m.skops")
    assert np.array_equal(BlackBox.load(tmp_path / "m.skops", spec).predict_proba(df), bb.predict_proba(df))


def test_bad_labels_are_named(tiny_run):
    df, spec = tiny_run.load_cohort()
    bad = df.assign(high_stress=df.high_stress.replace(1, 2))
    with pytest.raises(ValueError, match=r"label 'high_stress' must be 0 or 1, found \['2'\]"):
        train_classifier(bad, spec, seed=0)
    with pytest.raises(ValueError, match="single class"):
        train_classifier(df.assign(high_stress=0), spec, seed=0)
    with pytest.raises(ValueError, match="no label column 'high_stress'"):
        train_classifier(pd.DataFrame(df.drop(columns="high_stress")), spec, seed=0)
