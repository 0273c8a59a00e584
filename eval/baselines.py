"""Optimisation baselines (DiCE, CFNOW, NICE) and the teacher on one shared sample of factuals.

    python -m eval.baselines --run runs/demo --methods dice,cfnow,nice,teacher --n 200
        [--seed 0] [--split test] [--factual-ids FILE] [--cfnow-seconds 2]
        [--dice-method random --dice-method genetic]

The sample (n split evenly between the two *predicted* classes of the split) goes to
RUN/cfs/factuals_<split>.json so LLM generation explains the same windows. Desired class =
1 - predicted class. One CF record per factual and method (dice_random, dice_genetic, cfnow,
nice, teacher) goes to RUN/cfs/<method>.jsonl (test split) or RUN/cfs/<split>/<method>.jsonl
(another split, e.g. training windows for augmentation). Re-running skips ids already written.

Immutables are fixed, not just checked: DiCE through `features_to_vary`, cfnow and NICE by
searching only the mutable columns. Composition groups are not repaired: each record says in
`extra` whether they hold, and coherence is reported as a metric. CF values are rounded to
display precision before the black box predicts `cf_pred`.

Two protocols from one library call (sensecf.protocols): DiCE and cfnow return several CFs; the
paper's row (`dice_random`, `cfnow`) keeps the first as the library returns it, our row
(`dice_random+best_of_k`, `cfnow+best_of_k`) the nearest valid one (the nearest overall if none
is valid). NICE returns one CF (its row is the paper's); the teacher is ours. A method that
raises or runs out of time yields an "error"/"timeout" record in each row, never a crash; such a
record counts as invalid.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from tqdm import tqdm

from eval.metrics import coherent, distance, feature_frame
from sensecf import fingerprint, protocols
from sensecf.atomic import run_lock, write_json
from sensecf.blackbox import BlackBox
from sensecf.cli import run_cli
from sensecf.records import CFRecord, RecordWriter, read_records
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir, write_provenance
from sensecf.spec import DatasetSpec
from sensecf.wandb_log import log_metrics, stage_run

METHODS = ("dice_random", "dice_genetic", "cfnow", "nice", "teacher")
# Libraries that return several CFs per factual: their paper row keeps the first, as the library
# returns it; the sensecf row `<method>+best_of_k` keeps the nearest valid (sensecf.protocols).
SEVERAL_CANDIDATES = ("dice_random", "dice_genetic", "cfnow")
# --methods accepts these families; "dice" expands to one method per --dice-method.
FAMILIES = ("dice", "cfnow", "nice", "teacher")


@dataclass(frozen=True)
class BaselineConfig:
    seed: int = 0
    cfnow_seconds: float = 2.0
    cfnow_strategy: str = "greedy"
    nice_optimization: str = "sparsity"
    # Hard wall-clock limit per factual for the library call (cfnow's own limit only bounds
    # its fine-tuning phase, not its first search).
    timeout_seconds: float = 60.0
    # CFs per factual from the teacher (its nearest valid neighbours; augmentation needs more
    # CFs than one per factual in the dual-scarcity scenario). The libraries write one.
    teacher_per_factual: int = 1


# --- method names ---------------------------------------------------------------------------
def expand_methods(methods: list[str], dice_methods: list[str]) -> list[str]:
    """Method names from the CLI's families ("dice" -> dice_<m> for each DiCE method)."""
    out: list[str] = []
    for m in methods:
        m = m.strip()
        if m == "dice":
            names = [f"dice_{d}" for d in dice_methods]
        elif m in METHODS:
            names = [m]
        else:
            raise ValueError(f"unknown method '{m}'; choose from {', '.join(FAMILIES + METHODS)}")
        out.extend(n for n in names if n not in out)
    unknown = [n for n in out if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown DiCE method in {unknown}; --dice-method takes random or genetic")
    return out


# --- factual sample -------------------------------------------------------------------------
def sample_factuals(frame: pd.DataFrame, predicted: np.ndarray, n: int, seed: int) -> tuple[list[str], dict]:
    """n window ids, half from each predicted class (seeded). A class with too few windows gives
    all it has; the shortfall is returned in the note so the caller can show it."""
    rng = np.random.default_rng(seed)
    quota = {0: n // 2, 1: n - n // 2}
    ids: list[str] = []
    note = {}
    for cls in (0, 1):
        pool = frame[ID_COL].to_numpy()[predicted == cls]
        take = min(quota[cls], len(pool))
        note[f"class_{cls}"] = {"wanted": quota[cls], "available": int(len(pool)), "taken": int(take)}
        ids.extend(str(i) for i in rng.choice(pool, size=take, replace=False))
    return ids, note


def balanced_head(chosen: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first n//2 factuals predicted 0 and n - n//2 predicted 1 (file order; a class short of
    its quota gives all it has and the other fills up), so --n takes a subset of a larger shared
    sample with the same class balance as a fresh one."""
    quota = {0: n // 2, 1: n - n // 2}
    counts = chosen["factual_pred"].value_counts().to_dict()
    for cls in (0, 1):
        spare = quota[cls] - counts.get(cls, 0)
        if spare > 0:
            quota[cls] -= spare
            quota[1 - cls] += spare
    keep = chosen.groupby("factual_pred", group_keys=False).cumcount() < chosen["factual_pred"].map(quota)
    return chosen[keep].reset_index(drop=True)


def read_factual_ids(path: Path) -> list[str]:
    """A JSON list of window ids, or an object with a "window_ids" list (factuals_<split>.json)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: factual id file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    ids = data.get("window_ids") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not ids:
        raise ValueError(f"{path}: expected a non-empty JSON list of window ids or an object with 'window_ids'")
    return [str(i) for i in ids]


# --- one CF ---------------------------------------------------------------------------------
def native_values(spec: DatasetSpec, row) -> dict:
    """Spec features of a row as plain JSON types (numbers as float/int, categories as str)."""
    out = {}
    for f in spec.features:
        v = row[f.name]
        if f.kind == "integer":
            out[f.name] = int(round(float(v)))
        elif f.kind == "continuous":
            out[f.name] = float(v)
        else:
            out[f.name] = str(v)
    return out


def rounded_cf(spec: DatasetSpec, raw: dict) -> dict:
    """A CF at display precision (what a reader sees and what the black box then predicts)."""
    out = {}
    for f in spec.features:
        v = raw[f.name]
        if f.kind == "integer":
            out[f.name] = int(round(float(v)))
        elif f.kind == "continuous":
            out[f.name] = f.round_value(v)
        else:
            out[f.name] = str(v)
    return out


def immutables_kept(spec: DatasetSpec, factual: dict, cf: dict) -> bool:
    return all(f.format_value(factual[f.name]) == f.format_value(cf[f.name]) for f in spec.immutable)


def group_report(spec: DatasetSpec, cf: dict) -> dict:
    """Whether the composition groups hold (same tolerance as the coherence metric), and their sums."""
    if not spec.groups:
        return {}
    frame = feature_frame([cf], spec, "CF")
    sums = {g.name: round(float(sum(cf[m] for m in g.members)), 6) for g in spec.groups}
    return {"groups_hold": bool(coherent(frame, spec)[0]), "group_sums": sums}


def choose_cf(
    spec: DatasetSpec, blackbox: BlackBox, factual: dict, desired: int, candidates: list[dict]
) -> tuple[dict, int, int]:
    """(rounded CF, its prediction, number of valid candidates): nearest valid, else nearest."""
    cfs = [rounded_cf(spec, c) for c in candidates]
    frame = feature_frame(cfs, spec, "CF candidates")
    preds = blackbox.predict(frame)
    dist = distance(frame, feature_frame([factual] * len(cfs), spec, "factual"), spec)
    valid = preds == desired
    pool = np.flatnonzero(valid) if valid.any() else np.arange(len(cfs))
    best = int(pool[np.argmin(dist[pool])])
    return cfs[best], int(preds[best]), int(valid.sum())


# --- time limit -----------------------------------------------------------------------------
class MethodTimeout(BaseException):
    """Raised inside a library call that ran past its limit. A BaseException, so a library's own
    `except Exception` cannot swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after `seconds` (SIGALRM; main thread only, else no limit). An outer
    timer (e.g. pytest-timeout's) is put back afterwards with its remaining time."""
    if not seconds or seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expire(signum, frame):
        raise MethodTimeout(f"no result within {seconds:g} s")

    start = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, _expire)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if outer_delay > 0:
            left = max(outer_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


# --- methods --------------------------------------------------------------------------------
def make_explainer(method: str, spec: DatasetSpec, train: pd.DataFrame, blackbox: BlackBox, cfg: BaselineConfig):
    """The library wrapper for a method: an object with explain(factual, desired) -> [raw CFs]."""
    if method.startswith("dice_"):
        from eval.baseline_dice import DiceExplainer

        return DiceExplainer(spec, train, blackbox, method=method.removeprefix("dice_"), seed=cfg.seed)
    if method == "cfnow":
        from eval.baseline_cfnow import CfnowExplainer

        return CfnowExplainer(
            spec, train, blackbox, seconds=cfg.cfnow_seconds, strategy=cfg.cfnow_strategy, seed=cfg.seed
        )
    if method == "nice":
        from eval.baseline_nice import NiceExplainer

        return NiceExplainer(spec, train, blackbox, optimization=cfg.nice_optimization, seed=cfg.seed)
    raise ValueError(f"no explainer for method '{method}'")


def base_record(method: str, row: pd.Series, factual: dict, pred: int) -> dict:
    """The fields every record of this factual shares, whatever the method's outcome."""
    return {
        "window_id": str(row[ID_COL]),
        "participant_id": str(row[GROUP_COL]),
        "method": method,
        "candidate": 0,
        "factual": factual,
        "factual_pred": pred,
        "desired_class": 1 - pred,
    }


def failure_record(base: dict, status: str, message: str, seconds: float) -> CFRecord:
    return CFRecord(**base, parse_status=status, seconds=seconds, error=message)


def cf_record(
    spec: DatasetSpec, blackbox: BlackBox, base: dict, candidates: list[dict], seconds: float,
    pick: str = "nearest_valid",
) -> CFRecord:
    """The record of a method's answer: the CF its protocol picks ("first": the library's first,
    "nearest_valid": the valid one nearest the factual), or "no_cf" when it returned none."""
    if not candidates:
        return failure_record(base, "no_cf", "the method returned no counterfactual", seconds)
    pool = candidates[:1] if pick == "first" else candidates
    cf, cf_pred, n_valid = choose_cf(spec, blackbox, base["factual"], base["desired_class"], pool)
    return CFRecord(
        **base,
        cf=cf,
        parse_status="ok",
        immutables_ok=immutables_kept(spec, base["factual"], cf),
        cf_pred=cf_pred,
        seconds=seconds,
        extra={"candidates": len(candidates), "pick": pick, "valid_candidates_seen": n_valid,
               **group_report(spec, cf)},
    )


def run_search_method(
    method: str,
    explain: Callable[[dict, int], list[dict]],
    todo: list[dict],
    spec: DatasetSpec,
    blackbox: BlackBox,
    writers: dict[str, tuple[RecordWriter, str]],
    timeout_seconds: float,
    progress: bool,
) -> dict[str, Counter]:
    """One library call per factual, timed with perf_counter; every outcome becomes a record in
    each row still missing it ({row: (writer, pick)}: the paper's first CF, our nearest valid)."""
    counts: dict[str, Counter] = {row: Counter() for row in writers}
    for base in tqdm(todo, desc=method, disable=not progress, unit="cf"):
        rows = {row: wp for row, wp in writers.items() if not wp[0].is_done(base["window_id"], row)}
        start = time.perf_counter()
        try:
            with time_limit(timeout_seconds):
                candidates = explain(base["factual"], base["desired_class"])
            seconds = time.perf_counter() - start
            records = {row: cf_record(spec, blackbox, {**base, "method": row}, candidates, seconds, pick)
                       for row, (_, pick) in rows.items()}
        except MethodTimeout as e:
            failure = ("timeout", str(e))
        except Exception as e:  # a failure on one factual (or an unusable answer) must not end the run
            failure = ("error", f"{type(e).__name__}: {e}")
        else:
            failure = None
        if failure:
            seconds = time.perf_counter() - start
            records = {row: failure_record({**base, "method": row}, *failure, seconds) for row in rows}
        for row, record in records.items():
            rows[row][0].write(record)
            counts[row][record.parse_status] += 1
    return counts


def run_teacher(
    todo: list[dict],
    train: pd.DataFrame,
    spec: DatasetSpec,
    blackbox: BlackBox,
    writer: RecordWriter,
    progress: bool,
    per_factual: int = 1,
) -> Counter:
    """The teacher (sensecf.teacher) in one batched call; its per-row seconds go in the records.
    With per_factual > 1, a factual's further distinct CFs are candidates 1, 2, ..."""
    from sensecf.teacher import teacher_cfs

    counts: Counter = Counter()
    if not todo:
        return counts
    factuals = pd.DataFrame([base["factual"] for base in todo])
    start = time.perf_counter()
    try:
        result = teacher_cfs(factuals, train, spec, blackbox, per_factual=per_factual)
    except Exception as e:
        seconds = (time.perf_counter() - start) / len(todo)
        for base in todo:
            writer.write(failure_record(base, "error", f"{type(e).__name__}: {e}", seconds))
        counts["error"] += len(todo)
        return counts
    rows = zip(todo, result.cfs, result.more, result.detail, result.seconds, strict=True)
    for base, cf, more, why, seconds in tqdm(rows, total=len(todo), desc="teacher", disable=not progress):
        if cf is None:
            records = [failure_record(base, "no_cf", f"teacher: {why}", float(seconds))]
        else:
            found = [cf, *more]  # the factual's share of the batch time, split over its CFs
            records = [cf_record(spec, blackbox, {**base, "candidate": j}, [c], float(seconds) / len(found))
                       for j, c in enumerate(found)]
        for record in records:
            writer.write(record)
            counts[record.parse_status] += 1
    return counts


# --- the stage ------------------------------------------------------------------------------
def records_dir(run: RunDir, split: str) -> Path:
    """Test-split records sit in cfs/ (Table III reads them); other splits in cfs/<split>/."""
    return run.cfs if split == "test" else run.cfs / split


def factuals_file(run: RunDir, split: str) -> Path:
    return run.cfs / f"factuals_{split}.json"


def select_factuals(
    run: RunDir,
    split: str,
    n: int,
    seed: int,
    factual_ids: list[str] | None = None,
) -> tuple[pd.DataFrame, DatasetSpec, BlackBox, pd.DataFrame, dict]:
    """(factual rows with a `factual_pred` column, spec, black box, training rows, sample note).

    Writes cfs/factuals_<split>.json; refuses to overwrite one that holds a different sample. A
    shared sample of the same seed with more than n ids gives its balanced first n instead."""
    df, spec = run.load_cohort()
    blackbox = BlackBox.load(run.model, spec)
    train = df[df[SPLIT_COL] == "train"].reset_index(drop=True)
    pool = df[df[SPLIT_COL] == split].reset_index(drop=True)
    if pool.empty:
        raise ValueError(f"{run.features}: no rows with {SPLIT_COL} == '{split}'")
    predicted = blackbox.predict(pool)
    path = factuals_file(run, split)
    shared = json.loads(path.read_text()) if path.exists() and factual_ids is None else {}
    if shared.get("seed") == seed and len(shared.get("window_ids", [])) > n:
        # A larger sample of the same seed is already shared (the LLM rows' 200, say): explain its
        # balanced first n (as eval.generate --n does), so the slow methods' factuals are a subset.
        rows = pool.assign(factual_pred=predicted).set_index(pool[ID_COL].astype(str))
        missing = [i for i in shared["window_ids"] if i not in rows.index]
        if missing:
            raise ValueError(f"{path}: {len(missing)} ids are not '{split}' windows of {run.features}: {missing[:5]}")
        chosen = balanced_head(rows.loc[shared["window_ids"]], n)
        note = {"first_of_shared_sample": len(shared["window_ids"]), "taken": len(chosen)}
        return chosen, spec, blackbox, train, note
    if factual_ids is None:
        ids, note = sample_factuals(pool, predicted, n, seed)
    else:
        known = set(pool[ID_COL].astype(str))
        missing = [i for i in factual_ids if i not in known]
        if missing:
            raise ValueError(f"{len(missing)} factual ids are not '{split}' windows of {run.features}: {missing[:5]}")
        ids, note = list(dict.fromkeys(factual_ids)), {"given": len(factual_ids)}
    if path.exists() and read_factual_ids(path) != ids:
        raise ValueError(
            f"{path} holds a different factual sample; reuse it with --factual-ids {path}, "
            "or delete it (and the records made from it) to draw a new one"
        )
    write_json(path, {"split": split, "seed": seed, "n": n, "note": note, "window_ids": ids}, indent=1)
    order = {i: k for k, i in enumerate(ids)}
    chosen = pool.assign(factual_pred=predicted)[pool[ID_COL].astype(str).isin(order)]
    chosen = chosen.sort_values(ID_COL, key=lambda s: s.astype(str).map(order)).reset_index(drop=True)
    return chosen, spec, blackbox, train, note


def run_baselines(
    run: RunDir,
    methods: list[str],
    *,
    split: str = "test",
    n: int = 200,
    factual_ids: list[str] | None = None,
    cfg: BaselineConfig = BaselineConfig(),
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Run each method on the shared sample; returns {method: {status: count}} plus failures."""
    with run_lock(run.root):
        return _run_baselines_locked(run, methods, split, n, factual_ids, cfg, overwrite, progress)


def method_rows(method: str) -> dict[str, str]:
    """{row: pick} of a method: the paper's first CF and our nearest valid of k for a library that
    returns several, the one row of NICE (one CF by construction) and of the teacher."""
    if method not in SEVERAL_CANDIDATES:
        return {method: protocols.PROTOCOLS["paper"].baseline_pick}
    return {protocols.row_name(method, name, "baseline"): p.baseline_pick for name, p in protocols.PROTOCOLS.items()}


def method_parts(run: RunDir, method: str, cfg: BaselineConfig, ids: list[str], row: str, pick: str) -> dict:
    """A baseline CF file's fingerprint: its search settings, pick rule, classifier, cohort and factual set."""
    settings = {"seed": cfg.seed, "timeout_seconds": cfg.timeout_seconds, "pick": pick}
    if method.startswith("cfnow"):
        settings.update(cfnow_seconds=cfg.cfnow_seconds, cfnow_strategy=cfg.cfnow_strategy)
    elif method.startswith("nice"):
        settings.update(nice_optimization=cfg.nice_optimization)
    elif method == "teacher":
        settings.update(teacher_per_factual=cfg.teacher_per_factual)
    return fingerprint.cf_parts(run, {"method": row, **settings}, ids)


def _run_baselines_locked(run, methods, split, n, factual_ids, cfg, overwrite, progress) -> dict:
    chosen, spec, blackbox, train, note = select_factuals(run, split, n, cfg.seed, factual_ids)
    out_dir = records_dir(run, split)
    wanted = set(chosen[ID_COL].astype(str))
    summary: dict = {"split": split, "n_factuals": len(chosen), "sample": note, "methods": {}, "failed_methods": {}}
    ids = read_factual_ids(factuals_file(run, split))
    for method in methods:
        rows = method_rows(method)
        with ExitStack() as stack:
            writers = {}
            for row, pick in rows.items():
                parts = method_parts(run, method, cfg, ids, row, pick)
                writer = stack.enter_context(RecordWriter(out_dir / f"{row}.jsonl", parts, overwrite=overwrite))
                writers[row] = (writer, pick)
                if writer.moved_aside:
                    summary.setdefault("moved_aside", {})[row] = str(writer.moved_aside)
            todo = [
                base_record(method, row, native_values(spec, row), int(row["factual_pred"]))
                for _, row in chosen.iterrows()
                if not all(w.is_done(str(row[ID_COL]), name) for name, (w, _) in writers.items())
            ]
            skipped = len(chosen) - len(todo)
            try:
                if method == "teacher":
                    counts = {method: run_teacher(todo, train, spec, blackbox, writers[method][0], progress,
                                                  cfg.teacher_per_factual)}
                else:
                    explainer = make_explainer(method, spec, train, blackbox, cfg)
                    counts = run_search_method(
                        method, explainer.explain, todo, spec, blackbox, writers, cfg.timeout_seconds, progress
                    )
            except Exception as e:  # set-up failed (bad data for this library): go on with the others
                summary["failed_methods"][method] = f"{type(e).__name__}: {e}"
                continue
        for row in rows:
            all_records = [r for r in read_records(out_dir / f"{row}.jsonl") if r.window_id in wanted]
            summary["methods"][row] = {
                "protocol": protocols.protocol_of(row),
                "written": dict(counts[row]),
                "already_done": skipped,
                "status": dict(Counter(r.parse_status for r in all_records)),
                "seconds_per_cf": float(np.mean([r.seconds for r in all_records])) if all_records else None,
            }
    write_provenance(
        out_dir / "baselines",
        config={"methods": methods, "split": split, "n": n, **asdict(cfg), "summary": summary},
        inputs=[run.features, run.spec, run.model, factuals_file(run, split)],
        seed=cfg.seed,
    )
    return summary


def wandb_aggregates(summary: dict) -> dict:
    """Counts and timings only: "<method>/<status>" and "<method>/seconds_per_cf"."""
    out: dict = {"n_factuals": summary["n_factuals"]}
    for method, info in summary["methods"].items():
        out.update({f"{method}/{status}": count for status, count in info["status"].items()})
        if info["seconds_per_cf"] is not None:
            out[f"{method}/seconds_per_cf"] = info["seconds_per_cf"]
    return out


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    run: Path = typer.Option(..., help="run directory with cohort/ and classifier/"),
    methods: str = typer.Option("dice,cfnow,nice,teacher", help="comma-separated: dice, cfnow, nice, teacher"),
    n: int = typer.Option(200, help="number of factuals, split evenly between the two predicted classes"),
    seed: int = typer.Option(0, help="seed of the factual sample and of the searches"),
    split: str = typer.Option("test", help="split to draw factuals from (train: for augmentation)"),
    factual_ids: Path | None = typer.Option(None, help="JSON list of window ids to explain instead of sampling"),
    cfnow_seconds: float = typer.Option(2.0, help="cfnow's limit_seconds (its fine-tuning budget per CF)"),
    cfnow_strategy: str = typer.Option("greedy", help="cfnow cf_strategy: greedy, random, random-sequential"),
    dice_method: list[str] = typer.Option(["random"], help="DiCE search for 'dice' (repeatable): random, genetic"),
    nice_optimization: str = typer.Option("sparsity", help="NICE optimization: sparsity, proximity, none"),
    timeout_seconds: float = typer.Option(60.0, help="hard limit per CF; past it the record is a 'timeout'"),
    teacher_per_factual: int = typer.Option(
        1, min=1, help="teacher: CFs per factual, from its nearest valid neighbours (augmentation); others write one"
    ),
    overwrite: bool = typer.Option(False, help="records made with other settings: move them aside and start afresh"),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """Write one CF record per factual and method to RUN/cfs/<method>.jsonl."""
    try:
        names = expand_methods(methods.split(","), dice_method)
        ids = read_factual_ids(factual_ids) if factual_ids else None
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    cfg = BaselineConfig(seed, cfnow_seconds, cfnow_strategy, nice_optimization, timeout_seconds, teacher_per_factual)
    run_dir = RunDir(run)
    outputs = [records_dir(run_dir, split) / f"{row}.jsonl" for name in names for row in method_rows(name)]
    # W&B (WANDB_MODE decides; offline by default): status counts and seconds per CF, the CF files
    with stage_run(run_dir, "baselines", inputs=[run_dir.model], outputs=outputs) as wb:
        summary = run_baselines(run_dir, names, split=split, n=n, factual_ids=ids, cfg=cfg, overwrite=overwrite,
                                progress=not quiet)
        log_metrics(wb, wandb_aggregates(summary))
    for method, moved in summary.get("moved_aside", {}).items():
        typer.echo(f"{method}: the records made with other settings were moved to {moved}")
    for cls, c in summary["sample"].items():
        if isinstance(c, dict) and c["taken"] < c["wanted"]:
            typer.echo(f"note: {cls} has only {c['available']} predicted windows in '{split}'; took all of them")
    for method, info in summary["methods"].items():
        status = ", ".join(f"{k} {v}" for k, v in sorted(info["status"].items()))
        typer.echo(
            f"{method}: {status}; {sum(info['written'].values())} new, {info['already_done']} already done; "
            f"{info['seconds_per_cf'] or 0:.2f} s per CF"
        )
    for method, error in summary["failed_methods"].items():
        typer.echo(f"{method}: FAILED to start: {error}", err=True)
    if summary["failed_methods"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    run_cli(app)
