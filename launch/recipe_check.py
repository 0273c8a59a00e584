"""Check Axolotl recipes offline before a GPU hour is spent on them.

    python -m launch.recipe_check recipes/llama31.yml recipes/biomistral.yml recipes/smollm2-cpu.yml

Two checks: (1) Axolotl's own validation (`axolotl.utils.config.validate_config`, pure pydantic:
no network, no GPU); (2) every key is one Axolotl knows. Axolotl silently drops unknown keys,
so a typo such as `lora_rank: 8` would otherwise train with the default rank. Known keys are
the schema's field names and aliases, recursively for nested sections (datasets entries,
special_tokens, ...).
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path

import typer
import yaml
from pydantic import AliasChoices, BaseModel

from sensecf.cli import one_line, run_cli

os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")  # telemetry otherwise stalls ~10 s offline


class RecipeError(ValueError):
    """A recipe Axolotl would reject or misread; the message names the file and keys."""


def _models_in(annotation) -> list[type[BaseModel]]:
    """Pydantic models inside an annotation (unwrapping Optional, Union, list, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return []
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


def _names(model: type[BaseModel]) -> dict[str, list[type[BaseModel]]]:
    """Every accepted key of a model -> the nested models its value may be."""
    names: dict[str, list[type[BaseModel]]] = {}
    for name, field in model.model_fields.items():
        nested = _models_in(field.annotation)
        keys = {name, field.alias}
        va = field.validation_alias
        if isinstance(va, str):
            keys.add(va)
        elif isinstance(va, AliasChoices):
            keys.update(c for c in va.choices if isinstance(c, str))
        for key in keys - {None}:
            names[key] = nested
    return names


def _unknown(value: dict, models: list[type[BaseModel]], where: str) -> list[str]:
    # A key is known if any of the candidate models (e.g. SFTDataset | DPODataset) accepts it.
    known: dict[str, list[type[BaseModel]]] = {}
    for m in models:
        for key, nested in _names(m).items():
            known.setdefault(key, []).extend(nested)
    out = []
    for key, item in value.items():
        path = f"{where}{key}"
        if key not in known:
            out.append(path)
            continue
        nested = known[key]
        if not nested:
            continue
        if isinstance(item, dict):
            out += _unknown(item, nested, f"{path}.")
        elif isinstance(item, list):
            for i, entry in enumerate(item):
                if isinstance(entry, dict):
                    out += _unknown(entry, nested, f"{path}[{i}].")
    return out


def unknown_keys(recipe: dict) -> list[str]:
    """Dotted paths of keys Axolotl's schema does not know (it would drop them silently)."""
    from axolotl.utils.schemas.config import AxolotlInputConfig

    return _unknown(recipe, [AxolotlInputConfig], "")


def load_recipe(path: str | Path) -> dict:
    """The recipe file as a mapping; RecipeError naming the file (and the line and column of a
    YAML error) when it is missing, unreadable, not a mapping or names no `base_model`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read the recipe: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise RecipeError(f"{path}: {where}not valid YAML: {' '.join(str(problem).split())}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping, got {type(raw).__name__}")
    if not raw.get("base_model"):
        raise RecipeError(f"{path}: base_model: missing; name the model to fine-tune (a hub id or a folder)")
    return raw


def check_recipe(recipe: dict, name: str = "recipe") -> dict:
    """Raise RecipeError on unknown keys or when Axolotl's validation fails; return the
    validated config (Axolotl's view of it, defaults filled in)."""
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault
    from pydantic import ValidationError

    unknown = unknown_keys(recipe)
    if unknown:
        raise RecipeError(f"{name}: keys Axolotl does not know (it would ignore them): {unknown}")
    try:
        return dict(validate_config(DictDefault(yaml.safe_load(yaml.safe_dump(recipe)))))
    except (ValidationError, ValueError) as e:
        raise RecipeError(f"{name}: Axolotl rejects it: {one_line(e)}") from None


def main(recipes: list[Path] = typer.Argument(..., help="Axolotl recipe YAML files")) -> None:
    """Validate recipes with Axolotl's schema and reject keys it does not know.

    Each recipe gets a line: `ok   FILE`, or `error: FILE: ...` (one line). Exit code 2 when any
    recipe failed (bad input, as for every CLI's error boundary)."""
    failed = 0
    for path in recipes:
        try:
            check_recipe(load_recipe(path), str(path))
            typer.echo(f"ok   {path}")
        except RecipeError as e:
            failed += 1
            typer.echo(f"error: {one_line(e)}", err=True)
    raise typer.Exit(2 if failed else 0)


if __name__ == "__main__":
    run_cli(main)
