"""The black-box classifier as every later stage sees it: predict / predict_proba on spec rows.

It is a scikit-learn pipeline (scaling, one-hot for categoricals, MLP: the paper's NN),
persisted with skops (no pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sensecf.spec import DatasetSpec

# Types a SenseCF classifier file may contain beyond skops' defaults.
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.", "collections.")


def build_pipeline(spec: DatasetSpec, seed: int, model=None) -> Pipeline:
    """Scaling + one-hot + a classifier (the paper's MLP unless another estimator is given)."""
    numeric = [f.name for f in spec.numeric]
    categorical = [f.name for f in spec.categorical]
    transformers = [("num", StandardScaler(), numeric)]
    if categorical:
        cats = [spec.feature(c).categories for c in categorical]
        transformers.append(("cat", OneHotEncoder(categories=cats, handle_unknown="ignore"), categorical))
    if model is None:
        model = MLPClassifier(
            hidden_layer_sizes=(64, 32), early_stopping=True, max_iter=300, random_state=seed, n_iter_no_change=15
        )
    return Pipeline([("prep", ColumnTransformer(transformers)), ("model", model)])


class BlackBox:
    """A fitted pipeline bound to the spec's feature order."""

    def __init__(self, pipeline: Pipeline, spec: DatasetSpec):
        self.pipeline = pipeline
        self.spec = spec
        self.names = spec.names

    def _frame(self, X) -> pd.DataFrame:
        if isinstance(X, dict):
            X = [X]
        df = pd.DataFrame(X)
        missing = [n for n in self.names if n not in df.columns]
        if missing:
            raise ValueError(f"rows lack spec features {missing}")
        df = df[self.names].copy()
        for f in self.spec.numeric:
            df[f.name] = pd.to_numeric(df[f.name], errors="raise").astype(float)
        for f in self.spec.categorical:
            df[f.name] = df[f.name].astype(str)
        return df

    def predict_proba(self, X) -> np.ndarray:
        return self.pipeline.predict_proba(self._frame(X))

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sio.dump(self.pipeline, path)

    @classmethod
    def load(cls, path: str | Path, spec: DatasetSpec) -> BlackBox:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no classifier; train it first (python -m eval.classifier)")
        untrusted = sio.get_untrusted_types(file=path)
        refused = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
        if refused:
            raise ValueError(f"{path}: refusing to load unexpected types {refused}")
        return cls(sio.load(path, trusted=untrusted), spec)
