"""DiCE (dice-ml 0.12) as a baseline: `random` or `genetic` search with the immutables fixed.

Immutables are fixed by `features_to_vary` (DiCE's own option). Post-hoc sparsity uses the
binary search (the default linear search can take minutes per query) and the sparsified set
`final_cfs_df_sparse` is read, not the pre-sparsity `final_cfs_df`
(../shared/reference/cf-baselines-notes.md §3.5).
"""

from __future__ import annotations

import io
import random
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd

from sensecf.blackbox import BlackBox
from sensecf.spec import DatasetSpec

DICE_METHODS = ("random", "genetic")
# DiCE returns a small diverse set; the orchestrator keeps the nearest valid one.
DEFAULT_TOTAL_CFS = 3


class _BlackBoxAdapter:
    """What DiCE's sklearn backend calls, routed through BlackBox so dtypes follow the spec."""

    def __init__(self, blackbox: BlackBox):
        self.blackbox = blackbox

    def predict_proba(self, X):
        return self.blackbox.predict_proba(X)

    def predict(self, X):
        return self.blackbox.predict(X)


def typed_frame(spec: DatasetSpec, rows) -> pd.DataFrame:
    """Rows as a frame in spec order: integers as int, other numbers as float, categories as str."""
    df = pd.DataFrame(rows)[spec.names].copy()
    for f in spec.features:
        if f.kind == "integer":
            df[f.name] = pd.to_numeric(df[f.name]).round().astype(int)
        elif f.kind == "continuous":
            df[f.name] = pd.to_numeric(df[f.name]).astype(float)
        else:
            df[f.name] = df[f.name].astype(str)
    return df


class DiceExplainer:
    def __init__(
        self,
        spec: DatasetSpec,
        train: pd.DataFrame,
        blackbox: BlackBox,
        *,
        method: str = "random",
        seed: int = 0,
        total_cfs: int = DEFAULT_TOTAL_CFS,
    ):
        import dice_ml

        if method not in DICE_METHODS:
            raise ValueError(f"DiCE method must be one of {DICE_METHODS}, got '{method}'")
        self.spec, self.method, self.seed, self.total_cfs = spec, method, seed, total_cfs
        frame = typed_frame(spec, train)
        frame[spec.label.name] = train[spec.label.name].astype(int).to_numpy()
        data = dice_ml.Data(
            dataframe=frame, continuous_features=[f.name for f in spec.numeric], outcome_name=spec.label.name
        )
        model = dice_ml.Model(model=_BlackBoxAdapter(blackbox), backend="sklearn", model_type="classifier")
        self.dice = dice_ml.Dice(data, model, method=method)
        self.features_to_vary = [f.name for f in spec.mutable]

    def explain(self, factual: dict, desired_class: int) -> list[dict]:
        """Candidate CFs (raw values, spec order); [] when DiCE finds none."""
        from raiutils.exceptions import UserConfigValidationException

        query = typed_frame(self.spec, [factual])
        kwargs = {
            "total_CFs": self.total_cfs,
            # an int, not "opposite": avoids DiCE issue #474 on numpy >= 2.4
            "desired_class": int(desired_class),
            "features_to_vary": self.features_to_vary,
            "posthoc_sparsity_algorithm": "binary",
        }
        if self.method == "random":
            kwargs["random_seed"] = self.seed
        # random and genetic both also draw from the global generators; seed per query so a
        # resumed run produces the same CFs as an uninterrupted one.
        np.random.seed(self.seed)
        random.seed(self.seed)
        # DiCE opens its own progress bar and prints per query; keep our progress bar readable.
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            try:
                result = self.dice.generate_counterfactuals(query, **kwargs)
            except UserConfigValidationException as e:
                if "No counterfactuals found" in str(e):
                    return []
                raise
        example = result.cf_examples_list[0]
        cfs = example.final_cfs_df_sparse if example.final_cfs_df_sparse is not None else example.final_cfs_df
        if cfs is None or len(cfs) == 0:
            return []
        return cfs[self.spec.names].to_dict("records")
