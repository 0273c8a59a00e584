"""Faults of the loaders: a hostile or changed classifier file, a spec that would collide with the
cohort's own columns, a table that cannot make a cohort, a broken training recipe.

The classifier rows start from one real pipeline saved by `BlackBox.save` and damage it the way
an attacker or an accident would: skops files are zip archives whose schema.json names, for
each object, a module, a class and a loader; a `ConstructorFromReduceNode` calls
`module.class(*args)` on load, so naming `builtins.print` there calls print. Each hostile row
first proves the crafted file does run its payload when loaded the way the old code trusted it
(every type under builtins./numpy./sklearn.), so the row would have failed before the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from conftest import GENERIC_SPEC
from harness import Fault, Outcome, assert_one_line_error, params, run_module
from test_table_cohort import _table as table_frame

from dataset_builders.table import TableError, build_table_cohort
from dataset_builders.table import main as table_main
from eval.classifier import app as classifier_app
from launch.recipe_check import RecipeError, load_recipe
from launch.train import _parse_sets
from launch.train import main as train_main
from sensecf.blackbox import BlackBox, build_pipeline, types_record
from sensecf.cli import run_cli
from sensecf.rundir import write_provenance
from sensecf.spec import DatasetSpec, SpecError

REPO = Path(__file__).resolve().parents[2]
SPEC_RAW = GENERIC_SPEC  # the toy heart-disease spec of tests/conftest.py
SPEC = DatasetSpec.model_validate(SPEC_RAW)
ADAM = "sklearn.neural_network._stochastic_optimizers.AdamOptimizer"
SGD = "sklearn.neural_network._stochastic_optimizers.SGDOptimizer"


def run_in_process(app, capsys, *args) -> Outcome:
    """A CLI through its error boundary (sensecf.cli.run_cli) in this process: cheaper than
    `run_module`, which the table and recipe_check rows use to prove the real entry points."""
    with pytest.raises(SystemExit) as exit_:
        run_cli(app, [str(a) for a in args])
    captured = capsys.readouterr()
    return Outcome(exit_.value.code, captured.out, captured.err)


# --- a real saved classifier, and ways to damage it -------------------------------------------
def _frame(n: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"chol": rng.normal(200, 20, n).round(1), "bp": rng.integers(100, 160, n),
                       "smoker": rng.choice(["no", "yes"], n), "age": rng.integers(30, 70, n),
                       "sex": rng.choice(["f", "m"], n)})
    df["disease"] = ((df.chol - 200) / 20 + (df.smoker == "yes") > 0.5).astype(int)
    return df


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """classifier/ holding model.skops and model.types.json as BlackBox.save writes them, and the
    provenance eval.classifier writes after them."""
    folder = tmp_path_factory.mktemp("saved") / "classifier"
    df = _frame()
    BlackBox(build_pipeline(SPEC, seed=0).fit(df[SPEC.names], df["disease"]), SPEC).save(folder / "model.skops")
    write_provenance(folder, config={"fixture": True})
    return folder


@pytest.fixture
def model(saved, tmp_path) -> Path:
    """A fresh copy of the saved classifier folder; returns its model.skops."""
    folder = shutil.copytree(saved, tmp_path / "classifier")
    return folder / "model.skops"


def _rewrite_schema(data: bytes, mutate) -> bytes:
    """The same skops archive with schema.json changed by `mutate(schema)`."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "schema.json":
                schema = json.loads(body)
                mutate(schema)
                body = json.dumps(schema).encode()
            dst.writestr(info.filename, body)
    return out.getvalue()


def _call_node(module: str, function: str, *args: str) -> dict:
    """A schema node that skops loads by calling module.function(*args)."""
    strings = [{"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                "content": json.dumps(a), "is_json": True} for a in args]
    return {"__class__": function, "__module__": module, "__loader__": "ConstructorFromReduceNode",
            "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                        "content": strings}}


def _inject(module: str, function: str, *args: str):
    """Replace the Pipeline's `verbose` attribute with a call (any attribute would do)."""
    def mutate(schema):
        schema["content"]["content"]["verbose"] = _call_node(module, function, *args)
    return mutate


def _swap_class(old: str, new: str):
    def mutate(node):
        if isinstance(node, dict):
            if f"{node.get('__module__')}.{node.get('__class__')}" == old:
                node["__module__"], node["__class__"] = new.rsplit(".", 1)
            for value in node.values():
                mutate(value)
        elif isinstance(node, list):
            for value in node:
                mutate(value)
    return mutate


def _forge_records(model: Path, *, add_types: list[str] = ()) -> None:
    """What an attacker with write access to the run would also do: make the type record and
    provenance agree with the damaged file (so only the type rules stand in the way)."""
    record = json.loads(types_record(model).read_text())
    record["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    record["untrusted_types"] = sorted({*record["untrusted_types"], *add_types})
    types_record(model).write_text(json.dumps(record))
    write_provenance(model.parent, config={"forged": True})


def _old_trust_runs_it(data: bytes, marker: str, capfd) -> None:
    """The crafted file is hostile: loaded as the old BlackBox.load did, it prints the marker."""
    untrusted = sio.get_untrusted_types(data=data)
    assert all(t.startswith(("sklearn.", "numpy.", "builtins.", "collections.")) for t in untrusted)
    sio.loads(data, trusted=untrusted)
    assert marker in capfd.readouterr().out


def _damage(model: Path, how: str, capfd) -> None:
    data = model.read_bytes()
    if how == "print":  # unrecorded builtins function, records forged for the new sha
        bad = _rewrite_schema(data, _inject("builtins", "print", "PWNED-PRINT"))
        _old_trust_runs_it(bad, "PWNED-PRINT", capfd)
        model.write_bytes(bad)
        _forge_records(model)
    elif how == "eval":  # the attacker records builtins.eval too
        bad = _rewrite_schema(data, _inject("builtins", "eval", "print('PWNED-EVAL')"))
        _old_trust_runs_it(bad, "PWNED-EVAL", capfd)
        model.write_bytes(bad)
        _forge_records(model, add_types=["builtins.eval"])
    elif how == "numpy-function":  # a recorded function outside builtins: np.load(file) reads a file
        bad = _rewrite_schema(data, _inject("numpy", "load", str(model.parent / "payload.npy")))
        model.write_bytes(bad)
        _forge_records(model, add_types=["numpy.load"])
    elif how == "swap-sklearn":  # another sklearn class in place of the recorded one
        model.write_bytes(_rewrite_schema(data, _swap_class(ADAM, SGD)))
        _forge_records(model)
    elif how == "modified":  # another model written over it after training
        df = _frame(seed=1)
        other = build_pipeline(SPEC, seed=5).fit(df[SPEC.names], df["disease"])
        model.write_bytes(sio.dumps(other))
    elif how == "truncated":
        model.write_bytes(data[: len(data) // 2])
    elif how == "truncated-forged":
        model.write_bytes(data[: len(data) // 2])
        _forge_records(model)
    elif how == "no-type-record":
        types_record(model).unlink()
    elif how == "garbled-type-record":
        types_record(model).write_text("{not json")
    elif how == "resaved-stale-provenance":  # saved again consistently, provenance left from training
        df = _frame(seed=2)
        BlackBox(build_pipeline(SPEC, seed=9).fit(df[SPEC.names], df["disease"]), SPEC).save(model)
    elif how == "provenance-without-model":
        prov = json.loads((model.parent / "provenance.json").read_text())
        prov["outputs"].pop("model.skops")
        (model.parent / "provenance.json").write_text(json.dumps(prov))
    else:
        raise AssertionError(how)


CLASSIFIER_FAULTS = [
    Fault("skops-calls-builtins-print", "a crafted model.skops whose schema calls builtins.print", "refused",
          {"how": "print", "names": ["refusing to load types not recorded", "['builtins.print']"],
           "marker": "PWNED-PRINT"}),
    Fault("skops-calls-builtins-eval", "a crafted model.skops calling builtins.eval, recorded as trusted too",
          "refused", {"how": "eval", "names": ["not plain classes", "['builtins.eval']"], "marker": "PWNED-EVAL"}),
    Fault("skops-calls-numpy-function", "a crafted model.skops calling numpy.load, recorded as trusted too",
          "refused", {"how": "numpy-function", "names": ["not plain classes", "['numpy.load']"]}),
    Fault("skops-unrecorded-sklearn-type", "an sklearn class swapped in that the save did not record",
          "refused", {"how": "swap-sklearn", "names": ["not recorded at save time in model.types.json", f"['{SGD}']"]}),
    Fault("skops-modified-after-training", "another model copied over model.skops after training", "refused",
          {"how": "modified", "names": ["differs from", "recorded at save time in model.types.json"]}),
    Fault("skops-truncated", "model.skops cut off half way (a torn copy)", "refused",
          {"how": "truncated", "names": ["differs from", "the file changed after training"]}),
    Fault("skops-truncated-records-agree", "a truncated model.skops whose records were updated to match",
          "refused", {"how": "truncated-forged", "names": ["not a readable skops file", "BadZipFile"]}),
    Fault("skops-no-type-record", "model.skops without the model.types.json its save wrote", "refused",
          {"how": "no-type-record", "names": ["no type record model.types.json"]}),
    Fault("skops-garbled-type-record", "model.types.json that is not JSON", "refused",
          {"how": "garbled-type-record", "names": ["model.types.json: not a type record (JSONDecodeError"]}),
    Fault("skops-stale-provenance", "a model saved again after training; provenance.json still the old one",
          "refused", {"how": "resaved-stale-provenance", "names": ["provenance.json records sha256"]}),
    Fault("skops-provenance-lacks-model", "classifier/provenance.json that records no model.skops", "refused",
          {"how": "provenance-without-model", "names": ["provenance.json does not record it"]}),
]


def test_the_saved_classifier_loads_and_records_its_types(saved):
    """The baseline every row damages: trusted exactly as recorded, and it predicts."""
    record = json.loads(types_record(saved / "model.skops").read_text())
    assert record["untrusted_types"] == [ADAM]
    assert record["sha256"] == json.loads((saved / "provenance.json").read_text())["outputs"]["model.skops"]
    assert BlackBox.load(saved / "model.skops", SPEC).predict(_frame(5)).shape == (5,)


@pytest.mark.parametrize("fault", params(CLASSIFIER_FAULTS))
def test_classifier_faults(fault, model, capfd):
    _damage(model, fault.args["how"], capfd)
    with pytest.raises(ValueError) as err:
        BlackBox.load(model, SPEC)
    message = str(err.value)
    captured = capfd.readouterr()
    assert "PWNED" not in captured.out + captured.err  # nothing the file names ran
    assert "\n" not in message and message.startswith(f"{model}: ")
    for name in fault.args["names"]:
        assert name in message, (name, message)


# --- the spec loader ----------------------------------------------------------------------------
def _spec_with(**change) -> dict:
    raw = json.loads(json.dumps(SPEC_RAW))
    feature, update = change.get("feature"), change.get("update", {})
    if feature is not None:
        raw["features"][feature].update(update)
    if "label" in change:
        raw["label"]["name"] = change["label"]
    return raw


SPEC_FAULTS = [
    Fault("spec-feature-named-split", "a feature named like the cohort's split column", "error",
          {"raw": _spec_with(feature=0, update={"name": "split"}), "names": ["feature 'split'", "reserved"]}),
    Fault("spec-feature-named-factual-pred", "a feature named like the records' factual_pred", "error",
          {"raw": _spec_with(feature=1, update={"name": "factual_pred"}), "names": ["feature 'factual_pred'"]}),
    Fault("spec-label-named-window-id", "the label named like the cohort's id column", "error",
          {"raw": _spec_with(label="window_id"), "names": ["label 'window_id'", "reserved"]}),
    Fault("spec-duplicate-prompt-name", "two features shown under one prompt name (case and spaces aside)",
          "error", {"raw": _spec_with(feature=3, update={"prompt_name": "cholesterol "}),
                    "names": ["feature 'age'", "duplicate prompt_name 'cholesterol '"]}),
    Fault("spec-nan-range", "min: .nan", "error",
          {"raw": _spec_with(feature=0, update={"min": float("nan"), "max": 5.0}),
           "names": ["feature 'chol'", "'min' is nan, not a finite number"]}),
    Fault("spec-inf-range", "max: .inf", "error",
          {"raw": _spec_with(feature=1, update={"min": 1, "max": float("inf")}),
           "names": ["feature 'bp'", "'max' is inf, not a finite number"]}),
    Fault("spec-min-above-max", "min 9 > max 1", "error",
          {"raw": _spec_with(feature=0, update={"min": 9, "max": 1}),
           "names": ["feature 'chol'", "min 9.0 > max 1.0"]}),
]


@pytest.mark.parametrize("fault", params(SPEC_FAULTS))
def test_spec_faults(fault, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(fault.args["raw"]))
    with pytest.raises(SpecError) as err:
        DatasetSpec.from_yaml(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: invalid spec: ")
    for name in fault.args["names"]:
        assert name in message, (name, message)


# --- the table builder --------------------------------------------------------------------------
def _table(n: int = 20) -> pd.DataFrame:
    return table_frame(n)


def _csv(tmp_path: Path, frame: pd.DataFrame | str) -> tuple[Path, Path]:
    spec, table = tmp_path / "spec.yaml", tmp_path / "t.csv"
    spec.write_text(yaml.safe_dump(SPEC_RAW))
    if isinstance(frame, str):
        table.write_text(frame)
    else:
        frame.to_csv(table, index=False)
    return table, spec


def _with(column, row, value):
    frame = _table()
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


TABLE_FAULTS = [
    Fault("table-inf-value", "chol = inf in row 7", "error",
          {"frame": _with("chol", 7, "inf"), "where": "row 7, column 'chol'", "reason": "value inf is not finite"}),
    Fault("table-minus-inf-value", "bp = -inf in row 3", "error",
          {"frame": _with("bp", 3, "-inf"), "where": "row 3, column 'bp'", "reason": "value -inf is not finite"}),
    Fault("table-header-only", "a table with its header and no rows", "error",
          {"frame": _table().iloc[:0], "where": "rows", "reason": "the table has a header but no rows"}),
    Fault("table-empty-file", "a zero-byte table file", "error",
          {"frame": "", "where": None, "reason": "the file is empty"}),
    Fault("table-single-class", "every row has disease = 0", "error",
          {"frame": _table().assign(disease=0), "where": "column 'disease'",
           "reason": "the label has a single class 0 in all 20 rows"}),
    Fault("table-single-group", "every row belongs to one person", "error",
          {"frame": _table().assign(pid="p0"), "where": "column 'pid'",
           "reason": "a single group 'p0': no test split possible"}),
]


@pytest.mark.parametrize("fault", params(TABLE_FAULTS))
def test_table_faults(fault, tmp_path):
    table, spec = _csv(tmp_path, fault.args["frame"])
    out = tmp_path / "run" / "cohort"
    with pytest.raises(TableError) as err:
        build_table_cohort(table, spec, out, id_col=None, group_col="pid", test_fraction=0.25, seed=0,
                           synthetic=False)
    where = f"{fault.args['where']}: " if fault.args["where"] else ""
    assert str(err.value).startswith(f"{table}: {where}{fault.args['reason']}"), str(err.value)
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_table_cohort_is_written_whole_with_provenance_of_its_outputs(tmp_path):
    """The good path the rows guard: every artifact present and recorded by sha256."""
    table, spec = _csv(tmp_path, _table())
    out = tmp_path / "run" / "cohort"
    build_table_cohort(table, spec, out, id_col=None, group_col="pid", test_fraction=0.25, seed=0, synthetic=True)
    outputs = json.loads((out / "provenance.json").read_text())["outputs"]
    assert sorted(outputs) == ["features.parquet", "quality.json", "spec.yaml", "split.json"]
    for name, sha in outputs.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha
    assert not list(out.glob(".*.tmp")) and not (out.parent / ".lock.holder").exists()


# --- training recipes ---------------------------------------------------------------------------
def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yml"
    path.write_text(text)
    return path


def _sft_run(tmp_path: Path) -> Path:
    (tmp_path / "run" / "sft").mkdir(parents=True)
    (tmp_path / "run" / "sft" / "train.jsonl").write_text('{"messages": []}\n')
    return tmp_path / "run"


SET_FAULTS = [
    Fault("set-without-value", "--set learning_rate", "error",
          {"item": "learning_rate", "message": "--set learning_rate: expects key=value"}),
    Fault("set-without-key", "--set =1", "error", {"item": "=1", "message": "--set =1: expects key=value"}),
    Fault("set-nested-key", "--set datasets[0].path=x.jsonl", "error",
          {"item": "datasets[0].path=x.jsonl",
           "message": "--set datasets[0].path=x.jsonl: 'datasets[0].path' is not a top-level recipe key"}),
    Fault("set-broken-yaml-value", "--set lora_r=[8", "error",
          {"item": "lora_r=[8", "message": "--set lora_r=[8: the value is not valid YAML"}),
]


@pytest.mark.parametrize("fault", params(SET_FAULTS))
def test_set_faults(fault):
    with pytest.raises(RecipeError) as err:
        _parse_sets([fault.args["item"]])
    assert str(err.value).startswith(fault.args["message"]) and "\n" not in str(err.value)


def test_load_recipe_names_an_empty_base_model(tmp_path):
    with pytest.raises(RecipeError, match=r"r\.yml: base_model: missing"):
        load_recipe(_recipe(tmp_path, "base_model: ''\n"))


# --- each CLI end to end: one `error:` line, exit code 2, nothing written -------------------------
# A row's "cli" is a module (run as `python -m`, a user's real entry point) or a typer function
# or app (run through run_cli in this process: the same boundary, without a slow import).
def _table_inf(tmp):
    table, spec = _csv(tmp, _with("chol", 7, "inf"))
    return ["--table", table, "--spec", spec, "--out", tmp / "run" / "cohort", "--group-col", "pid"], \
        [f"{table}: row 7, column 'chol': value inf is not finite"]


def _table_broken_spec(tmp):
    table, spec = _csv(tmp, _table())
    spec.write_text("name: toy\nfeatures:\n  - {name: chol, kind: [continuous\n")
    return ["--table", table, "--spec", spec, "--out", tmp / "run" / "cohort"], \
        [f"{spec}: line 4, column 1: not valid YAML"]


def _train_no_base_model(tmp):
    recipe = _recipe(tmp, "adapter: lora\nlearning_rate: 0.0002\n")
    return [recipe, "--run", _sft_run(tmp), "--dry-run"], [f"{recipe}: base_model: missing"]


def _train_missing_recipe(tmp):
    return [tmp / "absent.yml", "--run", _sft_run(tmp)], [f"{tmp / 'absent.yml'}: recipe not found"]


def _train_nested_set(tmp):
    return [REPO / "recipes" / "smollm2-cpu.yml", "--run", _sft_run(tmp), "--set", "datasets.0.path=x", "--dry-run"], \
        ["--set datasets.0.path=x: 'datasets.0.path' is not a top-level recipe key"]


def _recipe_check_broken_yaml(tmp):
    recipe = _recipe(tmp, "base_model: x\ndatasets: [\n  - path: a\n")
    return [recipe], [f"{recipe}: line 3, column 3: not valid YAML"]


def _classifier_no_cohort(tmp):
    return ["--run", tmp / "run"], [f"{tmp / 'run' / 'cohort' / 'features.parquet'}: no cohort table"]


CLI_FAULTS = [
    Fault("cli-table-inf-value", "python -m dataset_builders.table on a table holding inf", "error",
          {"cli": "dataset_builders.table", "setup": _table_inf}),
    Fault("cli-table-broken-spec-yaml", "a spec YAML with an unclosed bracket", "error",
          {"cli": table_main, "setup": _table_broken_spec}),
    Fault("cli-train-recipe-without-base-model", "launch.train on a recipe that names no base_model", "error",
          {"cli": train_main, "setup": _train_no_base_model}),
    Fault("cli-train-missing-recipe", "launch.train on a recipe path that does not exist", "error",
          {"cli": train_main, "setup": _train_missing_recipe}),
    Fault("cli-train-nested-set-key", "launch.train --set datasets.0.path=x", "error",
          {"cli": train_main, "setup": _train_nested_set}),
    Fault("cli-recipe-check-broken-yaml", "python -m launch.recipe_check on a recipe with an unclosed list",
          "error", {"cli": "launch.recipe_check", "setup": _recipe_check_broken_yaml}),
    Fault("cli-classifier-without-cohort", "eval.classifier on a run with no cohort", "error",
          {"cli": classifier_app, "setup": _classifier_no_cohort}),
]


@pytest.mark.parametrize("fault", params(CLI_FAULTS))
def test_cli_faults(fault, tmp_path, capsys):
    args, names = fault.args["setup"](tmp_path)
    cli = fault.args["cli"]
    out = run_module(cli, *args) if isinstance(cli, str) else run_in_process(cli, capsys, *args)
    assert_one_line_error(out, *names)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name in ("cohort", "classifier")
               or "checkpoints" in p.parts]
    assert written == []
