"""Fig. 6 (which mutable features each method changes, and by how much) and Fig. 8 (factuals and
CFs in a 2-D PCA of the scaled mutable features, one panel per method)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from eval.metrics import feature_frame  # noqa: E402
from sensecf.atomic import atomic_path  # noqa: E402
from sensecf.protocols import protocol_of  # noqa: E402
from sensecf.records import CFRecord  # noqa: E402
from sensecf.spec import DatasetSpec  # noqa: E402

CLASS_COLOURS = {0: "tab:blue", 1: "tab:red"}
FIG8_SAMPLE = 200  # factuals per panel, as in the paper's ablation


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """Save atomically (a kill leaves the old image or the new one) and close the figure. The
    format is named explicitly: matplotlib would read it from the temporary file's suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    plt.close(fig)
    return path


def _parsed_by_method(records: Sequence[CFRecord]) -> dict[str, list[CFRecord]]:
    out: dict[str, list[CFRecord]] = {}
    for r in records:
        if r.candidate == 0 and r.cf is not None:
            out.setdefault(r.method, []).append(r)
    return out


def feature_change_table(records: Sequence[CFRecord], spec: DatasetSpec) -> pd.DataFrame:
    """methods x mutable features: mean |CF - factual| / training range over parsed CFs
    (for a categorical feature: the share of CFs that change it)."""
    rows = {}
    for method, recs in sorted(_parsed_by_method(records).items()):
        cfs = feature_frame([r.cf for r in recs], spec, f"{method} CFs")
        facts = feature_frame([r.factual for r in recs], spec, f"{method} factuals")
        row = {}
        for f in spec.mutable:
            if f.is_numeric:
                span = (f.max - f.min) or 1.0
                row[f.prompt_name] = float((cfs[f.name] - facts[f.name]).abs().mean() / span)
            else:
                row[f.prompt_name] = float((cfs[f.name] != facts[f.name]).mean())
        rows[method] = row
    return pd.DataFrame.from_dict(rows, orient="index", columns=[f.prompt_name for f in spec.mutable])


def plot_feature_changes(table: pd.DataFrame, path: str | Path) -> Path:
    """Radar plot like the paper's Fig. 6 (grouped bars when fewer than 3 features)."""
    labels = list(table.columns)
    if len(labels) >= 3:
        angles = np.linspace(0, 2 * math.pi, len(labels), endpoint=False).tolist()
        fig, ax = plt.subplots(figsize=(7.5, 7), subplot_kw={"polar": True})
        for method, values in table.iterrows():
            v = values.to_numpy(float).tolist()
            ax.plot(angles + angles[:1], v + v[:1], label=f"{method} ({protocol_of(method)})", linewidth=1.5)
            ax.fill(angles + angles[:1], v + v[:1], alpha=0.08)
        ax.set_xticks(angles)
        ax.set_xticklabels(labels, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_rlabel_position(90 / len(labels))  # radial labels between the first two spokes
        ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
        table.T.plot.bar(ax=ax, rot=0)
        ax.set_ylabel("mean |change| / training range")
    ax.set_title("Mean normalised absolute change per mutable feature")
    fig.tight_layout()
    return save_figure(fig, path, dpi=130, bbox_inches="tight")


def _encode(df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """The mutable features, numbers min-max scaled and categories one-hot: the space the PCA is
    fitted in. Immutables are left out: a CF shares them with its factual, and categorical ones
    would only split the plane into one cluster per subgroup."""
    parts = []
    for f in spec.mutable:
        if f.is_numeric:
            parts.append(((df[f.name].to_numpy(float) - f.min) / ((f.max - f.min) or 1.0))[:, None])
        else:
            parts.append(np.stack([(df[f.name] == c).to_numpy(float) for c in f.categories], axis=1))
    return np.hstack(parts)


def plot_latent_space(
    records: Sequence[CFRecord], spec: DatasetSpec, train_df: pd.DataFrame, blackbox, path: str | Path,
    *, sample: int = FIG8_SAMPLE, seed: int = 0,
) -> Path:
    """2-D PCA (fitted on the training windows' mutable features) of factuals (dots) and CFs (crosses),
    coloured by predicted class; a fixed-seed sample of `sample` parsed CFs per method."""
    pca = PCA(n_components=2, random_state=seed).fit(_encode(feature_frame(train_df, spec, "training frame"), spec))
    by_method = _parsed_by_method(records)
    methods = sorted(by_method)
    ncols = min(3, max(1, len(methods)))
    nrows = max(1, math.ceil(len(methods) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
    names = spec.label.classes
    for ax, method in zip(axes.flat, methods, strict=False):
        recs = sorted(by_method[method], key=lambda r: r.window_id)
        if len(recs) > sample:
            keep = np.random.default_rng(seed).choice(len(recs), size=sample, replace=False)
            recs = [recs[i] for i in sorted(keep)]
        facts = feature_frame([r.factual for r in recs], spec, f"{method} factuals")
        cfs = feature_frame([r.cf for r in recs], spec, f"{method} CFs")
        pf, pc = pca.transform(_encode(facts, spec)), pca.transform(_encode(cfs, spec))
        fact_cls, cf_cls = np.array([r.factual_pred for r in recs]), blackbox.predict(cfs)
        for c in (0, 1):
            ax.scatter(*pf[fact_cls == c].T, s=12, alpha=0.45, c=CLASS_COLOURS[c], marker="o",
                       label=f"factual: {names[c]}")
            ax.scatter(*pc[cf_cls == c].T, s=18, alpha=0.8, c=CLASS_COLOURS[c], marker="x",
                       label=f"CF predicted {names[c]}")
        ax.set_title(f"{method} ({protocol_of(method)}, n={len(recs)})", fontsize=10)
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    if methods:
        axes.flat[0].legend(fontsize=7, loc="best")
    else:
        axes.flat[0].text(0.5, 0.5, "no parsed CFs", ha="center", va="center")
    fig.suptitle("Factuals and CFs in the PCA plane of the training windows' mutable features")
    fig.tight_layout()
    return save_figure(fig, path, dpi=130)
