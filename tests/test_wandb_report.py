"""sensecf/wandb_report.py: the W&B Report object is built offline without any server call, filters
its runsets to the experiment's group, and is saved only when WANDB_MODE=online."""

from __future__ import annotations

import json

import pytest
import wandb_workspaces.reports.v2 as wr
from wandb_workspaces.reports.v2 import interface

from sensecf.wandb_report import MAX_TITLE, ReportSection, build_wandb_report, publish_wandb_report

SECTIONS = [
    ReportSection("Classifier", tables=["classifier_metrics"]),
    ReportSection("Table III", text="CF quality", tables=["table3"], images=["fig6", "fig8", "fig9"]),
]


@pytest.fixture(autouse=True)
def no_server(monkeypatch):
    """Any call to the W&B API fails the test: building must not need a server."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_ENTITY", raising=False)

    def refuse():
        raise AssertionError("the W&B API was called")

    monkeypatch.setattr(interface, "_get_api", refuse)


def _build(**kw):
    args = dict(title="SenseCF — exp1", summary="what ran", sections=SECTIONS, notes="- limits", group="exp1",
                project="sensecf")
    return build_wandb_report(**{**args, **kw})


def test_report_blocks_and_panels():
    report = _build()
    assert report.title == "SenseCF — exp1" and report.project == "sensecf" and report.entity == ""
    kinds = [type(b).__name__ for b in report.blocks]
    assert kinds == ["H1", "MarkdownBlock", "H2", "PanelGrid", "H2", "MarkdownBlock", "PanelGrid", "H2",
                     "MarkdownBlock"]
    assert [b.text for b in report.blocks if isinstance(b, wr.H2)] == ["Classifier", "Table III", "Notes"]
    assert report.blocks[1].text == "what ran" and report.blocks[-1].text == "- limits"

    grid = report.blocks[6]
    tables = [p.table_name for p in grid.panels if isinstance(p, wr.WeavePanelSummaryTable)]
    images = [p.media_keys for p in grid.panels if isinstance(p, wr.MediaBrowser)]
    assert tables == ["table3"] and images == [["fig6"], ["fig8"], ["fig9"]]
    # the table spans the grid; images two per row below it
    assert [(p.layout.x, p.layout.y, p.layout.w) for p in grid.panels] == [
        (0, 0, 24), (0, 12, 12), (12, 12, 12), (0, 22, 12)]


def test_runsets_are_filtered_to_the_group_in_the_saved_spec():
    report = _build(group="demo-7")
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == 2 and all(len(g.runsets) == 1 for g in grids)
    assert all(g.runsets[0].project == "sensecf" for g in grids)
    # what save() would send: the filter is on the run's group, nothing else
    spec = json.loads(report._to_model().spec.model_dump_json(by_alias=True, exclude_none=True))
    runsets = [rs for block in spec["blocks"] if block["type"] == "panel-grid" for rs in block["metadata"]["runSets"]]
    assert len(runsets) == 2
    for rs in runsets:
        assert rs["filters"]["filters"] == [
            {"key": {"section": "run", "name": "group"}, "op": "=", "value": "demo-7", "disabled": False}]


def test_empty_sections_get_no_grid_and_long_titles_are_cut():
    report = _build(title="x" * 300, sections=[ReportSection("Timing", text="not run")], notes="")
    assert len(report.title) == MAX_TITLE
    assert [type(b).__name__ for b in report.blocks] == ["H1", "MarkdownBlock", "H2", "MarkdownBlock"]


def test_offline_never_saves(monkeypatch):
    def no_save(self, *args, **kwargs):
        raise AssertionError("Report.save() called offline")

    monkeypatch.setattr(wr.Report, "save", no_save)
    for mode in ["offline", "disabled", ""]:
        monkeypatch.setenv("WANDB_MODE", mode)
        assert publish_wandb_report(_build()) is None
    monkeypatch.delenv("WANDB_MODE")
    assert publish_wandb_report(_build()) is None


def test_online_saves_once_under_the_given_entity(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_ENTITY", "lab")
    saved = []

    def fake_save(self, *args, **kwargs):
        saved.append(self)
        self.id = "abc"
        return self

    monkeypatch.setattr(wr.Report, "save", fake_save)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: f"https://wandb.example/{self.entity}/{self.id}"))
    report = _build()
    assert report.entity == "lab"
    assert all(g.runsets[0].entity == "lab" for g in report.blocks if isinstance(g, wr.PanelGrid))
    assert publish_wandb_report(report) == "https://wandb.example/lab/abc"
    assert saved == [report]
