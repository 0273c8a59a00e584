"""The `<new>` answer block (Fig. 4): one `prompt_name: value` line per feature in spec order.

Training targets, prompts' few-shot examples, grammars and parsers all agree on this text.
"""

from __future__ import annotations

from collections.abc import Mapping

from sensecf.spec import DatasetSpec

OPEN_TAG = "<new>"
CLOSE_TAG = "</new>"


def render_line(spec: DatasetSpec, name: str, value) -> str:
    f = spec.feature(name)
    return f"{f.prompt_name}: {f.format_value(value)}"


def render_block(spec: DatasetSpec, values: Mapping) -> str:
    """The block for a full row of values, at each feature's display precision."""
    lines = [render_line(spec, f.name, values[f.name]) for f in spec.features]
    return "\n".join([OPEN_TAG, *lines, CLOSE_TAG])
