"""Weights & Biases for every stage: one W&B run per stage, grouped by run directory.

    with stage_run(run, "classifier", inputs=[run.features], outputs=[run.classifier / "model.skops"]) as wb:
        ...
    with stage_run(run, "baselines", config) as wb:
        log_metrics(wb, {"validity": 0.93})
        log_table(wb, "table3", table3_df)
        log_image(wb, "fig6", run.eval / "fig6.png")
        log_image(wb, "fig8", run.eval / "fig8.png", per_window=True, log_rows=user_asked)

The run's job_type is the stage: the experiment runner's stage name ($SENSECF_STAGE) when it runs
the stage, else the CLI's own. Its config is the CLI's options (click's current parameters) unless
given. Inputs and outputs are run-directory paths; each names an artifact (sensecf.wandb_artifacts):
outputs are logged as artifacts once the stage's body succeeded, inputs are used (online) or named
in the config for `python -m sensecf.wandb_sync RUN` to link after syncing (offline).

Offline unless WANDB_MODE says otherwise; files go under RUN/wandb/offline-run-* (beside Axolotl's
training run), uploaded with their lineage by `python -m sensecf.wandb_sync RUN`.

Privacy (DESIGN.md): configs lose every key that looks like a secret, console output is not
captured, and only aggregates are logged unless a caller passes `log_rows=True` (the user's
explicit flag): a row-level table, a list of per-row values or a per-window figure is refused.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Number
from pathlib import Path

import pandas as pd

from sensecf.rundir import GROUP_COL, ID_COL, RunDir
from sensecf.wandb_artifacts import ArtifactRef, artifact_ref, inside

DEFAULT_PROJECT = "sensecf"
STAGE_ENV = "SENSECF_STAGE"  # set by the experiment runner: the recipe's stage name
INPUTS_KEY = "sensecf_inputs"  # config entry naming the run's input artifacts (wandb_sync links them)
SECRET_WORDS = ("key", "token", "secret", "password")
# A table is treated as row-level data (refused without log_rows=True) when it carries row
# identifiers or has more rows than an aggregate table (Table III, a ratio sweep) ever needs.
ROW_ID_COLUMNS = (ID_COL, GROUP_COL)
MAX_AGGREGATE_ROWS = 500


class RowLevelDataError(ValueError):
    """Row-level data offered to W&B without log_rows=True."""


def strip_secrets(config: dict) -> dict:
    """A copy without keys containing key/token/secret/password (case-insensitive), at any depth."""
    out = {}
    for k, v in config.items():
        if any(word in str(k).lower() for word in SECRET_WORDS):
            continue
        out[k] = strip_secrets(v) if isinstance(v, dict) else v
    return out


def _configure_environment() -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")


def _cli_options() -> dict:
    """The running CLI's options, as given or defaulted (paths as text)."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in ctx.params.items()}


def stage_job_type(stage: str) -> str:
    return os.environ.get(STAGE_ENV) or stage


def _refs(run: RunDir, paths) -> tuple[list[ArtifactRef], list[str]]:
    """The artifacts holding `paths` (those inside the run directory that exist), and the paths no
    artifact kind covers (named in the config rather than lost)."""
    refs, untracked = {}, []
    synthetic = run.is_synthetic()  # once: it hashes the cohort table
    for path in (p for p in paths if inside(run, p) and Path(p).exists()):
        try:
            ref = artifact_ref(run, path, synthetic)
            refs[ref.name] = ref
        except ValueError:
            untracked.append(str(path))
    return list(refs.values()), untracked


@contextmanager
def stage_run(run: RunDir, stage: str, config: dict | None = None, *, inputs=(), outputs=(),
              log_rows: bool = False, group: str | None = None, mode: str | None = None,
              creates_run: bool = False) -> Iterator:
    """A W&B run for one stage: job_type = the stage, group = the run directory's name, its inputs
    named in the config (and used, online) and its outputs logged as artifacts on success. `mode`
    overrides WANDB_MODE for this run (a stage's --wandb-mode). Logging the outputs never fails a
    stage whose work is done: an error there is a warning. Only a stage that `creates_run` (a
    release or cohort) makes a missing run directory; for any other the stage itself says it is
    missing, and W&B stays off rather than create it."""
    _configure_environment()
    import wandb

    if creates_run:
        run.root.mkdir(parents=True, exist_ok=True)
    elif not run.root.is_dir():
        mode = "disabled"  # and no dir: wandb.init makes the folder it is given even then
    used, untracked = _refs(run, inputs)
    config = strip_secrets(_cli_options() if config is None else config)
    job_type = stage_job_type(stage)
    wb = wandb.init(
        project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
        dir=str(run.root) if run.root.is_dir() else None,
        group=group or run.root.resolve().name,
        job_type=job_type,
        name=f"{run.root.resolve().name}-{job_type}",
        config={**config, INPUTS_KEY: [ref.input_entry() for ref in used], "sensecf_untracked_inputs": untracked},
        reinit="create_new",
        mode=mode or os.environ["WANDB_MODE"],  # read now: W&B's settings singleton keeps the first mode
        settings=wandb.Settings(console="off", save_code=False),
    )
    try:
        if not wb.offline and not wb.disabled:  # offline W&B cannot declare inputs: wandb_sync links them
            _use_inputs(wb, used, log_rows)
        yield wb
        if not wb.disabled:
            _log_outputs(wb, run, outputs, log_rows)
    except BaseException:
        wb.finish(exit_code=1)
        raise
    wb.finish()


def _use_inputs(wb, used: list[ArtifactRef], log_rows: bool) -> None:
    try:
        for ref in used:
            wb.use_artifact(ref.build(log_rows))
    except Exception as e:  # noqa: BLE001 - the lineage is a convenience; the stage's work is not
        print(f"warning: W&B: the stage's inputs were not declared: {type(e).__name__}: {e}", file=sys.stderr)


def _log_outputs(wb, run: RunDir, outputs, log_rows: bool) -> None:
    made, untracked = _refs(run, outputs)
    try:
        for ref in made:
            wb.log_artifact(ref.build(log_rows), aliases=["latest", ref.alias()])
        if untracked:
            wb.config.update({"sensecf_untracked_outputs": untracked})
    except Exception as e:  # noqa: BLE001 - the stage's files are written; W&B's copy is a convenience
        print(f"warning: W&B: the stage's artifacts were not logged: {type(e).__name__}: {e}", file=sys.stderr)


def log_numbers(wb_run, values: dict, prefix: str = "") -> None:
    """The numeric entries of a stage's summary (booleans, text and nested values left out)."""
    log_metrics(wb_run, {f"{prefix}{k}": v for k, v in values.items()
                         if isinstance(v, int | float) and not isinstance(v, bool)})


def _is_row_level(df: pd.DataFrame) -> str | None:
    ids = [c for c in ROW_ID_COLUMNS if c in df.columns or c in (df.index.names or [])]
    if ids:
        return f"it has row identifier columns {ids}"
    if len(df) > MAX_AGGREGATE_ROWS:
        return f"it has {len(df)} rows (more than {MAX_AGGREGATE_ROWS})"
    return None


def log_table(wb_run, name: str, df: pd.DataFrame, *, log_rows: bool = False) -> None:
    """Log a table; a row-level one (see ROW_ID_COLUMNS / MAX_AGGREGATE_ROWS) needs log_rows=True."""
    import wandb

    why = _is_row_level(df)
    if why and not log_rows:
        raise RowLevelDataError(f"W&B table '{name}' looks row-level ({why}); pass log_rows=True to log it anyway")
    wb_run.log({name: wandb.Table(dataframe=df.reset_index(drop=not any(df.index.names)))})


def log_image(wb_run, name: str, path: str | Path, *, per_window: bool = False, log_rows: bool = False) -> None:
    """Log an image; one that plots single windows (`per_window`, e.g. Fig. 8) needs log_rows=True."""
    import wandb

    if per_window and not log_rows:
        raise RowLevelDataError(f"W&B image '{name}' plots single windows; pass log_rows=True to log it anyway")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image to log to W&B not found")
    wb_run.log({name: wandb.Image(str(path))})


def log_metrics(wb_run, metrics: dict, *, step: int | None = None) -> None:
    """Scalars only (numbers, strings, booleans); lists or arrays would be per-row values."""
    bad = {k: type(v).__name__ for k, v in metrics.items() if not isinstance(v, Number | str | bool)}
    if bad:
        raise RowLevelDataError(f"log_metrics takes scalars only; got {bad} (use log_table for tables)")
    wb_run.log(dict(metrics), step=step)
    wb_run.summary.update(metrics)
