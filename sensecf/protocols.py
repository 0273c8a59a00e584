"""The paper's protocol and ours, as data (DESIGN.md "Protocols").

Every method runs under one protocol, and its rows say which:
- `paper`: the method as published. Fig. 4's prompt, free decoding with the `<new>` block parsed
  leniently (an unparsable answer counts as invalid), a baseline's first CF as the library
  returns it. The row keeps the paper's name: `llama31_ft`, `gpt4o_zs`, `dice_random`.
- `sensecf`: ours. The same prompt decoded under the grammar (`+grammar`; a JSON schema for
  GPT-4o), a baseline's nearest valid of its k candidates (`+best_of_k`), the valid candidate
  nearest the factual among k sampled answers (`+verified`), and the teacher.
So an improvement is a row beside the method it improves, in the same table. Stages look the
protocol up here by name; none branches on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ProtocolName = Literal["paper", "sensecf"]
VERIFIED_SUFFIX = "+verified"
OUR_METHODS = ("teacher",)  # no counterpart in the paper (its SFT targets' source is our choice)


@dataclass(frozen=True)
class Protocol:
    name: ProtocolName
    llm_suffix: str  # appended to an LLM method's name
    baseline_suffix: str  # appended to an optimisation baseline's name
    free_decoding: bool  # hf backend: no grammar, the lenient parser reads the answer
    openai_constraint: str | None  # openai backend: forced constraint, or None = the endpoint's own
    baseline_pick: Literal["first", "nearest_valid"]  # which of a library's CFs is the record
    description: str


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol(
        "paper", "", "", free_decoding=True, openai_constraint="none", baseline_pick="first",
        description="the paper's method: Fig. 4 verbatim, free decoding, the library's first CF",
    ),
    "sensecf": Protocol(
        "sensecf", "+grammar", "+best_of_k", free_decoding=False, openai_constraint=None,
        baseline_pick="nearest_valid",
        description="ours: the same prompt under the grammar (JSON schema / regex on endpoints), nearest valid of k",
    ),
}


def get(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"protocol '{name}': unknown; choose one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


# Every variant suffix a row name may carry (computed once: every CFRecord's name is checked).
SUFFIXES = frozenset(
    {VERIFIED_SUFFIX} | {s for p in PROTOCOLS.values() for s in (p.llm_suffix, p.baseline_suffix) if s}
)


def row_name(method: str, protocol: str, kind: Literal["llm", "baseline"]) -> str:
    """The row (and CF file) name of a base method under a protocol: `llama31_ft` -> `llama31_ft+grammar`."""
    p = get(protocol)
    if "+" in method:
        raise ValueError(f"method '{method}': give the base name without '+'; the protocol adds the variant suffix")
    return method + (p.llm_suffix if kind == "llm" else p.baseline_suffix)


def protocol_of(row: str) -> ProtocolName:
    """`paper` for a row named after a paper method, `sensecf` for our variants and methods."""
    base, plus, rest = row.partition("+")
    if plus:
        unknown = {"+" + s for s in rest.split("+")} - SUFFIXES
        if unknown:
            raise ValueError(f"row '{row}': unknown variant suffix {sorted(unknown)}; known: {sorted(SUFFIXES)}")
        return "sensecf"
    ours = any(base == m or base.startswith(m + "_") for m in OUR_METHODS)  # teacher, teacher_1, ...
    return "sensecf" if ours else "paper"
