"""Table III and its figures from every CF file of a run.

    python -m eval.report --run runs/demo [--methods teacher --methods dice,nice] [--ynn-k 5]

Reads RUN/cfs/*.jsonl; writes RUN/eval/: table3.csv / table3.md / table3.tex (methods x
(class 0, class 1) x metrics, best per column marked), cf_metrics.csv (the same numbers, one row
per method and class), fig6.png (+ fig6.csv), fig8.png, intervention.md, provenance.json.
A method with several candidates per window also gets a "<method>+verified" row.

Validity and plausibility carry 95 % Wilson intervals (csv: `<metric>_ci_low` / `<metric>_ci_high`;
md/tex: `0.300 [0.145, 0.519]`). Distance, sparsity and plausibility are shown over all parsed
CFs (the paper's §II-F averaging) and over valid CFs only (`*_valid`, with `n_valid`); "best" for
these three is marked on the valid-CF columns only, so copying the factual wins nothing.

Every file is written atomically under the run directory's lock, provenance.json last. For a
cohort not marked synthetic the intervention example shows no real id, date or hour.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import typer

from eval.classifier import split_frames
from eval.figures import feature_change_table, plot_feature_changes, plot_latent_space
from eval.intervention import intervention_markdown
from eval.metrics import INTERVALS, METRIC_DIRECTIONS, VALID_ONLY, cf_metrics, validity_at_k, with_verified
from sensecf.atomic import atomic_path, run_lock, write_text
from sensecf.blackbox import BlackBox
from sensecf.cli import InputError, run_cli
from sensecf.protocols import protocol_of
from sensecf.records import CFRecord, read_records
from sensecf.rundir import RunDir, write_provenance
from sensecf.wandb_log import stage_run

# Table III's four metrics first (over all parsed CFs, as the paper), the same over valid CFs, then ours.
OURS = ["parse_rate", "immutables_violated", "coherence", "actionability", "redundancy", "ynn", "seconds_per_cf"]
TABLE_METRICS = [
    "validity", "distance", "sparsity", "plausibility", "distance_valid", "sparsity_valid", "plausibility_valid", *OURS,
]
COUNTS = ["n", "n_parsed", "n_valid"]
CI_COLUMNS = [c for pair in INTERVALS.values() for c in pair]
# Per class, in this order: shown columns, and the interval columns after their metric (csv only).
TABLE_COLUMNS = [
    "n", "validity", "n_parsed", "distance", "sparsity", "plausibility", "n_valid", "distance_valid",
    "sparsity_valid", "plausibility_valid", *OURS,
]
CSV_COLUMNS = [c for m in TABLE_COLUMNS for c in [m, *INTERVALS.get(m, ())]]
# All-parsed columns left unmarked: a CF that copies the factual (invalid) would win them.
UNMARKED = set(VALID_ONLY)
LABELS = {
    "n": "n", "validity": "Validity", "distance": "Distance", "sparsity": "Sparsity", "plausibility": "Plausibility",
    "n_parsed": "n parsed", "n_valid": "n valid", "distance_valid": "Distance (valid)",
    "sparsity_valid": "Sparsity (valid)", "plausibility_valid": "Plausibility (valid)",
    "parse_rate": "Parsed", "immutables_violated": "Immut. viol.", "coherence": "Coherence",
    "actionability": "Actionability", "redundancy": "Redundancy", "ynn": "yNN", "seconds_per_cf": "s/CF",
}
ARROWS = {"max": "↑", "min": "↓"}
DECIMALS = 3  # shown, and the precision at which ties for "best" are judged


# --- loading ------------------------------------------------------------------------------
def cf_files(run: RunDir, methods: list[str] | None = None) -> dict[str, Path]:
    """RUN/cfs/<method>.jsonl for the given methods (all files when None)."""
    available = {p.stem: p for p in sorted(run.cfs.glob("*.jsonl"))}
    if not available:
        raise FileNotFoundError(f"{run.cfs}: no CF files (*.jsonl); generate CFs first "
                                f"(python -m eval.baselines --run {run.root}, or python -m eval.generate)")
    wanted = methods or list(available)
    missing = [m for m in wanted if m not in available]
    if missing:
        raise FileNotFoundError(f"{run.cfs}: no CF file for {missing}; available: {sorted(available)}")
    return {m: available[m] for m in wanted}


def load_cf_files(run: RunDir, methods: list[str] | None = None) -> tuple[list[CFRecord], dict[str, int]]:
    """Records of RUN/cfs/<method>.jsonl for the given methods (all files when None), and the
    number of records read per file."""
    records, counts = [], {}
    for m, path in cf_files(run, methods).items():
        recs = read_records(path)
        counts[m] = len(recs)
        records += recs
    if not records:
        raise ValueError(f"{run.cfs}: no CF records in {[p.name for p in cf_files(run, methods).values()]}")
    return records, counts


# --- Table III ----------------------------------------------------------------------------
def table3(metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, best): both methods x MultiIndex (class, metric) over CSV_COLUMNS; `best` marks, per
    column, every method tied at the best shown value (only where at least two methods have a value;
    never the interval columns, nor distance/sparsity/plausibility over all parsed CFs: their valid-CF
    columns are marked instead)."""
    methods = sorted(dict.fromkeys(metrics["method"]), key=row_order)
    columns = pd.MultiIndex.from_product([[0, 1], CSV_COLUMNS], names=["class", "metric"])
    values = pd.DataFrame(index=pd.Index(methods, name="method"), columns=columns, dtype=float)
    for _, row in metrics.iterrows():
        for m in CSV_COLUMNS:
            values.loc[row["method"], (int(row["class"]), m)] = row.get(m, float("nan"))
    best = pd.DataFrame(False, index=values.index, columns=columns)
    for cls, m in columns:
        if m not in METRIC_DIRECTIONS or m in UNMARKED:
            continue
        shown = values[(cls, m)].round(DECIMALS)
        if shown.notna().sum() < 2:
            continue
        target = shown.max() if METRIC_DIRECTIONS[m] == "max" else shown.min()
        best[(cls, m)] = shown == target
    return values, best


def row_order(row: str) -> tuple[str, int, str]:
    """A paper row first, its variants right after it: `llama31_ft`, `llama31_ft+grammar`, ..."""
    return (row.partition("+")[0], 0 if protocol_of(row) == "paper" else 1, row)


def _fmt(value: float, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{int(value)}" if metric in COUNTS else f"{value:.{DECIMALS}f}"


def _shown(values: pd.DataFrame) -> list[tuple[int, str]]:
    """The columns md/tex show; intervals go into their metric's cell."""
    return [col for col in values.columns if col[1] not in CI_COLUMNS]


def _cell(values: pd.DataFrame, best: pd.DataFrame, method: str, col: tuple[int, str], bold: str) -> str:
    """`0.300`, bold (`bold` a format string) when best, plus ` [low, high]` for a metric with an interval."""
    cls, m = col
    text = _fmt(values.loc[method, col], m)
    if best.loc[method, col]:
        text = bold.format(text)
    if m in INTERVALS:
        low, high = (values.loc[method, (cls, c)] for c in INTERVALS[m])
        if not (math.isnan(low) or math.isnan(high)):
            text += f" [{low:.{DECIMALS}f}, {high:.{DECIMALS}f}]"
    return text


TABLE_NOTES = [
    "Protocol: *paper* = the method as published (Fig. 4 verbatim, free decoding with the `<new>` block parsed "
    "leniently, a baseline's first CF as the library returns it); *sensecf* = ours, in the rows beside it "
    "(`+grammar`: the same prompt under the grammar / JSON schema; `+best_of_k`: the nearest valid of the "
    "library's CFs; `+verified`: the valid one nearest the factual among k sampled answers; the teacher). "
    "Only paper rows can stand next to the paper's numbers.",
    "Validity and plausibility: value [95 % Wilson score interval]; validity over all n factuals (an answer "
    "that failed to parse counts as invalid), plausibility over the n parsed CFs, plausibility (valid) over "
    "the n valid CFs.",
    "Distance, sparsity, plausibility: over all parsed CFs, valid or not (n parsed), and over valid CFs only "
    "(n valid; – where a method has none). A CF that copies the factual has distance 0 without flipping the "
    "class, so **bold** for these three marks the valid-CF columns; the all-parsed columns are not marked.",
    "The paper's comparison (§II-F) uses the all-parsed columns as far as it says: its sparsity and "
    "plausibility divide by ‖CF‖, \"the total number of CF instances\", the same denominator as its validity, "
    "i.e. over all generated CFs, valid or not. It gives no formula or averaging set for distance, and does "
    "not say how answers that failed to parse enter; here they are left out of these means.",
]


def _header(metric: str) -> str:
    arrow = ARROWS.get(METRIC_DIRECTIONS.get(metric, ""), "")
    return f"{LABELS[metric]} {arrow}".strip()


def write_csv(values: pd.DataFrame, best: pd.DataFrame, path: Path) -> Path:
    flat = values.copy()
    flat.columns = [f"class{c}_{m}" for c, m in values.columns]
    flat.insert(0, "protocol", [protocol_of(m) for m in values.index])
    flat["best"] = [";".join(f"class{c}_{m}" for c, m in best.columns if best.loc[method, (c, m)])
                    for method in values.index]
    with atomic_path(path) as tmp:
        flat.reset_index().to_csv(tmp, index=False)
    return path


def markdown_table(values: pd.DataFrame, best: pd.DataFrame, classes: dict[int, str]) -> str:
    shown = _shown(values)
    heads = ["Method", "Protocol"] + [f"C{c} {_header(m)}" for c, m in shown]
    lines = ["| " + " | ".join(heads) + " |", "|---|---|" + "---:|" * len(shown)]
    for method in values.index:
        cells = [method, protocol_of(method)] + [_cell(values, best, method, col, "**{}**") for col in shown]
        lines.append("| " + " | ".join(cells) + " |")
    legend = (
        f"C0 = factuals predicted {classes[0]} (CF sought: {classes[1]}); C1 = factuals predicted {classes[1]}. "
        "↑ higher is better, ↓ lower is better; **bold** = best in its column."
    )
    return "\n".join(lines) + "\n\n" + legend + "\n\n" + "\n".join(f"- {note}" for note in TABLE_NOTES) + "\n"


def _tex_escape(text: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")]:
        text = text.replace(a, b)
    return text


def latex_table(values: pd.DataFrame, best: pd.DataFrame, classes: dict[int, str], caption: str) -> str:
    shown = _shown(values)
    per_class = len(shown) // 2
    tex_arrow = {"max": r"$\uparrow$", "min": r"$\downarrow$"}
    heads = [f"{LABELS[m]} {tex_arrow.get(METRIC_DIRECTIONS.get(m, ''), '')}".strip() for _, m in shown]
    lines = [
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{_tex_escape(caption)}}}",
        r"\label{tab:table3}",
        r"\resizebox{\textwidth}{!}{%",
        rf"\begin{{tabular}}{{ll{'r' * len(shown)}}}",
        r"\toprule",
        rf" & & \multicolumn{{{per_class}}}{{c}}{{Class 0 ({_tex_escape(classes[0])})}}"
        rf" & \multicolumn{{{per_class}}}{{c}}{{Class 1 ({_tex_escape(classes[1])})}} \\",
        rf"\cmidrule(lr){{3-{per_class + 2}}} \cmidrule(lr){{{per_class + 3}-{2 * per_class + 2}}}",
        "Method & Protocol & " + " & ".join(heads) + r" \\",
        r"\midrule",
    ]
    for method in values.index:
        cells = [_tex_escape(method), protocol_of(method)]
        cells += [_cell(values, best, method, col, r"\textbf{{{}}}").replace("–", "--") for col in shown]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table*}", ""]
    return "\n".join(lines)


# --- the whole report ---------------------------------------------------------------------
def build_report(
    run: RunDir | str | Path, methods: list[str] | None = None, *, ynn_k: int = 5, fig8_sample: int = 200,
    intervention_method: str | None = None,
) -> dict[str, Path]:
    """Compute the metrics of every CF file and write all report artifacts; returns their paths."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    if not run.root.is_dir():  # checked before the lock, which would create the folder
        raise InputError(run.root, None, "run directory not found")
    with run_lock(run.root):
        return _build_report(run, methods, ynn_k=ynn_k, fig8_sample=fig8_sample,
                             intervention_method=intervention_method)


def verification_markdown(curve: pd.DataFrame) -> str:
    """Validity against the number of sampled candidates k, per method and factual class (empty
    when no method sampled several): what choosing k buys and costs."""
    if curve.empty:
        return ""
    lines = ["", "", "## Verification: validity among the first k candidates", "",
             "| row | class | k | validity [95 % CI] | s per factual | one candidate's validity |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in curve.rename(columns={"class": "factual_class"}).itertuples():
        lines.append(f"| {r.method} | {r.factual_class} | {r.k} | {r.validity_at_k:.2f} [{r.validity_at_k_ci_low:.2f}, "
                     f"{r.validity_at_k_ci_high:.2f}] | {r.seconds_per_factual:.2f} | {r.candidate_validity:.2f} |")
    return "\n".join(lines) + "\n"


def _build_report(run: RunDir, methods: list[str] | None, *, ynn_k: int, fig8_sample: int,
                  intervention_method: str | None) -> dict[str, Path]:
    df, spec = run.load_cohort()
    synthetic = run.is_synthetic()
    train, _ = split_frames(df)
    blackbox = BlackBox.load(run.model, spec)
    records, counts = load_cf_files(run, methods)
    records = with_verified(records, spec)
    metrics = cf_metrics(records, spec, train, blackbox, ynn_k=ynn_k)
    if intervention_method is not None and intervention_method not in set(metrics["method"]):
        raise InputError(run.cfs, "--intervention-method",
                         f"no row '{intervention_method}'; rows: {', '.join(sorted(set(metrics['method'])))}")

    out = run.eval
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in
             ["table3.csv", "table3.md", "table3.tex", "cf_metrics.csv", "fig6.png", "fig6.csv", "fig8.png",
              "intervention.md"]}
    with atomic_path(paths["cf_metrics.csv"]) as tmp:
        metrics.to_csv(tmp, index=False)
    values, best = table3(metrics)
    classes = spec.label.classes
    write_csv(values, best, paths["table3.csv"])
    cohort = "synthetic cohort" if synthetic else "cohort (not marked synthetic)"
    verified = sorted({r.method for r in records if r.method.endswith("+verified")})
    notes = [f"# Table III — CF quality per method and factual class ({spec.name}, {cohort})", ""]
    notes += [f"Records read: {', '.join(f'{m} {n}' for m, n in counts.items())}."]
    if verified:
        notes += [f"Raw rows use candidate 0; {', '.join(verified)} pick the valid candidate nearest the factual."]
    curve = validity_at_k(records)
    write_text(paths["table3.md"], "\n".join(notes) + "\n\n" + markdown_table(values, best, classes)
               + verification_markdown(curve))
    if not curve.empty:
        paths["verification.csv"] = out / "verification.csv"
        with atomic_path(paths["verification.csv"]) as tmp:
            curve.to_csv(tmp, index=False)
    caption = (f"CF quality on {spec.name} for factuals predicted class 0 ({classes[0]}) and class 1 "
               f"({classes[1]}). Validity and plausibility: value [95% Wilson interval]. Distance, sparsity and "
               "plausibility over all parsed CFs (as the paper's Sec. II-F) and over valid CFs only (valid; -- "
               "where none). Bold: best per column; for distance, sparsity and plausibility only the valid-CF "
               "columns are marked.")
    write_text(paths["table3.tex"], latex_table(values, best, classes, caption))

    changes = feature_change_table(records, spec)
    with atomic_path(paths["fig6.csv"]) as tmp:
        changes.to_csv(tmp, index_label="method")
    plot_feature_changes(changes, paths["fig6.png"])
    plot_latent_space(records, spec, train, blackbox, paths["fig8.png"], sample=fig8_sample)
    write_text(paths["intervention.md"],
               intervention_markdown(records, spec, metrics, blackbox, pseudonymise=not synthetic,
                                     method=intervention_method))

    write_provenance(  # last: it hashes the files above
        out,
        config={"methods": list(counts), "records_per_file": counts, "verified": verified, "ynn_k": ynn_k,
                "fig8_sample": fig8_sample, "pseudonymised": not synthetic},
        inputs=[run.features, run.spec, run.model, *(run.cf_file(m) for m in counts)],
    )
    return paths


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    run: Path = typer.Option(..., help="run directory holding cohort/, classifier/ and cfs/"),
    methods: list[str] = typer.Option(None, help="CF files (method names) to include; repeat or comma-separate; "
                                                 "default: every cfs/*.jsonl"),
    ynn_k: int = typer.Option(5, help="neighbours for yNN"),
    intervention_method: str | None = typer.Option(
        None, help="the row whose CF is the intervention example (Table II; the paper's: llama31_ft); default: "
                   "the best row"),
) -> None:
    """Write Table III (csv/md/tex), Fig. 6, Fig. 8 and the intervention example into RUN/eval/."""
    wanted = [m.strip() for item in methods or [] for m in item.split(",") if m.strip()] or None
    run_dir = RunDir(run)
    read = cf_files(run_dir, wanted).values() if run_dir.cfs.is_dir() else []  # else build_report says why
    with stage_run(run_dir, "table3", inputs=[run_dir.features, run_dir.model, *read],
                   outputs=[run_dir.eval / "table3.md"]):
        paths = build_report(run_dir, wanted, ynn_k=ynn_k, intervention_method=intervention_method)
    typer.echo(paths["table3.md"].read_text())
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    run_cli(app)
