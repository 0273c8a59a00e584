"""Declarative dataset spec: which features exist, which may change, how they are shown.

Everything downstream of `dataset_builders/` knows a dataset only through this spec, so any
table + spec runs through pairs, generation, evaluation and augmentation.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sensecf.atomic import write_text

# Columns the cohort table and the CF records add beside the spec's features and label
# (sensecf.rundir ID_COL, GROUP_COL, SPLIT_COL; records' factual_pred); a feature or label of
# the same name would be overwritten by them.
RESERVED_NAMES = ("window_id", "participant_id", "split", "factual_pred")

FeatureKind = Literal["continuous", "integer", "categorical"]


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file and the field."""


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    prompt_name: str
    kind: FeatureKind
    mutable: bool
    decimals: int = Field(default=0, ge=0, le=6)
    unit: str = ""
    categories: list[str] | None = None
    description: str = ""
    # Learned from the training split (dataset_builders writes them next to the cohort).
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> FeatureSpec:
        for bound in ("min", "max"):
            value = getattr(self, bound)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"feature '{self.name}': '{bound}' is {value}, not a finite number")
        if self.kind == "categorical":
            if not self.categories:
                raise ValueError(f"feature '{self.name}': categorical needs a non-empty 'categories' list")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"feature '{self.name}': 'categories' has duplicates")
            if self.min is not None or self.max is not None:
                raise ValueError(f"feature '{self.name}': a categorical feature takes no 'min'/'max'")
        else:
            if self.categories is not None:
                raise ValueError(f"feature '{self.name}': 'categories' is only for kind categorical")
            if self.kind == "integer" and self.decimals != 0:
                raise ValueError(f"feature '{self.name}': an integer feature has 'decimals: 0'")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"feature '{self.name}': min {self.min} > max {self.max}")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.kind != "categorical"

    @property
    def has_range(self) -> bool:
        return self.min is not None and self.max is not None

    def format_value(self, value) -> str:
        """The value as shown in prompts and answers: display precision, no unit."""
        if self.kind == "categorical":
            return str(value)
        return f"{float(value):.{self.decimals}f}"

    def round_value(self, value: float) -> float:
        return round(float(value), self.decimals)


class CompositionGroup(BaseModel):
    """Features that are parts of one whole, e.g. sleep-stage percentages summing to 100."""

    model_config = ConfigDict(extra="forbid")

    name: str
    members: list[str] = Field(min_length=2)
    total: float


class LabelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    classes: dict[int, str] = Field(description="class index -> meaning in words, e.g. {1: 'high stress'}")

    @model_validator(mode="after")
    def _binary(self) -> LabelSpec:
        if sorted(self.classes) != [0, 1]:
            raise ValueError(f"label '{self.name}': classes must be exactly 0 and 1, got {sorted(self.classes)}")
        return self


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    label: LabelSpec
    features: list[FeatureSpec] = Field(min_length=1)
    groups: list[CompositionGroup] = []

    @model_validator(mode="after")
    def _check_names(self) -> DatasetSpec:
        seen: set[str] = set()
        prompt_names: set[str] = set()
        for f in self.features:
            if f.name in seen:
                raise ValueError(f"features: duplicate feature name '{f.name}'")
            if f.name in RESERVED_NAMES:
                raise ValueError(f"feature '{f.name}': the name is reserved for a cohort column {list(RESERVED_NAMES)}")
            # Answers name features by prompt_name, compared as the parser does (letters and
            # digits, any case), so two that compare equal could not be told apart.
            key = re.sub(r"[^a-z0-9]", "", f.prompt_name.lower())
            if key and key in prompt_names:
                raise ValueError(f"feature '{f.name}': duplicate prompt_name '{f.prompt_name}'")
            seen.add(f.name)
            prompt_names.add(key)
        if self.label.name in seen:
            raise ValueError(f"label: '{self.label.name}' is also a feature name")
        if self.label.name in RESERVED_NAMES:
            raise ValueError(
                f"label '{self.label.name}': the name is reserved for a cohort column {list(RESERVED_NAMES)}"
            )
        grouped: set[str] = set()
        for g in self.groups:
            for m in g.members:
                if m not in seen:
                    raise ValueError(f"groups.{g.name}: member '{m}' is not a feature")
                feat = self.feature(m)
                if not feat.is_numeric or not feat.mutable:
                    raise ValueError(f"groups.{g.name}: member '{m}' must be a mutable numeric feature")
                if m in grouped:
                    raise ValueError(f"groups.{g.name}: member '{m}' is already in another group")
                grouped.add(m)
        return self

    # --- lookups -------------------------------------------------------------------------
    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature named '{name}' in spec '{self.name}'")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def mutable(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.mutable]

    @property
    def immutable(self) -> list[FeatureSpec]:
        return [f for f in self.features if not f.mutable]

    @property
    def numeric(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.is_numeric]

    @property
    def categorical(self) -> list[FeatureSpec]:
        return [f for f in self.features if not f.is_numeric]

    def group_of(self, name: str) -> CompositionGroup | None:
        return next((g for g in self.groups if name in g.members), None)

    # --- learned ranges ------------------------------------------------------------------
    def with_ranges(self, train: pd.DataFrame) -> DatasetSpec:
        """A copy whose numeric features carry the training split's min/max at display
        precision. Categories stay as declared."""
        missing = [n for n in self.names if n not in train.columns]
        if missing:
            raise SpecError(f"training frame lacks spec features {missing}")
        feats = []
        for f in self.features:
            if f.is_numeric:
                col = pd.to_numeric(train[f.name], errors="raise")
                low, high = f.round_value(col.min()), f.round_value(col.max())
                if not (math.isfinite(low) and math.isfinite(high)):
                    raise SpecError(f"feature '{f.name}': training values span [{low}, {high}], not a finite range")
                f = f.model_copy(update={"min": low, "max": high})
            feats.append(f)
        return self.model_copy(update={"features": feats})

    # --- files ---------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> DatasetSpec:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise SpecError(f"{path}: spec file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(f"{path}: cannot read the spec file: {e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e)
            raise SpecError(f"{path}: {where}not valid YAML: {' '.join(str(problem).split())}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()
            )
            raise SpecError(f"{path}: invalid spec: {problems}") from None

    def to_yaml(self, path: str | Path) -> None:
        write_text(path, yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False))
