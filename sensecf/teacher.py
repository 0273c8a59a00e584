"""Teacher CFs: the fine-tuning targets and a row of Table III (DESIGN.md "Generation").

For each factual: the nearest training window of the opposite *predicted* class (distance over
the mutable features, min-max scaled by the spec's ranges) with the factual's immutables copied
in, re-checked with the black box (if invalid, the next nearest, up to k); then greedily
sparsified while valid; then rounded to display precision and re-checked.

Sparsifying: each step reverts, per factual, the not-yet-tried change with the smallest scaled
size back to the factual's value and keeps the revert when the prediction stays at the desired
class (a revert that would flip it back is skipped and the next-smallest change is tried). A
composition group is one unit: all its members revert together, so it still sums to its total.
Every step is one batched `predict` over all factuals still sparsifying.

Rounding: mutable numbers go to display precision; a group's rounding residue goes to its
largest member so the group sums to its total exactly. Immutables are copied unchanged.

Several CFs per factual (`per_factual` > 1, for augmentation): the first `per_factual` valid
neighbours, each sparsified and rounded the same way; CFs that end up identical count once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from sensecf.spec import DatasetSpec

# Neighbours tried per factual before giving up. With the factual's immutables copied in, the
# nearest opposite-class windows often stay on the factual's side (measured on a 60-participant
# synthetic cohort: k=10 found a valid CF for 32% of training factuals, k=200 for 85%).
DEFAULT_K = 200


@dataclass
class TeacherResult:
    """Aligned with the factuals given: row i's CF (or None), its status and why."""

    cfs: list[dict | None]
    status: list[str]  # CFRecord parse_status vocabulary: "ok" or "no_cf"
    detail: list[str | None]  # why there is no CF
    factual_pred: np.ndarray
    desired_class: np.ndarray
    neighbour: list[int | None]  # position in `train` of the window the CF came from
    seconds: list[float]  # the batch's wall time shared equally over its rows
    counts: dict[str, int] = field(default_factory=dict)  # ok / no_valid_neighbour / invalid_after_rounding
    more: list[list[dict]] = field(default_factory=list)  # per_factual > 1: further distinct CFs, nearest first

    def __len__(self) -> int:
        return len(self.cfs)


def _features(df: pd.DataFrame, spec: DatasetSpec, what: str) -> pd.DataFrame:
    missing = [n for n in spec.names if n not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing features {missing}")
    out = df[spec.names].reset_index(drop=True).copy()
    for f in spec.numeric:
        out[f.name] = pd.to_numeric(out[f.name], errors="raise").astype(float)
    for f in spec.categorical:
        out[f.name] = out[f.name].astype(str)
    return out


class _MutableSpace:
    """Mutable features as vectors for nearest-neighbour search: numbers min-max scaled by the
    spec's ranges, categories one-hot scaled by 1/sqrt(2) so a mismatch adds 1 to the squared
    distance, like one unit of scaled range."""

    def __init__(self, spec: DatasetSpec):
        missing = [f.name for f in spec.mutable if f.is_numeric and not f.has_range]
        if missing:
            raise ValueError(f"spec '{spec.name}': features {missing} have no learned min/max; "
                             "use the cohort's spec.yaml or spec.with_ranges(train)")
        if not spec.mutable:
            raise ValueError(f"spec '{spec.name}' has no mutable feature: nothing a CF could change")
        self.spec = spec

    def scale(self, name: str) -> float:
        f = self.spec.feature(name)
        return 1.0 / ((f.max - f.min) or 1.0)

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        cols = []
        for f in self.spec.mutable:
            if f.is_numeric:
                cols.append(((df[f.name].to_numpy(float) - f.min) * self.scale(f.name))[:, None])
            else:
                cols.append(np.stack([(df[f.name] == c).to_numpy(float) for c in f.categories], 1) / np.sqrt(2))
        return np.hstack(cols)


def _units(spec: DatasetSpec) -> list[list[str]]:
    """What sparsifying reverts at once: each composition group, and each other mutable feature."""
    units = [list(g.members) for g in spec.groups]
    units += [[f.name] for f in spec.mutable if spec.group_of(f.name) is None]
    return units


def _unit_changes(cf: pd.DataFrame, fact: pd.DataFrame, spec: DatasetSpec, units, space) -> np.ndarray:
    """n x units: scaled size of each unit's change, 0 where it is unchanged at display precision."""
    out = np.zeros((len(cf), len(units)))
    for u, members in enumerate(units):
        sq = np.zeros(len(cf))
        changed = np.zeros(len(cf), bool)
        for name in members:
            f = spec.feature(name)
            if f.is_numeric:
                a, b = cf[name].to_numpy(float), fact[name].to_numpy(float)
                changed |= np.round(a, f.decimals) != np.round(b, f.decimals)
                sq += ((a - b) * space.scale(name)) ** 2
            else:
                diff = cf[name].to_numpy() != fact[name].to_numpy()
                changed |= diff
                sq += diff
        # A changed unit never gets size 0, so it still counts as a change to try reverting.
        out[:, u] = np.where(changed, np.maximum(np.sqrt(sq), 1e-12), 0.0)
    return out


def _sparsify(cf, fact, desired, spec, blackbox, units, space) -> pd.DataFrame:
    cf = cf.copy()
    size = _unit_changes(cf, fact, spec, units, space)
    untried = size > 0
    while True:
        active = np.flatnonzero(untried.any(axis=1))
        if not len(active):
            return cf
        pick = np.argmin(np.where(untried[active], size[active], np.inf), axis=1)
        trial = cf.iloc[active].copy()
        for u in np.unique(pick):
            rows = pick == u
            for name in units[u]:
                trial.loc[trial.index[rows], name] = fact[name].to_numpy()[active[rows]]
        keep = blackbox.predict(trial) == desired[active]
        for name in spec.names:
            cf.iloc[active[keep], cf.columns.get_loc(name)] = trial[name].to_numpy()[keep]
        untried[active, pick] = False


def _round(cf: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    cf = cf.copy()
    for f in spec.mutable:
        if f.is_numeric:
            cf[f.name] = np.round(cf[f.name].to_numpy(float), f.decimals)
    for g in spec.groups:
        values = cf[g.members].to_numpy(float)
        residue = g.total - values.sum(axis=1)
        # Only rounding drift is moved; a group that did not hold before rounding is left alone.
        drift = np.abs(residue) <= sum(0.5 * 10.0 ** -spec.feature(m).decimals for m in g.members) + 1e-9
        largest = values.argmax(axis=1)
        for j, name in enumerate(g.members):
            at = drift & (largest == j)
            decimals = spec.feature(name).decimals
            values[at, j] = np.round(values[at, j] + residue[at], decimals)
        cf[g.members] = values
    return cf


def _with_values(rows: pd.DataFrame, source: pd.DataFrame, positions: np.ndarray, names: list[str]) -> pd.DataFrame:
    """A copy of `rows` whose `names` columns come from `source` rows at `positions` (column by
    column, so every column keeps its dtype)."""
    out = rows.copy()
    for name in names:
        out[name] = source[name].to_numpy()[positions]
    return out


def _as_python(value, kind: str):
    if kind == "integer":
        return int(round(float(value)))
    if kind == "continuous":
        return float(value)
    return str(value)


def teacher_cfs(
    factuals: pd.DataFrame,
    train: pd.DataFrame,
    spec: DatasetSpec,
    blackbox,
    *,
    k: int = DEFAULT_K,
    per_factual: int = 1,
) -> TeacherResult:
    """Teacher CFs for every factual row (see the module doc); rows without one get None."""
    if per_factual < 1 or per_factual > k:
        raise ValueError(f"per_factual must be between 1 and k={k}, got {per_factual}")
    start = time.perf_counter()
    space = _MutableSpace(spec)
    fact = _features(factuals, spec, "factuals")
    pool = _features(train, spec, "training frame")
    n = len(fact)
    factual_pred = blackbox.predict(fact) if n else np.zeros(0, int)
    desired = 1 - factual_pred
    pool_pred = blackbox.predict(pool)
    mutable = [f.name for f in spec.mutable]

    # k nearest training windows predicted as the desired class, per factual (-1: none).
    neighbours = np.full((n, k), -1)
    enc_fact, enc_pool = space.encode(fact), space.encode(pool)
    for c in (0, 1):
        rows, members = np.flatnonzero(desired == c), np.flatnonzero(pool_pred == c)
        if len(rows) and len(members):
            kk = min(k, len(members))
            nn = NearestNeighbors(n_neighbors=kk).fit(enc_pool[members])
            neighbours[rows, :kk] = members[nn.kneighbors(enc_fact[rows], return_distance=False)]

    # Take the first `per_factual` neighbours (nearest first) that are valid with the factual's
    # immutables: chosen[i, j] is factual i's j-th, -1 where there are fewer.
    chosen = np.full((n, per_factual), -1)
    taken = np.zeros(n, int)
    for rank in range(k):
        rows = np.flatnonzero((taken < per_factual) & (neighbours[:, rank] >= 0))
        if not len(rows):
            continue
        trial = _with_values(fact.iloc[rows], pool, neighbours[rows, rank], mutable)
        ok = rows[blackbox.predict(trial) == desired[rows]]
        chosen[ok, taken[ok]] = neighbours[ok, rank]
        taken[ok] += 1

    owner, slot = np.nonzero(chosen >= 0)  # row-major: each factual's neighbours nearest first
    owner_fact = fact.iloc[owner].reset_index(drop=True)  # a factual repeats once per neighbour
    cf = _with_values(owner_fact, pool, chosen[owner, slot], mutable)
    cf = _round(_sparsify(cf, owner_fact, desired[owner], spec, blackbox, _units(spec), space), spec)
    still_valid = blackbox.predict(cf) == desired[owner] if len(owner) else np.zeros(0, bool)

    kinds = {f.name: f.kind for f in spec.features}
    originals = factuals.reset_index(drop=True)
    per_row: list[list[dict]] = [[] for _ in range(n)]
    first_neighbour: list[int | None] = [None] * n
    for pos, i in enumerate(owner):
        if not still_valid[pos]:
            continue
        row = cf.iloc[pos]
        out = {name: _as_python(row[name] if name in mutable else originals.at[i, name], kinds[name])
               for name in spec.names}
        if out not in per_row[i]:
            per_row[i].append(out)
            if first_neighbour[i] is None:
                first_neighbour[i] = int(chosen[i, slot[pos]])
    found = taken > 0
    cfs = [found_cfs[0] if found_cfs else None for found_cfs in per_row]
    detail: list[str | None] = [
        None if cfs[i] is not None
        else "invalid after rounding to display precision" if found[i]
        else f"no valid CF among the {k} nearest training windows predicted {desired[i]}"
        for i in range(n)
    ]
    seconds = time.perf_counter() - start
    status = ["ok" if c is not None else "no_cf" for c in cfs]
    return TeacherResult(
        cfs=cfs,
        status=status,
        detail=detail,
        factual_pred=np.asarray(factual_pred, int),
        desired_class=np.asarray(desired, int),
        neighbour=first_neighbour,
        seconds=[seconds / n] * n if n else [],
        counts={
            "ok": int(sum(c is not None for c in cfs)),
            "no_valid_neighbour": int((~found).sum()),
            "invalid_after_rounding": int((found & np.array([c is None for c in cfs], bool)).sum()),
        },
        more=[found_cfs[1:] for found_cfs in per_row],
    )
