"""A W&B Report for one experiment, built with wandb-workspaces (reports v2).

    report = build_wandb_report(title=..., summary=..., sections=[ReportSection("Table III", tables=["table3"],
                                images=["fig6", "fig8"])], notes=..., group="demo", project="sensecf")
    url = publish_wandb_report(report)   # None unless WANDB_MODE=online

The report holds text blocks (title, summary, notes) and one panel grid per section whose runset
is the experiment's W&B group (sensecf.wandb_log.stage_run names the group after the run
directory), with a summary-table panel per logged wandb.Table and a media panel per logged image.
Saving publishes it to the W&B server, so it happens only when WANDB_MODE is "online"; offline
(the default) the object is built and nothing leaves the machine.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

MAX_TITLE = 128  # wandb_workspaces' Report.title limit
TABLE_HEIGHT = 12
IMAGE_WIDTH, IMAGE_HEIGHT = 12, 10  # two images side by side on the 24-unit grid


@dataclass
class ReportSection:
    """One heading of the report: text, and the W&B keys of the tables and images logged for it."""

    heading: str
    text: str = ""
    tables: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    line_plots: list[str] = field(default_factory=list)  # history keys, e.g. the fine-tune's train/loss


def workspaces_available() -> bool:
    return importlib.util.find_spec("wandb_workspaces") is not None


def is_online() -> bool:
    return os.environ.get("WANDB_MODE", "offline").strip().lower() == "online"


def _entity(entity: str | None) -> str | None:
    """The entity to own the report. Offline, with none given, an empty one: the library would
    otherwise ask the W&B server for the user's default entity."""
    entity = entity or os.environ.get("WANDB_ENTITY")
    if entity:
        return entity
    return None if is_online() else ""


def _panels(section: ReportSection) -> list:
    import wandb_workspaces.reports.v2 as wr

    panels, y = [], 0
    for key in section.line_plots:
        panels.append(wr.LinePlot(title=key, x="Step", y=[key], layout=wr.Layout(x=0, y=y, w=24, h=TABLE_HEIGHT)))
        y += TABLE_HEIGHT
    for key in section.tables:
        panels.append(wr.WeavePanelSummaryTable(table_name=key, layout=wr.Layout(x=0, y=y, w=24, h=TABLE_HEIGHT)))
        y += TABLE_HEIGHT
    for i, key in enumerate(section.images):
        layout = wr.Layout(x=(i % 2) * IMAGE_WIDTH, y=y + (i // 2) * IMAGE_HEIGHT, w=IMAGE_WIDTH, h=IMAGE_HEIGHT)
        panels.append(wr.MediaBrowser(title=key, media_keys=[key], num_columns=1, layout=layout))
    return panels


def build_wandb_report(
    *,
    title: str,
    summary: str,
    sections: list[ReportSection],
    notes: str = "",
    group: str,
    project: str,
    entity: str | None = None,
):
    """The Report object (not saved): H1 title, summary, per section an H2, its text and a panel
    grid over the runs of `group`, then the notes."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    owner = _entity(entity)
    report = wr.Report(
        project=project,
        title=title[:MAX_TITLE],
        description=f"SenseCF experiment '{group}'",
        width="fluid",
        **({} if owner is None else {"entity": owner}),
    )

    def runset() -> wr.Runset:
        return wr.Runset(entity=report.entity, project=project, name=f"group {group}",
                         filters=expr.And(expr.Metric("Group") == group))

    blocks = [wr.H1(text=title[:MAX_TITLE]), wr.MarkdownBlock(text=summary)]
    for section in sections:
        blocks.append(wr.H2(text=section.heading))
        if section.text:
            blocks.append(wr.MarkdownBlock(text=section.text))
        if section.tables or section.images or section.line_plots:
            blocks.append(wr.PanelGrid(runsets=[runset()], panels=_panels(section)))
    if notes:
        blocks += [wr.H2(text="Notes"), wr.MarkdownBlock(text=notes)]
    report.blocks = blocks
    return report


def publish_wandb_report(report) -> str | None:
    """Save the report to the W&B server when WANDB_MODE is online; return its URL, else None."""
    if not is_online():
        return None
    report.save()
    return report.url
