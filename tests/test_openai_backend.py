"""The OpenAI-compatible backend against a loopback chat.completions server started here.

`FakeEndpoint` (with `Reply` scripts) is shared with tests/faults/test_endpoint_faults.py."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_grammar import FACTUAL, SPEC

from eval.classifier import train_and_evaluate
from eval.generate import GenerateError, generate
from sensecf.cfblock import render_block
from sensecf.generate.grammar import block_regex, json_schema
from sensecf.generate.openai_backend import EndpointError, OpenAIConfig, OpenAIGenerator, llamacpp_schema
from sensecf.generate.result import GenRequest
from sensecf.privacy import endpoint_host, is_loopback
from sensecf.records import read_records

CF = {**FACTUAL, "awake_pct": 10.0, "light_pct": 50.0, "deep_pct": 20.0, "rem_pct": 20.0, "steps_mean": 12.5}


def json_answer(body: dict) -> str:
    """A schema-valid answer: immutables/categories from their enums, numbers from CF when they
    fit the pattern, else the lower bound named in the description. The schema sits where OpenAI
    (json_schema) or llama.cpp (json_object + schema) takes it."""
    fmt = body["response_format"]
    props = (fmt["json_schema"]["schema"] if fmt["type"] == "json_schema" else fmt["schema"])["properties"]
    out = {}
    for name, rule in props.items():
        if "enum" in rule:
            out[name] = rule["enum"][0]
            continue
        value = SPEC.feature(name).format_value(CF[name]) if name in CF else None
        if value is None or not re.fullmatch(rule["pattern"][1:-1], value):
            value = re.search(r"from (\S+) to", rule["description"]).group(1)
        out[name] = value
    return json.dumps(out)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # close() does not wait for a handler still sleeping past a client's timeout

    def handle_error(self, request, client_address):
        pass  # a client that gave up (cancelled after a fatal error) resets its connection


@dataclass
class Reply:
    """One scripted answer: `payload` None means the endpoint's usual answer to the request."""

    status: int = 200
    payload: dict | bytes | None = None
    content_type: str = "application/json"
    delay: float = 0.0
    headers: dict | None = None  # None: `retry-after-ms: 5`, which keeps the SDK's backoff short


def error_reply(status: int, message: str, code: str | None = None, type_: str = "invalid_request_error",
                headers: dict | None = None) -> Reply:
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""
    return Reply(status, {"error": {"message": message, "type": type_, "param": None, "code": code}}, headers=headers)


def content_reply(content, **message) -> Reply:
    """A 200 completion whose one message has this content (and e.g. refusal=...)."""
    payload = completion("m", content)
    payload["choices"][0]["message"].update(message)
    return Reply(200, payload)


def prompt_of(body: dict) -> str:
    return body["messages"][-1]["content"]


class FakeEndpoint:
    """127.0.0.1 chat.completions: canned answers, optional failures, request log.

    `script(call_number, body)` may return a Reply for that call (None: the usual answer);
    `content(body)` may replace the usual answer text."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503, always: int | None = None, delay: float = 0.0,
                 script: Callable[[int, dict], Reply | None] | None = None,
                 content: Callable[[dict], str] | None = None):
        self.fail_first, self.fail_status, self.always, self.delay = fail_first, fail_status, always, delay
        self.script, self.content = script, content
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = self.calls = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return None  # silence the stdlib server's per-request log lines

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.calls += 1
                    call = endpoint.calls
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                try:
                    time.sleep(endpoint.delay)
                    reply = endpoint.script(call, body) if endpoint.script else None
                    if reply is not None:
                        time.sleep(reply.delay)
                        if reply.payload is not None:
                            return self._send(reply.status, reply.payload, reply.content_type, reply.headers)
                    status = endpoint.always or (endpoint.fail_status if call <= endpoint.fail_first else 200)
                    if status != 200:
                        return self._send(status, {"error": {"message": f"status {status}", "type": "x", "code": None}})
                    endpoint.bodies.append(body)
                    if endpoint.content is not None:
                        content = endpoint.content(body)
                    elif "response_format" in body:
                        content = json_answer(body)
                    else:  # vLLM regex / free text: the block (REM deliberately off: the backend derives it)
                        content = "Here you go:\n" + render_block(SPEC, {**CF, "rem_pct": 25.0})
                    self._send(200, completion(body["model"], content))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout) before the answer
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1

            def _send(self, status, payload, content_type="application/json", headers=None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in ({"retry-after-ms": "5"} if headers is None else headers).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def completion(model: str, content: str) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 90, "total_tokens": 390},
    }


@pytest.fixture
def endpoint_factory():
    made = []

    def make(**kw) -> FakeEndpoint:
        made.append(FakeEndpoint(**kw))
        return made[-1]

    yield make
    for e in made:
        e.close()


def requests(n: int) -> list[GenRequest]:
    return [GenRequest(FACTUAL, seed=i, messages=[{"role": "user", "content": f"q{i}"}]) for i in range(n)]


def generator(endpoint, **kw) -> OpenAIGenerator:
    return OpenAIGenerator(SPEC, OpenAIConfig(base_url=endpoint.base_url, **kw), api_key="sk-test")


def test_gpt4o_strict_json_schema_answers_become_blocks(endpoint_factory):
    endpoint = endpoint_factory(delay=0.05)
    seen = []
    outcome = generator(endpoint, concurrency=3).generate(requests(6), on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == list(range(6)) and outcome.failures == []
    for result in outcome.results.values():
        assert result.status == "ok"
        assert result.cf == {**CF, "age": 61}  # rem_pct = 100 - 10 - 50 - 20, derived here
        assert result.text == render_block(SPEC, CF)
        assert result.prompt_tokens == 300 and result.completion_tokens == 90
        assert "schema_violations" not in result.extra
    body = endpoint.bodies[0]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == list(schema["properties"]) and schema["additionalProperties"] is False
    assert body["model"] == "gpt-4o-2024-08-06" and body["temperature"] == 0.0
    assert sorted(b["seed"] for b in endpoint.bodies) == list(range(6))
    assert 1 < endpoint.max_in_flight <= 3


def test_llamacpp_json_object_with_schema_answers_become_blocks(endpoint_factory):
    """llama.cpp's server takes the schema as response_format {"type": "json_object", "schema": ...}
    (it refuses "json_schema"); the answer is read exactly as a strict json_schema answer."""
    endpoint = endpoint_factory()
    outcome = generator(endpoint, constraint="json_object_schema", model="smollm2").generate(requests(3))
    assert outcome.failures == [] and sorted(outcome.results) == [0, 1, 2]
    fmt = endpoint.bodies[0]["response_format"]
    assert fmt == {"type": "json_object", "schema": llamacpp_schema(json_schema(SPEC, FACTUAL))}
    # grammar.json_schema's, each pattern's escaped dot as the class [.] (the same strings)
    assert json.dumps(fmt["schema"]) == json.dumps(json_schema(SPEC, FACTUAL)).replace("\\\\.", "[.]")
    assert "structured_outputs" not in endpoint.bodies[0]
    strict = generator(endpoint_factory()).generate(requests(3))
    for i, result in outcome.results.items():
        assert result.status == "ok" and result.cf == {**CF, "age": 61}
        assert result.text == render_block(SPEC, CF) == strict.results[i].text
        assert result.extra["json"] == strict.results[i].extra["json"] and "schema_violations" not in result.extra
        assert "filled_from_factual" not in result.extra


def test_repeat_penalty_is_sent_only_when_set(endpoint_factory):
    endpoint = endpoint_factory()
    generator(endpoint, constraint="regex", repeat_penalty=1.0).generate(requests(1))
    generator(endpoint, constraint="json_object_schema").generate(requests(1))
    regex_body, schema_body = endpoint.bodies
    assert regex_body["repeat_penalty"] == 1.0 and regex_body["structured_outputs"]  # merged into the extra body
    assert "repeat_penalty" not in schema_body  # OpenAI rejects the field; llama.cpp keeps its default


def test_json_object_schema_answers_breaking_the_schema_are_flagged(endpoint_factory):
    """llama.cpp compiles the schema to a grammar; the client checks the answer all the same."""
    def off_schema(body):
        answer = json.loads(json_answer(body))
        return json.dumps({**answer, "age": "62", "note": "x"})  # an immutable changed, a stray key

    endpoint = endpoint_factory(content=off_schema)
    result = generator(endpoint, constraint="json_object_schema").generate(requests(1)).results[0]
    assert sorted(result.extra["schema_violations"]) == ["age", "note"]


def test_vllm_regex_in_structured_outputs_extension(endpoint_factory):
    endpoint = endpoint_factory()
    outcome = generator(endpoint, constraint="regex", model="sensecf-lora").generate(requests(2))
    assert endpoint.bodies[0]["structured_outputs"] == {"regex": block_regex(SPEC, FACTUAL)}
    assert "response_format" not in endpoint.bodies[0]
    result = outcome.results[0]
    assert result.status == "ok" and result.cf["rem_pct"] == 20.0  # the model's 25.0 broke the sum
    assert result.extra["group_members_derived"] == ["rem_pct"]


def test_transient_503s_are_retried_by_the_sdk(endpoint_factory):
    endpoint = endpoint_factory(fail_first=2)
    outcome = generator(endpoint, concurrency=1, max_retries=3).generate(requests(3))
    assert outcome.failures == [] and sorted(outcome.results) == [0, 1, 2]
    assert endpoint.calls == 5


def test_requests_failing_after_retries_are_reported_not_dropped(endpoint_factory):
    endpoint = endpoint_factory(always=500)
    outcome = generator(endpoint, max_retries=1).generate(requests(2))
    assert outcome.results == {}
    assert sorted(f.index for f in outcome.failures) == [0, 1]
    assert "InternalServerError" in outcome.failures[0].error
    assert endpoint.calls == 4  # each request: first try + one retry


def test_auth_failure_is_a_clear_error(endpoint_factory):
    endpoint = endpoint_factory(always=401)
    with pytest.raises(EndpointError, match=r"rejected the API key from \$OPENAI_API_KEY \(HTTP 401\)"):
        generator(endpoint).generate(requests(3))
    assert endpoint.calls <= 3  # 401 is not retried


def test_requests_are_not_stored_and_carry_a_seed_only_when_asked(endpoint_factory):
    endpoint = endpoint_factory()
    generator(endpoint).generate(requests(2))
    assert all(b["store"] is False for b in endpoint.bodies) and {b["seed"] for b in endpoint.bodies} == {0, 1}
    quiet = endpoint_factory()
    generator(quiet, send_seed=False).generate(requests(2))
    assert all(b["store"] is False and "seed" not in b for b in quiet.bodies) and len(quiet.bodies) == 2


def test_endpoint_host_and_loopback():
    assert endpoint_host(None) == "api.openai.com" and not is_loopback(None)
    assert endpoint_host("https://API.Example.com:8443/v1") == "api.example.com"
    assert endpoint_host("localhost:8000/v1") == "localhost"  # no scheme
    for url in ("http://127.0.0.1:8000/v1", "http://127.8.9.10/v1", "http://[::1]:8000/v1", "http://localhost/v1",
                "http://LOCALHOST:1/v1"):
        assert is_loopback(url), url
    for url in ("http://10.0.0.1/v1", "http://0.0.0.0:8000/v1", "http://127.0.0.1.evil.example/v1",
                "http://localhost@evil.example/v1", "http://localhost.evil.example/v1", "https://api.openai.com/v1",
                "http://[::2]/v1"):
        assert not is_loopback(url), url


def test_bad_settings_are_refused_before_any_request():
    with pytest.raises(ValueError, match="max_consecutive_failures"):
        OpenAIGenerator(SPEC, OpenAIConfig(max_consecutive_failures=0), api_key="sk-test")
    with pytest.raises(ValueError, match="timeout"):
        OpenAIGenerator(SPEC, OpenAIConfig(timeout=0), api_key="sk-test")


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SENSECF_TEST_KEY", raising=False)
    with pytest.raises(EndpointError, match=r"set \$SENSECF_TEST_KEY"):
        OpenAIGenerator(SPEC, OpenAIConfig(api_key_env="SENSECF_TEST_KEY"))


# --- through the CLI's generate() -----------------------------------------------------------


def test_a_real_cohort_is_refused_for_a_remote_host_without_allow_external_api(tiny_run, monkeypatch):
    # a loopback endpoint is local (sensecf.privacy); a remote one needs the host named
    (tiny_run.cohort / "provenance.json").write_text(json.dumps({"source": {"synthetic": False}}))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(GenerateError, match="--allow-external-api api.example.invalid"):
        generate(tiny_run, "gpt4o", "openai", n=4, openai_options={"base_url": "http://api.example.invalid/v1"})


def test_openai_base_url_in_the_environment_is_the_host_checked(tiny_run, endpoint_factory, monkeypatch):
    """Without --base-url the SDK sends to $OPENAI_BASE_URL: that host, not OpenAI's, is judged."""
    (tiny_run.cohort / "provenance.json").write_text(json.dumps({"source": {"synthetic": False}}))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://api.example.invalid/v1")
    with pytest.raises(GenerateError, match="would send its rows to api.example.invalid"):
        generate(tiny_run, "gpt4o", "openai", n=4, allow_external_api="api.openai.com")
    train_and_evaluate(tiny_run, seed=0)
    endpoint = endpoint_factory()
    monkeypatch.setenv("OPENAI_BASE_URL", endpoint.base_url)  # a loopback server is local
    summary = generate(tiny_run, "gpt4o", "openai", n=2, progress=False)
    assert summary["records"] == 2 and endpoint.calls == 2
    assert {r.extra["base_url"] for r in read_records(tiny_run.cf_file("gpt4o+grammar"))} == {endpoint.base_url}


def test_openai_backend_end_to_end_writes_records(tiny_run, endpoint_factory, monkeypatch):
    train_and_evaluate(tiny_run, seed=0)
    endpoint = endpoint_factory()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    summary = generate(tiny_run, "gpt4o", "openai", n=6, openai_options={"base_url": endpoint.base_url}, progress=False)
    records = read_records(tiny_run.cf_file("gpt4o+grammar"))
    assert summary["records"] == len(records) == 6 and summary["failed"] == []
    for r in records:
        assert r.parse_status in ("ok", "incoherent") and r.immutables_ok is True
        assert r.cf_pred in (0, 1) and r.desired_class == 1 - r.factual_pred
        assert r.extra["constraint"] == "json_schema" and r.prompt_tokens == 300
    assert (tiny_run.cfs / "generate" / "gpt4o+grammar" / "provenance.json").exists()
    # resumed: nothing re-requested
    calls = endpoint.calls
    assert (
        generate(tiny_run, "gpt4o", "openai", n=6, openai_options={"base_url": endpoint.base_url}, progress=False)[
            "already_done"
        ]
        == 6
    )
    assert endpoint.calls == calls


def test_few_shot_examples_come_from_the_sft_pool(tiny_run, endpoint_factory, monkeypatch):
    from eval.baselines import native_values
    from sensecf.rundir import SPLIT_COL

    train_and_evaluate(tiny_run, seed=0)
    df, spec = tiny_run.load_cohort()
    rows = [native_values(spec, row) for _, row in df[df[SPLIT_COL] == "train"].head(4).iterrows()]
    pool = [{"window_id": f"w{i}", "participant_id": "p", "predicted_class": i % 2, "features": rows[i]}
            for i in range(4)]
    tiny_run.sft.mkdir(parents=True)
    (tiny_run.sft / "fewshot.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pool))
    endpoint = endpoint_factory()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    generate(tiny_run, "gpt4o_fs", "openai", n=2, fewshot=2, openai_options={"base_url": endpoint.base_url},
             progress=False)  # fmt: skip
    for body in endpoint.bodies:
        user = body["messages"][-1]["content"]
        assert "Example 1:" in user and "Example 2:" in user and "Example 3:" not in user
        desired = int(user.split("predicted label flips to ")[1][0])
        assert f"Here are a few examples with desired outcome {desired}:" in user
    with pytest.raises(GenerateError, match="fewer than 3 examples"):
        generate(tiny_run, "gpt4o_fs3", "openai", n=2, fewshot=3, openai_options={"base_url": endpoint.base_url})
