"""The `<new>` answer block of Fig. 4: one `- Modified <prompt_name>: <value>` line per feature in
spec order, between `<new>` and `</new>`.

Both protocols share this text: the paper's prompt shows it as the answer skeleton, the SFT
targets are written in it, the grammar forces its keys and the parser reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping

from sensecf.spec import DatasetSpec, FeatureSpec

OPEN_TAG = "<new>"
CLOSE_TAG = "</new>"
ANSWER_BULLET = "- Modified "  # Fig. 4: "- Modified Feature 1: {}"
INSTANCE_BULLET = "- "  # Fig. 4: "- Feature 1: {}"


def line_prefix(f: FeatureSpec) -> str:
    """The forced start of a feature's answer line, up to its value."""
    return f"{ANSWER_BULLET}{f.prompt_name}: "


def feature_text(spec: DatasetSpec, name: str, value) -> str:
    """`<prompt_name>: <value>` at the feature's display precision (no bullet)."""
    f = spec.feature(name)
    return f"{f.prompt_name}: {f.format_value(value)}"


def render_line(spec: DatasetSpec, name: str, value) -> str:
    """One answer line."""
    return ANSWER_BULLET + feature_text(spec, name, value)


def render_block(spec: DatasetSpec, values: Mapping) -> str:
    """The block for a full row of values, at each feature's display precision."""
    lines = [render_line(spec, f.name, values[f.name]) for f in spec.features]
    return "\n".join([OPEN_TAG, *lines, CLOSE_TAG])
