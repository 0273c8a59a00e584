"""NICE (PyPI NICEx 0.2.3, import name `nice`) as a baseline, searching only the mutable features.

NICE has no immutable-feature option: it sees the mutable columns only (numbers as floats,
categories as integer codes) and a predictor that re-inserts the factual's immutables. The
predictor depends on the factual, so each query builds its own NICE object (0.02-0.03 s,
counted in its time; ../shared/reference/cf-baselines-notes.md §5.3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sensecf.blackbox import BlackBox
from sensecf.spec import DatasetSpec

NICE_OPTIMIZATIONS = ("sparsity", "proximity", "none")


class NiceExplainer:
    def __init__(
        self,
        spec: DatasetSpec,
        train: pd.DataFrame,
        blackbox: BlackBox,
        *,
        optimization: str = "sparsity",
        seed: int = 0,
    ):
        if optimization not in NICE_OPTIMIZATIONS:
            raise ValueError(f"NICE optimization must be one of {NICE_OPTIMIZATIONS}, got '{optimization}'")
        self.spec, self.blackbox, self.optimization = spec, blackbox, optimization
        self.mutable = spec.mutable
        self.cat_idx = [i for i, f in enumerate(self.mutable) if not f.is_numeric]
        self.num_idx = [i for i, f in enumerate(self.mutable) if f.is_numeric]
        self.X_train = np.vstack([self.encode(row) for row in train[spec.names].to_dict("records")])
        # NICE's "justified" CFs are training rows the model classifies correctly.
        self.y_train = train[spec.label.name].astype(int).to_numpy()

    def encode(self, row: dict) -> np.ndarray:
        out = np.empty(len(self.mutable), dtype=float)
        for i, f in enumerate(self.mutable):
            if f.is_numeric:
                out[i] = float(row[f.name])
            else:
                if str(row[f.name]) not in f.categories:
                    raise ValueError(f"feature '{f.name}': value '{row[f.name]}' is not in the spec's categories")
                out[i] = f.categories.index(str(row[f.name]))
        return out

    def decode(self, X: np.ndarray, factual: dict) -> pd.DataFrame:
        """Full rows: the factual's values (so its immutables) with the mutable block replaced."""
        X = np.asarray(X, dtype=float).reshape(-1, len(self.mutable))
        rows = pd.DataFrame([factual] * len(X))[self.spec.names]
        for i, f in enumerate(self.mutable):
            if f.is_numeric:
                rows[f.name] = X[:, i]
            else:
                rows[f.name] = [f.categories[int(round(c))] for c in X[:, i]]
        return rows

    def explain(self, factual: dict, desired_class: int) -> list[dict]:
        """One CF (raw values, spec order). NICE falls back on the nearest unlike training
        neighbour, so it always returns one unless no training row qualifies (it raises)."""
        from nice import NICE

        explainer = NICE(
            lambda X: self.blackbox.predict_proba(self.decode(X, factual)),
            self.X_train.copy(),  # NICE casts columns of its X_train in place
            cat_feat=self.cat_idx,
            num_feat=self.num_idx,
            y_train=self.y_train,
            optimization=self.optimization,
            justified_cf=True,
        )
        cf = explainer.explain(self.encode(factual)[None, :], target_class=[int(desired_class)])
        return self.decode(cf, factual).to_dict("records")
