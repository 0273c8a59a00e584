"""SFT pair builder: teacher CFs as Fig. 4 chat examples, participant split, few-shot pool, token limits."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from conftest import AIREADI_SPEC, GENERIC_SPEC, _aireadi_frame, _generic_frame, write_cohort
from typer.testing import CliRunner

from dataset_builders.pairs import PairsError, build_pairs, main, token_lengths
from prompts.render import build_messages
from sensecf.blackbox import BlackBox, build_pipeline
from sensecf.cli import run_cli
from sensecf.models import load_tokenizer
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir
from sensecf.spec import DatasetSpec


def _with_classifier(run: RunDir) -> RunDir:
    df, spec = run.load_cohort()
    train = df[df[SPLIT_COL] == "train"]
    pipeline = build_pipeline(spec, seed=0).fit(train[spec.names], train[spec.label.name])
    BlackBox(pipeline, spec).save(run.model)
    return run


def _read(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def aireadi_run(tmp_path_factory) -> RunDir:
    """The tiny_run cohort (30 participants x 20 windows) with a fitted classifier."""
    root = tmp_path_factory.mktemp("pairs") / "run"
    frame = _aireadi_frame(np.random.default_rng(7), 30, 20)
    return _with_classifier(write_cohort(RunDir(root), frame, DatasetSpec.from_yaml(AIREADI_SPEC)))


@pytest.fixture(scope="module")
def built(aireadi_run) -> tuple[RunDir, dict]:
    return aireadi_run, build_pairs(aireadi_run, val_fraction=0.1, fewshot=20, seed=0)


def test_counts_add_up(built):
    run, summary = built
    df, _ = run.load_cohort()
    n_train_windows = int((df[SPLIT_COL] == "train").sum())
    assert summary["factuals"] == n_train_windows == 480
    assert sum(summary["factuals_by_predicted_class"].values()) == 480
    assert summary["teacher_valid"] + summary["teacher_invalid"] == 480
    assert sum(summary["teacher_invalid_reasons"].values()) == summary["teacher_invalid"]
    train, val, fewshot = (_read(run.sft / f"{n}.jsonl") for n in ("train", "val", "fewshot"))
    assert summary["written"] == {"train": len(train), "val": len(val), "fewshot": len(fewshot)}
    assert len(train) + len(val) == summary["teacher_valid"] > 0
    assert (run.sft / "provenance.json").is_file()


def test_val_holds_whole_participants(built):
    run, summary = built
    df, _ = run.load_cohort()
    train, val = _read(run.sft / "train.jsonl"), _read(run.sft / "val.jsonl")
    train_p, val_p = {r["participant_id"] for r in train}, {r["participant_id"] for r in val}
    assert val_p and not (train_p & val_p)
    assert summary["participants"] == {"train": len(train_p), "val": len(val_p)}
    # 10% of the 24 training participants, rounded.
    assert len(val_p) == round(0.1 * len(train_p | val_p))
    test_p = set(df.loc[df[SPLIT_COL] == "test", GROUP_COL])
    assert not ((train_p | val_p) & test_p)


def test_examples_are_the_generation_prompt_and_a_valid_teacher_cf(built):
    run, _ = built
    df, spec = run.load_cohort()
    blackbox = BlackBox.load(run.model, spec)
    by_id = df.set_index(ID_COL)
    rows = _read(run.sft / "train.jsonl")
    for r in rows[:25]:
        system, user, assistant = r["messages"]
        factual = by_id.loc[r["window_id"], spec.names].to_dict()
        assert blackbox.predict(factual)[0] == 1 - r["desired_class"]
        assert [system, user] == build_messages(spec, factual, r["desired_class"])
        assert assistant["role"] == "assistant"
        lines = assistant["content"].splitlines()
        assert lines[0] == "<new>" and lines[-1] == "</new>" and len(lines) == len(spec.names) + 2
        cf = {f.name: line.split(": ", 1)[1] for f, line in zip(spec.features, lines[1:-1], strict=True)}
        for f in spec.immutable:
            assert cf[f.name] == f.format_value(factual[f.name])
        cf_values = {f.name: float(cf[f.name]) if f.is_numeric else cf[f.name] for f in spec.features}
        assert blackbox.predict(cf_values)[0] == r["desired_class"]
    assert {tuple(m["role"] for m in r["messages"]) for r in rows} == {("system", "user", "assistant")}


def test_fewshot_pool_is_balanced_and_from_train_participants(built):
    run, summary = built
    _, spec = run.load_cohort()
    pool = _read(run.sft / "fewshot.jsonl")
    assert len(pool) == 20
    assert summary["fewshot_by_predicted_class"] == {"0": 10, "1": 10}
    val_p = {r["participant_id"] for r in _read(run.sft / "val.jsonl")}
    assert not ({p["participant_id"] for p in pool} & val_p)
    # Fig. 4's examples "with desired outcome c" are windows the classifier predicts c, as they are
    df, _ = run.load_cohort()
    blackbox = BlackBox.load(run.model, spec)
    by_id = df.set_index(ID_COL)
    for p in pool:
        assert set(p["features"]) == set(spec.names)
        row = by_id.loc[p["window_id"]]
        assert p["participant_id"] == str(row[GROUP_COL])
        assert blackbox.predict(p["features"])[0] == p["predicted_class"]
        assert p["features"]["glucose_mean"] == pytest.approx(float(row["glucose_mean"]))


def test_token_statistics_per_tokenizer(built):
    run, summary = built
    rows = _read(run.sft / "train.jsonl") + _read(run.sft / "val.jsonl")
    assert set(summary["token_lengths"]) == {"smollm2", "llama3_1", "mistral_v1"}
    for s in summary["token_lengths"].values():
        assert s["n"] == len(rows)
        assert 0 < s["min"] <= s["mean"] <= s["p95"] <= s["max"] <= 768
    # One example counted by hand: the Llama-3.1 template's text, tokenised as is.
    tok = load_tokenizer("llama3_1")
    longest = summary["longest"]["llama3_1"]
    row = next(r for r in rows if r["window_id"] == longest["window_id"])
    text = tok.apply_chat_template(row["messages"], tokenize=False)
    assert text.count("<|begin_of_text|>") == 1
    assert len(tok(text, add_special_tokens=False)["input_ids"]) == longest["tokens"] == token_lengths([row], tok)[0]
    # Mistral v1 splits digits: more tokens than Llama-3.1 for the same chat.
    assert summary["token_lengths"]["mistral_v1"]["mean"] > summary["token_lengths"]["llama3_1"]["mean"]


def test_too_long_example_fails_naming_it(aireadi_run):
    with pytest.raises(PairsError, match=r"features.parquet: window_id \S+: the example is \d+ llama3_1 tokens, "
                                         r"over the 300-token limit"):
        build_pairs(aireadi_run, max_tokens=300, tokenizers=("llama3_1",))


def test_max_pairs_caps_and_counts(aireadi_run, built):
    _, full = built
    summary = build_pairs(aireadi_run, max_pairs=50, fewshot=4, tokenizers=("llama3_1",))
    assert summary["written"]["train"] + summary["written"]["val"] == 50
    assert summary["dropped_by_max_pairs"] == full["teacher_valid"] - 50
    assert summary["written"]["fewshot"] == 4


def test_same_seed_same_files(aireadi_run):
    build_pairs(aireadi_run, max_pairs=60, seed=3, tokenizers=("llama3_1",))
    first = (aireadi_run.sft / "train.jsonl").read_bytes(), (aireadi_run.sft / "val.jsonl").read_bytes()
    build_pairs(aireadi_run, max_pairs=60, seed=3, tokenizers=("llama3_1",))
    assert ((aireadi_run.sft / "train.jsonl").read_bytes(), (aireadi_run.sft / "val.jsonl").read_bytes()) == first
    build_pairs(aireadi_run, max_pairs=60, seed=4, tokenizers=("llama3_1",))
    assert (aireadi_run.sft / "train.jsonl").read_bytes() != first[0]


def test_generic_spec_runs_through(tmp_path):
    spec = DatasetSpec.model_validate(GENERIC_SPEC)
    run = _with_classifier(write_cohort(RunDir(tmp_path / "g"), _generic_frame(np.random.default_rng(11), 400), spec))
    summary = build_pairs(run, fewshot=6)
    row = _read(run.sft / "train.jsonl")[0]
    assert "Smoker: " in row["messages"][2]["content"]
    assert summary["written"]["train"] > 0 and summary["token_lengths"]["mistral_v1"]["max"] < 400


def test_cli_reports_missing_classifier(tiny_run, capsys):
    with pytest.raises(SystemExit) as ended:
        run_cli(main, ["--run", str(tiny_run.root)])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.skops: no classifier" in err and "Traceback" not in err
    assert not (tiny_run.sft / "train.jsonl").exists()


def test_cli_writes_summary(aireadi_run):
    result = CliRunner().invoke(_cli(), ["--run", str(aireadi_run.root), "--max-pairs", "30", "--fewshot", "2"])
    assert result.exit_code == 0, result.output
    assert "teacher valid" in result.output and "tokens mistral_v1" in result.output
    assert json.loads((aireadi_run.sft / "summary.json").read_text())["written"]["fewshot"] == 2


def _cli():
    import typer

    app = typer.Typer()
    app.command()(main)
    return app
