"""Augmentation under label scarcity: Table IV, Fig. 7 and Fig. 1 of the paper, over seeds.

    python -m augment.scarcity --run runs/demo [--sources all|teacher,dice_random] [--cf-dir DIR]
        [--ratios 0.2,0.4,0.6,0.8,1.0] [--seeds 5] [--scenarios A,B,C] [--jobs 2]

For every seed: the NN is trained on the full training split (baseline), on the reduced split of
each scenario (augment.scenarios), and on the reduced split plus round(ratio x removed) CFs of
the reduced class from each source (RUN/cfs/train/<source>.jsonl: CFs of training factuals,
as `eval.baselines --split train` writes them), labelled by the black box's
prediction f(x'). A CF is used only if it parsed, asked for a reduced class, is predicted as that
class, and its factual is a training window kept in that seed's reduced split; everything else
is counted by reason in augment/cf_pool.csv. All models are scored on the untouched test split.

Writes RUN/augment/: results.jsonl (one row per fit), table4.{csv,md,tex}, cf_pool.csv,
fig7.png, fig1.png (+ fig1_results.jsonl), provenance.json: each atomically, under the run
directory's lock, provenance.json last.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import typer
from joblib import Parallel, delayed
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from augment.scenarios import SCENARIOS, ReducedTraining, Scenario, augmentation_count, reduce_training
from augment.stats import mean_ci, relative_change
from eval.baselines import records_dir
from eval.classifier import classification_metrics, labels_of, split_frames, train_classifier
from sensecf.atomic import atomic_path, run_lock, write_text
from sensecf.cli import InputError, run_cli
from sensecf.protocols import protocol_of
from sensecf.records import CFRecord, read_records
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir, write_provenance
from sensecf.spec import DatasetSpec
from sensecf.wandb_log import stage_run

METRICS = ["ACC", "PRE", "REC", "F1", "AUC"]

# Fig. 1's classifiers; each is wrapped in the same scaling/one-hot pipeline as the NN.
FIG1_MODELS = ["NN", "Logistic regression", "Random forest", "Gradient boosting"]


def _estimator(model: str, seed: int):
    if model == "NN":
        return None  # build_pipeline's MLP: the paper's NN and the black box's architecture
    if model == "Logistic regression":
        return LogisticRegression(max_iter=2000)
    if model == "Random forest":
        return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)
    if model == "Gradient boosting":
        return GradientBoostingClassifier(random_state=seed)
    raise ValueError(f"unknown model '{model}'; expected one of {FIG1_MODELS}")


# --- CF pool -----------------------------------------------------------------------------------

# Why a CF record is not used, in the order the checks run (each record gets its first reason).
EXCLUSION_REASONS = [
    "status_not_ok",  # parse_status parse_error / incoherent / no_cf / timeout / error, or no CF
    "other_class",  # desired class is not a reduced class of the scenario
    "not_valid",  # the black box does not predict the desired class (cf_pred != desired_class)
    "unknown_factual",  # factual window id not in the cohort table
    "test_factual",  # factual window in the test split (would leak test data into training)
    "removed_factual",  # factual window removed in this seed's reduced training split
    "incomplete_cf",  # CF lacks a spec feature or holds a non-numeric number
    "duplicate_cf",  # same feature values as a CF already in the pool of the same class
]


# augment/cf_pool.csv: one row per (scenario, seed, source); eligible counts only for reduced classes.
POOL_COLUMNS = ["scenario", "seed", "source", "records", "eligible_class0", "eligible_class1", *EXCLUSION_REASONS]


@dataclass
class CFPool:
    """The usable CFs of one source for one (scenario, seed), per desired class, in a seeded order."""

    rows: dict[int, pd.DataFrame]
    excluded: Counter = field(default_factory=Counter)
    total: int = 0

    def available(self, c: int) -> int:
        return len(self.rows.get(c, ()))


def _cf_row(record: CFRecord, spec: DatasetSpec) -> dict | None:
    """The CF as a training row (label = f(x')), or None if it lacks a feature or a number."""
    row = {}
    for f in spec.features:
        if f.name not in record.cf:
            return None
        value = record.cf[f.name]
        if f.is_numeric:
            try:
                value = float(value)
            except (TypeError, ValueError):
                return None
            if not math.isfinite(value):
                return None
        else:
            value = str(value)
        row[f.name] = value
    return row


def build_pool(
    records: list[CFRecord],
    cohort: pd.DataFrame,
    spec: DatasetSpec,
    reduced: ReducedTraining,
    classes: tuple[int, ...],
    order_seed: tuple[int, ...],
) -> CFPool:
    """Filter a source's records for one (scenario, seed) and shuffle each class's CFs once.

    The shuffled order is fixed per (seed, scenario, source, class), so a larger ratio adds a
    superset of a smaller ratio's CFs.
    """
    split_of = dict(zip(cohort[ID_COL].astype(str), cohort[SPLIT_COL], strict=True))
    kept: dict[int, list[dict]] = {c: [] for c in classes}
    seen: dict[int, set[tuple]] = {c: set() for c in classes}
    excluded: Counter = Counter()
    for r in records:
        if r.parse_status != "ok" or r.cf is None:
            reason = "status_not_ok"
        elif r.desired_class not in classes:
            reason = "other_class"
        elif r.cf_pred != r.desired_class:
            reason = "not_valid"
        elif r.window_id not in split_of:
            reason = "unknown_factual"
        elif split_of[r.window_id] != "train":
            reason = "test_factual"
        elif r.window_id in reduced.removed_ids:
            reason = "removed_factual"
        elif (row := _cf_row(r, spec)) is None:
            reason = "incomplete_cf"
        elif (values := tuple(row.values())) in seen[r.desired_class]:
            reason = "duplicate_cf"
        else:
            seen[r.desired_class].add(values)
            row[spec.label.name] = int(r.cf_pred)  # label = the black box's prediction f(x')
            row[ID_COL] = f"cf:{r.method}:{r.window_id}:{r.candidate}"
            row[GROUP_COL] = r.participant_id
            row[SPLIT_COL] = "train"
            kept[r.desired_class].append(row)
            continue
        excluded[reason] += 1
    rows = {}
    for c, items in kept.items():
        order = np.random.default_rng([*order_seed, c]).permutation(len(items))
        rows[c] = pd.DataFrame([items[i] for i in order])
    return CFPool(rows=rows, excluded=excluded, total=len(records))


def augmentation_counts(reduced: ReducedTraining, pool: CFPool, ratio: float) -> tuple[dict[int, dict], bool]:
    """Per reduced class c: removed, wanted = round(ratio x removed_c), added, available; and
    whether every class has enough CFs."""
    counts, sufficient = {}, True
    for c, removed in reduced.removed_per_class.items():
        n = augmentation_count(ratio, removed, pool.available(c))
        counts[c] = {"removed": removed, "wanted": n.wanted, "added": n.added, "available": n.available}
        sufficient &= n.sufficient
    return counts, sufficient


def augmented_training(
    reduced: ReducedTraining, pool: CFPool, ratio: float
) -> tuple[pd.DataFrame | None, dict[int, dict]]:
    """Reduced split + round(ratio x removed_c) CFs of each reduced class c.

    Returns (None, counts) when a class has fewer CFs than wanted: such a cell is reported as
    insufficient with the available count, never padded or fitted.
    """
    counts, sufficient = augmentation_counts(reduced, pool, ratio)
    if not sufficient:
        return None, counts
    parts = [reduced.train] + [pool.rows[c].iloc[: n["added"]] for c, n in counts.items() if n["added"]]
    return pd.concat(parts, ignore_index=True), counts


# --- fitting ---------------------------------------------------------------------------------


def fit_and_score(train: pd.DataFrame, test: pd.DataFrame, spec: DatasetSpec, seed: int, model: str = "NN") -> dict:
    """Train (same architecture, given seed) and return ACC, PRE, REC, F1, AUC on `test`."""
    blackbox = train_classifier(train, spec, seed, _estimator(model, seed))
    return classification_metrics(labels_of(test, spec, "test split"), blackbox.predict_proba(test))


@dataclass
class Fit:
    """One model fit of the grid: what it is (key) and the training rows it uses."""

    key: dict
    train: pd.DataFrame
    model: str = "NN"


def _run_fit(fit: Fit, test: pd.DataFrame, spec: DatasetSpec) -> dict:
    metrics = fit_and_score(fit.train, test, spec, fit.key["seed"], fit.model)
    return {**fit.key, "status": "ok", "n_train": len(fit.train), "metrics": metrics}


@dataclass
class Grid:
    """The Table IV / Fig. 7 grid, planned in the main process: which fits to run, which cells are
    insufficient, and what each source's CF pool excluded. Training frames are built only when a
    fit is dispatched, so the whole grid is never in memory at once."""

    cohort: pd.DataFrame
    spec: DatasetSpec
    sources: dict[str, list[CFRecord]]
    scenarios: list[Scenario]
    ratios: list[float]
    seeds: list[int]
    planned: list[tuple[dict, Callable[[], pd.DataFrame]]] = field(default_factory=list)
    pool_log: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # insufficient cells (never fitted)

    def __post_init__(self) -> None:
        label = self.spec.label.name
        train, _ = split_frames(self.cohort)
        for seed in self.seeds:
            self.planned.append(
                ({"kind": "baseline", "scenario": None, "source": None, "ratio": 0.0, "seed": seed}, lambda: train)
            )
            for scenario in self.scenarios:
                reduced = reduce_training(self.cohort, label, scenario.reduced_classes, scenario.fraction, seed)
                base = {"scenario": scenario.name, "seed": seed, "removed": reduced.removed_per_class}
                self.planned.append(({**base, "kind": "reduced", "source": None, "ratio": 0.0},
                                     lambda reduced=reduced: reduced.train))
                for name, records in self.sources.items():
                    pool = build_pool(
                        records, self.cohort, self.spec, reduced, scenario.reduced_classes,
                        order_seed=(seed, zlib.crc32(scenario.name.encode()), zlib.crc32(name.encode())),
                    )
                    self.pool_log.append(
                        {"scenario": scenario.name, "seed": seed, "source": name, "records": pool.total,
                         **{f"eligible_class{c}": pool.available(c) for c in scenario.reduced_classes},
                         **{r: pool.excluded.get(r, 0) for r in EXCLUSION_REASONS}}
                    )
                    for ratio in self.ratios:
                        counts, sufficient = augmentation_counts(reduced, pool, ratio)
                        key = {**base, "kind": "augmented", "source": name, "ratio": ratio, "cf_counts": counts}
                        if sufficient:
                            make = lambda reduced=reduced, pool=pool, ratio=ratio: (  # noqa: E731
                                augmented_training(reduced, pool, ratio)[0]
                            )
                            self.planned.append((key, make))
                        else:
                            self.skipped.append({**key, "status": "insufficient", "metrics": None})

    def fits(self) -> Iterator[Fit]:
        for key, make in self.planned:
            yield Fit(key, make())


def run_fits(fits: Iterator[Fit], total: int, test: pd.DataFrame, spec: DatasetSpec, jobs: int, desc: str) -> list:
    """All fits through joblib (loky workers, one BLAS thread each), with a progress bar."""
    results = Parallel(n_jobs=jobs, return_as="generator_unordered")(
        delayed(_run_fit)(fit, test, spec) for fit in fits
    )
    return list(tqdm(results, total=total, desc=desc, unit="fit"))


def reduction_fits(cohort: pd.DataFrame, spec: DatasetSpec, fractions: list[float], seeds: list[int]) -> Iterator[Fit]:
    """Fig. 1: every model on the training split with both classes reduced by each fraction."""
    for seed in seeds:
        for fraction in fractions:
            reduced = reduce_training(cohort, spec.label.name, (0, 1), fraction, seed)
            for model in FIG1_MODELS:
                key = {"kind": "reduction_curve", "model": model, "fraction": fraction, "seed": seed}
                yield Fit(key, reduced.train, model)


# --- Table IV --------------------------------------------------------------------------------


def _cell(values: list[float]) -> dict:
    """Mean and CI half-width of per-seed values; a NaN (e.g. a 0 reference) makes the cell n/a."""
    if any(math.isnan(v) for v in values):
        return {"mean": math.nan, "ci": math.nan, "note": "n/a: a reference value is 0"}
    iv = mean_ci(values)
    return {"mean": iv.mean, "ci": iv.half_width, "note": ""}


def table4(results: list[dict], scenarios: list[str], sources: list[str], ratio: float) -> pd.DataFrame:
    """Table IV: baseline (absolute), reduced vs baseline (% change), CF added vs reduced (% recovery).

    Relative changes are computed per seed against the same seed's reference model, then
    averaged with a 95% t-interval.
    """
    by_key = {}
    for r in results:
        by_key[(r["kind"], r.get("scenario"), r.get("source"), r.get("ratio"), r["seed"])] = r
    seeds = sorted({r["seed"] for r in results if r["kind"] == "baseline"})

    def metrics(kind, scenario, source, ratio_, seed):
        return by_key[(kind, scenario, source, ratio_, seed)]["metrics"]

    out = []

    def add(scenario, row, method, cells, n_seeds, note=""):
        entry = {"scenario": scenario, "row": row, "method": method, "n_seeds": n_seeds, "note": note,
                 "protocol": protocol_of(method) if row.startswith("CF added") else ""}
        for m in METRICS:
            entry[m] = cells[m]["mean"] if cells else math.nan
            entry[f"{m}_ci"] = cells[m]["ci"] if cells else math.nan
        notes = {cells[m]["note"] for m in METRICS if cells and cells[m]["note"]}
        entry["note"] = "; ".join(filter(None, [note, *sorted(notes)]))
        out.append(entry)

    base = {s: metrics("baseline", None, None, 0.0, s) for s in seeds}
    add("baseline", "Baseline (full training set)", "NN", {m: _cell([base[s][m] for s in seeds]) for m in METRICS},
        len(seeds))
    for sc in scenarios:
        red = {s: metrics("reduced", sc, None, 0.0, s) for s in seeds}
        add(sc, "Reduced vs baseline (%)", "NN",
            {m: _cell([relative_change(red[s][m], base[s][m]) for s in seeds]) for m in METRICS}, len(seeds))
        for src in sources:
            rows = [by_key[("augmented", sc, src, ratio, s)] for s in seeds]
            short = [r for r in rows if r["status"] == "insufficient"]
            if short:
                # The fewest CFs any seed had for each short class (availability varies by seed).
                need = {}
                for r in short:
                    for c, v in r["cf_counts"].items():
                        if v["available"] < v["wanted"] and (c not in need or v["available"] < need[c]["available"]):
                            need[c] = v
                detail = ", ".join(f"class {c}: {v['available']} of {v['wanted']} CFs available"
                                   for c, v in sorted(need.items()))
                add(sc, f"CF added vs reduced (%), ratio {ratio:g}", src, None, len(seeds),
                    f"insufficient in {len(short)}/{len(seeds)} seeds ({detail})")
                continue
            add(sc, f"CF added vs reduced (%), ratio {ratio:g}", src,
                {m: _cell([relative_change(r["metrics"][m], red[r["seed"]][m]) for r in rows]) for m in METRICS},
                len(seeds))
    return pd.DataFrame(out)


def _format(mean: float, ci: float, percent: bool) -> str:
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:+.2f}%" if percent else f"{mean:.3f}"
    if not math.isnan(ci):
        text += f" ± {ci:.2f}" if percent else f" ± {ci:.3f}"
    return text


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in table.iterrows():
        percent = r["scenario"] != "baseline"
        cells = {m: _format(r[m], r[f"{m}_ci"], percent) for m in METRICS}
        if r["note"].startswith("insufficient"):
            cells = {m: "insufficient" for m in METRICS}
        scenario = "Baseline" if r["scenario"] == "baseline" else f"{r['scenario']}: {SCENARIOS[r['scenario']].title}"
        protocol = r["protocol"] or "–"  # NN rows have no CF source
        rows.append({"Scenario": scenario, "Row": r["row"], "Method": r["method"], "Protocol": protocol, **cells,
                     "Note": r["note"]})
    return pd.DataFrame(rows)


def _latex_escape(text: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$")]:
        text = text.replace(a, b)
    return text


def pool_summary(pool: pd.DataFrame) -> pd.DataFrame:
    """Per (scenario, source): CFs usable (fewest over seeds) and records excluded by reason (mean over seeds)."""
    if pool.empty:
        return pool
    grouped = pool.groupby(["scenario", "source"], sort=True)
    out = grouped[["records"]].first()
    for c in (0, 1):
        fewest = grouped[f"eligible_class{c}"].min()
        out[f"usable class {c} (min over seeds)"] = fewest.map(lambda v: "-" if pd.isna(v) else str(int(v)))
    for reason in EXCLUSION_REASONS:
        out[f"{reason} (mean)"] = grouped[reason].mean().round(1)
    return out.reset_index()


def write_table4(table: pd.DataFrame, out_dir: Path, n_seeds: int, pool: pd.DataFrame | None = None) -> None:
    with atomic_path(out_dir / "table4.csv") as tmp:
        table.to_csv(tmp, index=False)
    shown = _formatted(table)
    caption = (
        f"Table IV. Baseline: NN on the full training set (mean ± 95% CI half-width over {n_seeds} seeds). "
        "Reduced rows: relative change vs the baseline (%). CF rows: relative recovery over the reduced model (%)."
    )
    text = caption + "\n\n" + shown.to_markdown(index=False) + "\n"
    if pool is not None and not pool.empty:
        text += (
            "\nCF records per source: usable for the reduced class(es), and excluded by reason "
            "(per seed in cf_pool.csv; - where a class is not reduced).\n\n"
            + pool_summary(pool).to_markdown(index=False) + "\n"
        )
    write_text(out_dir / "table4.md", text)
    cols = list(shown.columns)
    lines = [
        r"\begin{table*}[t]",
        r"\centering",
        r"\caption{" + _latex_escape(caption) + "}",
        r"\begin{tabular}{" + "l" * 4 + "r" * len(METRICS) + "l}",
        r"\hline",
        " & ".join(_latex_escape(c) for c in cols) + r" \\",
        r"\hline",
    ]
    lines += [" & ".join(_latex_escape(str(v)) for v in row) + r" \\" for row in shown.itertuples(index=False)]
    lines += [r"\hline", r"\end{tabular}", r"\end{table*}"]
    write_text(out_dir / "table4.tex", "\n".join(lines) + "\n")


# --- CLI -------------------------------------------------------------------------------------


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what}: expected comma-separated numbers, got '{text}'") from None
    if not values:
        raise typer.BadParameter(f"{what}: no values in '{text}'")
    return values


def cf_dir_of(run: RunDir) -> Path:
    """Where CFs of training factuals live: RUN/cfs/train/ (eval.baselines.records_dir(run, "train"))."""
    return records_dir(run, "train")


def source_files(cf_dir: Path, sources: str) -> list[Path]:
    """CF_DIR/<name>.jsonl for each named source, or every such file for 'all'."""
    if sources.strip() == "all":
        paths = sorted(cf_dir.glob("*.jsonl"))
        if not paths:
            raise FileNotFoundError(
                f"{cf_dir}: no CF files (*.jsonl); generate CFs of training windows first "
                "(python -m eval.baselines --split train, or LLM generation with --split train)"
            )
    else:
        paths = [cf_dir / f"{name.strip()}.jsonl" for name in sources.split(",") if name.strip()]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"no CF file for sources: {missing}")
    return paths


def load_sources(cf_dir: Path, sources: str) -> dict[str, list[CFRecord]]:
    return {p.stem: read_records(p) for p in source_files(cf_dir, sources)}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def _sort_key(row: dict) -> tuple:
    order = {"baseline": 0, "reduced": 1, "augmented": 2, "reduction_curve": 3}
    return (order[row["kind"]], row.get("scenario") or "", row.get("source") or "", row.get("model") or "",
            row.get("ratio", 0.0), row.get("fraction", 0.0), row["seed"])


def run_scarcity(
    run: RunDir,
    sources: str = "all",
    ratios: list[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
    n_seeds: int = 5,
    scenarios: list[str] = ("A", "B", "C"),
    table_ratio: float | None = None,
    jobs: int = 2,
    fig1: bool = True,
    fig1_fractions: list[float] = tuple(i / 10 for i in range(10)),
    cf_dir: Path | None = None,
) -> dict:
    """The whole stage; returns a summary (counts, paths) for the CLI and the benchmark."""
    if not run.root.is_dir():  # checked before the lock, which would create the folder
        raise InputError(run.root, None, "run directory not found")
    with run_lock(run.root):
        return _run_scarcity(run, sources, ratios, n_seeds, scenarios, table_ratio, jobs, fig1, fig1_fractions,
                             cf_dir)


def _run_scarcity(run, sources, ratios, n_seeds, scenarios, table_ratio, jobs, fig1, fig1_fractions, cf_dir) -> dict:
    from augment.figures import plot_fig1, plot_fig7  # matplotlib only when figures are drawn

    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; expected some of {sorted(SCENARIOS)}")
    ratios = sorted(float(r) for r in ratios)
    table_ratio = ratios[-1] if table_ratio is None else float(table_ratio)
    if table_ratio not in ratios:
        raise ValueError(f"table ratio {table_ratio} is not among the ratios {ratios}")
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {n_seeds}")
    cohort, spec = run.load_cohort()
    cohort = cohort.assign(**{ID_COL: cohort[ID_COL].astype(str)})
    _, test = split_frames(cohort)
    cf_dir = cf_dir_of(run) if cf_dir is None else Path(cf_dir)
    records = load_sources(cf_dir, sources)
    grid = Grid(cohort, spec, records, [SCENARIOS[s] for s in scenarios], ratios, list(range(n_seeds)))

    start = time.perf_counter()
    fitted = run_fits(grid.fits(), len(grid.planned), test, spec, jobs, "Table IV grid")
    grid_seconds = time.perf_counter() - start
    results = sorted(fitted + grid.skipped, key=_sort_key)
    out = run.augment
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "results.jsonl", results)
    pool = pd.DataFrame(grid.pool_log, columns=POOL_COLUMNS)
    pool = pool.astype({"eligible_class0": "Int64", "eligible_class1": "Int64"})
    with atomic_path(out / "cf_pool.csv") as tmp:
        pool.to_csv(tmp, index=False)
    table = table4(results, list(scenarios), list(records), table_ratio)
    write_table4(table, out, n_seeds, pool)
    plot_fig7(results, out / "fig7.png")

    curve, start = [], time.perf_counter()
    if fig1:
        fractions = sorted(float(f) for f in fig1_fractions)
        total = n_seeds * len(fractions) * len(FIG1_MODELS)
        curve = run_fits(reduction_fits(cohort, spec, fractions, list(range(n_seeds))), total, test, spec, jobs,
                         "Fig. 1 reduction")
        curve = sorted(curve, key=_sort_key)
        write_jsonl(out / "fig1_results.jsonl", curve)
        plot_fig1(curve, out / "fig1.png")
    fig1_seconds = time.perf_counter() - start

    config = {
        "sources": sorted(records), "cf_dir": str(cf_dir), "ratios": ratios, "seeds": list(range(n_seeds)),
        "scenarios": list(scenarios), "scenario_fractions": {s: SCENARIOS[s].fraction for s in scenarios},
        "table_ratio": table_ratio, "fig1": fig1, "fig1_fractions": list(fig1_fractions), "jobs": jobs,
    }
    write_provenance(out, config=config, inputs=[run.features, run.spec, *(cf_dir / f"{s}.jsonl" for s in records)])
    return {
        "grid_fits": len(fitted),
        "grid_seconds": grid_seconds,
        "fig1_fits": len(curve),
        "fig1_seconds": fig1_seconds,
        "insufficient_cells": len(grid.skipped),
        "excluded": {r: int(pool[r].sum()) if len(pool) else 0 for r in EXCLUSION_REASONS},
        "table": table,
        "out": out,
    }


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    run: Path = typer.Option(..., help="run directory holding cohort/ and cfs/"),
    sources: str = typer.Option("all", help="comma-separated CF sources (CF_DIR/<name>.jsonl), or 'all'"),
    cf_dir: Path = typer.Option(None, help="folder of CF files of training factuals (default RUN/cfs/train)"),
    ratios: str = typer.Option("0.2,0.4,0.6,0.8,1.0", help="augmentation ratios of the number of windows removed"),
    seeds: int = typer.Option(5, help="number of seeds (0..N-1); every cell reports mean and 95% CI"),
    scenarios: str = typer.Option("A,B,C", help="scarcity scenarios: A class 1, B class 0, C both reduced 50%"),
    table_ratio: float = typer.Option(None, help="ratio shown in Table IV (default: the largest ratio)"),
    jobs: int = typer.Option(2, help="parallel fits (joblib workers)"),
    fig1: bool = typer.Option(True, help="also draw Fig. 1 (4 classifiers, training data reduced 0-90%)"),
) -> None:
    """Retrain the NN under label scarcity with CF augmentation; write Table IV, Fig. 7, Fig. 1."""
    run_dir = RunDir(run)
    # the files read, for W&B; with no run directory run_scarcity says so
    cf_files = source_files(cf_dir_of(run_dir) if cf_dir is None else cf_dir, sources) if run_dir.root.is_dir() else []
    with stage_run(run_dir, "table4", inputs=[run_dir.features, *cf_files], outputs=[run_dir.augment / "table4.md"]):
        summary = run_scarcity(
            run_dir, sources, _floats(ratios, "--ratios"), seeds, [s.strip() for s in scenarios.split(",")],
            table_ratio, jobs, fig1, cf_dir=cf_dir,
        )
    excluded = ", ".join(f"{r} {n}" for r, n in summary["excluded"].items() if n) or "none"
    typer.echo(f"{summary['grid_fits']} grid fits, {summary['insufficient_cells']} insufficient cells (not fitted)")
    typer.echo(f"CF records excluded, summed over scenarios x seeds: {excluded} (per cell: cf_pool.csv)")
    typer.echo(_formatted(summary["table"]).to_markdown(index=False))
    figures = "fig7.png, fig1.png" if fig1 else "fig7.png"
    typer.echo(f"wrote {summary['out']}/table4.{{csv,md,tex}}, results.jsonl, cf_pool.csv, {figures}")
    typer.echo(f"{summary['grid_seconds']:.0f} s grid, {summary['fig1_seconds']:.0f} s Fig. 1")


if __name__ == "__main__":
    run_cli(app)
