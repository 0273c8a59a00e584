"""The one way the project fills Jinja templates (the prompts, the report): undefined is an error.

    env = template_env(Path(__file__).parent / "templates")
    text = env.get_template("fig4.j2").render(**values)
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2


@cache
def template_env(folder: Path) -> jinja2.Environment:
    """A missing value raises (StrictUndefined) instead of rendering blank; block tags leave no
    stray newlines; no HTML escaping (the output is Markdown or a prompt)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )
