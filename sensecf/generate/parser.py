"""Lenient parser for free-text model answers (unconstrained prompting, remote endpoints).

Accepts extra prose, markdown, different spacing and case, units after numbers, "old -> new"
values, a JSON object instead of the block, missing or extra lines. It never raises: every
answer becomes (cf or None, status). Numbers are rounded to the feature's display precision;
features the answer leaves out (or calls "unchanged") take the factual's value, and are listed
in `filled` so the caller can record them.

A number is usable only if it is finite and |x| <= MAX_MAGNITUDE (1e12): "inf", "nan", a
400-digit number (which overflows a float) or 1e308 would reach the classifier as infinity
(tree models cast to float32, whose largest value is ~3.4e38) and stop the whole run. No
feature of a health dataset comes near 1e12, so such a line makes the answer a parse_error whose
note names the feature; the rest of the run goes on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sensecf.spec import DatasetSpec, FeatureSpec

_OPEN = re.compile(r"<\s*new\s*>", re.IGNORECASE)
_CLOSE = re.compile(r"<\s*/\s*new\s*>", re.IGNORECASE)
# mantissa (thousands or decimal commas allowed), then an optional exponent: 1.2e4, 3E-2
_NUMBER = re.compile(r"(?P<mantissa>[-+−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+))(?P<exponent>[eE][-+−]?\d+)?")
_NON_FINITE = re.compile(r"[-+−]?\b(?:inf(?:inity)?|nan)\b", re.IGNORECASE)
MAX_MAGNITUDE = 1e12  # larger numbers are unusable (see the module docstring)
_ARROW = re.compile(r"->|→|=>|\bto\b", re.IGNORECASE)
_UNCHANGED = re.compile(r"\b(unchanged|same|no change|not changed|keep)\b", re.IGNORECASE)
_LEAD = re.compile(r"^(?:[-*•>#+]+|\d+[.)])\s*")  # bullets, quotes, headings, numbered lists
_KEY_PREFIX = re.compile(r"^(?:modified|new|counterfactual|changed|cf)\s+", re.IGNORECASE)


@dataclass
class ParseResult:
    cf: dict[str, Any] | None
    status: Literal["ok", "parse_error"]
    filled: list[str] = field(default_factory=list)  # features taken from the factual
    note: str = ""


def _norm_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _aliases(f: FeatureSpec) -> set[str]:
    without_parens = re.sub(r"\(.*?\)", "", f.prompt_name)
    return {a for a in (_norm_key(f.prompt_name), _norm_key(without_parens), _norm_key(f.name)) if a}


class _KeyMatcher:
    """Maps a line's key to a feature: exact alias first, else a unique prefix match."""

    def __init__(self, spec: DatasetSpec):
        self.aliases = {a: f.name for f in spec.features for a in _aliases(f)}

    def __call__(self, key: str) -> str | None:
        k = _norm_key(_KEY_PREFIX.sub("", key.strip()))
        if k in self.aliases:
            return self.aliases[k]
        if len(k) < 3:
            return None
        hits = {name for alias, name in self.aliases.items() if alias.startswith(k) or k.startswith(alias)}
        return hits.pop() if len(hits) == 1 else None


class _Unusable(ValueError):
    """A line whose number exists but cannot be used (non-finite or absurdly large)."""


def _number(text: str) -> float | None:
    if _ARROW.search(text):  # "12.3 -> 10.0": the new value is the last one
        text = _ARROW.split(text)[-1]
    m = _NUMBER.search(text)
    if not m:
        if _NON_FINITE.search(text):
            raise _Unusable("not a finite number")
        return None
    s = m["mantissa"].replace("−", "-")
    if "," in s:
        # "1,234.5" / "1,234" are thousands; "12,5" is a decimal comma
        s = s.replace(",", "") if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s) else s.replace(",", ".", 1)
    s += (m["exponent"] or "").replace("−", "-")
    try:
        x = float(s)
    except ValueError:
        return None
    if not math.isfinite(x):  # a few hundred digits overflow to inf
        raise _Unusable("not a finite number")
    if abs(x) > MAX_MAGNITUDE:
        raise _Unusable(f"magnitude above {MAX_MAGNITUDE:g}")
    return x


def _category(f: FeatureSpec, text: str) -> str:
    norm = re.sub(r"[\s\-]+", "_", text.strip().strip("\"'`.,;").lower())
    by_norm = {c.lower(): c for c in f.categories}
    if norm in by_norm:
        return by_norm[norm]
    if _ARROW.search(text):
        return _category(f, _ARROW.split(text)[-1])
    lowered = text.lower()
    # A category as a whole word in prose ("Female (unchanged)", "insulin dependent"); underscores
    # count as word characters, so "insulin_dependent" never yields the category "insulin".
    forms = [(form, c) for c in f.categories for form in {c.lower(), c.lower().replace("_", " ")}]
    for form, c in sorted(forms, key=lambda fc: len(fc[0]), reverse=True):
        if re.search(rf"(?<![\w-]){re.escape(form)}(?![\w-])", lowered):
            return c
    return norm  # an unseen category: kept, so plausibility can count it


def _value(f: FeatureSpec, text: str) -> Any:
    """The typed value of a line, or None if the line says nothing usable."""
    text = text.strip().strip("*_`").strip()
    if not text:
        return None
    if not f.is_numeric:
        return _category(f, text)
    x = _number(text)
    if x is None:
        return None
    x = f.round_value(x)
    return int(x) if f.kind == "integer" else x


def _block_region(text: str) -> str:
    """The last <new> block's body (to </new> or the end), or the whole text if untagged."""
    opens = list(_OPEN.finditer(text))
    if not opens:
        return text
    body = text[opens[-1].end() :]
    close = _CLOSE.search(body)
    return body[: close.start()] if close else body


def _pairs_from_json(text: str) -> list[tuple[str, str]]:
    m = re.search(r"\{.*\}", text, re.DOTALL)
    if not m:
        return []
    try:
        obj = json.loads(m.group())
    except ValueError:
        return []
    return [(str(k), str(v)) for k, v in obj.items()] if isinstance(obj, dict) else []


def _pairs_from_lines(text: str) -> list[tuple[str, str]]:
    pairs = []
    for raw in text.splitlines():
        line = _LEAD.sub("", raw.strip()).replace("**", "").replace("__", "").replace("`", "")
        m = re.match(r"\s*\"?([^:=\"]+?)\"?\s*[:=]\s*(.*)$", line)
        if m:
            pairs.append((m.group(1), m.group(2).rstrip(",")))
    return pairs


def parse_block(spec: DatasetSpec, text: str | None, factual: Mapping[str, Any] | None = None) -> ParseResult:
    """Parse a model answer into a CF over the spec's features."""
    try:
        return _parse(spec, text, factual)
    except Exception as e:  # the contract is "never an exception": report what went wrong
        return ParseResult(None, "parse_error", note=f"parser failed: {type(e).__name__}: {e}")


def parse_cf(spec: DatasetSpec, text: str | None, factual: Mapping[str, Any] | None = None):
    """(cf or None, parse_status)."""
    r = parse_block(spec, text, factual)
    return r.cf, r.status


def _parse(spec: DatasetSpec, text: str | None, factual: Mapping[str, Any] | None) -> ParseResult:
    if not text or not text.strip():
        return ParseResult(None, "parse_error", note="empty answer")
    region = _block_region(text)
    pairs = _pairs_from_lines(region) or _pairs_from_json(region)
    match_key = _KeyMatcher(spec)
    found: dict[str, Any] = {}
    unchanged: set[str] = set()
    bad: list[str] = []
    unusable: list[str] = []
    for key, raw_value in pairs:
        name = match_key(key)
        if name is None or name in found or name in unchanged:
            continue  # prose, unknown keys, repeated lines: the first mention wins
        f = spec.feature(name)
        try:
            value = _value(f, raw_value)
        except _Unusable as e:
            unusable.append(f"{f.prompt_name}: {e} ({raw_value.strip()[:40]!r})")
            continue
        if value is None:
            if _UNCHANGED.search(raw_value):
                unchanged.add(name)
            else:
                bad.append(f"{f.prompt_name}: {raw_value.strip()[:40]!r}")
            continue
        found[name] = value
    if bad or unusable:
        notes = [
            f"{what}: " + "; ".join(items)
            for what, items in (("unreadable values", bad), ("unusable numbers", unusable))
            if items
        ]
        return ParseResult(None, "parse_error", note=" | ".join(notes))
    if not any(f.name in found for f in spec.mutable):
        return ParseResult(None, "parse_error", note="no mutable feature found")
    missing = [n for n in spec.names if n not in found]
    if missing and factual is None:
        return ParseResult(None, "parse_error", note=f"missing features {missing}")
    cf = dict(found)
    for name in missing:
        f = spec.feature(name)
        cf[name] = _value(f, f.format_value(factual[name])) if f.is_numeric else str(factual[name])
    return ParseResult({n: cf[n] for n in spec.names}, "ok", filled=missing)
