"""The OpenAI-compatible engine against a fake server on loopback that streams SSE like vLLM, and the real SmolLM2
tokenizer for the prompt format."""

from __future__ import annotations

import asyncio
import time

import pytest

from model.openai_engine import OpenAIEngine, sse_data
from model.schema import GenerationRequest, SamplingParams, Turn
from tests.conftest import free_port
from tests.model.openai_fake import ERROREVENT, FAIL, GARBLE, REPLY, STALL, FakeOpenAI


@pytest.fixture
async def fake():
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


def make(engine, url: str, **kw) -> OpenAIEngine:
    return OpenAIEngine(engine.tokenizer, url, "counsel", kw.pop("api_key", None), max_context=engine.max_context,
                        **kw)


def req(message: str, **kw) -> GenerationRequest:
    return GenerationRequest(message=message, sampling=SamplingParams(max_new_tokens=64, temperature=0.7), **kw)


def test_prompt_is_exactly_the_local_engines(engine):
    oe = make(engine, "http://127.0.0.1:9/v1")
    r = GenerationRequest(message="I can't sleep [INST] again", careful=True,
                          history=[Turn(role="user", content="hi"), Turn(role="assistant", content="Hello.")])
    assert oe.prompt_for(r) == engine.prompt_for(r)
    body = oe.body_for(r)
    assert body["prompt"] == engine.prompt_for(r)  # SmolLM2's tokenizer adds no BOS, so nothing is stripped
    assert body["model"] == "counsel" and body["stream"] is True and body["max_tokens"] == 256
    assert body["stream_options"] == {"include_usage": True}


async def test_streams_deltas_for_every_request_of_a_batch(engine, fake):
    oe = make(engine, fake.base_url, api_key="sk-test")
    deltas: dict[str, list[str]] = {}
    reqs = [req(f"message number {i}") for i in range(3)]
    results = await asyncio.to_thread(oe.generate, reqs, lambda rid, d: deltas.setdefault(rid, []).append(d))
    assert [r.request_id for r in results] == [r.request_id for r in reqs]
    for r in results:
        assert r.ok and r.text == REPLY and r.finish_reason == "stop"
        assert len(deltas[r.request_id]) == len(REPLY.split(" "))  # streamed piece by piece, not at the end
        assert "".join(deltas[r.request_id]) == REPLY  # leading space of the first piece not shown
        assert r.completion_tokens == len(REPLY.split(" ")) and r.prompt_tokens > 0
        assert r.first_token_seconds is not None and r.generation_seconds >= r.first_token_seconds
    assert fake.auth == ["Bearer sk-test"] * 3
    assert sorted(b["prompt"] for b in fake.requests) == sorted(oe.prompt_for(r) for r in reqs)


async def test_length_finish_and_sampling_fields(engine, fake):
    oe = make(engine, fake.base_url)
    r = GenerationRequest(message="hello", sampling=SamplingParams(max_new_tokens=4, temperature=0.0, seed=7,
                                                                   repetition_penalty=1.2))
    (res,) = await asyncio.to_thread(oe.generate, [r])
    assert res.finish_reason == "length" and res.text == " ".join(REPLY.split(" ")[:4])
    body = fake.requests[0]
    assert body["temperature"] == 0.0 and body["seed"] == 7 and body["repetition_penalty"] == 1.2
    assert body["max_tokens"] == 4


async def test_one_bad_request_gets_an_error_result_the_others_their_answers(engine, fake):
    oe = make(engine, fake.base_url)
    reqs = [req("fine one"), req(f"{FAIL}"), req(f"{GARBLE}"), req(f"{ERROREVENT}"), req("fine two")]
    results = await asyncio.to_thread(oe.generate, reqs)
    assert [r.error for r in results] == [None, "http_500", "bad_response", "server_error", None]
    assert results[0].text == REPLY and results[4].text == REPLY
    assert all(r.finish_reason == "error" for r in results[1:4])


async def test_a_stalled_stream_times_out_without_holding_the_others(engine, fake):
    oe = make(engine, fake.base_url, timeout_s=1.5)
    t0 = time.monotonic()
    results = await asyncio.to_thread(oe.generate, [req("fine"), req(STALL)])
    assert results[0].ok and results[0].text == REPLY
    assert results[1].error == "timeout"
    assert time.monotonic() - t0 < 30  # bounded by the timeout, not by the server (which would stall an hour)


async def test_past_deadline_is_expired_without_a_call(engine, fake):
    oe = make(engine, fake.base_url)
    (res,) = await asyncio.to_thread(oe.generate, [req("late", deadline=time.time() - 1)])
    assert res.finish_reason == "expired" and fake.requests == []


def test_server_down_gives_connection_errors(engine):
    oe = make(engine, f"http://127.0.0.1:{free_port()}/v1")
    results = oe.generate([req("a"), req("b")])
    assert [r.error for r in results] == ["connection", "connection"]


async def test_concurrency_is_bounded(engine, fake):
    fake.chunk_delay_s = 0.05
    oe = make(engine, fake.base_url, concurrency=2)
    results = await asyncio.to_thread(oe.generate, [req(f"m{i}") for i in range(5)])
    assert all(r.ok for r in results)
    assert fake.max_in_flight == 2  # never more than `concurrency`; the batch does run side by side


async def test_sse_parser_handles_comments_multiline_and_crlf():
    async def lines():
        for line in [b": keep-alive\n", b"\n", b"data: {\"a\":\r\n", b"data: 1}\r\n", b"\r\n", b"event: x\n",
                     b"data: [DONE]\n", b"\n"]:
            yield line

    assert [d async for d in sse_data(lines())] == ['{"a":\n1}', "[DONE]"]


async def test_a_chat_turn_through_the_openai_engine(fake, tmp_path):
    """Settings -> load_engine -> in-process queue -> manager: the answer streams from the server."""
    from bot.runtime import build_runtime
    from bot.settings import Settings
    from bot.types import IncomingMessage

    s = Settings(engine="openai", openai_base_url=fake.base_url, openai_model="counsel", adapter="none",
                 redis_url=None, _env_file=None)
    rt = build_runtime(s)
    try:
        partials: list[str] = []

        async def on_partial(text: str) -> None:
            partials.append(text)

        reply = await rt.manager.handle(IncomingMessage("test", "u1", "I had a long week at work."), on_partial)
    finally:
        await rt.close()
    assert reply.kind == "answer" and reply.text == REPLY
    assert partials and partials[-1] == REPLY
    assert fake.requests[0]["model"] == "counsel"
    assert "I had a long week at work." in fake.requests[0]["prompt"]
