"""CF quality metrics (DESIGN.md "Metric definitions"; the paper's §II-F and CARLA's redundancy/yNN).

All metrics are computed from CF records, per (method, factual class) where the class is the
factual's predicted class (`factual_pred`), as in Table III:

- parse_rate: share of records with a parsed CF.
- validity: share of records whose parsed CF the black box puts in the desired class; a CF
  that failed to parse counts as invalid.
- distance: L2 over numeric (continuous + integer) features min-max scaled by the spec's
  training ranges, plus the Hamming count over categorical features; mean over parsed CFs.
- sparsity: mean number of features changed over parsed CFs; a number is unchanged when it is
  equal at the feature's display precision.
- plausibility: share of parsed CFs with every number (at display precision) inside the spec's
  training min/max and every category seen in the training frame.
- distance_valid, sparsity_valid, plausibility_valid: the same three over the VALID CFs only
  (n_valid of them; NaN when there is none). Over all parsed CFs a method that copies the factual
  scores distance 0 without ever flipping the class; over valid CFs it cannot.
- validity_ci_low/high, plausibility_ci_low/high, plausibility_valid_ci_low/high: 95 % Wilson score
  intervals (scipy's binomtest(...).proportion_ci(method="wilson"), no continuity correction) for
  those proportions over their own denominators: n records, n_parsed and n_valid CFs. NaN when
  the denominator is 0.
- immutables_violated: share of parsed CFs that change an immutable feature.
- coherence: share of parsed CFs whose every composition group sums to its total within display
  precision (|sum - total| <= sum over members of 0.5 * 10^-decimals); NaN if the spec has no group.
- actionability: changed features that are mutable / all changed features, pooled over parsed CFs.
- seconds_per_cf: mean `seconds` over records.
- redundancy (CARLA): mean over valid CFs of the number of changed features that, reverted
  alone to the factual value, keep the CF's predicted class.
- ynn (CARLA yNN): mean over valid CFs of the share of the k nearest training rows (the same
  scaled distance) whose black-box prediction equals the CF's desired class.

The black box re-predicts every parsed CF, so the table judges all methods with the saved
classifier rather than with whatever prediction the generator stored.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.neighbors import NearestNeighbors

from sensecf.protocols import VERIFIED_SUFFIX
from sensecf.records import CFRecord
from sensecf.spec import DatasetSpec

# Which direction is better for each metric (Table III marks the best method per column).
METRIC_DIRECTIONS: dict[str, str] = {
    "parse_rate": "max",
    "validity": "max",
    "distance": "min",
    "sparsity": "min",
    "plausibility": "max",
    "distance_valid": "min",
    "sparsity_valid": "min",
    "plausibility_valid": "max",
    "immutables_violated": "min",
    "coherence": "max",
    "actionability": "max",
    "redundancy": "min",
    "ynn": "max",
    "seconds_per_cf": "min",
}
COUNT_COLUMNS = ["n", "n_parsed", "n_valid"]
# The metric averaged over every parsed CF -> the same metric over valid CFs only.
VALID_ONLY = {"distance": "distance_valid", "sparsity": "sparsity_valid", "plausibility": "plausibility_valid"}
# Proportions reported with a 95 % Wilson interval: metric -> (low column, high column).
INTERVALS = {m: (f"{m}_ci_low", f"{m}_ci_high") for m in ["validity", "plausibility", "plausibility_valid"]}
CONFIDENCE = 0.95


# --- feature space ------------------------------------------------------------------------
def require_ranges(spec: DatasetSpec) -> None:
    missing = [f.name for f in spec.numeric if not f.has_range]
    if missing:
        raise ValueError(
            f"spec '{spec.name}': numeric features {missing} have no learned min/max; "
            "use the cohort's spec.yaml (RunDir.load_cohort) or spec.with_ranges(train)"
        )


def feature_frame(rows: Sequence[dict] | pd.DataFrame, spec: DatasetSpec, what: str) -> pd.DataFrame:
    """Spec features as floats (numeric) and strings (categorical); names `what` on bad input."""
    df = rows.reset_index(drop=True) if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [n for n in spec.names if n not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing features {missing}")
    df = df[spec.names].copy()
    for f in spec.numeric:
        try:
            df[f.name] = pd.to_numeric(df[f.name], errors="raise").astype(float)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{what}: feature '{f.name}' is not numeric: {e}") from None
        if df[f.name].isna().any():
            raise ValueError(f"{what}: feature '{f.name}' has missing values")
    for f in spec.categorical:
        df[f.name] = df[f.name].astype(str)
    return df


def _span(f) -> float:
    # A constant training column keeps raw units rather than dividing by zero.
    return (f.max - f.min) or 1.0


def scaled_numeric(df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """Numeric features min-max scaled by the spec's training ranges (n x n_numeric)."""
    if not spec.numeric:
        return np.zeros((len(df), 0))
    lo = np.array([f.min for f in spec.numeric])
    span = np.array([_span(f) for f in spec.numeric])
    return (df[[f.name for f in spec.numeric]].to_numpy(float) - lo) / span


def distance(a: pd.DataFrame, b: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """Row-wise CF distance: scaled L2 over numbers + Hamming count over categories."""
    l2 = np.sqrt(((scaled_numeric(a, spec) - scaled_numeric(b, spec)) ** 2).sum(axis=1))
    cats = [f.name for f in spec.categorical]
    hamming = (a[cats].to_numpy() != b[cats].to_numpy()).sum(axis=1) if cats else 0
    return l2 + hamming


def changed_matrix(a: pd.DataFrame, b: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """n x n_features booleans in spec order: does the value differ at display precision?"""
    cols = []
    for f in spec.features:
        if f.is_numeric:
            x, y = a[f.name].to_numpy(float), b[f.name].to_numpy(float)
            cols.append(np.round(x, f.decimals) != np.round(y, f.decimals))
        else:
            cols.append(a[f.name].to_numpy() != b[f.name].to_numpy())
    return np.column_stack(cols) if cols else np.zeros((len(a), 0), bool)


def plausible(cfs: pd.DataFrame, spec: DatasetSpec, seen: dict[str, set[str]]) -> np.ndarray:
    ok = np.ones(len(cfs), bool)
    for f in spec.numeric:
        v = np.round(cfs[f.name].to_numpy(float), f.decimals)
        ok &= (v >= f.min) & (v <= f.max)
    for f in spec.categorical:
        ok &= cfs[f.name].isin(seen[f.name]).to_numpy()
    return ok


def coherent(cfs: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    ok = np.ones(len(cfs), bool)
    for g in spec.groups:
        total = cfs[g.members].to_numpy(float).sum(axis=1)
        tolerance = sum(0.5 * 10.0 ** -spec.feature(m).decimals for m in g.members)
        # A hair of float slack so a sum exactly at the tolerance is not lost to binary rounding.
        ok &= np.abs(total - g.total) <= tolerance + 1e-9
    return ok


class TrainingNeighbours:
    """Exact k nearest training rows under the CF distance (scaled L2 + Hamming count).

    Training rows are grouped by their categorical values, each group indexed on its scaled
    numbers. A query visits groups in order of their Hamming count h to it and stops once its
    k-th best distance is <= h, since every row at Hamming >= h is at least that far. A CF keeps
    its factual's immutables, so most queries finish inside their own group.
    """

    def __init__(self, train: pd.DataFrame, spec: DatasetSpec, labels: np.ndarray):
        self.labels = np.asarray(labels)
        self.spec = spec
        self.cat_names = [f.name for f in spec.categorical]
        num = scaled_numeric(train, spec)
        self.num = num if num.shape[1] else np.zeros((len(train), 1))  # all-categorical spec: L2 is 0
        keys = [tuple(v) for v in train[self.cat_names].to_numpy()] if self.cat_names else [()] * len(train)
        members: dict[tuple, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            members[key].append(i)
        self.keys = list(members)
        self.members = [np.array(members[key]) for key in self.keys]
        self.index = [NearestNeighbors().fit(self.num[m]) for m in self.members]

    def label_share(self, rows: pd.DataFrame, target: np.ndarray, k: int) -> np.ndarray:
        """Per row, the share of its k nearest training rows whose label equals target[row]."""
        k = min(k, len(self.labels))
        num = scaled_numeric(rows, self.spec)
        num = num if num.shape[1] else np.zeros((len(rows), 1))
        if self.cat_names:
            key_matrix = np.array(self.keys, dtype=object)
            hamming = (rows[self.cat_names].to_numpy()[:, None, :] != key_matrix[None, :, :]).sum(axis=2)
        else:
            hamming = np.zeros((len(rows), 1), int)
        best_d = np.full((len(rows), k), np.inf)
        best_i = np.zeros((len(rows), k), int)
        for h in range(len(self.cat_names) + 1):
            open_ = best_d[:, -1] > h
            if not open_.any():
                break
            for g in range(len(self.keys)):
                q = np.flatnonzero(open_ & (hamming[:, g] == h))
                if not len(q):
                    continue
                d, i = self.index[g].kneighbors(num[q], n_neighbors=min(k, len(self.members[g])))
                cand_d = np.hstack([best_d[q], d + h])
                cand_i = np.hstack([best_i[q], self.members[g][i]])
                order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
                best_d[q] = np.take_along_axis(cand_d, order, axis=1)
                best_i[q] = np.take_along_axis(cand_i, order, axis=1)
        return (self.labels[best_i] == np.asarray(target)[:, None]).mean(axis=1)


def check_record(r: CFRecord, spec: DatasetSpec) -> None:
    """A clear error naming the record when its factual or CF lacks a feature or holds a non-number."""
    for what, values in (("factual", r.factual), ("cf", r.cf)):
        if values is None:
            continue
        where = f"CF record method={r.method} window={r.window_id} candidate={r.candidate}: {what}"
        missing = [n for n in spec.names if n not in values]
        if missing:
            raise ValueError(f"{where} lacks features {missing}")
        for f in spec.numeric:
            try:
                float(values[f.name])
            except (TypeError, ValueError):
                raise ValueError(f"{where} feature '{f.name}' = {values[f.name]!r} is not a number") from None


# --- verification -------------------------------------------------------------------------
def verified_records(records: Sequence[CFRecord], spec: DatasetSpec) -> list[CFRecord]:
    """One record per (window, method): the valid candidate nearest the factual, else candidate 0.

    Validity here is the record's stored `cf_pred` (what a verifier saw at generation time).
    The pick is returned as candidate 0 (so cf_metrics takes it) with the method name unchanged
    — callers label it "<method>+verified" — `extra["verified_candidate"]` naming the candidate
    it came from, and `seconds` summed over all candidates: the cost of sampling k of them.
    """
    by_key: dict[tuple[str, str], list[CFRecord]] = defaultdict(list)
    for r in records:
        check_record(r, spec)
        by_key[(r.window_id, r.method)].append(r)
    valid = [r for r in records if r.valid]
    dist_of: dict[int, float] = {}
    if valid:  # one batched distance for every valid candidate
        d = distance(feature_frame([r.cf for r in valid], spec, "valid candidates"),
                     feature_frame([r.factual for r in valid], spec, "factuals of valid candidates"), spec)
        dist_of = {id(r): float(x) for r, x in zip(valid, d, strict=True)}
    out = []
    for group in by_key.values():
        group = sorted(group, key=lambda r: r.candidate)
        ok = [r for r in group if r.valid]
        if ok:
            pick = min(ok, key=lambda r: (dist_of[id(r)], r.candidate))
        else:
            pick = next((r for r in group if r.candidate == 0), group[0])
        out.append(
            pick.model_copy(
                update={
                    "candidate": 0,
                    "seconds": float(sum(r.seconds for r in group)),
                    "extra": {**pick.extra, "verified_candidate": pick.candidate, "n_candidates": len(group)},
                }
            )
        )
    return out


def with_verified(records: Sequence[CFRecord], spec: DatasetSpec) -> list[CFRecord]:
    """The records plus "<method>+verified" picks for every method with more than one candidate."""
    multi = {r.method for r in records if r.candidate > 0}
    picked = verified_records([r for r in records if r.method in multi], spec)
    return list(records) + [CFRecord(**{**r.model_dump(), "method": r.method + VERIFIED_SUFFIX, "protocol": None})
                            for r in picked]


def validity_at_k(records: Sequence[CFRecord]) -> pd.DataFrame:
    """For each method with several candidates per factual and each factual class: the share of
    factuals with a valid CF among their first k candidates (k = 1..K) with its Wilson interval,
    the mean validity of a single candidate, and the seconds per factual that k candidates cost
    (mean seconds per candidate x k). The verification's k is read off this curve."""
    multi = {r.method for r in records if r.candidate > 0}
    groups: dict[tuple[str, int], dict[str, list[CFRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.method in multi:
            groups[(r.method, r.factual_pred)][r.window_id].append(r)
    rows = []
    for (method, cls), by_window in sorted(groups.items()):
        candidates = [sorted(g, key=lambda r: r.candidate) for g in by_window.values()]
        every = [r for g in candidates for r in g]
        per_candidate = float(np.mean([r.valid for r in every]))
        seconds = float(np.mean([r.seconds for r in every]))
        n = len(candidates)
        for k in range(1, max(len(g) for g in candidates) + 1):
            hits = sum(any(r.valid for r in g[:k]) for g in candidates)
            low, high = wilson_interval(hits, n)
            rows.append({"method": method, "class": cls, "k": k, "n": n, "validity_at_k": hits / n,
                         "validity_at_k_ci_low": low, "validity_at_k_ci_high": high,
                         "candidate_validity": per_candidate, "seconds_per_factual": seconds * k})  # fmt: skip
    return pd.DataFrame(rows)


# --- the table ----------------------------------------------------------------------------
def _nanmean(x) -> float:
    x = np.asarray(x, float)
    return float(x.mean()) if len(x) else float("nan")


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (NaN, NaN) when n is 0."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _with_intervals(row: dict, counts: dict[str, tuple[int, int]]) -> dict:
    """Adds the INTERVALS columns to a table row from (successes, trials) per metric."""
    for m, (low, high) in INTERVALS.items():
        row[low], row[high] = wilson_interval(*counts.get(m, (0, 0)))
    return row


def _redundancy(cfs: pd.DataFrame, facts: pd.DataFrame, changed: np.ndarray, cf_pred: np.ndarray,
                spec: DatasetSpec, blackbox) -> np.ndarray:
    """Per CF: how many changed features can be reverted alone while keeping the CF's class."""
    owner, feature = np.nonzero(changed)
    counts = np.zeros(len(cfs))
    if len(owner):
        # One trial row per (CF, changed feature): the CF with that one feature set back.
        trials = cfs.iloc[owner].reset_index(drop=True)
        for j in np.unique(feature):
            name = spec.features[j].name
            at = feature == j
            trials.loc[at, name] = facts[name].to_numpy()[owner[at]]
        kept = blackbox.predict(trials) == cf_pred[owner]
        np.add.at(counts, owner, kept.astype(float))
    return counts


def cf_metrics(
    records: Sequence[CFRecord], spec: DatasetSpec, train_df: pd.DataFrame, blackbox, *, ynn_k: int = 5
) -> pd.DataFrame:
    """One row per (method, factual class) over candidate-0 records; columns as in the module doc."""
    require_ranges(spec)
    records = [r for r in records if r.candidate == 0]
    for r in records:
        check_record(r, spec)
    train = feature_frame(train_df, spec, "training frame")
    seen = {f.name: set(train[f.name]) for f in spec.categorical}
    neighbours = TrainingNeighbours(train, spec, blackbox.predict(train)) if records else None

    parsed = [r for r in records if r.cf is not None]
    cf_pred_of: dict[int, int] = {}
    if parsed:
        cfs_all = feature_frame([r.cf for r in parsed], spec, "CF records")
        preds = blackbox.predict(cfs_all)
        stale = sum(r.cf_pred is not None and r.cf_pred != int(p) for r, p in zip(parsed, preds, strict=True))
        if stale:
            warnings.warn(f"{stale} CF records store a cf_pred that the black box does not reproduce; "
                          "the metrics use the black box's prediction", stacklevel=2)
        cf_pred_of = {id(r): int(p) for r, p in zip(parsed, preds, strict=True)}

    mutable = np.array([f.mutable for f in spec.features])
    groups: dict[tuple[str, int], list[CFRecord]] = defaultdict(list)
    for r in records:
        groups[(r.method, r.factual_pred)].append(r)

    rows = []
    for (method, cls), recs in sorted(groups.items()):
        ok = [r for r in recs if r.cf is not None]
        row = {"method": method, "class": cls, "n": len(recs), "n_parsed": len(ok)}
        if ok:
            where = f"{method} class {cls}"
            cfs = feature_frame([r.cf for r in ok], spec, f"{where} CFs")
            facts = feature_frame([r.factual for r in ok], spec, f"{where} factuals")
            desired = np.array([r.desired_class for r in ok])
            cf_pred = np.array([cf_pred_of[id(r)] for r in ok])
            valid = cf_pred == desired
            changed = changed_matrix(cfs, facts, spec)
            n_changed = changed.sum(axis=1)
            redundancy = _redundancy(cfs[valid], facts[valid], changed[valid], cf_pred[valid], spec, blackbox)
            ynn = neighbours.label_share(cfs[valid], desired[valid], ynn_k) if valid.any() else []
            dist, ok_range = distance(cfs, facts, spec), plausible(cfs, spec, seen)
            n_valid = int(valid.sum())
            row.update(
                n_valid=n_valid,
                validity=n_valid / len(recs),
                distance=_nanmean(dist),
                sparsity=_nanmean(n_changed),
                plausibility=_nanmean(ok_range),
                distance_valid=_nanmean(dist[valid]),
                sparsity_valid=_nanmean(n_changed[valid]),
                plausibility_valid=_nanmean(ok_range[valid]),
                immutables_violated=_nanmean(changed[:, ~mutable].any(axis=1)),
                coherence=_nanmean(coherent(cfs, spec)) if spec.groups else float("nan"),
                actionability=changed[:, mutable].sum() / n_changed.sum() if n_changed.sum() else float("nan"),
                redundancy=_nanmean(redundancy),
                ynn=_nanmean(ynn),
            )
            _with_intervals(row, {"validity": (n_valid, len(recs)),
                                  "plausibility": (int(ok_range.sum()), len(ok)),
                                  "plausibility_valid": (int(ok_range[valid].sum()), n_valid)})
        else:
            row.update(n_valid=0, validity=0.0)
            _with_intervals(row, {"validity": (0, len(recs))})
        row["parse_rate"] = len(ok) / len(recs)
        row["seconds_per_cf"] = _nanmean([r.seconds for r in recs])
        rows.append(row)
    columns = ["method", "class", *COUNT_COLUMNS, *METRIC_DIRECTIONS, *(c for pair in INTERVALS.values() for c in pair)]
    return pd.DataFrame(rows).reindex(columns=columns)
