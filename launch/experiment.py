"""Run an experiment recipe (recipes/experiments/*.yml): every stage in order, each a CLI.

A stage is skipped when its outputs exist and its stamp (command + hashes of its input
files) is unchanged, so a re-run is cheap and editing one stage re-runs it and what follows
from its outputs. Wall time per stage goes to RUN/stages.json.

    python -m launch.experiment recipes/experiments/demo.yml [--run runs/demo] [--force STAGE]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import typer
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from rich.console import Console

from sensecf.rundir import file_sha256

console = Console()


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    cmd: str
    inputs: list[str] = []
    outputs: list[str]


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    run: str
    description: str = ""
    env: dict[str, str] = {}
    stages: list[Stage]


def load_experiment(path: Path) -> Experiment:
    try:
        return Experiment.model_validate(yaml.safe_load(path.read_text()))
    except FileNotFoundError:
        raise typer.BadParameter(f"{path}: experiment recipe not found") from None
    except ValidationError as e:
        raise typer.BadParameter(f"{path}: invalid experiment recipe: {e}") from None


def _fill(text: str, run: str, env: dict[str, str] | None = None) -> str:
    """{run}, {python} and ${VAR} (from the environment; an unset one is an error)."""
    text = text.replace("{run}", run).replace("{python}", shlex.quote(sys.executable))
    env = os.environ if env is None else env
    unset = [v for v in re.findall(r"\$\{(\w+)\}", text) if v not in env]
    if unset:
        raise typer.BadParameter(f"set the environment variable(s) {unset} used by: {text}")
    return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], text)


def stage_stamp(cmd: str, inputs: list[Path]) -> str:
    h = hashlib.sha256(cmd.encode())
    for p in inputs:
        h.update(str(p).encode())
        h.update(file_sha256(p).encode() if p.is_file() else b"<missing>")
    return h.hexdigest()


def run_experiment(exp: Experiment, run: str, force: set[str], only: set[str]) -> list[dict]:
    run_dir = Path(run)
    stamps_dir = run_dir / ".stages"
    stamps_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **exp.env}
    times = []
    for i, stage in enumerate(exp.stages, 1):
        if only and stage.name not in only:
            continue
        cmd = _fill(stage.cmd, run, env)
        outputs = [Path(_fill(o, run, env)) for o in stage.outputs]
        stamp = stage_stamp(cmd, [Path(_fill(p, run, env)) for p in stage.inputs])
        stamp_file = stamps_dir / f"{stage.name}.stamp"
        fresh = all(o.exists() for o in outputs) and stamp_file.exists() and stamp_file.read_text() == stamp
        header = f"[{i}/{len(exp.stages)}] {stage.name}"
        if fresh and stage.name not in force:
            console.rule(f"{header}: up to date, skipped")
            times.append({"stage": stage.name, "seconds": 0.0, "skipped": True})
            _write_times(run_dir, times)
            continue
        console.rule(header)
        console.print(f"$ {cmd}", style="dim")
        t0 = time.perf_counter()
        proc = subprocess.run(shlex.split(cmd), env=env)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            console.print(f"[red]stage '{stage.name}' failed (exit {proc.returncode}) after {seconds:.0f} s[/red]")
            raise typer.Exit(proc.returncode)
        missing = [str(o) for o in outputs if not o.exists()]
        if missing:
            console.print(f"[red]stage '{stage.name}' finished but did not write {missing}[/red]")
            raise typer.Exit(1)
        stamp_file.write_text(stamp)
        console.print(f"{stage.name}: {seconds:.1f} s")
        times.append({"stage": stage.name, "seconds": round(seconds, 1), "skipped": False})
        _write_times(run_dir, times)
    return times


def _write_times(run_dir: Path, times: list[dict], **extra) -> None:
    """Written after every stage, so a later stage (the report) sees the times so far."""
    (run_dir / "stages.json").write_text(json.dumps({**extra, "stages": times}, indent=2))


def main(
    recipe: Path = typer.Argument(..., help="experiment recipe, e.g. recipes/experiments/demo.yml"),
    run: str | None = typer.Option(None, help="run directory (default: the recipe's `run`)"),
    force: list[str] = typer.Option([], help="re-run this stage even if up to date (repeatable)"),
    only: list[str] = typer.Option([], help="run only these stages (repeatable)"),
) -> None:
    exp = load_experiment(recipe)
    run = run or exp.run
    t0 = time.perf_counter()
    times = run_experiment(exp, run, set(force), set(only))
    total = time.perf_counter() - t0
    _write_times(Path(run), times, recipe=str(recipe), total_seconds=round(total, 1))
    console.rule(f"{exp.name}: done in {total / 60:.1f} min; artifacts under {run}/")
    report = Path(run, "report.md")
    if report.exists():
        console.print(f"report: {report}")


if __name__ == "__main__":
    typer.run(main)
