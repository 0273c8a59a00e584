"""Faults of an OpenAI-compatible endpoint, served by a loopback fake (test_openai_backend's
FakeEndpoint) and driven through OpenAIGenerator: each bad answer becomes its own row, a
transient failure is retried (by the SDK now, or by the next run), and only what no retry can
fix stops the run, at once and with the provider's words.

A reply slower than `timeout` is a failure, not a record: nothing is written for it, so the next
run asks again (a slow server is transient; a record would freeze the row as failed).
"""

from __future__ import annotations

import socket
import time

import pytest
from harness import Fault, params
from test_grammar import FACTUAL, SPEC
from test_openai_backend import (  # noqa: F401  (endpoint_factory is a fixture)
    CF,
    Reply,
    content_reply,
    endpoint_factory,
    error_reply,
    prompt_of,
)

from eval.classifier import train_and_evaluate
from eval.generate import generate
from sensecf.cfblock import render_block
from sensecf.generate.openai_backend import EndpointError, OpenAIConfig, OpenAIGenerator
from sensecf.generate.result import GenRequest
from sensecf.records import read_records

QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
FREE_BLOCK = "Here you go:\n" + render_block(SPEC, CF)  # CF's sleep stages already sum to 100


def requests(n: int) -> list[GenRequest]:
    return [GenRequest(FACTUAL, seed=i, messages=[{"role": "user", "content": f"q{i}"}]) for i in range(n)]


def run(endpoint_or_url, n: int, **config):
    """(outcome, rows written through on_result in arrival order, seconds)."""
    base_url = endpoint_or_url if isinstance(endpoint_or_url, str) else endpoint_or_url.base_url
    written = []
    generator = OpenAIGenerator(SPEC, OpenAIConfig(base_url=base_url, **config), api_key="sk-test")
    start = time.perf_counter()
    outcome = generator.generate(requests(n), on_result=lambda i, r: written.append((i, r)))
    return outcome, written, time.perf_counter() - start


def only_for(prompt: str, reply: Reply):
    """A script answering `reply` to the request whose prompt is `prompt`, normally to the rest."""
    return lambda call, body: reply if prompt_of(body) == prompt else None


def first_calls(k: int, reply: Reply):
    return lambda call, body: reply if call <= k else None


def stopped(make, n: int, **config) -> tuple[str, float, list]:
    written = []
    generator = OpenAIGenerator(SPEC, OpenAIConfig(base_url=make if isinstance(make, str) else make.base_url,
                                                   **config), api_key="sk-test")
    start = time.perf_counter()
    with pytest.raises(EndpointError) as info:
        generator.generate(requests(n), on_result=lambda i, r: written.append(i))
    return str(info.value), time.perf_counter() - start, written


# --- one check per fault ----------------------------------------------------------------------
def quota_429_stops_at_once(make):
    # as api.openai.com answers: no Retry-After, so each SDK retry would back off 0.5 s .. 8 s
    quota = error_reply(429, QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota", headers={})
    run(make(), 1)  # the SDK's first request pays for lazy imports: keep them out of the timing
    endpoint = make(script=lambda call, body: quota)
    message, seconds, written = stopped(endpoint, 4, concurrency=1, max_retries=5)
    assert seconds < 3 and endpoint.calls == 1  # the SDK's retries (~15 s here) are skipped
    assert "insufficient_quota" in message and QUOTA_MESSAGE in message and written == []


def billing_400_stops_at_once(make):
    endpoint = make(script=first_calls(1, error_reply(400, "Billing hard limit has been reached",
                                                      "billing_hard_limit_reached")))
    message, _, written = stopped(endpoint, 3, concurrency=1)
    assert "billing_hard_limit_reached" in message and "Billing hard limit" in message and written == []


def rate_limit_429_is_retried(make):
    endpoint = make(script=first_calls(2, error_reply(429, "Rate limit reached for requests", "rate_limit_exceeded",
                                                      "requests")))
    outcome, written, _ = run(endpoint, 3, concurrency=1, max_retries=3)
    assert outcome.failures == [] and sorted(i for i, _ in written) == [0, 1, 2]
    assert endpoint.calls == 5 and all(r.status == "ok" for _, r in written)


def server_500_then_ok(make):
    endpoint = make(script=first_calls(1, error_reply(500, "The server had an error", None, "server_error")))
    outcome, written, _ = run(endpoint, 2, concurrency=1, max_retries=2)
    assert outcome.failures == [] and [r.status for _, r in written] == ["ok", "ok"] and endpoint.calls == 3


def empty_choices(make):
    no_choices = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
    endpoint = make(script=only_for("q1", Reply(200, no_choices)))
    outcome, written, _ = run(endpoint, 3)
    result = outcome.results[1]
    assert (result.status, result.cf, result.error) == ("empty", None, "the reply had no choices")
    assert len(written) == 3 and outcome.failures == [] and outcome.results[0].status == "ok"


def empty_content(make):
    endpoint = make(script=lambda call, body: {"q0": content_reply(""), "q1": content_reply(None),
                                               "q2": content_reply("  \n")}.get(prompt_of(body)))
    outcome, written, _ = run(endpoint, 4)
    assert [outcome.results[i].status for i in range(4)] == ["empty", "empty", "empty", "ok"]
    assert outcome.results[1].error == "the reply's message had no content" and len(written) == 4


def refusal(make):
    text = "I'm sorry, I can't help with that."
    endpoint = make(script=only_for("q0", content_reply(None, refusal=text)))
    outcome, _, _ = run(endpoint, 2)
    result = outcome.results[0]
    assert (result.status, result.cf, result.error, result.extra["refusal"]) == ("refusal", None, text, text)
    assert outcome.results[1].status == "ok"


def garbage_body(make):
    pages = {"q0": Reply(200, b"<html>502 Bad Gateway</html>", "text/html"),
             "q1": Reply(200, b"{not json", "application/json")}
    endpoint = make(script=lambda call, body: pages.get(prompt_of(body)))
    outcome, written, _ = run(endpoint, 3)
    assert sorted(f.index for f in outcome.failures) == [0, 1]  # no record: the next run asks again
    errors = {f.index: f.error for f in outcome.failures}
    assert "not a chat completion" in errors[0] and "not JSON" in errors[1]
    assert [i for i, _ in written] == [2]


def one_400_among_several(make):
    endpoint = make(script=only_for("q2", error_reply(400, "Invalid 'messages[0].content': string too long.")))
    outcome, written, _ = run(endpoint, 5, concurrency=1)
    assert sorted(i for i, _ in written) == [0, 1, 2, 3, 4] and outcome.failures == []
    result = outcome.results[2]
    assert (result.status, result.cf) == ("error", None)
    assert result.error == "HTTP 400: Invalid 'messages[0].content': string too long."
    assert endpoint.calls == 5  # a 400 is not retried


def first_request_422_is_held_then_written(make):
    # rejections before any answer are held (they may be the whole request shape); one answer
    # proves the endpoint takes the others, and the held row is written too
    endpoint = make(script=only_for("q0", error_reply(422, "Unprocessable: bad value in messages")))
    calls_when_written = {}
    generator = OpenAIGenerator(SPEC, OpenAIConfig(base_url=endpoint.base_url, concurrency=1), api_key="sk-test")
    outcome = generator.generate(requests(3), on_result=lambda i, r: calls_when_written.setdefault(i, endpoint.calls))
    assert calls_when_written[0] >= 2  # held until request 1 was answered
    assert sorted(calls_when_written) == [0, 1, 2] and outcome.failures == []
    assert outcome.results[0].status == "error" and outcome.results[0].error.startswith("HTTP 422: Unprocessable")


def every_request_400_stops(make):
    endpoint = make(script=lambda call, body: error_reply(400, "response_format is not supported with this model"))
    message, _, written = stopped(endpoint, 8, concurrency=1, max_consecutive_failures=3)
    assert "rejected the first 3 requests" in message and "response_format is not supported" in message
    assert written == [] and endpoint.calls == 3  # nothing written: the rows are not at fault


def slow_answer_beyond_timeout(make):
    endpoint = make(script=first_calls(1, Reply(delay=2.0)))  # then the usual answer, but too late
    outcome, written, seconds = run(endpoint, 2, concurrency=1, timeout=0.3, max_retries=0)
    assert [f.index for f in outcome.failures] == [0] and "APITimeoutError" in outcome.failures[0].error
    assert [i for i, _ in written] == [1] and seconds < 2.0
    # the next run (the caller re-asks the rows without a record) gets the answer
    outcome, written, _ = run(endpoint, 1, timeout=5, max_retries=0)
    assert [(i, r.status) for i, r in written] == [(0, "ok")]


def server_gone(make):
    with socket.socket() as s:  # a port nobody listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        message, seconds, written = stopped(url, 50, concurrency=2, max_retries=0, max_consecutive_failures=4)
    assert "4 requests in a row failed" in message and "APIConnectionError" in message and written == []
    assert seconds < 5


def failures_between_answers_do_not_stop(make):
    # fails, fails, answers, fails, fails, answers: never 3 in a row
    endpoint = make(script=lambda call, body: None if call % 3 == 0 else error_reply(503, "overloaded"))
    outcome, written, _ = run(endpoint, 6, concurrency=1, max_retries=0, max_consecutive_failures=3)
    assert len(outcome.failures) == 4 and len(written) == 2


def unknown_model_404_stops(make):
    endpoint = make(script=lambda call, body: error_reply(404, "The model 'gpt-5o' does not exist", "model_not_found"))
    message, _, written = stopped(endpoint, 3, model="gpt-5o")
    assert "rejected the request for model 'gpt-5o' (HTTP 404)" in message and "does not exist" in message
    assert written == []


def number_of_400_digits(make):
    endpoint = make(content=lambda body: FREE_BLOCK.replace("Avg steps: 12.50", "Avg steps: " + "9" * 400)
                    if prompt_of(body) == "q0" else FREE_BLOCK)
    outcome, written, _ = run(endpoint, 2, constraint="none")
    bad = outcome.results[0]
    assert (bad.status, bad.cf) == ("parse_error", None) and "Avg steps: not a finite number" in bad.extra["parse_note"]
    assert outcome.results[1].status == "ok" and len(written) == 2


def exponent_number(make):
    endpoint = make(content=lambda body: FREE_BLOCK.replace("Avg steps: 12.50", "Avg steps: 1.5e1"))
    outcome, _, _ = run(endpoint, 1, constraint="none")
    assert outcome.results[0].status == "ok" and outcome.results[0].cf["steps_mean"] == 15.0


FAULTS = [
    Fault("quota_429", "the account's quota is used up (429 insufficient_quota)", "stop",
          {"check": quota_429_stops_at_once}),
    Fault("billing_400", "billing hard limit reached", "stop", {"check": billing_400_stops_at_once}),
    Fault("rate_limit_429", "two 429 rate limits, then answers", "row", {"check": rate_limit_429_is_retried}),
    Fault("server_500", "a 500, then answers", "row", {"check": server_500_then_ok}),
    Fault("empty_choices", "a reply with an empty choices list", "row", {"check": empty_choices}),
    Fault("empty_content", "replies with empty, null and blank content", "row", {"check": empty_content}),
    Fault("refusal", "the model refuses (message.refusal)", "row", {"check": refusal}),
    Fault("garbage_body", "an HTML page and broken JSON instead of a completion", "row", {"check": garbage_body}),
    Fault("one_400", "one request of five rejected with 400", "row", {"check": one_400_among_several}),
    Fault("first_422", "the first request rejected with 422", "row", {"check": first_request_422_is_held_then_written}),
    Fault("every_400", "every request rejected with 400 (wrong request shape)", "stop",
          {"check": every_request_400_stops}),
    Fault("slow_answer", "an answer slower than the timeout", "resume", {"check": slow_answer_beyond_timeout}),
    Fault("server_gone", "nothing listens at the base URL", "stop", {"check": server_gone}),
    Fault("intermittent_503", "503s between answers, never the bound in a row", "row",
          {"check": failures_between_answers_do_not_stop}),
    Fault("unknown_model", "a model name the endpoint does not serve (404)", "stop",
          {"check": unknown_model_404_stops}),
    Fault("huge_number", "a 400-digit number in a free-text answer", "row", {"check": number_of_400_digits}),
    Fault("exponent", "a number written with an exponent (1.5e1)", "row", {"check": exponent_number}),
]


@pytest.mark.parametrize("fault", params(FAULTS))
def test_endpoint_fault(fault, endpoint_factory):  # noqa: F811
    fault.args["check"](endpoint_factory)


# End to end through eval.generate: the rows become records with their statuses and messages.
E2E_FAULTS = [Fault("eval_generate_bad_answers", "a 400-digit number, a refusal and a 400 among six requests of "
                    "eval.generate (once the number stopped the whole run, again on every resume)", "row")]


@pytest.mark.parametrize("fault", params(E2E_FAULTS))
def test_bad_answers_become_records_through_eval_generate(fault, tiny_run, endpoint_factory, monkeypatch):  # noqa: F811
    train_and_evaluate(tiny_run, seed=0)
    refusal_text = "I can't help with that."
    replies = {1: content_reply(FREE_BLOCK.replace("Avg steps: 12.50", "Avg steps: " + "9" * 400)),
               2: content_reply(None, refusal=refusal_text),
               3: error_reply(400, "Invalid prompt: flagged")}
    endpoint = endpoint_factory(script=lambda call, body: replies.get(call), content=lambda body: FREE_BLOCK)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    options = {"base_url": endpoint.base_url, "concurrency": 1}
    summary = generate(tiny_run, "gpt4o", "openai", n=6, protocol="paper", openai_options=options, progress=False)
    records = read_records(tiny_run.cf_file("gpt4o"))
    assert {r.protocol for r in records} == {"paper"} and {r.extra["constraint"] for r in records} == {"none"}
    assert summary["failed"] == [] and len(records) == 6
    by_status = {}
    for r in records:
        by_status.setdefault(r.parse_status, []).append(r)
    assert sorted((s, len(rs)) for s, rs in by_status.items()) == [("error", 1), ("ok", 3), ("parse_error", 1),
                                                                    ("refusal", 1)]
    assert "Avg steps: not a finite number" in by_status["parse_error"][0].extra["parse_note"]
    assert by_status["refusal"][0].error == refusal_text
    assert by_status["error"][0].error == "HTTP 400: Invalid prompt: flagged"
    assert all(r.cf is None and r.cf_pred is None for s in ("error", "parse_error", "refusal") for r in by_status[s])
    calls = endpoint.calls
    again = generate(tiny_run, "gpt4o", "openai", n=6, protocol="paper", openai_options=options, progress=False)
    assert again["already_done"] == 6
    assert endpoint.calls == calls
