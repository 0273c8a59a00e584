"""Run an experiment recipe (recipes/experiments/*.yml): every stage in order, each a CLI.

A stage is skipped when its outputs exist and its stamp is unchanged. The stamp holds four
parts: the filled command, the hashes of its declared input files, the hashes of its code (the
source of the project modules it runs with `-m`, their project imports, transitively, and the
prompt templates) and its environment (Python, installed packages, the recipe's `env`). A re-run
names the part that changed. The stamp is removed before a stage runs and written only once the
stage exited 0 with every output in place, so a killed or failed stage runs again. The runner
holds the run directory's lock throughout; wall time per stage goes to RUN/stages.json.

    python -m launch.experiment recipes/experiments/demo.yml [--run runs/demo] [--force STAGE]
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from rich.console import Console

from sensecf.atomic import HELD_ENV, LockedError, run_lock, write_json, write_text
from sensecf.cli import InputError, one_line, run_cli
from sensecf.fingerprint import sha256_file as file_sha256
from sensecf.wandb_log import STAGE_ENV

console = Console()

# Where the project's code lives: a module under these packages is hashed into a stage's stamp.
CODE_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("sensecf", "dataset_builders", "eval", "augment", "launch", "prompts", "benchmarks")
DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
STAMP_PARTS = ("command", "inputs", "code", "environment")


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
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "experiment recipe not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        raise InputError(path, f"line {mark.line + 1}" if mark else None, f"not valid YAML: {e.problem}") from None
    try:
        return Experiment.model_validate(data)
    except ValidationError as e:
        raise InputError(path, None, f"invalid experiment recipe: {one_line(e)}") from None


def _fill(text: str, run: str, env: dict[str, str] | None = None) -> str:
    """{run}, {python} and ${VAR} (from the environment; an unset one is an error)."""
    text = text.replace("{run}", run).replace("{python}", shlex.quote(sys.executable))
    env = os.environ if env is None else env
    unset = [v for v in re.findall(r"\$\{(\w+)\}", text) if v not in env]
    if unset:
        raise ValueError(f"set the environment variable(s) {unset} used by: {text}")
    return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], text)


# ---- code: the project source a stage runs ---------------------------------------------------

def _module_files(name: str, root: Path) -> list[Path]:
    """The files importing `name` executes: each package's __init__.py and the module itself
    (for `-m package`, its __main__.py too). Empty when `name` is not project code."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return []
    files = [root.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
    as_module, as_package = root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")
    if as_module.is_file():
        files.append(as_module)
    elif as_package.is_file():
        files += [as_package, as_package.with_name("__main__.py")]
    else:
        return []
    return [f for f in files if f.is_file()]


def _imported_names(source: Path, module: str) -> set[str]:
    """Every module `source` may import (function-level imports too; `from a import b` may
    name the module a.b; a string naming a module may be imported by runpy or importlib, as
    the dataset_builders dispatcher does). Relative imports are resolved against `module`."""
    package = module if source.name in ("__init__.py", "__main__.py") else module.rpartition(".")[0]
    names: set[str] = set()
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except SyntaxError:  # the stage will fail on it; its own hash is still in the stamp
        return names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base:
                names.add(base)
            names.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED_NAME.match(node.value):
            names.add(node.value)  # kept only if it resolves to a project file
    return names


def code_files(modules: list[str], root: Path | None = None) -> list[Path]:
    """The project source files behind `modules`, transitively, plus every non-Python file of
    the packages they are in (prompt templates, a builder's spec YAML, launch scripts)."""
    root = Path(root or CODE_ROOT)
    seen_modules: set[str] = set()
    files: set[Path] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen_modules:
            continue
        seen_modules.add(module)
        for f in _module_files(module, root):
            if f in files:
                continue
            files.add(f)
            owner = ".".join(f.relative_to(root).with_suffix("").parts)
            owner = owner.removesuffix(".__init__").removesuffix(".__main__")
            todo.extend(_imported_names(f, owner))
    for package in {f.relative_to(root).parts[0] for f in files}:
        files.update(p for p in (root / package).rglob("*")
                     if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts)
    return sorted(files)


def stage_modules(cmd: str) -> list[str]:
    """The modules a command runs: every `-m pkg.module` in it."""
    words = shlex.split(cmd)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"]


def code_part(cmd: str, root: Path | None = None) -> dict[str, str]:
    root = Path(root or CODE_ROOT)
    return {str(f.relative_to(root)): file_sha256(f) for f in code_files(stage_modules(cmd), root)}


# ---- environment: the interpreter and what is installed ---------------------------------------

def installed_distributions() -> dict[str, str]:
    """name -> version of every installed distribution (the first one found for a name)."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(name.lower(), dist.version)
    return dict(sorted(found.items()))


def environment_part(exp_env: dict[str, str]) -> dict:
    return {"python": platform.python_version(), "packages": installed_distributions(),
            "env": dict(sorted(exp_env.items()))}


# ---- the stamp -------------------------------------------------------------------------------

def stage_stamp(cmd: str, inputs: list[Path], environment: dict, code_root: Path | None = None) -> dict:
    return {
        "command": cmd,
        "inputs": {str(p): file_sha256(p) if p.is_file() else "<missing>" for p in inputs},
        "code": code_part(cmd, code_root),
        "environment": environment,
    }


def _changed_keys(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _listed(names: list[str], most: int = 3) -> str:
    more = f", +{len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def stamp_changes(old: dict | None, new: dict) -> list[str]:
    """Why a stage must re-run, one phrase per changed part; [] when the stamp is unchanged."""
    if old is None:
        return ["no stamp (never finished)"]
    if not isinstance(old, dict) or set(old) != set(STAMP_PARTS):
        return ["stamp from an older runner"]
    reasons = []
    if old["command"] != new["command"]:
        reasons.append("command changed")
    if old["inputs"] != new["inputs"]:
        reasons.append(f"inputs changed ({_listed(_changed_keys(old['inputs'], new['inputs']))})")
    if old["code"] != new["code"]:
        reasons.append(f"code changed ({_listed(_changed_keys(old['code'], new['code']))})")
    if old["environment"] != new["environment"]:
        before, after = old["environment"], new["environment"]
        what = []
        if before.get("python") != after.get("python"):
            what.append(f"python {before.get('python')} -> {after.get('python')}")
        pk_old, pk_new = before.get("packages", {}), after.get("packages", {})
        what += [f"{k} {pk_old.get(k, '<none>')} -> {pk_new.get(k, '<none>')}" for k in _changed_keys(pk_old, pk_new)]
        what += [f"env {k}" for k in _changed_keys(before.get("env", {}), after.get("env", {}))]
        reasons.append(f"environment changed ({_listed(what)})")
    return reasons


def _read_stamp(path: Path) -> dict | str | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "unreadable"


# ---- the run ---------------------------------------------------------------------------------

def check_stage_names(exp: Experiment, force: set[str], only: set[str]) -> None:
    known = [s.name for s in exp.stages]
    unknown = [f"{option} {name}" for option, names in (("--force", force), ("--only", only))
               for name in sorted(set(names) - set(known))]
    if unknown:
        raise InputError(", ".join(unknown), None, f"no such stage; the recipe's stages are: {', '.join(known)}")


def run_experiment(exp: Experiment, run: str, force: set[str], only: set[str],
                   recipe: Path | None = None) -> list[dict]:
    check_stage_names(exp, force, only)
    t0 = time.perf_counter()
    run_dir = Path(run)
    stamps_dir = run_dir / ".stages"
    stamps_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        # The stages run under our lock: they see it as held and do not take it again.
        env = {**os.environ, **exp.env, HELD_ENV: str((run_dir / ".lock").resolve())}
        environment = environment_part(exp.env)
        times = _run_stages(exp, run, run_dir, stamps_dir, env, environment, force, only)
        # The total marks a finished run (the report tells it from one in progress).
        _write_times(run_dir, times, recipe=str(recipe), total_seconds=round(time.perf_counter() - t0, 1))
    return times


def _run_stages(exp, run, run_dir, stamps_dir, env, environment, force, only) -> list[dict]:
    times = []
    for i, stage in enumerate(exp.stages, 1):
        if only and stage.name not in only:
            continue
        cmd = _fill(stage.cmd, run, env)
        outputs = [Path(_fill(o, run, env)) for o in stage.outputs]
        stamp = stage_stamp(cmd, [Path(_fill(p, run, env)) for p in stage.inputs], environment)
        stamp_file = stamps_dir / f"{stage.name}.stamp"
        missing = [str(o) for o in outputs if not o.exists()]
        reasons = [f"output missing ({_listed(missing)})"] if missing else []
        reasons += stamp_changes(_read_stamp(stamp_file), stamp)
        if stage.name in force:
            reasons.insert(0, "forced")
        header = f"[{i}/{len(exp.stages)}] {stage.name}"
        if not reasons:
            console.rule(f"{header}: up to date, skipped")
            times.append({"stage": stage.name, "seconds": 0.0, "skipped": True})
            _write_times(run_dir, times)
            continue
        console.rule(header)
        console.print(f"re-running: {'; '.join(reasons)}", style="yellow", soft_wrap=True)
        console.print(f"$ {cmd}", style="dim", soft_wrap=True, markup=False)
        stamp_file.unlink(missing_ok=True)  # a kill or failure from here on leaves the stage stale
        t0 = time.perf_counter()
        proc = subprocess.run(shlex.split(cmd), env={**env, STAGE_ENV: stage.name})  # W&B job_type = stage
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            # Killed by a signal: the shell's convention, 128 + signal number.
            rc = proc.returncode if proc.returncode > 0 else 128 - proc.returncode
            how = f"exit {rc}" if proc.returncode > 0 else f"killed by {signal.Signals(-proc.returncode).name}"
            print(f"stage '{stage.name}' failed ({how}) after {seconds:.0f} s; "
                  "fix it and re-run (finished stages are skipped)", file=sys.stderr)
            raise typer.Exit(rc)
        missing = [str(o) for o in outputs if not o.exists()]
        if missing:
            print(f"error: stage '{stage.name}' exited 0 but did not write {', '.join(missing)}", file=sys.stderr)
            raise typer.Exit(1)
        write_text(stamp_file, json.dumps(stamp, indent=1, sort_keys=True))
        console.print(f"{stage.name}: {seconds:.1f} s")
        times.append({"stage": stage.name, "seconds": round(seconds, 1), "skipped": False,
                      "reason": "; ".join(reasons)})
        _write_times(run_dir, times)
    return times


def _write_times(run_dir: Path, times: list[dict], **extra) -> None:
    """Written after every stage, so a later stage (the report) sees the times so far."""
    write_json(run_dir / "stages.json", {**extra, "stages": times})


def main(
    recipe: Path = typer.Argument(..., help="experiment recipe, e.g. recipes/experiments/demo.yml"),
    run: str | None = typer.Option(None, help="run directory (default: the recipe's `run`)"),
    force: list[str] = typer.Option([], help="re-run this stage even if up to date (repeatable)"),
    only: list[str] = typer.Option([], help="run only these stages (repeatable)"),
) -> None:
    exp = load_experiment(recipe)
    run = run or exp.run
    t0 = time.perf_counter()
    try:
        run_experiment(exp, run, set(force), set(only), recipe)
    except LockedError as e:  # another runner: the user's situation to resolve, not our bug
        raise ValueError(str(e)) from None
    total = time.perf_counter() - t0
    console.rule(f"{exp.name}: done in {total / 60:.1f} min; artifacts under {run}/")
    report = Path(run, "report.md")
    if report.exists():
        console.print(f"report: {report}")


if __name__ == "__main__":
    run_cli(main)
