"""CFNOW (cfnow 0.0.6) as a baseline, searching only the mutable features.

cfnow has no immutable-feature option, so it sees a vector of the mutable features only and a
predictor that re-inserts the factual's immutables (../shared/reference/cf-baselines-notes.md
§4.2). It works on numbers: continuous features go in standardised (its moves are
multiplicative and its objective is plain L1), categoricals one-hot with columns named
`<prefix>_<level>` (the text before the first "_" names a one-hot group, so the numeric
columns get underscore-free names).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sensecf.blackbox import BlackBox
from sensecf.spec import DatasetSpec

CFNOW_STRATEGIES = ("greedy", "random", "random-sequential")
# r.cfs holds every CF met during the search (hundreds), best first; the first few suffice.
MAX_CANDIDATES = 10


def _offline_nltk() -> None:
    """cfnow's import calls nltk.download('wordnet') (a network request) unless the corpus is
    found; it needs wordnet only for text CFs, so an empty placeholder keeps it offline."""
    import tempfile
    from pathlib import Path

    import nltk

    root = Path(tempfile.gettempdir()) / "sensecf_nltk_data"
    (root / "corpora" / "wordnet").mkdir(parents=True, exist_ok=True)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))


class CfnowExplainer:
    def __init__(
        self,
        spec: DatasetSpec,
        train: pd.DataFrame,
        blackbox: BlackBox,
        *,
        seconds: float = 2.0,
        strategy: str = "greedy",
        seed: int = 0,
    ):
        if strategy not in CFNOW_STRATEGIES:
            raise ValueError(f"cfnow strategy must be one of {CFNOW_STRATEGIES}, got '{strategy}'")
        self.spec, self.blackbox = spec, blackbox
        self.seconds, self.strategy, self.seed = seconds, strategy, seed
        self.mutable = spec.mutable
        self.columns: list[str] = []
        self.feat_types: dict[str, str] = {}
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}
        for i, f in enumerate(self.mutable):
            if f.is_numeric:
                col = pd.to_numeric(train[f.name]).astype(float)
                self.mean[f.name] = float(col.mean())
                self.std[f.name] = float(col.std()) or 1.0  # a constant column keeps scale 1
                self.columns.append(f"x{i}")
                self.feat_types[f"x{i}"] = "num"
            else:
                for j in range(len(f.categories)):
                    self.columns.append(f"x{i}_{j}")
                    self.feat_types[f"x{i}_{j}"] = "cat"
        self.has_ohe = any(not f.is_numeric for f in self.mutable)

    def encode(self, factual: dict) -> pd.Series:
        values: list[float] = []
        for f in self.mutable:
            if f.is_numeric:
                values.append((float(factual[f.name]) - self.mean[f.name]) / self.std[f.name])
            else:
                if str(factual[f.name]) not in f.categories:
                    raise ValueError(f"feature '{f.name}': value '{factual[f.name]}' is not in the spec's categories")
                code = f.categories.index(str(factual[f.name]))
                values.extend(1.0 if j == code else 0.0 for j in range(len(f.categories)))
        return pd.Series(values, index=self.columns, dtype=float)

    def decode(self, vectors: np.ndarray, factual: dict) -> pd.DataFrame:
        """Full rows: the factual's values (so its immutables) with the mutable block replaced."""
        vectors = np.asarray(vectors, dtype=float).reshape(-1, len(self.columns))
        rows = pd.DataFrame([factual] * len(vectors))[self.spec.names]
        pos = 0
        for f in self.mutable:
            if f.is_numeric:
                rows[f.name] = vectors[:, pos] * self.std[f.name] + self.mean[f.name]
                pos += 1
            else:
                width = len(f.categories)
                rows[f.name] = [f.categories[k] for k in vectors[:, pos : pos + width].argmax(axis=1)]
                pos += width
        return rows

    def explain(self, factual: dict, desired_class: int) -> list[dict]:
        """Candidate CFs (raw values, spec order), best first; [] when cfnow finds none.

        Binary labels: cfnow always searches for the other class, which is `desired_class`.
        """
        _offline_nltk()
        from cfnow import find_tabular

        def prob_class1(x) -> np.ndarray:
            return self.blackbox.predict_proba(self.decode(x, factual))[:, 1]

        np.random.seed(self.seed)  # the random strategies draw from numpy's global generator
        result = find_tabular(
            factual=self.encode(factual),
            model_predict_proba=prob_class1,
            feat_types=self.feat_types,
            has_ohe=self.has_ohe,
            cf_strategy=self.strategy,
            count_cf=1,
            limit_seconds=self.seconds,
        )
        if len(result.cfs) == 0:
            return []
        return self.decode(np.vstack(result.cfs[:MAX_CANDIDATES]), factual).to_dict("records")
