"""The black-box classifier as every later stage sees it: predict / predict_proba on spec rows.

It is a scikit-learn pipeline (scaling, one-hot for categoricals, MLP: the paper's NN),
persisted with skops (no pickle).

Loading is safe (DESIGN.md "Trust in artifacts"): `save` writes, beside `model.skops`, a type
record `model.types.json` holding the file's sha256 and the exact type names skops does not
trust by default; `load` trusts exactly those names and refuses a file that changed since it
was saved (its record's sha256, and classifier/provenance.json's `outputs` when present), any
type not recorded, and any name that is not a class (a skops file can call a recorded "type"
with arguments, so `builtins.eval` or `numpy.load` would run code).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import skops
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sensecf.atomic import write_bytes, write_json
from sensecf.cli import one_line
from sensecf.fingerprint import sha256_file
from sensecf.spec import DatasetSpec

# Packages whose classes a classifier file may name beyond skops' defaults.
_TRUSTED_PACKAGES = ("sklearn.", "numpy.", "scipy.", "collections.")
# builtins that only hold values; every other builtins name (print, eval, exec, getattr,
# __import__, type, ...) could be called by a crafted file.
_PLAIN_BUILTINS = {f"builtins.{t.__name__}" for t in (
    bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset, slice, range)}


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
        """Write the model and its type record atomically (the record last, so a record always
        describes a complete model file)."""
        path = Path(path)
        data = sio.dumps(self.pipeline)
        types = sio.get_untrusted_types(data=data)
        unsafe = [t for t in types if not _is_safe_type(t)]
        if unsafe:
            raise ValueError(f"{path}: the pipeline holds types a load would refuse: {unsafe}")
        write_bytes(path, data)
        write_json(types_record(path), {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
                                        "untrusted_types": types, "skops": skops.__version__})

    @classmethod
    def load(cls, path: str | Path, spec: DatasetSpec) -> BlackBox:
        return cls(load_pipeline(path), spec)


def types_record(path: str | Path) -> Path:
    """The type record written beside a model: model.skops -> model.types.json."""
    path = Path(path)
    return path.with_name(f"{path.stem}.types.json")


def _is_safe_type(name: str) -> bool:
    """A plain builtins value type, or a class (never a function) of a trusted package."""
    if name.startswith("builtins."):
        return name in _PLAIN_BUILTINS
    if not name.startswith(_TRUSTED_PACKAGES):
        return False
    module, _, attr = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(found, type)


def load_pipeline(path: str | Path) -> Pipeline:
    """The pipeline in `path`, after every check in the module docstring; ValueError otherwise,
    one line naming the file and what was refused."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no classifier; train it first (python -m eval.classifier)")
    retrain = "re-train it (python -m eval.classifier)"
    record_file = types_record(path)
    if not record_file.exists():
        raise ValueError(f"{path}: no type record {record_file.name} beside it, so its types cannot be "
                         f"trusted; {retrain}")
    try:
        record = json.loads(record_file.read_text())
        recorded_sha, recorded_types = str(record["sha256"]), set(record["untrusted_types"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: {record_file.name}: not a type record ({type(e).__name__}: {e}); "
                         f"{retrain}") from None
    data = path.read_bytes()  # checked and loaded from the same bytes
    sha = hashlib.sha256(data).hexdigest()
    if sha != recorded_sha:
        raise ValueError(f"{path}: sha256 {sha[:12]} differs from {recorded_sha[:12]} recorded at save time in "
                         f"{record_file.name}: the file changed after training; {retrain}")
    provenance = path.parent / "provenance.json"
    if provenance.exists():
        try:
            outputs = json.loads(provenance.read_text()).get("outputs") or {}
        except (ValueError, AttributeError):
            raise ValueError(f"{path}: {provenance.name}: not a provenance record; {retrain}") from None
        for name, actual in ((path.name, sha), (record_file.name, sha256_file(record_file))):
            if outputs.get(name) != actual:
                found = f"records sha256 {str(outputs[name])[:12]}" if name in outputs else "does not record it"
                raise ValueError(f"{path}: {name} has sha256 {actual[:12]} but {provenance.name} {found}: "
                                 f"it changed after training; {retrain}")
    try:
        types = sio.get_untrusted_types(data=data)
    except Exception as e:  # noqa: BLE001 - whatever a damaged archive raises, it is bad input
        raise ValueError(f"{path}: not a readable skops file ({type(e).__name__}: {one_line(e)})") from None
    unrecorded = sorted(set(types) - recorded_types)
    if unrecorded:
        raise ValueError(f"{path}: refusing to load types not recorded at save time in "
                         f"{record_file.name}: {unrecorded}")
    unsafe = [t for t in types if not _is_safe_type(t)]
    if unsafe:
        raise ValueError(f"{path}: refusing to load types that are not plain classes (they could run "
                         f"code): {unsafe}")
    try:
        return sio.loads(data, trusted=types)
    except Exception as e:  # noqa: BLE001 - a malformed file is bad input, not our bug
        raise ValueError(f"{path}: cannot load the classifier ({type(e).__name__}: {one_line(e)})") from None

