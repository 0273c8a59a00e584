"""The fault suite's tools: run a stage's CLI as a user would and judge how it ended.

Each fault file holds a table (a list of `Fault`) and one parametrised test over it. A fault's
`expect` says which outcome counts as handled:
- "error":     one line `error: <file>: <where>: <reason>`, exit code 2, no traceback
- "counted":   the bad rows are dropped and their number is in the artifact the user reads
- "row":       the run goes on; the bad item becomes its own record with its own status
- "stop":      the run stops at once with the provider's or lock's message, nothing written wrongly
- "resume":    killed or interrupted, then re-run: the same artifacts as an uninterrupted run
- "refused":   hostile input is refused before anything runs
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPECTS = ("error", "counted", "row", "stop", "resume", "refused")


@dataclass(frozen=True)
class Fault:
    id: str
    what: str  # the fault, as a user would describe it
    expect: str  # one of EXPECTS
    args: dict = field(default_factory=dict)  # whatever the test needs to stage it

    def __post_init__(self):
        assert self.expect in EXPECTS, self.expect


def params(faults: list[Fault]):
    """pytest.mark.parametrize arguments: ids from the table, the expectation in the id."""
    import pytest

    return [pytest.param(f, id=f"{f.expect}:{f.id}") for f in faults]


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith(("error:", "internal error:"))]


def run_module(module: str, *args: str, env: dict | None = None, timeout: float = 600) -> Outcome:
    """`python -m module args...` from the repository root, as a user runs a stage."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
                "AXOLOTL_DO_NOT_TRACK": "1", **(env or {})}
    full_env.pop("SENSECF_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(out: Outcome, *names: str, rc: int = 2) -> str:
    """Exit code rc, no traceback, exactly one `error:` line naming each of `names`."""
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.rc == rc, (out.rc, out.stderr[-3000:])
    lines = out.error_lines
    assert len(lines) == 1, out.stderr[-3000:]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]
