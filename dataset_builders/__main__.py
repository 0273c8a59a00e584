"""`python -m dataset_builders <command> ...`: one entry point for the dataset builders.

Each command is its own module with its own --help and its own error boundary
(sensecf.cli.run_cli, reached through runpy as `__main__`); this only dispatches.
"""

import runpy
import sys

COMMANDS = {
    "synth": ("dataset_builders.synth", "write a synthetic AI-READI release (v3 layout)"),
    "aireadi": ("dataset_builders.aireadi", "read an AI-READI release into a cohort (windows, features, split)"),
    "table": ("dataset_builders.table", "any CSV/parquet table + a DatasetSpec YAML -> a cohort"),
    "pairs": ("dataset_builders.pairs", "build SFT pairs (Fig. 4 prompt -> teacher CF) for Axolotl"),
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        asked_for_help = len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help")
        print("usage: python -m dataset_builders {" + ",".join(COMMANDS) + "} [--help]\n")
        for name, (_, what) in COMMANDS.items():
            print(f"  {name:8s} {what}")
        if len(sys.argv) > 1 and not asked_for_help:
            print(f"error: python -m dataset_builders: command {sys.argv[1]!r}: unknown; one of {list(COMMANDS)}",
                  file=sys.stderr)
        sys.exit(0 if asked_for_help else 2)
    name = sys.argv.pop(1)
    sys.argv[0] = f"python -m dataset_builders {name}"
    runpy.run_module(COMMANDS[name][0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
