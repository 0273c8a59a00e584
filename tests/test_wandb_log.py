"""sensecf/wandb_log.py: offline runs under RUN/wandb, no secrets in configs, aggregates only."""

from __future__ import annotations

import pandas as pd
import pytest

from sensecf.rundir import RunDir
from sensecf.wandb_log import RowLevelDataError, log_image, log_metrics, log_table, stage_run, strip_secrets

SECRET = "sk-do-not-log-4b1d"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # Never a network call from tests, whatever the developer's shell says.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_strip_secrets_at_any_depth():
    config = {"seed": 1, "OPENAI_API_KEY": SECRET, "hf_token": SECRET,
              "backend": {"password": SECRET, "url": "http://x", "Client_Secret": SECRET}, "n": 200}
    assert strip_secrets(config) == {"seed": 1, "backend": {"url": "http://x"}, "n": 200}
    assert config["hf_token"] == SECRET  # the caller's dict is left alone


def test_offline_stage_run_writes_under_the_run_dir_without_secrets(tmp_path):
    run = RunDir(tmp_path / "exp1")
    run.root.mkdir()  # W&B never creates a run directory (tests/test_wandb_lineage.py)
    config = {"seed": 3, "api_key": SECRET, "nested": {"access_token": SECRET, "lr": 0.1}}
    with stage_run(run, "baselines", config) as wb:
        assert dict(wb.config) == {"seed": 3, "nested": {"lr": 0.1}, "sensecf_inputs": [],
                                   "sensecf_untracked_inputs": []}
        assert wb.group == "exp1" and wb.job_type == "baselines"
        log_metrics(wb, {"validity": 0.75, "method": "nice"})
        log_table(wb, "table3", pd.DataFrame({"method": ["nice", "dice"], "validity": [0.75, 0.5]}))
    runs = list((run.root / "wandb").glob("offline-run-*"))  # beside Axolotl's runs: one sync path
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    for path in (run.root / "wandb").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_row_level_data_is_refused_without_the_flag(tmp_path):
    rows = pd.DataFrame({"window_id": ["a", "b"], "glucose_mean": [120.0, 150.0]})
    many = pd.DataFrame({"x": range(501)})
    with stage_run(RunDir(tmp_path / "exp2"), "eval", {}) as wb:
        with pytest.raises(RowLevelDataError, match="row identifier columns \\['window_id'\\]"):
            log_table(wb, "cfs", rows)
        with pytest.raises(RowLevelDataError, match="501 rows"):
            log_table(wb, "big", many)
        with pytest.raises(RowLevelDataError, match="scalars only"):
            log_metrics(wb, {"per_row_validity": [1, 0, 1]})
        log_table(wb, "cfs", rows, log_rows=True)  # explicitly allowed


def test_a_per_window_figure_needs_the_flag(tmp_path):
    from PIL import Image

    png = tmp_path / "fig8.png"
    Image.new("RGB", (4, 4)).save(png)
    sent = []

    class Recorder:  # what the logger would send, without a W&B run
        def log(self, data, step=None):
            sent.extend(data)

    with pytest.raises(RowLevelDataError, match="'fig8' plots single windows"):
        log_image(Recorder(), "fig8", png, per_window=True)
    assert sent == []
    log_image(Recorder(), "fig6", png)  # an aggregate figure
    log_image(Recorder(), "fig8", png, per_window=True, log_rows=True)  # the user asked
    assert sent == ["fig6", "fig8"]
