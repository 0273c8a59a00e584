"""Upload a run directory's offline W&B runs and link their lineage: one command for every run.

    python -m sensecf.wandb_sync runs/demo            # needs `wandb login` (or WANDB_API_KEY)
    python -m sensecf.wandb_sync runs/demo --dry-run  # what would be uploaded and linked, offline

Every stage's run and Axolotl's training runs lie in RUN/wandb/offline-run-*. Each is uploaded with
`wandb sync`, oldest first (an input artifact is logged before the run that used it). Offline W&B
cannot declare a run's inputs, so each stage named them in its config (`sensecf_inputs`: artifact
name and the `sha256-…` alias of the version it read, sensecf.wandb_artifacts); once everything is
uploaded, each is declared with the public API's `Run.use_artifact`, which draws the lineage graph
cohort -> classifier -> SFT -> adapter -> CFs -> tables. Uploading sends what the runs hold: row-level
files only for synthetic cohorts or where the user opted in (sensecf.wandb_artifacts).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from sensecf.cli import InputError, run_cli
from sensecf.wandb_log import INPUTS_KEY
from sensecf.wandb_offline import OfflineRun, read_offline_runs


@dataclass(frozen=True)
class Link:
    run_id: str
    job_type: str
    project: str
    artifact: str
    alias: str


def sync_plan(run: Path) -> tuple[list[OfflineRun], list[Link]]:
    """The offline runs to upload (oldest first) and the input links to declare afterwards. An input
    whose version no run of this directory logged is left out: linking it would fail."""
    wandb_dir = run / "wandb"
    if not wandb_dir.is_dir():
        raise InputError(wandb_dir, None, "no W&B folder: run a stage first (its runs land here)")
    runs = read_offline_runs(wandb_dir)
    if not runs:
        raise InputError(wandb_dir, None, "no offline-run-* folders to sync")
    logged = {(a.name, alias) for r in runs for a in r.artifacts for alias in a.aliases}
    links = [Link(r.id, r.job_type, r.project, entry["artifact"], entry["alias"])
             for r in runs for entry in r.config.get(INPUTS_KEY) or []
             if (entry["artifact"], entry["alias"]) in logged]
    return runs, links


def declare_links(api, links: list[Link], entity: str) -> None:
    """Declare each run's inputs with the public API (after the runs were uploaded)."""
    for link in links:
        api.run(f"{entity}/{link.project}/{link.run_id}").use_artifact(
            api.artifact(f"{entity}/{link.project}/{link.artifact}:{link.alias}"))


def main(
    run: Path = typer.Argument(..., help="run directory (its wandb/ folder holds the offline runs)"),
    entity: str | None = typer.Option(None, help="W&B entity (default: your login's default entity)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and links; upload nothing"),
) -> None:
    """Upload every offline W&B run of RUN and declare each stage's input artifacts."""
    runs, links = sync_plan(run)
    for r in runs:
        typer.echo(f"run {r.id} {r.job_type or '-'} (group {r.group or '-'}): "
                   f"{len(r.artifacts)} artifact(s) {', '.join(a.name for a in r.artifacts)}")
    for link in links:
        typer.echo(f"link {link.job_type} ({link.run_id}) <- {link.artifact}:{link.alias}")
    if dry_run:
        return
    import wandb

    api = wandb.Api()
    entity = entity or api.default_entity
    wandb_cli = shutil.which("wandb", path=str(Path(sys.executable).parent)) or "wandb"
    for r in runs:  # uploaded where the links look them up
        subprocess.run([wandb_cli, "sync", "--entity", entity, "--project", r.project, str(r.folder)], check=True)
    declare_links(api, links, entity)
    typer.echo(f"synced {len(runs)} runs, declared {len(links)} inputs")


if __name__ == "__main__":
    run_cli(main)
