"""The fault suite's tally: after the run, how many faults were tried and how each was judged."""

from __future__ import annotations

from collections import Counter


def pytest_terminal_summary(terminalreporter):
    tally: Counter = Counter()
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if "tests/faults/" not in report.nodeid or report.when != "call" and outcome != "error":
                continue
            expect = report.nodeid.split("[", 1)[1].split(":", 1)[0] if "[" in report.nodeid else "other"
            tally[(expect, outcome)] += 1
    if not tally:
        return
    tried = sum(tally.values())
    handled = sum(v for (_, o), v in tally.items() if o == "passed")
    kinds = sorted({k for k, _ in tally})
    terminalreporter.write_sep("-", f"fault suite: {tried} faults tried, {handled} handled as expected")
    for kind in kinds:
        failed = tally[(kind, "failed")] + tally[(kind, "error")]
        terminalreporter.write_line(f"  {kind:8s} passed {tally[(kind, 'passed')]:3d}  failed {failed:3d}")
