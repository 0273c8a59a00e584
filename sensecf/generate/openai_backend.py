"""CF generation against any OpenAI-compatible endpoint (the official `openai` SDK, async).

Two targets, chosen by `constraint`:
- "json_schema": OpenAI (GPT-4o, zero- or few-shot) with strict structured outputs
  (grammar.json_schema: immutables as one-value enums, numbers as patterned strings, each
  group's computed member left out); the JSON is rendered back into the <new> block.
- "regex": a `vllm serve` endpoint (LoRA adapter as the model name) with our whole-block regex
  in vLLM's structured-outputs extension, `extra_body={"structured_outputs": {"regex": ...}}`
  (the request-level `guided_*` fields were removed in vLLM 0.12; constrained-decoding notes B1).
- "none": free text, parsed leniently (the paper's prompting).
In the constrained modes each group's computed member is (re)derived from the others, as the
hf backend does, and an out-of-range completion marks the answer incoherent.

Many requests are in flight (`concurrency`); the SDK retries 429/5xx/timeouts itself
(`max_retries`, honouring Retry-After). A rejected key (401/403) or a rejected request (400)
stops the run with a clear error; a request still failing after its retries is returned in
`failures`, never as a CF record, so a re-run retries it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import openai

from sensecf.cfblock import render_block
from sensecf.generate.grammar import block_regex, complete_groups, json_schema
from sensecf.generate.parser import parse_block
from sensecf.generate.result import GenRequest, GenResult
from sensecf.spec import DatasetSpec

Constraint = Literal["json_schema", "regex", "none"]
CONSTRAINTS = ("json_schema", "regex", "none")


class EndpointError(RuntimeError):
    """The endpoint refused the key or the request itself; retrying cannot help."""


# Answers no retry can change: a rejected key, model or request.
_FATAL = (
    openai.AuthenticationError,
    openai.PermissionDeniedError,
    openai.BadRequestError,
    openai.NotFoundError,
    openai.UnprocessableEntityError,
)


@dataclass(frozen=True)
class OpenAIConfig:
    model: str = "gpt-4o-2024-08-06"  # strict structured outputs need this snapshot or later
    base_url: str | None = None  # None = api.openai.com; e.g. http://host:8000/v1 for vLLM
    api_key_env: str = "OPENAI_API_KEY"
    constraint: Constraint = "json_schema"
    concurrency: int = 8
    max_retries: int = 5
    timeout: float = 120.0
    temperature: float = 0.0
    max_tokens: int = 512


@dataclass
class Failure:
    index: int
    error: str


@dataclass
class BatchOutcome:
    results: dict[int, GenResult] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


def response_format(spec: DatasetSpec, factual) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {"name": "counterfactual", "strict": True, "schema": json_schema(spec, factual)},
    }


def schema_violations(spec: DatasetSpec, factual, obj) -> list[str]:
    """Properties of a JSON answer that break the schema (checked here: endpoints differ in
    which keywords they enforce)."""
    schema = json_schema(spec, factual)
    if not isinstance(obj, dict):
        return ["<not an object>"]
    bad = [k for k in obj if k not in schema["properties"]]
    for name, rule in schema["properties"].items():
        value = obj.get(name)
        if not isinstance(value, str):
            bad.append(name)
        elif "enum" in rule and value not in rule["enum"]:
            bad.append(name)
        elif "pattern" in rule and not re.fullmatch(rule["pattern"][1:-1], value):
            bad.append(name)
    return bad


class OpenAIGenerator:
    def __init__(self, spec: DatasetSpec, config: OpenAIConfig = OpenAIConfig(), api_key: str | None = None):
        if config.constraint not in CONSTRAINTS:
            raise ValueError(f"unknown constraint '{config.constraint}'; choose one of {list(CONSTRAINTS)}")
        if config.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {config.concurrency}")
        self.spec = spec
        self.config = config
        self.api_key = api_key or os.environ.get(config.api_key_env)
        if not self.api_key:
            raise EndpointError(
                f"no API key: set ${config.api_key_env} (a vLLM server started without --api-key accepts any "
                "value, e.g. EMPTY)"
            )

    # --- one request ----------------------------------------------------------------------
    def _request(self, req: GenRequest) -> dict:
        cfg = self.config
        kwargs = dict(
            model=cfg.model,
            messages=list(req.messages),
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=req.seed,
        )
        if cfg.constraint == "json_schema":
            kwargs["response_format"] = response_format(self.spec, req.factual)
        elif cfg.constraint == "regex":
            kwargs["extra_body"] = {"structured_outputs": {"regex": block_regex(self.spec, req.factual)}}
        return kwargs

    def _result(self, req: GenRequest, content: str | None, refusal: str | None, usage, seconds: float) -> GenResult:
        extra: dict = {}
        text = content or ""
        if refusal:
            extra["refusal"] = refusal
        parsed = parse_block(self.spec, text, req.factual)
        cf, status = parsed.cf, parsed.status
        if self.config.constraint == "json_schema" and cf is not None:
            try:
                violations = schema_violations(self.spec, req.factual, json.loads(text))
            except ValueError:
                violations = ["<not JSON>"]
            if violations:
                extra["schema_violations"] = violations
        if self.config.constraint != "none" and cf is not None:
            completed, incoherent = complete_groups(self.spec, cf)
            changed = [k for k in completed if completed[k] != cf[k]]
            if changed:
                extra["group_members_derived"] = changed
            cf = completed
            if incoherent:
                status = "incoherent"
                extra["incoherent_groups"] = incoherent
            if self.config.constraint == "json_schema":
                extra["json"] = text
                text = render_block(self.spec, cf)  # the block the JSON stands for
        if parsed.filled and self.config.constraint != "json_schema":
            extra["filled_from_factual"] = parsed.filled
        if parsed.note:
            extra["parse_note"] = parsed.note
        return GenResult(
            text=text,
            cf=cf,
            status=status,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            seconds=seconds,
            extra=extra,
        )

    async def _one(self, client, gate: asyncio.Semaphore, req: GenRequest) -> GenResult:
        async with gate:
            start = time.perf_counter()
            resp = await client.chat.completions.create(**self._request(req))
            seconds = time.perf_counter() - start
        message = resp.choices[0].message
        result = self._result(req, message.content, getattr(message, "refusal", None), resp.usage, seconds)
        result.extra["finish_reason"] = resp.choices[0].finish_reason
        return result

    # --- many requests --------------------------------------------------------------------
    async def _indexed(self, client, gate, index: int, req: GenRequest):
        """(index, result, None), or (index, None, error) once the SDK's retries are spent.
        Errors no retry can fix (key, request) propagate."""
        try:
            return index, await self._one(client, gate, req), None
        except _FATAL:
            raise
        except (openai.APIConnectionError, openai.APIStatusError) as e:  # incl. timeouts, 429, 5xx
            return index, None, f"{type(e).__name__}: {e}"

    async def _run(self, requests: Sequence[GenRequest], on_result: Callable[[int, GenResult], None] | None):
        cfg = self.config
        where = cfg.base_url or "api.openai.com"
        outcome = BatchOutcome()
        gate = asyncio.Semaphore(cfg.concurrency)
        async with openai.AsyncOpenAI(
            api_key=self.api_key, base_url=cfg.base_url, max_retries=cfg.max_retries, timeout=cfg.timeout
        ) as client:
            tasks = [asyncio.ensure_future(self._indexed(client, gate, i, r)) for i, r in enumerate(requests)]
            try:
                for next_done in asyncio.as_completed(tasks):
                    try:
                        index, result, error = await next_done
                    except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                        raise EndpointError(
                            f"{where} rejected the API key from ${cfg.api_key_env} (HTTP {e.status_code}): {e.message}"
                        ) from None
                    except _FATAL as e:
                        raise EndpointError(
                            f"{where} rejected the request for model '{cfg.model}' (HTTP {e.status_code}): {e.message}"
                        ) from None
                    if error is not None:
                        outcome.failures.append(Failure(index, error))
                        continue
                    outcome.results[index] = result
                    if on_result is not None:
                        on_result(index, result)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return outcome

    def generate(
        self, requests: Sequence[GenRequest], on_result: Callable[[int, GenResult], None] | None = None
    ) -> BatchOutcome:
        """Answer all requests (concurrently); `on_result(index, result)` is called as each
        arrives, so callers can write records before the last answer is in."""
        return asyncio.run(self._run(requests, on_result))
