"""Fig. 7 (F1 vs augmentation ratio per scarcity scenario) and Fig. 1 (F1 as training data shrinks).

Both read the result rows that augment.scarcity writes (results.jsonl, fig1_results.jsonl) and
draw the mean over seeds with its 95% t-interval as a band.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the machines this runs on
import matplotlib.pyplot as plt  # noqa: E402

from augment.scenarios import SCENARIOS  # noqa: E402
from augment.stats import mean_ci  # noqa: E402
from eval.figures import save_figure  # noqa: E402
from sensecf.protocols import protocol_of  # noqa: E402


def _band(ax, xs, values_per_x, label, **style):
    """Mean line and CI band; a single seed draws the line alone."""
    means, lows, highs = [], [], []
    for values in values_per_x:
        iv = mean_ci(values)
        half = 0.0 if math.isnan(iv.half_width) else iv.half_width
        means.append(iv.mean)
        # The metrics live in [0, 1]; a t-band from few seeds may not, the plot does.
        lows.append(max(0.0, iv.mean - half))
        highs.append(min(1.0, iv.mean + half))
    (line,) = ax.plot(xs, means, marker="o", label=label, **style)
    ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)


def _hline(ax, values, label, style, color, band=True):
    iv = mean_ci(values)
    ax.axhline(iv.mean, linestyle=style, color=color, label=label)
    if band and not math.isnan(iv.half_width):
        ax.axhspan(max(0.0, iv.low), min(1.0, iv.high), color=color, alpha=0.08, linewidth=0)


def plot_fig7(results: list[dict], path: Path, metric: str = "F1") -> Path:
    """One panel per scenario: metric vs augmentation ratio, one line per CF source.

    A ratio is plotted for a source only where every seed had enough CFs (insufficient cells are
    never fitted); the reduced model is the dashed line, the full-data baseline the dotted one.
    """
    scenarios = sorted({r["scenario"] for r in results if r["kind"] == "reduced"})
    baseline = [r["metrics"][metric] for r in results if r["kind"] == "baseline"]
    seeds = {r["seed"] for r in results if r["kind"] == "baseline"}
    all_ratios = sorted({100 * r["ratio"] for r in results if r["kind"] == "augmented"})
    # One colour per source in every panel, also where a source could fill no ratio of a scenario.
    colour = {s: f"C{i}" for i, s in enumerate(sorted({r["source"] for r in results if r["kind"] == "augmented"}))}
    fig, axes = plt.subplots(1, max(1, len(scenarios)), figsize=(5 * max(1, len(scenarios)), 4), squeeze=False)
    for ax, sc in zip(axes[0], scenarios, strict=False):
        cells = defaultdict(dict)  # source -> ratio -> [values] (None if any seed insufficient)
        for r in results:
            if r["kind"] != "augmented" or r["scenario"] != sc:
                continue
            per_ratio = cells[r["source"]]
            if r["status"] != "ok" or per_ratio.get(r["ratio"], []) is None:
                per_ratio[r["ratio"]] = None
            else:
                per_ratio.setdefault(r["ratio"], []).append(r["metrics"][metric])
        for source in sorted(cells):
            ratios = sorted(x for x, v in cells[source].items() if v is not None and len(v) == len(seeds))
            if ratios:
                _band(ax, [100 * x for x in ratios], [cells[source][x] for x in ratios],
                      f"{source} ({protocol_of(source)})", color=colour[source])
        _hline(ax, [r["metrics"][metric] for r in results if r["kind"] == "reduced" and r["scenario"] == sc],
               "reduced (no CFs)", "--", "black")
        _hline(ax, baseline, "full training set", ":", "gray", band=False)
        ax.set_title(f"{sc}: {SCENARIOS[sc].title}", fontsize=9)
        if all_ratios:
            ax.set_xticks(all_ratios)
            ax.set_xlim(all_ratios[0] - 5, all_ratios[-1] + 5)
        ax.set_xlabel("augmentation ratio (% of windows removed)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"CF augmentation under label scarcity ({len(seeds)} seeds, mean ± 95% CI)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=150)


def plot_fig1(curve: list[dict], path: Path, metric: str = "F1") -> Path:
    """Metric of each classifier as both classes' training windows are reduced by a fraction."""
    by_model = defaultdict(lambda: defaultdict(list))
    for r in curve:
        by_model[r["model"]][r["fraction"]].append(r["metrics"][metric])
    seeds = {r["seed"] for r in curve}
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, per_fraction in by_model.items():
        fractions = sorted(per_fraction)
        _band(ax, [100 * f for f in fractions], [per_fraction[f] for f in fractions], model)
    ax.set_xlabel("training windows removed (%)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} as training data is reduced ({len(seeds)} seeds, mean ± 95% CI)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=150)
