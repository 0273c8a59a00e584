"""What a backend is asked for and what it returns, one answer per request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenRequest:
    factual: Mapping[str, Any]
    seed: int = 0  # sampling seed of this answer (ignored when greedy)
    prompt: str = ""  # chat-rendered prompt text, generation prompt included (hf backend)
    messages: list[dict] = field(default_factory=list)  # chat messages (openai backend)


@dataclass
class GenResult:
    text: str
    cf: dict[str, Any] | None
    status: str  # ok | incoherent | parse_error | empty | refusal | error (CFRecord.parse_status)
    prompt_tokens: int | None
    completion_tokens: int | None  # answer tokens, forced and sampled
    decode_steps: int | None = None  # forward calls this answer took part in, prefill included
    prefill_tokens: int | None = None  # tokens run in the prefill (shared prefix excluded; 0 = copied)
    sampled_tokens: int | None = None  # answer tokens chosen by the model
    seconds: float = 0.0  # wall time of this answer (batched: batch wall time / rows)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # refusal: the model's refusal text; error: the provider's message; empty: why
