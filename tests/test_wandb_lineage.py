"""W&B lineage: each stage one run (job_type = stage) in the run directory's group, its outputs logged as
artifacts, its inputs named by artifact and version alias; row-level files only for synthetic cohorts;
the sync command's plan and links. Everything is read back from the offline run files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sensecf.fingerprint import sha256_file
from sensecf.rundir import RunDir, write_provenance
from sensecf.wandb_artifacts import ALIAS_PREFIX, artifact_ref
from sensecf.wandb_log import INPUTS_KEY, stage_run
from sensecf.wandb_offline import read_offline_runs
from sensecf.wandb_sync import Link, declare_links, sync_plan


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("SENSECF_STAGE", raising=False)


def runs_of(run: RunDir):
    import wandb

    wandb.teardown()  # in this process W&B's core flushes a finished run's file only when torn down
    return read_offline_runs(run.root / "wandb")


def empty_stage(run: RunDir, job_type: str, config: dict | None = None, **kwargs) -> None:
    """A stage whose work is already on disk: only its W&B run (config, inputs, outputs) is under test."""
    with stage_run(run, job_type, config or {}, **kwargs):
        return


def test_each_run_directory_path_names_its_artifact(tiny_run):
    run = tiny_run
    group = run.root.name  # "run"
    cases = {
        run.features: (f"{group}-cohort", "dataset", run.cohort),
        run.model: (f"{group}-classifier", "model", run.classifier),
        run.sft / "train.jsonl": (f"{group}-sft", "dataset", run.sft),
        run.checkpoints / "smollm2-cpu": (f"{group}-adapter-smollm2-cpu", "model", run.checkpoints / "smollm2-cpu"),
        run.cfs / "smollm2_ft+grammar.jsonl": (f"{group}-cfs-test-smollm2_ft-grammar", "counterfactuals", run.cfs),
        run.cfs / "train" / "teacher.jsonl": (f"{group}-cfs-train-teacher", "counterfactuals", run.cfs / "train"),
        run.eval / "table3.md": (f"{group}-table3", "results", run.eval),
        run.augment / "table4.md": (f"{group}-table4", "results", run.augment),
        run.report: (f"{group}-report", "results", run.root),
    }
    for path, (name, kind, folder) in cases.items():
        ref = artifact_ref(run, path)
        assert (ref.name, ref.type, ref.folder) == (name, kind, folder.resolve()), path
    cf = artifact_ref(run, run.cfs / "nice.jsonl")
    assert cf.rows == ("nice.jsonl",) and cf.files == ("nice.jsonl.fingerprint.json",)
    with pytest.raises(ValueError, match="not inside the run directory"):
        artifact_ref(run, run.root.parent / "elsewhere.txt")
    with pytest.raises(ValueError, match="no W&B artifact kind"):
        artifact_ref(run, run.root / "notes" / "x.txt")


def test_the_alias_follows_the_content(tiny_run):
    ref = artifact_ref(tiny_run, tiny_run.features)
    before = ref.alias()
    assert before.startswith(ALIAS_PREFIX) and len(before) == len(ALIAS_PREFIX) + 16
    assert ref.alias() == before  # same files, same version
    (tiny_run.cohort / "quality.json").write_text("{}")  # a file of the artifact appears
    assert ref.alias() != before


def test_a_stage_run_names_its_inputs_and_logs_its_outputs(trained_run, offline, monkeypatch):
    from eval.classifier import app

    monkeypatch.setenv("SENSECF_STAGE", "classifier_seed1")  # the experiment runner's stage name
    cohort_alias = artifact_ref(trained_run, trained_run.features).alias()
    result = CliRunner().invoke(app, ["--run", str(trained_run.root), "--seed", "1"])
    assert result.exit_code == 0, result.output
    [wb] = runs_of(trained_run)
    assert (wb.group, wb.job_type, wb.exit_code) == ("run", "classifier_seed1", 0)
    assert wb.config["seed"] == 1 and wb.config["run"] == str(trained_run.root)  # the CLI's options
    assert wb.config[INPUTS_KEY] == [{"artifact": "run-cohort", "type": "dataset", "alias": cohort_alias}]
    [artifact] = wb.artifacts
    assert artifact.name == "run-classifier" and artifact.type == "model"
    assert artifact.aliases.count(artifact_ref(trained_run, trained_run.model).alias()) == 1
    assert set(artifact.files) == {"model.skops", "model.types.json", "metrics.json", "provenance.json"}
    assert {"test/ACC", "test/AUC"} <= wb.history_keys


def _mark_not_synthetic(run: RunDir) -> None:
    write_provenance(run.cohort, config={"fixture": True}, source={"synthetic": False})
    assert not run.is_synthetic()


def test_rows_of_a_cohort_not_marked_synthetic_stay_on_the_machine(tiny_run, offline):
    _mark_not_synthetic(tiny_run)
    (tiny_run.cohort / "quality.json").write_text('{"skipped_ids": ["AIREADI-1234"]}')
    tiny_run.eval.mkdir()
    (tiny_run.eval / "intervention.md").write_text("participant P0042: glucose 187.2")  # one real window
    (tiny_run.eval / "table3.md").write_text("| method | validity |")
    tiny_run.report.write_text("# report with the intervention: glucose 187.2")
    outputs = [tiny_run.features, tiny_run.eval / "table3.md", tiny_run.report]
    empty_stage(tiny_run, "cohort", outputs=outputs)
    by_name = {a.name: a for a in runs_of(tiny_run)[0].artifacts}
    cohort, table3, report = by_name["run-cohort"], by_name["run-table3"], by_name["run-report"]
    assert cohort.metadata["rows_uploaded"] is False
    assert set(cohort.files) == {"spec.yaml", "provenance.json", "withheld_sha256.json"}  # no ids, no rows
    assert set(cohort.metadata["withheld_sha256"]) == {"features.parquet", "split.json", "quality.json"}
    assert cohort.metadata["withheld_sha256"]["features.parquet"] == sha256_file(tiny_run.features)
    assert set(table3.files) == {"table3.md", "withheld_sha256.json"} and set(report.files) == {"withheld_sha256.json"}
    # no byte of a row, an id or a local path anywhere in the W&B folder
    secrets = [tiny_run.features.read_bytes()[:4096], b"AIREADI-1234", b"P0042", b"187.2",
               str(tiny_run.features.resolve()).encode()]
    for path in (tiny_run.root / "wandb").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(secret in data for secret in secrets), path


def test_the_user_can_opt_in_to_rows_and_a_synthetic_cohort_uploads_them(tiny_run, offline):
    assert tiny_run.is_synthetic()
    empty_stage(tiny_run, "cohort", outputs=[tiny_run.features])
    _mark_not_synthetic(tiny_run)
    empty_stage(tiny_run, "cohort_opt_in", outputs=[tiny_run.features], log_rows=True)
    synthetic, opted_in = (r.artifacts[0] for r in runs_of(tiny_run))
    assert synthetic.files["features.parquet"] == "" and synthetic.metadata["synthetic_cohort"] is True
    assert opted_in.files["features.parquet"] == "" and opted_in.metadata["synthetic_cohort"] is False


def test_a_failed_stage_logs_no_artifact(tiny_run, offline):
    with pytest.raises(RuntimeError), stage_run(tiny_run, "cohort", {}, outputs=[tiny_run.features]):
        raise RuntimeError("boom")
    [wb] = runs_of(tiny_run)
    assert wb.exit_code == 1 and wb.artifacts == []


def test_outputs_of_no_artifact_kind_and_w_and_b_errors_never_fail_a_finished_stage(tiny_run, offline, monkeypatch,
                                                                                     capsys):
    stray = tiny_run.root / "notes" / "x.txt"
    stray.parent.mkdir()
    stray.write_text("n")
    empty_stage(tiny_run, "x", outputs=[stray])
    [wb] = runs_of(tiny_run)
    assert wb.exit_code == 0 and wb.artifacts == [] and wb.config["sensecf_untracked_outputs"] == [str(stray)]

    import wandb

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(wandb.Artifact, "add_file", broken)
    empty_stage(tiny_run, "cohort", outputs=[tiny_run.features])
    assert "warning: W&B: the stage's artifacts were not logged: OSError: disk full" in capsys.readouterr().err


def test_w_and_b_never_creates_a_missing_run_directory_unless_the_stage_makes_one(tmp_path, offline):
    missing = RunDir(tmp_path / "typo")
    with stage_run(missing, "table3", {}) as wb:
        assert wb.disabled
    assert not missing.root.exists()
    with stage_run(missing, "release", {}, creates_run=True) as wb:
        assert wb.offline
    assert missing.root.is_dir()


def test_a_stage_mode_overrides_the_environment(tiny_run, offline):
    with stage_run(tiny_run, "x", {}, outputs=[tiny_run.features], mode="disabled") as wb:
        assert wb.disabled
    assert not (tiny_run.root / "wandb").exists() or not list((tiny_run.root / "wandb").glob("offline-run-*"))


def test_inputs_outside_the_run_or_of_no_kind_are_not_artifacts(tiny_run, offline, tmp_path):
    outside = tmp_path / "recipe.yml"
    outside.write_text("x: 1")
    notes = tiny_run.root / "notes.txt"
    notes.write_text("n")
    empty_stage(tiny_run, "x", inputs=[outside, notes, tiny_run.features, tiny_run.root / "missing.json"])
    [wb] = runs_of(tiny_run)
    assert [e["artifact"] for e in wb.config[INPUTS_KEY]] == ["run-cohort"]
    assert wb.config["sensecf_untracked_inputs"] == [str(notes)]


def test_sync_plan_links_only_versions_that_were_logged(tiny_run, offline):
    empty_stage(tiny_run, "cohort", outputs=[tiny_run.features])
    alias = artifact_ref(tiny_run, tiny_run.features).alias()
    empty_stage(tiny_run, "classifier", inputs=[tiny_run.features])
    (tiny_run.cohort / "quality.json").write_text("{}")  # the cohort changed after it was logged
    empty_stage(tiny_run, "classifier_again", inputs=[tiny_run.features])
    runs, links = sync_plan(tiny_run.root)
    assert [r.job_type for r in runs] == ["cohort", "classifier", "classifier_again"]
    assert links == [Link(runs[1].id, "classifier", "sensecf", "run-cohort", alias)]

    calls = []

    class FakeRun:
        def __init__(self, path):
            self.path = path

        def use_artifact(self, artifact):
            calls.append((self.path, artifact))

    class FakeApi:
        def run(self, path):
            return FakeRun(path)

        def artifact(self, name):
            return f"artifact {name}"

    declare_links(FakeApi(), links, "me")
    assert calls == [(f"me/sensecf/{runs[1].id}", f"artifact me/sensecf/run-cohort:{alias}")]


def test_sync_dry_run_lists_runs_and_links(tiny_run, offline):
    from sensecf.wandb_sync import main

    empty_stage(tiny_run, "cohort", outputs=[tiny_run.features])
    empty_stage(tiny_run, "classifier", inputs=[tiny_run.features])
    app = typer.Typer(add_completion=False)
    app.command()(main)
    result = CliRunner().invoke(app, [str(tiny_run.root), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "cohort (group run): 1 artifact(s) run-cohort" in result.output
    assert "link classifier" in result.output and "<- run-cohort:sha256-" in result.output
    empty = CliRunner().invoke(app, [str(tiny_run.root / "x")])
    assert empty.exit_code != 0 and "no W&B folder" in str(empty.exception)


# --- a whole experiment (called by tests/test_paper_smoke.py on its finished run) ----------------
# (producer stage prefix, artifact kind) -> consumer stage prefix: the lineage an experiment must show
CHAIN = [("cohort", "cohort", "classifier"), ("classifier", "classifier", "sft_pairs"),
         ("sft_pairs", "sft", "finetune"), ("finetune", "adapter", "generate"), ("generate", "cfs-test", "table3"),
         ("augment_cfs", "cfs-train", "table4"), ("table3", "table3", "report"), ("table4", "table4", "report")]


def assert_experiment_lineage(run_dir: Path, stage_names: list[str], stand_ins=()) -> list:
    """One run per stage (stand-in builders aside) in one group, each Axolotl training run in that
    group, every input a version some earlier run logged, and the CHAIN edges present."""
    runs = read_offline_runs(run_dir / "wandb")
    group = run_dir.resolve().name
    assert {r.group for r in runs} == {group}
    assert all(r.exit_code == 0 for r in runs), [(r.job_type, r.exit_code) for r in runs]
    axolotl = [r for r in runs if r.job_type == "axolotl"]
    stages = [r for r in runs if r.job_type != "axolotl"]
    assert sorted(r.job_type for r in stages) == sorted(s for s in stage_names if s not in stand_ins)
    finetunes = [s for s in stage_names if s.startswith("finetune")]
    # (a loss is logged every `logging_steps`: the smoke's few steps may log none, so: it trained)
    assert len(axolotl) == len(finetunes) and all("train/global_step" in r.history_keys for r in axolotl)
    logged, producer = set(), {}
    for r in runs:  # oldest first: an input must have been logged before
        for entry in r.config.get(INPUTS_KEY, []):
            assert (entry["artifact"], entry["alias"]) in logged, (r.job_type, entry)
        for a in r.artifacts:
            logged.update((a.name, alias) for alias in a.aliases)
            producer[a.name] = r.job_type
    edges = {(producer[e["artifact"]], e["artifact"].removeprefix(f"{group}-"), r.job_type)
             for r in runs for e in r.config.get(INPUTS_KEY, [])}
    for made_by, kind, used_by in CHAIN:
        assert any(p.startswith(made_by) and k.startswith(kind) and u.startswith(used_by) for p, k, u in edges), \
            (made_by, kind, used_by, sorted(edges))
    return sorted(edges)


def test_config_carries_no_secret_in_a_stage_run(tiny_run, offline, monkeypatch):
    monkeypatch.setenv("SENSECF_STAGE", "cohort")
    empty_stage(tiny_run, "x", {"api_key": "sk-secret-77", "n": 3})
    [wb] = runs_of(tiny_run)
    assert wb.job_type == "cohort" and wb.config["n"] == 3 and "api_key" not in wb.config
    assert "sk-secret-77" not in json.dumps(wb.config)
