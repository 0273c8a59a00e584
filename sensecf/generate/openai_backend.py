"""CF generation against any OpenAI-compatible endpoint (the official `openai` SDK, async).

Targets, chosen by `constraint`:
- "json_schema": OpenAI (GPT-4o, zero- or few-shot) with strict structured outputs
  (grammar.json_schema: immutables as one-value enums, numbers as patterned strings, each
  group's computed member left out); the JSON is rendered back into the <new> block.
- "json_object_schema": the same schema in the shape llama.cpp's server takes,
  `response_format={"type": "json_object", "schema": ...}` (llama-cpp-python 0.3 refuses
  `"type": "json_schema"`; it compiles the schema to a grammar), each pattern's `\\.` written as
  the equivalent `[.]` (`llamacpp_schema`); answers are read, checked and rendered back exactly as
  in "json_schema".
- "regex": a `vllm serve` endpoint (LoRA adapter as the model name) with our whole-block regex
  in vLLM's structured-outputs extension, `extra_body={"structured_outputs": {"regex": ...}}`
  (the request-level `guided_*` fields were removed in vLLM 0.12; constrained-decoding notes B1).
- "none": free text, parsed leniently (the paper's prompting).
In the constrained modes each group's computed member is (re)derived from the others, as the
hf backend does, and an out-of-range completion marks the answer incoherent.

Many requests are in flight (`concurrency`); the SDK retries 429/5xx/timeouts itself
(`max_retries`, honouring Retry-After). What becomes of a request that does not end in an answer:
- its own row (a record, not retried): a 400/422 rejecting this one request (status "error", the
  provider's message in `error`), a reply with no choices or no text ("empty"), a refusal
  ("refusal", its text in `error` and `extra["refusal"]`). A non-finite or absurd number in the
  answer is the parser's parse_error.
- a failure (no record, so a re-run retries it): a connection error, a timeout (a reply slower
  than `timeout` seconds, after the retries), 429/5xx after the retries, a body that is not a
  chat completion. `max_consecutive_failures` of these in a row stop the run (server gone).
- a stop (EndpointError, at once): a rejected key (401/403), an unknown model (404), exhausted
  quota or billing (429 `insufficient_quota`: never retried, see `_quota_is_final`), or the first
  `max_consecutive_failures` requests all rejected with 400/422 (the request shape is wrong, not
  one row: nothing is written for them).
A leading system turn is sent as is, or folded into the first user turn when `system_role` is
False (the served template has none), as the hf backend folds it (prompts.render.template_messages).
Requests carry `store=False` (the provider must not keep the prompts) and a `seed` only when
`send_seed` is set; `repeat_penalty` (llama.cpp's sampling field, in the body's extra fields) only
when set: llama.cpp's server applies 1.1 by default, so 1.0 makes its greedy decoding the hf
backend's (which applies none); OpenAI rejects the field.
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
from openai.types.chat import ChatCompletion

from prompts.render import template_messages
from sensecf.cfblock import render_block
from sensecf.generate.grammar import block_regex, complete_groups, json_schema
from sensecf.generate.parser import parse_block
from sensecf.generate.result import GenRequest, GenResult
from sensecf.privacy import endpoint_host
from sensecf.spec import DatasetSpec

Constraint = Literal["json_schema", "json_object_schema", "regex", "none"]
CONSTRAINTS = ("json_schema", "json_object_schema", "regex", "none")
JSON_CONSTRAINTS = ("json_schema", "json_object_schema")  # the answer is a JSON object of grammar.json_schema


class EndpointError(RuntimeError):
    """The endpoint refused the key, the model, the quota or every request; retrying cannot help."""


class _BadReply(Exception):
    """A body that is not a chat completion (a proxy's HTML page, broken JSON)."""


# Error codes (or types) meaning the account cannot pay: the run stops with the provider's words.
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
_ROW_REJECTED = (400, 422)  # this one request was refused: its row gets status "error"


@dataclass(frozen=True)
class OpenAIConfig:
    model: str = "gpt-4o-2024-08-06"  # strict structured outputs need this snapshot or later
    base_url: str | None = None  # None = api.openai.com; e.g. http://host:8000/v1 for vLLM
    api_key_env: str = "OPENAI_API_KEY"
    constraint: Constraint = "json_schema"
    concurrency: int = 8
    max_retries: int = 5
    timeout: float = 120.0  # seconds per try of one request
    temperature: float = 0.0
    max_tokens: int = 512
    max_consecutive_failures: int = 20  # requests failing in a row before the run stops
    send_seed: bool = True  # send GenRequest.seed (it must not identify a window)
    # Whether the server's chat template renders a system turn. False (a Mistral-v1-style template
    # with none) folds the system text into the first user turn before sending, exactly where the
    # hf backend folds it (prompts.render.template_messages); prompts.render.
    # served_template_has_system_role(ADAPTER_DIR) answers it for the template vllm_serve.sh serves.
    system_role: bool = True
    repeat_penalty: float | None = None  # llama.cpp server only (its default 1.1); None: not sent


def _error_body(body) -> dict:
    """The provider's error object from a response body (OpenAI nests it under "error")."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    return body if isinstance(body, dict) else {}


def _is_quota(error: dict) -> bool:
    return error.get("code") in QUOTA_CODES or error.get("type") in QUOTA_CODES


def _provider_message(e: openai.APIStatusError) -> str:
    message = _error_body(e.body).get("message")
    return str(message) if message else e.message


async def _quota_is_final(response) -> None:
    """httpx response hook: a 429 for exhausted quota gets `x-should-retry: false`, the header
    the SDK obeys before its own retry rules, so the SDK's retries (~27 s) are skipped for it and
    kept for plain rate limits."""
    if response.status_code != 429:
        return
    await response.aread()  # small error body; the SDK reads the same cached bytes
    try:
        error = _error_body(json.loads(response.content))
    except ValueError:
        return
    if _is_quota(error):
        response.headers["x-should-retry"] = "false"


@dataclass
class Failure:
    index: int
    error: str


@dataclass
class BatchOutcome:
    results: dict[int, GenResult] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


def llamacpp_schema(schema: dict) -> dict:
    """grammar.json_schema with each pattern's escaped dot `\\.` written as the class `[.]`, which
    matches the same strings: llama-cpp-python 0.3.36's schema-to-GBNF converter copies `\\.` into
    a GBNF literal, where it is an unknown escape, and the server process dies on the grammar
    (tests/test_llamacpp_server.py). The numbers' patterns have no other escape."""
    props = {
        name: {**rule, "pattern": rule["pattern"].replace("\\.", "[.]")} if "pattern" in rule else rule
        for name, rule in schema["properties"].items()
    }
    return {**schema, "properties": props}


def response_format(spec: DatasetSpec, factual, constraint: Constraint = "json_schema") -> dict:
    """The request's response_format: OpenAI's strict json_schema, or llama.cpp's json_object + schema."""
    if constraint == "json_object_schema":
        return {"type": "json_object", "schema": llamacpp_schema(json_schema(spec, factual))}
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
        if config.max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures must be >= 1, got {config.max_consecutive_failures}")
        if not config.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {config.timeout}")
        self.spec = spec
        self.config = config
        endpoint_host(config.base_url)  # ValueError when base_url names no host
        self.where = config.base_url or endpoint_host(None)  # how messages name the endpoint
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
            messages=template_messages(req.messages, system_role=cfg.system_role),
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            store=False,  # the provider must not keep the prompts (health data)
        )
        if cfg.send_seed:
            kwargs["seed"] = req.seed
        if cfg.constraint in JSON_CONSTRAINTS:
            kwargs["response_format"] = response_format(self.spec, req.factual, cfg.constraint)
        elif cfg.constraint == "regex":
            kwargs["extra_body"] = {"structured_outputs": {"regex": block_regex(self.spec, req.factual)}}
        if cfg.repeat_penalty is not None:
            kwargs["extra_body"] = {**kwargs.get("extra_body", {}), "repeat_penalty": cfg.repeat_penalty}
        return kwargs

    def _result(self, req: GenRequest, text: str, usage, seconds: float) -> GenResult:
        extra: dict = {}
        parsed = parse_block(self.spec, text, req.factual)
        cf, status = parsed.cf, parsed.status
        json_answer = self.config.constraint in JSON_CONSTRAINTS
        if json_answer and cf is not None:
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
            if json_answer:
                extra["json"] = text
                text = render_block(self.spec, cf)  # the block the JSON stands for
        if parsed.filled and not json_answer:
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
        kwargs = self._request(req)
        async with gate:
            start = time.perf_counter()
            try:
                resp = await client.chat.completions.create(**kwargs)
            except ValueError as e:  # a JSON content type over a body that is not JSON
                raise _BadReply(f"the reply was not JSON ({e})") from None
            seconds = time.perf_counter() - start
        if not isinstance(resp, ChatCompletion):  # the SDK hands back text it cannot parse as it is
            raise _BadReply(f"the reply was not a chat completion: {str(resp)[:80]!r}")
        usage = getattr(resp, "usage", None)

        def unanswered(status: str, why: str, text: str = "", **extra) -> GenResult:
            return GenResult(
                text=text,
                cf=None,
                status=status,
                seconds=seconds,
                error=why,
                extra=extra,
                prompt_tokens=getattr(usage, "prompt_tokens", None),
                completion_tokens=getattr(usage, "completion_tokens", None),
            )

        choices = getattr(resp, "choices", None) or []
        if not choices:
            return unanswered("empty", "the reply had no choices")
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        refusal = getattr(message, "refusal", None)
        if refusal:
            result = unanswered("refusal", str(refusal), text=content or "", refusal=str(refusal))
        elif not isinstance(content, str) or not content.strip():
            result = unanswered("empty", "the reply's message had no content")
        else:
            result = self._result(req, content, usage, seconds)
        result.extra["finish_reason"] = getattr(choices[0], "finish_reason", None)
        return result

    def _rejected(self, e: openai.APIStatusError) -> GenResult:
        """This one request was refused (400/422): its row, with the provider's message."""
        return GenResult(
            text="",
            cf=None,
            status="error",
            prompt_tokens=None,
            completion_tokens=None,
            error=f"HTTP {e.status_code}: {_provider_message(e)}",
            extra={"http_status": e.status_code},
        )

    # --- many requests --------------------------------------------------------------------
    async def _indexed(self, client, gate, index: int, req: GenRequest):
        """(index, result, None), or (index, None, error) once the SDK's retries are spent.
        Errors that stop the run (key, model, quota) propagate."""
        try:
            return index, await self._one(client, gate, req), None
        except openai.APIStatusError as e:
            if _is_quota(_error_body(e.body)) or e.status_code in (401, 403, 404):
                raise
            if e.status_code in _ROW_REJECTED:
                return index, self._rejected(e), None
            return index, None, f"{type(e).__name__} from {self.where}: {_provider_message(e)}"  # 429/5xx, retried
        except (openai.APIConnectionError, _BadReply) as e:  # incl. timeouts
            return index, None, f"{type(e).__name__} from {self.where}: {e}"

    def _stop(self, e: openai.APIStatusError) -> EndpointError:
        cfg, where = self.config, self.where
        error = _error_body(e.body)
        if _is_quota(error):
            code = error.get("code") or error.get("type")
            return EndpointError(
                f"{where} refused for quota or billing (HTTP {e.status_code} {code}): {_provider_message(e)}"
            )
        if e.status_code in (401, 403):
            return EndpointError(
                f"{where} rejected the API key from ${cfg.api_key_env} (HTTP {e.status_code}): {_provider_message(e)}"
            )
        return EndpointError(
            f"{where} rejected the request for model '{cfg.model}' (HTTP {e.status_code}): {_provider_message(e)}"
        )

    async def _run(self, requests: Sequence[GenRequest], on_result: Callable[[int, GenResult], None] | None):
        cfg, where = self.config, self.where
        outcome = BatchOutcome()
        gate = asyncio.Semaphore(cfg.concurrency)
        failures_in_a_row = 0
        answered = False  # some request got a real answer: a 400/422 since then is that row's
        held: list[tuple[int, GenResult]] = []  # 400/422 rows before the first answer

        def keep(index: int, result: GenResult) -> None:
            outcome.results[index] = result
            if on_result is not None:
                on_result(index, result)

        http_client = openai.DefaultAsyncHttpxClient(event_hooks={"response": [_quota_is_final]})
        async with openai.AsyncOpenAI(
            api_key=self.api_key,
            base_url=cfg.base_url,
            max_retries=cfg.max_retries,
            timeout=cfg.timeout,
            http_client=http_client,
        ) as client:
            tasks = [asyncio.ensure_future(self._indexed(client, gate, i, r)) for i, r in enumerate(requests)]
            try:
                for next_done in asyncio.as_completed(tasks):
                    try:
                        index, result, error = await next_done
                    except openai.APIStatusError as e:
                        raise self._stop(e) from None
                    if error is not None:
                        outcome.failures.append(Failure(index, error))
                        failures_in_a_row += 1
                        if failures_in_a_row >= cfg.max_consecutive_failures:
                            raise EndpointError(
                                f"{where}: {failures_in_a_row} requests in a row failed (last: {error}); stopped. "
                                "Re-run to retry the requests that have no record"
                            )
                        continue
                    failures_in_a_row = 0
                    if result.status == "error" and not answered:
                        held.append((index, result))
                        if len(held) >= cfg.max_consecutive_failures:
                            raise EndpointError(
                                f"{where} rejected the first {len(held)} requests for model '{cfg.model}' "
                                f"({result.error}); the request itself is wrong, not one row"
                            )
                        continue
                    if not answered and result.status != "error":
                        answered = True
                        for held_index, held_result in held:
                            keep(held_index, held_result)
                        held.clear()
                    keep(index, result)
                for held_index, held_result in held:  # fewer than the bound, and nothing else came back
                    keep(held_index, held_result)
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
