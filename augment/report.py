"""The experiment's final report: RUN/report.md from every stage's artifacts, and its aggregates in W&B.

    python -m augment.report --run runs/demo [--wandb/--no-wandb]

Reads what the earlier stages wrote (cohort/quality.json, classifier/metrics.json, eval/table3.md
and figures, eval/intervention.md, augment/table4.md and figures, sft/summary.json,
checkpoints/<recipe>/, stages.json, every provenance.json) and writes RUN/report.md, with
figures linked relative to it, and RUN/provenance.json. A stage that has not run gives its
section a "not run" line naming the command that produces it; nothing here fails for a missing
artifact. Row-level data: report.md holds counts and aggregates only, except the one Table II-style
example that eval.report already chose (the Intervention section); for a cohort not marked
synthetic that example names its window and participant by pseudonym, with no date or hour.
report.md is written atomically under the run directory's lock, provenance.json last. Its prose and
layout are Jinja templates (augment/templates: report.md.j2 the headings and order, sections.md.j2
one macro per part); this module reads the artifacts and fills them with formatted values.

With --wandb (default; offline unless WANDB_MODE says otherwise) the aggregates go to one W&B run
of the experiment's group (stage "report"): classifier metrics, Table III, Table IV and the stage
times as tables, the figures as images, except a per-window figure (Fig. 8) unless
--wandb-row-level asks for it. A W&B Report over the group is built from them
(sensecf.wandb_report) and published only when WANDB_MODE=online.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pandas as pd
import typer
import yaml

from augment.claims import claims
from sensecf.atomic import run_lock, write_text
from sensecf.cli import InputError, run_cli
from sensecf.models import TINY_MARKER
from sensecf.rundir import GROUP_COL, SPLIT_COL, RunDir, file_sha256, write_provenance
from sensecf.spec import DatasetSpec
from sensecf.templates import template_env

CLASSIFIER_METRICS = ["ACC", "PRE", "REC", "F1", "AUC"]
SECTIONS = [
    "Data quality", "Classifier", "Table III", "Figs. 6 and 8", "Intervention", "Table IV", "Figs. 7 and 1",
    "Paper's claims", "Fine-tuning", "Timing", "Reproducibility", "Notes",
]
NOT_RUN = "not run"
# Where the figures live (relative to the run directory) and which command draws them; their names
# and captions are in templates/sections.md.j2. Fig. 8 plots single windows (a dot per factual):
# row-level, so it goes to W&B only when asked.
FIGURES = {
    "fig6": ("eval/fig6.png", "table3"),
    "fig8": ("eval/fig8.png", "table3"),
    "fig7": ("augment/fig7.png", "table4"),
    "fig1": ("augment/fig1.png", "table4"),
}
PER_WINDOW_FIGURES = {"fig8"}
TEMPLATES = Path(__file__).parent / "templates"


# --- templates -----------------------------------------------------------------------------------
def _env() -> jinja2.Environment:
    env = template_env(TEMPLATES)
    env.globals["NOT_RUN"] = NOT_RUN
    return env


def render(macro: str, **values) -> str:
    """One part of report.md: the macro `macro` of templates/sections.md.j2 filled with `values`
    (a parameter left out raises jinja2.UndefinedError), without its trailing newline."""
    return getattr(_env().get_template("sections.md.j2").module, macro)(**values).rstrip()


# --- reading -------------------------------------------------------------------------------------
def read_json(path: Path) -> dict | None:
    """A JSON artifact, or None when the stage has not written it."""
    return json.loads(path.read_text()) if path.is_file() else None


def commands(run: RunDir) -> dict[str, str]:
    """The command that produces each artifact, for the "not run" lines."""
    r = shlex.quote(str(run.root))
    return {
        "cohort": f"python -m dataset_builders aireadi --root RELEASE --out {r}/cohort "
                  f"(or python -m dataset_builders table ... --out {r}/cohort)",
        "classifier": f"python -m eval.classifier --run {r}",
        "cfs": f"python -m eval.baselines --run {r} (or LLM generation with python -m eval.generate --run {r})",
        "table3": f"python -m eval.report --run {r}",
        "train_cfs": f"python -m eval.baselines --run {r} --split train",
        "table4": f"python -m augment.scarcity --run {r}",
        "sft": f"python -m dataset_builders pairs --run {r}",
        "finetune": f"python -m launch.train recipes/smollm2-cpu.yml --run {r}",
        "timing": f"python -m launch.experiment recipes/experiments/demo.yml --run {r}",
    }


def missing(run: RunDir, artifact: str | Path, command_key: str) -> dict[str, str]:
    """What a "not run" line names: the missing artifact (relative to the run) and its command."""
    path = Path(artifact)
    shown = path.relative_to(run.root) if path.is_relative_to(run.root) else path
    return {"path": str(shown), "command": commands(run)[command_key]}


def not_run(run: RunDir, artifact: str | Path, command_key: str) -> str:
    return render("not_run", missing=missing(run, artifact, command_key))


def load_spec(run: RunDir) -> DatasetSpec | None:
    return run.load_spec() if run.spec.is_file() else None


def class_name(spec: DatasetSpec | None, c) -> str:
    try:
        return f"{c} ({spec.label.classes[int(c)]})" if spec else str(c)
    except (KeyError, ValueError):
        return str(c)


def cf_methods(run: RunDir, split_dir: Path | None = None) -> dict[str, int]:
    """CF files (method -> record lines) in RUN/cfs/ or another folder, without parsing them."""
    folder = split_dir or run.cfs
    if not folder.is_dir():
        return {}
    return {p.stem: sum(1 for line in p.open("rb") if line.strip()) for p in sorted(folder.glob("*.jsonl"))}


def provenances(run: RunDir) -> dict[str, dict]:
    """Every stage's provenance.json, keyed by its folder relative to the run (W&B files skipped;
    the run's own provenance.json belongs to this report and is rewritten by it)."""
    out = {}
    for path in sorted(run.root.rglob("provenance.json")):
        rel = path.parent.relative_to(run.root)
        if rel == Path(".") or "wandb" in rel.parts:
            continue
        try:
            out[str(rel)] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            out[str(rel)] = {"error": f"{path}: not valid JSON ({e})"}
    return out


# --- formatting ----------------------------------------------------------------------------------
def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md_table(rows: list[dict]) -> str:
    if not rows:
        return "_(none)_"
    # disable_numparse: keep the cells exactly as formatted ("0.420", "1,739"), not re-read as numbers
    return pd.DataFrame(rows).astype(str).to_markdown(index=False, disable_numparse=True)


def count_table(header: str, counts: dict) -> str:
    """A two-column table: each key under `header`, its count."""
    return md_table([{header: k, "count": fmt(v)} for k, v in counts.items()])


def demote(markdown: str, levels: int = 2) -> str:
    """Push an embedded file's headings below this report's sections ("# X" -> "### X")."""
    return re.sub(r"^(#{1,6}) ", lambda m: "#" * min(6, len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def embed(path: Path) -> str:
    """An earlier stage's Markdown file, its headings demoted, without trailing whitespace."""
    return demote(path.read_text()).rstrip()


def figure(run: RunDir, key: str) -> dict:
    """A figure for the template: its link relative to report.md, or what is missing."""
    rel, command_key = FIGURES[key]
    path = run.root / rel
    if not path.is_file():
        return {"link": None, "missing": missing(run, path, command_key)}
    return {"link": os.path.relpath(path, run.report.parent), "missing": None}


# --- sections ------------------------------------------------------------------------------------
def cohort_counts(run: RunDir) -> dict | None:
    """Windows and participants per split and label balance, from the cohort table (counts only)."""
    if not run.features.is_file():
        return None
    spec = load_spec(run)
    columns = [c for c in (GROUP_COL, SPLIT_COL, spec.label.name if spec else None) if c]
    df = pd.read_parquet(run.features, columns=columns)
    out = {"windows": len(df), "participants": int(df[GROUP_COL].nunique()), "splits": {}}
    for side, part in sorted(df.groupby(SPLIT_COL), key=lambda kv: (kv[0] != "train", str(kv[0]))):
        entry = {"windows": len(part), "participants": int(part[GROUP_COL].nunique())}
        if spec:
            entry["labels"] = {str(k): int(v) for k, v in part[spec.label.name].value_counts().sort_index().items()}
        out["splits"][str(side)] = entry
    return out


def _split_table(splits: dict, spec: DatasetSpec | None) -> str:
    classes = sorted({c for s in splits.values() for c in s.get("labels", s.get("label_counts", {}))})
    rows = []
    for side, s in splits.items():
        labels = s.get("labels", s.get("label_counts", {}))
        rows.append({"split": side, "participants": fmt(s.get("participants")), "windows": fmt(s.get("windows")),
                     **{f"label {class_name(spec, c)}": fmt(labels.get(c, 0)) for c in classes}})
    return md_table(rows)


def _demographics(demo: dict) -> dict:
    """The AI-READI builder's demographics summary, formatted for the template."""
    return {
        "file_given": bool(demo.get("demographics_file")),
        "observation_found": bool(demo.get("observation_csv_found")),
        "counted_over": demo.get("counted_over", "participants"),
        "sex_unknown": fmt(demo.get("sex_unknown")),
        "medication_unknown": fmt(demo.get("medication_unknown")),
        "rows_not_in_participants": fmt(demo.get("demographics_rows_not_in_participants_tsv")),
        "sources_table": md_table([{"feature": feat, "source": src, "participants": fmt(n)}
                                   for feat in ("sex", "medication")
                                   for src, n in demo.get(f"{feat}_source", {}).items()]),
    }


def _aireadi_quality(q: dict, spec: DatasetSpec | None) -> str:
    p, w, demo = q["participants"], q["windows"], q.get("demographics", {})
    dropped = w.get("dropped_by_first_reason", {})
    label, split = q.get("label"), q.get("split")
    return render(
        "aireadi_quality",
        participants={k: fmt(p.get(k)) for k in ("listed", "read", "with_windows", "skipped")},
        skipped_table=count_table("participants skipped because", p.get("skipped_by_reason", {})),
        windows={"built": fmt(w.get("built")), "kept": fmt(w.get("kept")), "dropped": fmt(sum(dropped.values())),
                 "order": list(w.get("drop_reason_order", dropped))},
        dropped_table=count_table("windows dropped because", dropped),
        readings_table=count_table("readings dropped because", q.get("dropped_readings", {})),
        quirks_table=count_table("quirk", q.get("quirks", {})),
        failed_files=len(q.get("failed_files", [])),
        demographics=_demographics(demo) if demo else None,
        label=None if label is None else {k: label.get(k) for k in ("name", "rule", "scope", "min_stress_values")},
        split=None if split is None else {
            "method": split.get("method"), "seed": split.get("seed"),
            "table": _split_table({k: split[k] for k in ("train", "test") if k in split}, spec)},
    )


def _table_quality(q: dict, spec: DatasetSpec | None) -> str:
    missing_by_column = q.get("missing_by_column", {})
    balance = q.get("label_balance")
    return render(
        "table_quality",
        rows_read=fmt(q.get("rows_read")), rows_kept=fmt(q.get("rows_kept")),
        rows_dropped=fmt(q.get("rows_dropped_missing")),
        missing_table=md_table([{"column": k, "rows missing": fmt(v)} for k, v in missing_by_column.items()])
        if missing_by_column else None,
        label_balance=None if balance is None else [f"{class_name(spec, k)}: {fmt(v)}" for k, v in balance.items()],
    )


def _quality(run: RunDir, q: dict | None, spec: DatasetSpec | None) -> str:
    """quality.json's part of Data quality, by its layout (AI-READI builder or table builder)."""
    if q is None:
        return not_run(run, run.quality, "cohort")
    if "participants" in q and "windows" in q:
        return _aireadi_quality(q, spec)
    if "rows_read" in q:
        return _table_quality(q, spec)
    return render("quality_unrecognised", keys=sorted(q))


def section_data_quality(run: RunDir) -> str:
    if not run.features.is_file():
        return not_run(run, run.features, "cohort")
    spec = load_spec(run)
    source = (read_json(run.cohort / "provenance.json") or {}).get("source", {})
    q = read_json(run.quality)
    cohort = None
    if q is None or "split" not in q:  # the split's counts, when quality.json does not give them
        counts = cohort_counts(run)
        cohort = {"windows": fmt(counts["windows"]), "participants": fmt(counts["participants"]),
                  "split_table": _split_table(counts["splits"], spec)}
    return render("data_quality", synthetic=run.is_synthetic(), release_version=source.get("release_version"),
                  quality=_quality(run, q, spec), cohort=cohort)


def section_classifier(run: RunDir) -> str:
    m = read_json(run.classifier / "metrics.json")
    if m is None:
        return not_run(run, run.classifier / "metrics.json", "classifier")
    train = m.get("train_metrics", {})
    rows = [{"metric": k, "test": fmt(m.get(k)), "train": fmt(train.get(k))} for k in CLASSIFIER_METRICS]
    balance = m.get("class_balance", {}).get("test", {})
    spec = load_spec(run)
    return render("classifier", model=m.get("model"), seed=m.get("seed"), n_train=fmt(m.get("n_train")),
                  n_test=fmt(m.get("n_test")), balance=[f"{class_name(spec, k)}: {fmt(v)}" for k, v in balance.items()],
                  table=md_table(rows))


def section_table3(run: RunDir) -> str:
    path = run.eval / "table3.md"
    on_disk = cf_methods(run)
    if not path.is_file():
        return not_run(run, run.cfs, "cfs") if not on_disk else not_run(run, path, "table3")
    table = embed(path)
    prov = read_json(run.eval / "provenance.json") or {}
    in_table = set(prov.get("config", {}).get("methods", on_disk))
    return render("table3", table=table, left_out=sorted(set(on_disk) - in_table),
                  valid_columns="Distance (valid)" in table, command=commands(run)["table3"])


def section_figs_6_8(run: RunDir) -> str:
    return render("figs_6_8", fig6=figure(run, "fig6"), fig8=figure(run, "fig8"))


def section_intervention(run: RunDir) -> str:
    path = run.eval / "intervention.md"
    if not path.is_file():
        return not_run(run, path, "table3")
    prov = read_json(run.eval / "provenance.json") or {}
    # Pseudonymised only if the provenance says so and describes this very file (a run killed
    # before its provenance leaves an older one behind).
    pseudonymised = (prov.get("config", {}).get("pseudonymised") is True
                     and prov.get("outputs", {}).get(path.name) == file_sha256(path))
    if not run.is_synthetic() and not pseudonymised:
        # Written while the cohort counted as synthetic: it may name a real window. Never copy it.
        return render("intervention_left_out", command=commands(run)["table3"])
    return embed(path)


def section_table4(run: RunDir) -> str:
    path = run.augment / "table4.md"
    if not path.is_file():
        train_dir = run.cfs / "train"
        return not_run(run, path, "table4") if cf_methods(run, train_dir) else not_run(run, train_dir, "train_cfs")
    config = (read_json(run.augment / "provenance.json") or {}).get("config", {})
    grid = {"sources": config.get("sources", []), "scenarios": config.get("scenarios", []),
            "ratios": config.get("ratios"), "table_ratio": config.get("table_ratio"),
            "seeds": len(config.get("seeds", []))}
    return render("table4", config=grid if config else None, table=embed(path))


def section_figs_7_1(run: RunDir) -> str:
    return render("figs_7_1", fig7=figure(run, "fig7"), fig1=figure(run, "fig1"))


def section_claims(run: RunDir) -> str:
    """Each claim of the paper with this run's number, its 95 % interval and a verdict (augment.claims)."""
    metrics_path, t4_path = run.eval / "cf_metrics.csv", run.augment / "table4.csv"
    if not metrics_path.is_file():
        return not_run(run, metrics_path, "table3")
    table4 = pd.read_csv(t4_path) if t4_path.is_file() else None
    rows = claims(pd.read_csv(metrics_path), table4, real_data=not run.is_synthetic())
    header = {"claim": "Claim", "paper": "Paper", "run": "This run (95 % interval)", "verdict": "Verdict"}
    return render("claims", table=md_table([{header[k]: v for k, v in row.items()} for row in rows]))


def trainer_state(folder: Path) -> dict | None:
    """The trainer state Axolotl (HF Trainer) left: the output folder's, else the last checkpoint's."""
    if (folder / "trainer_state.json").is_file():
        return read_json(folder / "trainer_state.json")
    found = [p for p in folder.glob("checkpoint-*/trainer_state.json") if p.parent.name.split("-")[-1].isdigit()]
    if not found:
        return None
    return read_json(max(found, key=lambda p: int(p.parent.name.split("-")[-1])))


def precision(folder: Path) -> str:
    """The training precision of the resolved recipe (launch.train writes recipe.yml; bf16 "auto" on
    a CPU is resolved there)."""
    recipe = folder / "recipe.yml"
    if not recipe.is_file():
        return "–"
    cfg = yaml.safe_load(recipe.read_text()) or {}
    return "bf16" if cfg.get("bf16") is True else "fp16" if cfg.get("fp16") is True else (
        "auto" if cfg.get("bf16") == "auto" else "fp32")


def training_row(recipe: str, folder: Path) -> dict:
    """One fine-tune: steps, losses, throughput over all tokens (padding included) and over trained
    (answer) tokens, both per second of the training loop."""
    state = trainer_state(folder)
    adapter = "yes" if (folder / "adapter_model.safetensors").is_file() else "no"
    if state is None:
        return {"recipe": recipe, "adapter": adapter, "precision": precision(folder), "steps": "–",
                "loss start": "–", "loss end": "–", "eval loss": "–", "tokens/s (all)": "–",
                "tokens/s (trained)": "–", "runtime (s)": "–", "note": "no trainer_state.json"}
    history = state.get("log_history", [])
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    rates = [h["tokens/train_per_sec_per_gpu"] for h in history if "tokens/train_per_sec_per_gpu" in h]
    runtime = next((h["train_runtime"] for h in reversed(history) if "train_runtime" in h), None)
    trainable = next((h["tokens/trainable"] for h in reversed(history) if "tokens/trainable" in h), None)
    # A checkpoint's state is saved before the trainer logs its runtime; launch.train records it.
    launched = read_json(folder / "train_summary.json") or {}
    runtime = runtime or launched.get("train_runtime_seconds")
    trainable = trainable or launched.get("tokens", {}).get("trainable")
    total = launched.get("tokens", {}).get("total")
    # Whole-run rate when the trainer logged its runtime and trainable tokens; else the mean logged rate.
    trained_rate = trainable / runtime if runtime and trainable else (sum(rates) / len(rates) if rates else None)
    return {"recipe": recipe, "adapter": adapter, "precision": precision(folder),
            "steps": fmt(state.get("global_step")), "loss start": fmt(losses[0] if losses else None),
            "loss end": fmt(losses[-1] if losses else None),
            "eval loss": fmt(evals[-1] if evals else None),
            "tokens/s (all)": fmt(total / runtime if runtime and total else None, 1),
            "tokens/s (trained)": fmt(trained_rate, 1), "runtime (s)": fmt(runtime, 1), "note": ""}


def _sft_pairs(s: dict) -> dict:
    """sft/summary.json (dataset_builders.pairs), formatted for the template."""
    written = s.get("written", {})
    return {
        "factuals": fmt(s.get("factuals")),
        "teacher_valid": fmt(s.get("teacher_valid")),
        "teacher_invalid": fmt(s.get("teacher_invalid")),
        "invalid_reasons": [f"{k}: {fmt(v)}" for k, v in s.get("teacher_invalid_reasons", {}).items()],
        "dropped_by_max_pairs": fmt(s.get("dropped_by_max_pairs")),
        "train": fmt(written.get("train")), "val": fmt(written.get("val")), "fewshot": fmt(written.get("fewshot")),
        "max_tokens": s.get("max_tokens"),
        "token_table": md_table([{"tokenizer": name, **{k: fmt(v, 1) for k, v in stats.items()}}
                                 for name, stats in s.get("token_lengths", {}).items()]),
    }


def section_finetuning(run: RunDir) -> str:
    s = read_json(run.sft / "summary.json")
    folders = sorted(p for p in run.checkpoints.iterdir() if p.is_dir()) if run.checkpoints.is_dir() else []
    return render(
        "finetuning",
        sft=None if s is None else _sft_pairs(s), sft_missing=missing(run, run.sft / "summary.json", "sft"),
        training_table=md_table([training_row(p.name, p) for p in folders]) if folders else None,
        training_missing=missing(run, run.checkpoints, "finetune"),
    )


def section_timing(run: RunDir) -> str:
    path = run.root / "stages.json"
    data = read_json(path)
    if data is None:
        return not_run(run, path, "timing")
    stages = data.get("stages", [])
    rows = [{"stage": s.get("stage"), "wall time (s)": fmt(s.get("seconds"), 1),
             "skipped (up to date)": fmt(bool(s.get("skipped")))} for s in stages]
    total = data.get("total_seconds")  # the runner writes the total only when every stage is done
    return render(
        "timing", written=datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds"),
        recipe=data.get("recipe"), total=None if total is None else fmt(total, 1),
        stage_sum=fmt(sum(s.get("seconds") or 0 for s in stages), 1), table=md_table(rows),
    )


def provenance_rows(provs: dict[str, dict]) -> list[dict]:
    """One table row per stage's provenance.json."""
    rows = []
    for stage, p in provs.items():
        command = p.get("command")
        seed = p.get("seed") if p.get("seed") is not None else p.get("config", {}).get("seeds")  # augment: a list
        rows.append({"stage": f"`{stage}`", "created": p.get("created", "–"), "seed": fmt(seed),
                     "git commit": (p.get("git_commit") or "–")[:12],
                     "inputs hashed": fmt(len(p.get("inputs", {}))),
                     "command": f"`{shlex.join(command)}`" if command else "–"})
    return rows


def version_rows(provs: dict[str, dict]) -> list[dict]:
    """One table row per package the stages recorded, naming the stages where versions differ."""
    versions = {}
    for stage, p in provs.items():
        for package, version in p.get("versions", {}).items():
            versions.setdefault(package, {}).setdefault(version, []).append(stage)
    rows = []
    for package, by_version in sorted(versions.items()):
        shown = [v if len(by_version) == 1 else f"{v} ({', '.join(stages)})" for v, stages in by_version.items()]
        rows.append({"package": package, "version": "; ".join(shown)})
    return rows


def section_reproducibility(run: RunDir) -> str:
    provs = provenances(run)
    if not provs:
        return render("no_provenance")
    commits = {p.get("git_commit") for p in provs.values() if p.get("git_commit")}
    return render("reproducibility", stages_table=md_table(provenance_rows(provs)),
                  versions_table=md_table(version_rows(provs)), n_commits=len(commits))


def stand_in_methods(run: RunDir) -> list[str]:
    """CF files (test and train) whose first record names a model folder marked as a tiny stand-in."""
    found = []
    for path in sorted([*run.cfs.glob("*.jsonl"), *(run.cfs / "train").glob("*.jsonl")]):
        with open(path) as fh:
            first = fh.readline()
        try:
            model = json.loads(first).get("extra", {}).get("model")
        except ValueError:  # empty or torn: the readers count such lines
            continue
        if model and (Path(model) / TINY_MARKER).is_file():
            found.append(path.stem if path.parent == run.cfs else f"train/{path.stem}")
    return found


def notes(run: RunDir) -> list[str]:
    """Honest limits of this run, as bullet items."""
    items = []
    if run.is_synthetic():
        items.append(render("note_synthetic"))
    elif run.features.is_file():
        items.append(render("note_not_synthetic"))
    methods = set(cf_methods(run)) | set(cf_methods(run, run.cfs / "train"))
    recipes = {p.name for p in run.checkpoints.iterdir()} if run.checkpoints.is_dir() else set()
    small = sorted(m for m in methods | recipes if "smollm" in m.lower())
    if small:
        items.append(render("note_smollm", names=small))
    if (run.sft / "summary.json").is_file():
        items.append(render("note_sft_targets"))
    stand_ins = stand_in_methods(run)
    if stand_ins:
        items.append(render("note_stand_ins", methods=stand_ins))
    counts = (read_json(run.eval / "provenance.json") or {}).get("config", {}).get("records_per_file", {})
    if counts:
        items.append(render("note_table3_intervals", records=[f"{m}: {n}" for m, n in counts.items()]))
    config = (read_json(run.augment / "provenance.json") or {}).get("config", {})
    if config:
        table = run.augment / "table4.csv"
        t4 = pd.read_csv(table) if table.is_file() else None
        short = 0 if t4 is None else int(t4["note"].fillna("").str.startswith("insufficient").sum())
        items.append(render("note_table4_seeds", seeds=len(config.get("seeds", [])), insufficient=short))
        if t4 is not None:
            items += table4_notes(t4)
    return items


def table4_notes(t4: pd.DataFrame) -> list[str]:
    """What Table IV's F1 column can and cannot show, judged against its own 95% intervals."""
    items = []
    fitted = t4.dropna(subset=["F1", "F1_ci"])
    reduced = fitted[fitted["row"].str.startswith("Reduced")]
    flat = [f"{r.scenario} ({r.F1:+.2f}% ± {r.F1_ci:.2f})" for r in reduced.itertuples() if abs(r.F1) <= r.F1_ci]
    if flat:
        items.append(render("note_reduction_flat", scenarios=flat))
    added = fitted[fitted["row"].str.startswith("CF added")]
    worse = [f"{r.method} in {r.scenario} ({r.F1:+.2f}% ± {r.F1_ci:.2f})" for r in added.itertuples()
             if r.F1 + r.F1_ci < 0]
    if worse:
        items.append(render("note_cfs_lowered_f1", cells=worse))
    return items


SECTION_BUILDERS = {
    "Data quality": section_data_quality,
    "Classifier": section_classifier,
    "Table III": section_table3,
    "Figs. 6 and 8": section_figs_6_8,
    "Intervention": section_intervention,
    "Table IV": section_table4,
    "Figs. 7 and 1": section_figs_7_1,
    "Paper's claims": section_claims,
    "Fine-tuning": section_finetuning,
    "Timing": section_timing,
    "Reproducibility": section_reproducibility,
}


def summary(run: RunDir) -> str:
    """One paragraph: which cohort, which stages ran, which did not."""
    name = run.root.resolve().name
    counts = cohort_counts(run)
    if counts is None:
        return render("summary_no_cohort", name=name)
    spec = load_spec(run)
    m = read_json(run.classifier / "metrics.json")
    recipes = sorted(p.name for p in run.checkpoints.iterdir() if p.is_dir()) if run.checkpoints.is_dir() else []
    absent = [label for label, path in [
        ("classifier", run.classifier / "metrics.json"), ("Table III", run.eval / "table3.md"),
        ("Table IV", run.augment / "table4.md"), ("SFT pairs", run.sft / "summary.json"),
        ("fine-tuning", run.checkpoints)] if not path.exists()]
    return render(
        "summary", name=name, synthetic=run.is_synthetic(), spec_name=spec.name if spec else None,
        windows=fmt(counts["windows"]), participants=fmt(counts["participants"]),
        splits=[f"{side} {fmt(s['windows'])}" for side, s in counts["splits"].items()],
        classifier={"model": m.get("model"), "F1": fmt(m.get("F1")), "AUC": fmt(m.get("AUC"))} if m else None,
        methods=list(cf_methods(run)), train_methods=list(cf_methods(run, run.cfs / "train")), recipes=recipes,
        absent=absent,
    )


READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError)  # JSON errors are ValueErrors


def render_report(run: RunDir) -> tuple[str, dict[str, str]]:
    """(report.md text, errors per part). A part whose artifact cannot be read says so in place."""
    errors = {}

    def safe(name: str, build):
        try:
            return build(run)
        except READ_ERRORS as e:
            errors[name] = f"{type(e).__name__}: {e}"
            return None

    text = safe("Summary", summary)
    sections = [(heading, safe(heading, build)) for heading, build in SECTION_BUILDERS.items()]
    items = safe("Notes", notes)
    report = _env().get_template("report.md.j2").render(
        name=run.root.resolve().name, summary=text, sections=sections, notes=items, errors=errors,
        failed=[f"{heading} ({error})" for heading, error in errors.items()],
    )
    return report, errors


# --- W&B -----------------------------------------------------------------------------------------
def wandb_aggregates(run: RunDir, row_level: bool = False) -> tuple[dict, dict[str, pd.DataFrame], dict[str, Path]]:
    """(scalar metrics, tables, images) for W&B: aggregates only, from the artifacts that exist;
    a per-window figure only with `row_level`."""
    metrics, tables, images = {}, {}, {}
    m = read_json(run.classifier / "metrics.json")
    if m:
        metrics = {f"classifier/{k}": m[k] for k in CLASSIFIER_METRICS if m.get(k) is not None}
        train = m.get("train_metrics", {})
        tables["classifier_metrics"] = pd.DataFrame(
            [{"metric": k, "test": m.get(k), "train": train.get(k)} for k in CLASSIFIER_METRICS])
    for name, path in [("table3", run.eval / "table3.csv"), ("table4", run.augment / "table4.csv")]:
        if path.is_file():
            tables[name] = pd.read_csv(path)
    stages = read_json(run.root / "stages.json")
    if stages and stages.get("stages"):
        tables["stages"] = pd.DataFrame(stages["stages"])
    for key, (rel, *_) in FIGURES.items():
        if (run.root / rel).is_file() and (row_level or key not in PER_WINDOW_FIGURES):
            images[key] = run.root / rel
    return metrics, tables, images


def log_to_wandb(run: RunDir, row_level: bool = False) -> str | None:
    """One W&B run (stage "report") with the aggregates (and the per-window Fig. 8 only with
    `row_level`); the W&B Report is built, and saved only when WANDB_MODE=online. Returns the
    published report's URL, else None."""
    from sensecf.wandb_log import DEFAULT_PROJECT, log_image, log_metrics, log_table, stage_run
    from sensecf.wandb_report import ReportSection, build_wandb_report, publish_wandb_report, workspaces_available

    metrics, tables, images = wandb_aggregates(run, row_level)
    with stage_run(run, "report", {"run": run.root.resolve().name, "row_level": row_level},
                   inputs=[run.eval / "table3.md", run.augment / "table4.md"], outputs=[run.report],
                   log_rows=row_level) as wb:
        if metrics:
            log_metrics(wb, metrics)
        for name, df in tables.items():
            log_table(wb, name, df)
        for name, path in images.items():
            log_image(wb, name, path, per_window=name in PER_WINDOW_FIGURES, log_rows=row_level)
        group = wb.group
    if not workspaces_available():
        typer.echo("wandb-workspaces is not installed: no W&B Report built (the run's tables and images are logged)")
        return None

    def keys(wanted, present):
        return [k for k in wanted if k in present]

    sections = [
        ReportSection("Classifier", tables=keys(["classifier_metrics"], tables)),
        ReportSection("Fine-tune", text="Loss per optimizer step of each fine-tune stage (and Axolotl's own run).",
                      line_plots=["train/loss"]),
        ReportSection("Table III — CF quality", tables=keys(["table3"], tables), images=keys(["fig6", "fig8"], images)),
        ReportSection("Table IV — augmentation under label scarcity", tables=keys(["table4"], tables),
                      images=keys(["fig7", "fig1"], images)),
        ReportSection("Timing", tables=keys(["stages"], tables)),
    ]
    report = build_wandb_report(
        title=f"SenseCF — {group}", summary=summary(run),
        sections=[s for s in sections if s.tables or s.images or s.line_plots],
        notes="\n".join(f"- {item}" for item in notes(run)), group=group,
        project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
    )
    return publish_wandb_report(report)


# --- CLI -----------------------------------------------------------------------------------------
def write_report(run: RunDir, wandb: bool = False) -> tuple[Path, dict[str, str]]:
    """Write RUN/report.md and RUN/provenance.json (last) under the run's lock; returns the path and
    the sections that failed."""
    if not run.root.is_dir():
        raise InputError(run.root, None, "run directory not found")
    with run_lock(run.root):
        text, errors = render_report(run)
        write_text(run.report, text)
        read = [p for p in [run.quality, run.classifier / "metrics.json", run.eval / "table3.md",
                            run.eval / "intervention.md", run.augment / "table4.md", run.sft / "summary.json",
                            run.root / "stages.json"] if p.is_file()]
        write_provenance(run.root, config={"wandb": wandb, "section_errors": errors}, inputs=read)
    return run.report, errors


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    run: Path = typer.Option(..., help="run directory (any stages may have run)"),
    wandb: bool = typer.Option(True, help="log the aggregates to W&B (offline unless WANDB_MODE=online)"),
    wandb_row_level: bool = typer.Option(False, "--wandb-row-level",
                                         help="also log the per-window Fig. 8 to W&B (off: aggregates only)"),
) -> None:
    """Write RUN/report.md from every stage's artifacts; log its aggregates to W&B."""
    run_dir = RunDir(run)
    path, errors = write_report(run_dir, wandb)
    n_not_run = path.read_text().count(f"_{NOT_RUN}_")
    typer.echo(f"wrote {path} ({n_not_run} missing artifact(s) marked '{NOT_RUN}')")
    for heading, error in errors.items():
        typer.echo(f"warning: {heading} could not be rendered: {error}", err=True)
    if wandb:
        url = log_to_wandb(run_dir, row_level=wandb_row_level)
        mode = os.environ.get("WANDB_MODE", "offline")
        typer.echo(f"W&B report published: {url}" if url else
                   f"W&B ({mode}): aggregates logged under {run_dir.root / 'wandb'}; the W&B Report is published "
                   "only with WANDB_MODE=online")

if __name__ == "__main__":
    run_cli(app)
