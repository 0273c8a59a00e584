"""The `<new>` block as a grammar built from the spec and one factual.

Decoding goes line by line (DESIGN.md "Composition constraints"): every line is either forced
text (tags, feature names, the factual's immutable values, a composition group's computed
last member) or one small regex for a mutable value (a number bounded to its display
precision and training range, or one of its categories). A regex cannot express a sum, so the
group's last member is computed from the others and forced; by default the earlier members are
also bounded so that a completion in range always exists (`bound_groups`).

Exports for endpoints that take one constraint for the whole answer: `block_regex` (vLLM
structured outputs; the group's last member is only range-bounded there) and `json_schema`
(OpenAI strict structured outputs; the group's last member is left out and computed here).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sensecf.cfblock import CLOSE_TAG, OPEN_TAG, line_prefix
from sensecf.spec import DatasetSpec, FeatureSpec

_SPECIAL = set(r".^$*+?{}[]\|()/")


def lit(text: str) -> str:
    """Escape text as a literal for Python re, interegular (lm-format-enforcer), xgrammar and
    ECMA (JSON schema `pattern`). re.escape is not used: it escapes characters some of these
    engines do not accept escaped."""
    return "".join("\\n" if c == "\n" else ("\\" + c if c in _SPECIAL else c) for c in text)


# --- numbers at fixed display precision ---------------------------------------------------


def number_text(n: int, decimals: int) -> str:
    """Canonical text of the scaled integer n (value n / 10**decimals), as format_value writes it."""
    digits = str(abs(n)).zfill(decimals + 1)
    body = f"{digits[:-decimals]}.{digits[-decimals:]}" if decimals else digits
    return ("-" if n < 0 else "") + body


def scaled(value: float, decimals: int) -> int:
    """A value on the grid of its display precision, as an integer count of 10**-decimals."""
    return round(float(value) * 10**decimals)


def _digit_class(a: int, b: int) -> str:
    if a == b:
        return str(a)
    if (a, b) == (0, 9):
        return "[0-9]"
    return f"[{a}-{b}]"


def _same_length_patterns(lo: str, hi: str) -> list[list[str]]:
    """Digit-class sequences that together match exactly the digit strings in [lo, hi]
    (both of the same length, leading zeros allowed)."""
    if not lo:
        return [[]]
    if lo[0] == hi[0]:
        return [[lo[0], *p] for p in _same_length_patterns(lo[1:], hi[1:])]
    rest = len(lo) - 1
    out: list[list[str]] = []
    first_full, last_full = int(lo[0]), int(hi[0])
    if lo[1:] != "0" * rest:  # lo's first digit with a partial tail
        out += [[lo[0], *p] for p in _same_length_patterns(lo[1:], "9" * rest)]
        first_full += 1
    tail: list[list[str]] = []
    if hi[1:] != "9" * rest:  # hi's first digit with a partial tail
        tail = [[hi[0], *p] for p in _same_length_patterns("0" * rest, hi[1:])]
        last_full -= 1
    if first_full <= last_full:
        out.append([_digit_class(first_full, last_full)] + ["[0-9]"] * rest)
    return out + tail


def _magnitude_regexes(lo: int, hi: int, decimals: int) -> list[str]:
    """Alternatives for the canonical texts of 0 <= lo <= n <= hi (no sign)."""
    out = []
    shortest = decimals + 1  # "0.x" has one integer digit
    for length in range(max(shortest, len(str(lo))), max(shortest, len(str(hi))) + 1):
        start = 0 if length == shortest else 10 ** (length - 1)
        a, b = max(lo, start), min(hi, 10**length - 1)
        if a > b:
            continue
        for classes in _same_length_patterns(str(a).zfill(length), str(b).zfill(length)):
            if decimals:
                classes = [*classes[:-decimals], "\\.", *classes[-decimals:]]
            out.append("".join(classes))
    return out


def range_regex(lo: int, hi: int, decimals: int) -> str:
    """A regex matching exactly number_text(n, decimals) for every integer n in [lo, hi].

    lo and hi are scaled integers (value * 10**decimals). "-0.0" is never produced."""
    if lo > hi:
        raise ValueError(f"empty range [{lo}, {hi}]")
    alternatives = []
    if lo < 0:
        alternatives += ["-" + r for r in _magnitude_regexes(max(1, -hi), -lo, decimals)]
    if hi >= 0:
        alternatives += _magnitude_regexes(max(0, lo), hi, decimals)
    return "(" + "|".join(alternatives) + ")"


def choice_regex(choices: list[str]) -> str:
    return "(" + "|".join(lit(c) for c in choices) + ")"


def feature_bounds(f: FeatureSpec) -> tuple[int, int]:
    """The training range of a numeric feature on its display-precision grid."""
    if not f.has_range:
        raise ValueError(
            f"feature '{f.name}' has no learned min/max: generate with the cohort's spec (RUN/cohort/spec.yaml)"
        )
    step = 10**f.decimals
    return math.ceil(f.min * step - 1e-6), math.floor(f.max * step + 1e-6)


# --- the block plan -----------------------------------------------------------------------

LineKind = Literal["fixed", "choice", "number", "computed"]


@dataclass(frozen=True)
class LineGrammar:
    """One line of the block: `prefix` is forced; the value is fixed, computed or free."""

    feature: FeatureSpec
    kind: LineKind
    prefix: str
    fixed_value: str | None = None  # kind "fixed": the factual's immutable value
    lo: int = 0  # kind "number"/"computed": scaled training range
    hi: int = 0

    @property
    def static_value_regex(self) -> str:
        """The value's regex without group bounds (what a whole-block regex can say)."""
        if self.kind == "fixed":
            return lit(self.fixed_value)
        if self.kind == "choice":
            return choice_regex(self.feature.categories)
        return range_regex(self.lo, self.hi, self.feature.decimals)


def plan_lines(spec: DatasetSpec, factual: Mapping[str, Any]) -> list[LineGrammar]:
    """The block's lines in spec order for this factual."""
    computed = {computed_name(spec, g.name) for g in spec.groups}
    lines = []
    for f in spec.features:
        if not f.mutable:
            if f.name not in factual:
                raise ValueError(f"factual lacks immutable feature '{f.name}'")
            value = f.format_value(factual[f.name])
            lines.append(LineGrammar(f, "fixed", line_prefix(f), fixed_value=value))
        elif not f.is_numeric:
            lines.append(LineGrammar(f, "choice", line_prefix(f)))
        else:
            lo, hi = feature_bounds(f)
            lines.append(LineGrammar(f, "computed" if f.name in computed else "number", line_prefix(f), lo=lo, hi=hi))
    return lines


def computed_name(spec: DatasetSpec, group_name: str) -> str:
    """The member of a composition group that is computed: the last one in spec order."""
    group = next(g for g in spec.groups if g.name == group_name)
    order = {n: i for i, n in enumerate(spec.names)}
    return max(group.members, key=order.__getitem__)


# --- composition groups -------------------------------------------------------------------


def _group_scale(spec: DatasetSpec, members: list[str]) -> int:
    return max(spec.feature(m).decimals for m in members)


def computed_member(spec: DatasetSpec, group_name: str, values: Mapping[str, Any]) -> tuple[int, bool]:
    """The computed member's scaled value from the other members' values, clamped to its
    range, and whether it was in range (False = the candidate is incoherent)."""
    group = next(g for g in spec.groups if g.name == group_name)
    last = spec.feature(computed_name(spec, group_name))
    d = _group_scale(spec, group.members)
    others = sum(scaled(values[m], d) for m in group.members if m != last.name)
    exact = scaled(group.total, d) - others
    n = round(exact / 10 ** (d - last.decimals))
    lo, hi = feature_bounds(last)
    return min(max(n, lo), hi), lo <= n <= hi


def member_bounds(spec: DatasetSpec, name: str, values: Mapping[str, Any]) -> tuple[int, int]:
    """Scaled bounds for a group member (not the computed one) so that the members still to
    come can complete the group within their ranges. Falls back to the member's own range
    when no value works (the candidate then ends incoherent)."""
    f = spec.feature(name)
    own_lo, own_hi = feature_bounds(f)
    group = spec.group_of(name)
    if group is None:
        return own_lo, own_hi
    d = _group_scale(spec, group.members)
    known = sum(scaled(values[m], d) for m in group.members if m in values and m != name)
    later = [m for m in group.members if m not in values and m != name]
    up = 10 ** (d - f.decimals)
    later_lo = sum(feature_bounds(spec.feature(m))[0] * 10 ** (d - spec.feature(m).decimals) for m in later)
    later_hi = sum(feature_bounds(spec.feature(m))[1] * 10 ** (d - spec.feature(m).decimals) for m in later)
    rest = scaled(group.total, d) - known
    lo = max(own_lo, math.ceil((rest - later_hi) / up))
    hi = min(own_hi, math.floor((rest - later_lo) / up))
    return (lo, hi) if lo <= hi else (own_lo, own_hi)


def complete_groups(spec: DatasetSpec, values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Overwrite each group's computed member with total - sum(others) (clamped to range);
    returns the new values and the names of groups that could not be completed in range."""
    out = dict(values)
    incoherent = []
    for g in spec.groups:
        last = spec.feature(computed_name(spec, g.name))
        n, ok = computed_member(spec, g.name, out)
        out[last.name] = n / 10**last.decimals
        if not ok:
            incoherent.append(g.name)
    return out, incoherent


# --- walking the block line by line -------------------------------------------------------


@dataclass
class BlockCursor:
    """State of one block being decoded: hands out forced text and the regex of the next free
    value, takes the decoded values, and computes group members when their turn comes."""

    spec: DatasetSpec
    lines: list[LineGrammar]
    bound_groups: bool = True
    text: str = ""
    values: dict[str, str] = field(default_factory=dict)  # feature -> value text
    incoherent: list[str] = field(default_factory=list)  # groups completed out of range
    _i: int = 0
    _awaiting_value: bool = False
    _closed: bool = False

    @classmethod
    def start(cls, spec: DatasetSpec, factual: Mapping[str, Any], *, bound_groups: bool = True) -> BlockCursor:
        return cls(spec, plan_lines(spec, factual), bound_groups=bound_groups)

    @property
    def done(self) -> bool:
        return self._closed

    @property
    def line_index(self) -> int:
        """Index of the line being decoded (lines before it are complete)."""
        return self._i

    def take_forced(self) -> str:
        """Advance over everything forced up to the next free value (or the end of the block)
        and return that text; it is already appended to `text`."""
        if self._awaiting_value or self._closed:
            return ""
        out = [] if self.text else [OPEN_TAG + "\n"]
        while self._i < len(self.lines):
            line = self.lines[self._i]
            if line.kind == "fixed":
                value = line.fixed_value
            elif line.kind == "computed":
                value = self._compute(line)
            else:
                out.append(line.prefix)
                self._awaiting_value = True
                break
            self.values[line.feature.name] = value
            out.append(line.prefix + value + "\n")
            self._i += 1
        if self._i == len(self.lines):
            out.append(CLOSE_TAG)
            self._closed = True
        forced = "".join(out)
        self.text += forced
        return forced

    def free_line(self) -> LineGrammar | None:
        return self.lines[self._i] if self._awaiting_value else None

    def free_regex(self) -> str:
        """Regex for the next free value and its terminating newline."""
        line = self.free_line()
        if line is None:
            raise RuntimeError("no free value is pending; call take_forced() first")
        if line.kind == "choice":
            return choice_regex(line.feature.categories) + "\\n"
        return range_regex(*self.free_bounds(), line.feature.decimals) + "\\n"

    def free_bounds(self) -> tuple[int, int]:
        """Scaled bounds of the pending numeric value (its range, narrowed for group members)."""
        line = self.free_line()
        if self.bound_groups and self.spec.group_of(line.feature.name) is not None:
            return member_bounds(self.spec, line.feature.name, self._numbers())
        return line.lo, line.hi

    def accept(self, decoded: str) -> None:
        """Take the decoded value text (with its newline) for the pending free line."""
        regex = self.free_regex()
        if not re.fullmatch(regex, decoded):
            raise ValueError(f"{decoded!r} does not match the line grammar {regex!r}")
        line = self.lines[self._i]
        self.values[line.feature.name] = decoded[:-1]
        self.text += decoded
        self._i += 1
        self._awaiting_value = False

    def _numbers(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.values.items() if self.spec.feature(k).is_numeric}

    def _compute(self, line: LineGrammar) -> str:
        group = self.spec.group_of(line.feature.name)
        n, ok = computed_member(self.spec, group.name, self._numbers())
        if not ok:
            self.incoherent.append(group.name)
        return number_text(n, line.feature.decimals)

    def cf(self) -> dict[str, Any]:
        """The decoded CF as typed values (numbers as floats/ints, categories as strings)."""
        return {line.feature.name: typed_value(line.feature, self.values[line.feature.name]) for line in self.lines}


def typed_value(f: FeatureSpec, text: str) -> Any:
    if not f.is_numeric:
        return text
    return int(text) if f.kind == "integer" else float(text)


# --- whole-answer constraints for remote endpoints ----------------------------------------


def block_regex(spec: DatasetSpec, factual: Mapping[str, Any]) -> str:
    """One regex for the whole block (vLLM structured outputs). It cannot express sums, so the
    group's computed member is only range-bounded; run complete_groups on the parsed CF."""
    lines = plan_lines(spec, factual)
    body = "\\n".join(lit(line.prefix) + line.static_value_regex for line in lines)
    return lit(OPEN_TAG + "\n") + body + lit("\n" + CLOSE_TAG)


def json_schema(spec: DatasetSpec, factual: Mapping[str, Any]) -> dict:
    """A JSON schema for OpenAI strict structured outputs.

    Strict mode needs every property required and additionalProperties false. Numbers are
    strings with a `pattern` (supported for strings in strict mode): one regex fixes both the
    display precision and the training range, which minimum/maximum on a JSON number cannot
    (no precision). Immutables are a one-value enum; categories an enum. Each group's computed
    member is left out: complete_groups() derives it. Responses are re-validated client-side."""
    props: dict[str, dict] = {}
    notes = []
    for line in plan_lines(spec, factual):
        f = line.feature
        desc = f"{f.prompt_name}" + (f" ({f.unit})" if f.unit else "")
        if line.kind == "computed":
            group = spec.group_of(f.name)
            notes.append(f"{f.name} is computed as {group.total:g} minus the other {group.name} members")
            continue
        if line.kind == "fixed":
            props[f.name] = {"type": "string", "enum": [line.fixed_value], "description": desc + ", unchanged"}
        elif line.kind == "choice":
            props[f.name] = {"type": "string", "enum": list(f.categories), "description": desc}
        else:
            lo, hi = number_text(line.lo, f.decimals), number_text(line.hi, f.decimals)
            props[f.name] = {
                "type": "string",
                "pattern": "^" + line.static_value_regex + "$",
                "description": f"{desc}, {f.decimals} decimals, from {lo} to {hi}",
            }
    schema = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
    if notes:
        schema["description"] = "; ".join(notes)
    return schema
