"""One error boundary for every stage's CLI (DESIGN.md "Trust in artifacts").

Bad input ends in one line, `error: <file>: <field or row>: <reason>`, and exit code 2; an
internal error in `internal error: <type>: <message>` and exit code 1, with the traceback only
under `--debug` (or SENSECF_DEBUG=1). Usage, in place of `app()` / `typer.run(main)`:

    if __name__ == "__main__":
        run_cli(app)          # or run_cli(main) for a plain typer function
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

import click
import typer
import yaml
from pydantic import ValidationError

from sensecf.atomic import LockedError


class InputError(ValueError):
    """Bad input, located: `InputError(file, where, reason)` reads `file: where: reason`."""

    def __init__(self, file, where: str | None, reason: str):
        self.file, self.where, self.reason = str(file), where, reason
        super().__init__(": ".join(x for x in (self.file, where, reason) if x))

    def __reduce__(self):  # raised in a worker process, it must cross back whole
        return type(self), (self.file, self.where, self.reason)


# What a user's input (or a second writer) can cause: a message, never a traceback. Every other
# exception is ours.
BAD_INPUT = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
             yaml.YAMLError, ValidationError, UnicodeDecodeError, LockedError)


def one_line(e: BaseException) -> str:
    """An exception as one line (pydantic and YAML errors span several)."""
    if isinstance(e, ValidationError):
        parts = [f"{'.'.join(str(x) for x in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()[:3]]
        more = f" (+{e.error_count() - 3} more)" if e.error_count() > 3 else ""
        return f"{e.title}: " + "; ".join(parts) + more
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"{mark.name}: line {mark.line + 1}, column {mark.column + 1}: {e.problem}"
    if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in str(e.args[-1] if e.args else ""):
        return f"{e.filename}: no such file"
    text = " ".join(str(e).split())
    return text or type(e).__name__


def run_cli(app: Callable, argv: list[str] | None = None) -> None:
    """Run a typer app or function with the error boundary; exits with 0, 1 or 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SENSECF_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if not isinstance(app, typer.Typer):  # a plain function, as typer.run takes it
        function, app = app, typer.Typer(add_completion=False)
        app.command()(function)
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name=_prog_name(), standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except click.ClickException as e:  # usage errors: typer's own message, exit 2
        e.show()
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except SystemExit:
        raise
    except BAD_INPUT as e:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - the boundary: anything else is our bug
        if debug:
            traceback.print_exc()
        print(f"internal error: {type(e).__name__}: {one_line(e)} (re-run with --debug for the traceback)",
              file=sys.stderr)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _prog_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return f"python -m {spec.name}" if spec and spec.name else os.path.basename(sys.argv[0])
