"""Train the black-box classifier on the cohort's training split and score it on the test split.

    python -m eval.classifier --run runs/demo [--seed 0]

Writes RUN/classifier/model.skops (skops, no pickle) with its type record model.types.json
(sensecf.blackbox: what a later load may trust), metrics.json, and provenance.json last, so it
records the sha256 of the model every later stage checks before loading it.
`train_classifier` and `classification_metrics` are reused by the augmentation stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import typer
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from sensecf.atomic import run_lock, write_json
from sensecf.blackbox import BlackBox, build_pipeline
from sensecf.cli import run_cli
from sensecf.rundir import SPLIT_COL, RunDir, write_provenance
from sensecf.spec import DatasetSpec
from sensecf.wandb_log import log_numbers, stage_run


def labels_of(df: pd.DataFrame, spec: DatasetSpec, what: str = "frame") -> np.ndarray:
    """The label column as 0/1 ints; a clear error if it is missing or holds other values."""
    name = spec.label.name
    if name not in df.columns:
        raise ValueError(f"{what}: no label column '{name}'")
    y = pd.to_numeric(df[name], errors="coerce")
    bad = sorted(set(df[name][~y.isin([0, 1])].astype(str)))
    if bad:
        raise ValueError(f"{what}: label '{name}' must be 0 or 1, found {bad[:5]}")
    return y.astype(int).to_numpy()


def model_input(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The spec's feature columns with the dtypes BlackBox predicts on (floats, category strings)."""
    missing = [n for n in spec.names if n not in df.columns]
    if missing:
        raise ValueError(f"frame lacks spec features {missing}")
    X = df[spec.names].copy()
    for f in spec.numeric:
        X[f.name] = pd.to_numeric(X[f.name], errors="raise").astype(float)
    for f in spec.categorical:
        X[f.name] = X[f.name].astype(str)
    return X


def train_classifier(train_df: pd.DataFrame, spec: DatasetSpec, seed: int, model=None) -> BlackBox:
    """Fit sensecf.blackbox.build_pipeline (the paper's MLP unless `model` is given) on `train_df`."""
    y = labels_of(train_df, spec, "training frame")
    if len(set(y)) < 2:
        raise ValueError(f"training frame: label '{spec.label.name}' has a single class {sorted(set(y))}")
    pipeline = build_pipeline(spec, seed, model).fit(model_input(train_df, spec), y)
    return BlackBox(pipeline, spec)


def classification_metrics(y_true, proba) -> dict[str, float]:
    """ACC, PRE, REC, F1 (positive class 1) and ROC AUC, all in [0, 1].

    `proba` is P(class 1) per row, or a predict_proba matrix. AUC is NaN when y_true holds
    one class only; precision is 0 when nothing is predicted positive.
    """
    y_true = np.asarray(y_true).astype(int)
    proba = np.asarray(proba, dtype=float)
    if proba.ndim == 2:
        proba = proba[:, 1]
    if len(y_true) != len(proba):
        raise ValueError(f"y_true has {len(y_true)} rows but proba has {len(proba)}")
    y_pred = (proba >= 0.5).astype(int)
    return {
        "ACC": float(accuracy_score(y_true, y_pred)),
        "PRE": float(precision_score(y_true, y_pred, zero_division=0)),
        "REC": float(recall_score(y_true, y_pred, zero_division=0)),
        "F1": float(f1_score(y_true, y_pred, zero_division=0)),
        "AUC": float(roc_auc_score(y_true, proba)) if len(set(y_true)) == 2 else float("nan"),
    }


def _class_counts(y: np.ndarray) -> dict[str, int]:
    return {str(c): int((y == c).sum()) for c in (0, 1)}


def _nan_to_none(obj):
    """NaN (AUC on a one-class split) as null, so metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and np.isnan(obj):
        return None
    return obj


def split_frames(df: pd.DataFrame, source: str | Path = "cohort table") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) rows of a cohort table by its split column; `source` names it in errors."""
    if SPLIT_COL not in df.columns:
        raise ValueError(f"{source}: column '{SPLIT_COL}': missing")
    unknown = sorted(set(df[SPLIT_COL].astype(str)) - {"train", "test"})
    if unknown:
        raise ValueError(f"{source}: column '{SPLIT_COL}': holds {unknown}; expected 'train'/'test'")
    train, test = df[df[SPLIT_COL] == "train"], df[df[SPLIT_COL] == "test"]
    if train.empty or test.empty:
        raise ValueError(f"{source}: column '{SPLIT_COL}': the cohort needs both splits, "
                         f"got {len(train)} train rows and {len(test)} test rows")
    return train, test


def train_and_evaluate(run: RunDir, seed: int = 0) -> dict:
    df, spec = run.load_cohort()
    train, test = split_frames(df, run.features)
    blackbox = train_classifier(train, spec, seed)
    y_test = labels_of(test, spec, f"{run.features} (test)")
    metrics = classification_metrics(y_test, blackbox.predict_proba(test))
    metrics.update(
        n_train=len(train),
        n_test=len(test),
        class_balance={"train": _class_counts(labels_of(train, spec)), "test": _class_counts(y_test)},
        train_metrics=classification_metrics(labels_of(train, spec), blackbox.predict_proba(train)),
        model=type(blackbox.pipeline.named_steps["model"]).__name__,
        seed=seed,
    )
    with run_lock(run.root):
        blackbox.save(run.model)
        write_json(run.classifier / "metrics.json", _nan_to_none(metrics), allow_nan=False)
        # Last: its `outputs` hold the sha256 of model.skops that BlackBox.load checks.
        write_provenance(run.classifier, config={"seed": seed, "model": metrics["model"]},
                         inputs=[run.features, run.spec], seed=seed)
    return metrics


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    run: Path = typer.Option(..., help="run directory holding cohort/"),
    seed: int = typer.Option(0, help="random seed of the MLP"),
) -> None:
    """Train the classifier on the train split; write classifier/model.skops and metrics.json."""
    run_dir = RunDir(run)
    with stage_run(run_dir, "classifier", inputs=[run_dir.features], outputs=[run_dir.model]) as wb:
        m = train_and_evaluate(run_dir, seed)
        log_numbers(wb, m, prefix="test/")
    typer.echo(
        f"test: ACC {m['ACC']:.3f}  PRE {m['PRE']:.3f}  REC {m['REC']:.3f}  F1 {m['F1']:.3f}  AUC {m['AUC']:.3f}"
        f"  (n_train {m['n_train']}, n_test {m['n_test']})"
    )


if __name__ == "__main__":
    run_cli(app)
