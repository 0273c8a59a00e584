"""`sensecf <stage> ...`: one command for every stage of the pipeline (the `sensecf` console script).

    sensecf --help                              every stage, one line each
    sensecf generate --help                     the stage's own options (eval.generate's)
    sensecf run recipes/experiments/demo.yml    the whole experiment (launch.experiment)

Each subcommand hands its arguments, unchanged, to the stage's own module exactly as
`python -m <module> ...` would run it (runpy, as `__main__`), so a stage's options, help, exit
codes and error messages are its own and the `python -m` entry points stay the reference.
`--debug` anywhere also reaches the stage (as SENSECF_DEBUG=1, which its error boundary reads).
"""

from __future__ import annotations

import os
import runpy
import sys

import typer
from typer.core import TyperGroup

from sensecf.cli import run_cli

# (subcommand, module run as `python -m`, one line for `sensecf --help`), in pipeline order.
# "cohort" is a group: `sensecf cohort aireadi ...`, `sensecf cohort table ...`.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("synth", "dataset_builders.synth", "write a synthetic AI-READI release (v3 layout)"),
    ("cohort aireadi", "dataset_builders.aireadi", "an AI-READI release -> a cohort (windows, features, split)"),
    ("cohort table", "dataset_builders.table", "any CSV/parquet table + a DatasetSpec YAML -> a cohort"),
    ("classifier", "eval.classifier", "train the black-box classifier on the cohort"),
    ("baselines", "eval.baselines", "CFs from DiCE, cfnow, NICE and the teacher -> RUN/cfs/<method>.jsonl"),
    ("pairs", "dataset_builders.pairs", "SFT pairs (Fig. 4 prompt -> teacher CF) for Axolotl"),
    ("recipe-check", "launch.recipe_check", "check Axolotl recipes offline (validation, unknown keys)"),
    ("train", "launch.train", "fine-tune a LoRA adapter with an Axolotl recipe"),
    ("generate", "eval.generate", "LLM CFs (hf or OpenAI-compatible backend) -> RUN/cfs/<method>.jsonl"),
    ("table3", "eval.report", "Table III, Fig. 6, Fig. 8 and the intervention example from every CF file"),
    ("table4", "augment.scarcity", "augmentation under label scarcity: Table IV, Fig. 7, Fig. 1"),
    ("report", "augment.report", "the experiment's report.md from every stage's artifacts (+ W&B)"),
    ("run", "launch.experiment", "run an experiment recipe end to end, e.g. recipes/experiments/demo.yml"),
    ("wandb-sync", "sensecf.wandb_sync", "upload a run directory's offline W&B runs and link their lineage"),
    ("models", "sensecf.models", "prepare the embedded SmolLM2 and the real tokenizers offline"),
    ("bench", "benchmarks.run_all", "speed and quality benchmarks -> JSON"),
)

# Every option and argument after the subcommand belongs to the stage, --help included.
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def run_stage(module: str, args: list[str]) -> None:
    """Run `module` as `python -m module *args` would, in this process (runpy sets sys.argv[0]
    and __main__ as `python -m` does); the stage's error boundary exits with its code."""
    sys.argv = [sys.argv[0], *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


_argv: list[str] | None = None  # the command line main() was given, before click parses it


def _stage_args(path: str, ctx: typer.Context) -> list[str]:
    """Everything after the subcommand's words, as typed ("--" included: click would drop it)."""
    if _argv is not None:
        words = [a for a in _argv if a != "--debug"]  # run_cli drops it; the stage reads SENSECF_DEBUG
        n = len(path.split())
        if words[:n] == path.split():
            return words[n:]
    return list(ctx.args)


def _command(path: str, module: str):
    def command(ctx: typer.Context) -> None:
        run_stage(module, _stage_args(path, ctx))

    return command


class _InPipelineOrder(TyperGroup):
    """`sensecf --help` lists the stages in pipeline order (typer puts groups last)."""

    def list_commands(self, ctx) -> list[str]:
        order = list(dict.fromkeys(name.split()[0] for name, _, _ in STAGES))
        return sorted(super().list_commands(ctx), key=lambda n: order.index(n) if n in order else len(order))


def build_app() -> typer.Typer:
    app = typer.Typer(
        cls=_InPipelineOrder,
        add_completion=False,
        no_args_is_help=True,
        help="SenseCF: LLM counterfactual explanations for digital health. Every stage is a subcommand; "
        "`sensecf STAGE --help` shows that stage's options (the same as `python -m MODULE --help`).",
    )
    groups: dict[str, typer.Typer] = {}
    for name, module, what in STAGES:
        *group, leaf = name.split()
        target = app
        if group:
            if group[0] not in groups:
                groups[group[0]] = typer.Typer(add_completion=False, no_args_is_help=True,
                                               help="build a cohort: `aireadi` (a release) or `table` (any table)")
                app.add_typer(groups[group[0]], name=group[0])
            target = groups[group[0]]
        target.command(leaf, help=f"{what}  [python -m {module}]", short_help=what,
                       context_settings=_PASS_THROUGH, add_help_option=False)(_command(name, module))
    return app


def main() -> None:
    global _argv
    _argv = sys.argv[1:]
    if "--debug" in _argv:
        os.environ["SENSECF_DEBUG"] = "1"  # run_cli drops --debug from the stage's arguments
    run_cli(build_app())


if __name__ == "__main__":
    main()
