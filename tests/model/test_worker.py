"""The inference worker on a real redis-server with the real SmolLM2 engine (tiny token limits)."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.runtime import build_runtime
from bot.safety import Guard
from bot.settings import Settings
from bot.types import IncomingMessage
from model import keys
from model.redis_io import STREAM_FIELD, connect
from model.schema import GenerationRequest, GenerationResult, SamplingParams, StreamChunk
from model.worker import InferenceWorker, WorkerConfig

GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0)


def fast_config(**kw) -> WorkerConfig:
    return WorkerConfig(**{"block_ms": 100, "heartbeat_s": 0.3, "adapter_poll_s": 0.1, "batch_wait_ms": 10, **kw})


@pytest.fixture
async def running(redis_url, engine):
    """A worker on the session's engine, running in this event loop; stopped (drained) at the end."""
    started = []

    async def start(guard=None, **kw) -> InferenceWorker:
        w = InferenceWorker(connect(redis_url, 2.0), engine, guard, fast_config(), **kw)
        started.append((w, asyncio.create_task(w.run())))
        return w

    yield start
    for w, task in started:
        w.stop()
        await asyncio.wait_for(task, 60)
        await w.r.aclose()


@pytest.fixture
async def runtime(redis_url, monkeypatch):
    from bot.safety import embed

    monkeypatch.setattr(embed, "ENABLED", embed.ENABLED)  # restored after the test (build_runtime sets it)
    rt = build_runtime(Settings(redis_url=redis_url, max_new_tokens=6, temperature=0.0, request_timeout_s=120,
                                safety_embedding=False))  # the screen's embedding layer is tested in its own tests
    yield rt
    await rt.close()


async def collect(queue, request_id: str, timeout_s: float = 120) -> tuple[list[StreamChunk], GenerationResult]:
    chunks, result = [], None
    async for event in queue.events(request_id, timeout_s):
        if isinstance(event, StreamChunk):
            chunks.append(event)
        else:
            result = event
    return chunks, result


async def test_worker_answers_through_the_manager_like_the_engine_itself(running, runtime, engine, redis_url):
    await running()
    partials: list[str] = []

    async def on_partial(text: str) -> None:
        partials.append(text)

    msg = IncomingMessage("test", "u1", "I can't sleep before exams.", message_id="m1")
    reply = await runtime.manager.handle(msg, on_partial=on_partial)
    assert reply.kind == "answer"
    direct = engine.generate([GenerationRequest(message="I can't sleep before exams.", sampling=GREEDY)])[0]
    assert reply.text == direct.text and reply.text
    assert partials and reply.text.startswith(partials[-1].strip())
    turns = await runtime.history.load(msg.conversation_key)
    assert [t.content for t in turns] == ["I can't sleep before exams.", reply.text]
    # a redelivery of the same platform message gets no second reply
    assert await runtime.manager.handle(msg) is None


async def test_bad_requests_get_error_results_and_the_worker_goes_on(running, runtime, redis_url):
    worker = await running(guard=Guard("US"))
    r, q = connect(redis_url, 2.0), runtime.queue
    await r.xadd(keys.REQUESTS_STREAM, {STREAM_FIELD: json.dumps({"request_id": "broken", "message": 42})})
    await r.xadd(keys.REQUESTS_STREAM, {STREAM_FIELD: b"\xff not json at all"})
    await r.xadd(keys.REQUESTS_STREAM, {b"something": b"else"})
    future = GenerationRequest(message="hello", sampling=GREEDY, schema_version=99)
    expired = GenerationRequest(message="hello", sampling=GREEDY, deadline=1.0)
    good = GenerationRequest(message="Thank you for listening.", sampling=GREEDY)
    for req in (future, expired, good):
        await q.submit(req)

    _, broken = await collect(q, "broken")
    assert (broken.ok, broken.error) == (False, "bad_request")
    _, res = await collect(q, future.request_id)
    assert res.error == "schema_version"
    _, res = await collect(q, expired.request_id)
    assert res.finish_reason == "expired"
    _, res = await collect(q, good.request_id)
    assert res.ok and res.text and res.worker == worker.name

    async with asyncio.timeout(10):  # everything acknowledged and removed from the stream
        while await r.xlen(keys.REQUESTS_STREAM):
            await asyncio.sleep(0.05)
    async with asyncio.timeout(10):  # the heartbeat reports the work done and the queue
        while (status := json.loads(await r.get(keys.worker_heartbeat(worker.name))))["requests"] < 1:
            await asyncio.sleep(0.05)
    assert status["errors"] >= 3 and status["queue_depth"] == 0 and status["pending"] == 0
    await r.aclose()


async def test_a_request_already_answered_is_not_generated_again(running, runtime, engine, redis_url):
    from model.redis_io import publish_result

    r = connect(redis_url, 2.0)
    req = GenerationRequest(message="hello again", sampling=GREEDY)
    await publish_result(r, GenerationResult(request_id=req.request_id, text="first answer"), "earlier-worker")
    # e.g. a worker died after publishing, before acknowledging: the request is still in the stream
    await r.xadd(keys.REQUESTS_STREAM, {STREAM_FIELD: req.model_dump_json()})
    await running()
    async with asyncio.timeout(30):
        while await r.xlen(keys.REQUESTS_STREAM):
            await asyncio.sleep(0.05)
    _, res = await collect(runtime.queue, req.request_id)
    assert res.text == "first answer"
    assert await r.xlen(keys.outbox(req.request_id)) == 1  # nothing else was published
    await r.aclose()


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory, engine):
    """A real (freshly initialised) LoRA adapter for SmolLM2, saved as training would save it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(engine.loaded.base)
    out = tmp_path_factory.mktemp("adapter") / "smollm2-test"
    get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])).save_pretrained(out)
    return str(out)


async def test_worker_reloads_the_adapter_announced_on_the_channel(running, runtime, engine, redis_url,
                                                                  lora_adapter):
    from model.engine import Engine
    from model.loading import ModelSpec

    loads: list[str | None] = []

    def factory(path: str | None):
        loads.append(path)
        return Engine.from_spec(ModelSpec(adapter=path))

    worker = await running(engine_factory=factory, adapter=None)
    r = connect(redis_url, 2.0)

    async def wait_for_adapter(path: str | None) -> None:
        async with asyncio.timeout(60):
            while worker.adapter != path:
                await asyncio.sleep(0.05)

    async with asyncio.timeout(30):  # the channel is fire-and-forget: publish once the worker listens
        while (await r.pubsub_numsub(keys.ADAPTER_RELOAD_CHANNEL))[0][1] < 1:
            await asyncio.sleep(0.05)
    # a bad path is refused and the worker keeps serving the engine it has
    await r.publish(keys.ADAPTER_RELOAD_CHANNEL, "/nonexistent/adapter")
    async with asyncio.timeout(60):
        while "/nonexistent/adapter" not in loads:
            await asyncio.sleep(0.05)
    assert worker.engine is engine and worker.adapter is None

    await r.set(keys.ADAPTER_CURRENT, lora_adapter)
    await r.publish(keys.ADAPTER_RELOAD_CHANNEL, lora_adapter)
    await wait_for_adapter(lora_adapter)
    assert worker.engine is not engine and worker.engine.loaded.adapter == lora_adapter
    async with asyncio.timeout(10):  # the heartbeat tells which adapter is served
        while json.loads(await r.get(keys.worker_heartbeat(worker.name)) or "{}").get("adapter") != lora_adapter:
            await asyncio.sleep(0.05)
    reply = await runtime.manager.handle(IncomingMessage("test", "u2", "Hello, is anyone there?"))
    assert reply.kind == "answer" and reply.text
    assert loads == ["/nonexistent/adapter", lora_adapter]  # loaded once, not again at every poll
    await r.aclose()


class GatedConcurrentEngine:
    """The real engine, marked as sharing decode steps across calls (as the `static` engine of model/slots.py does
    on a GPU); its first call waits at a gate, so a test can watch a later batch finish while the first is held."""

    concurrent = True

    def __init__(self, engine):
        import threading

        self.engine, self.gate, self.calls = engine, threading.Event(), 0

    def generate(self, requests, on_delta=None):
        self.calls += 1
        if self.calls == 1:
            self.gate.wait(120)
        return self.engine.generate(requests, on_delta)


async def test_a_concurrent_engine_takes_new_batches_while_one_is_in_flight(runtime, engine, redis_url):
    gated = GatedConcurrentEngine(engine)
    worker = InferenceWorker(connect(redis_url, 2.0), gated, None, fast_config())
    task = asyncio.create_task(worker.run())
    try:
        first = GenerationRequest(message="I feel tense all day.", sampling=GREEDY)
        second = GenerationRequest(message="My friend stopped talking to me.", sampling=GREEDY)
        await runtime.queue.submit(first)
        for _ in range(200):  # the first batch is in the engine, held at the gate
            if gated.calls:
                break
            await asyncio.sleep(0.05)
        await runtime.queue.submit(second)
        _, res2 = await collect(runtime.queue, second.request_id)
        assert res2.ok and res2.text and not gated.gate.is_set()  # answered while the first is still held
        gated.gate.set()
        _, res1 = await collect(runtime.queue, first.request_id)
        assert res1.ok and res1.text and gated.calls == 2
    finally:
        gated.gate.set()
        worker.stop()
        await asyncio.wait_for(task, 60)
        await worker.r.aclose()


async def test_requests_waiting_at_publication_are_taken_in_the_same_round_trip_and_checked(redis_url):
    """The next batch comes with the previous batch's publication (TAKE): checked like any other delivery (a request
    already answered is not generated again), answered once."""
    from benchmarks.stub_engine import StubEngine, stub_reply
    from bot.stores.redis_stores import RedisRequestQueue
    from model.redis_io import publish_result

    r = connect(redis_url, 2.0)
    engine = StubEngine(latency_s=0.3)
    worker = InferenceWorker(connect(redis_url, 2.0), engine, config=fast_config(batch_size=4, batch_wait_ms=0))
    queue = RedisRequestQueue(connect(redis_url, 2.0))
    calls = []
    real_call = worker._pipe.call
    worker._pipe.call = lambda *a, **kw: calls.append(a) or real_call(*a, **kw)
    task = asyncio.create_task(worker.run())
    first = GenerationRequest(message="first", sampling=GREEDY, stream=False)
    await queue.submit(first)
    async with asyncio.timeout(10):  # the first batch is being generated
        while not engine.batches:
            await asyncio.sleep(0.01)
    answered = GenerationRequest(message="answered before", sampling=GREEDY, stream=False)
    await publish_result(r, GenerationResult(request_id=answered.request_id, text="earlier answer"), "w0")
    fresh = GenerationRequest(message="fresh", sampling=GREEDY, stream=False)
    for req in (answered, fresh):  # waiting when the first batch is published
        await queue.submit(req)
    results = {}
    for req in (first, answered, fresh):
        _, results[req.message] = await collect(queue, req.request_id, 30)
    assert results["first"].text == stub_reply("first") and results["fresh"].text == stub_reply("fresh")
    assert results["answered before"].text == "earlier answer"
    assert [len(b) for b in engine.batches] == [1, 1]  # the answered one was not generated again
    assert engine.seen[1].message == "fresh"
    scripts = [c[1] for c in calls if c[0] == "EVALSHA"]
    assert worker._take.sha in scripts  # taken along with the first publication
    checked_apart = {c[1] for c in calls if c[0] == "EXISTS"}
    assert keys.result(first.request_id) in checked_apart  # read by XREADGROUP: checked in its own round trip
    assert not {keys.result(answered.request_id), keys.result(fresh.request_id)} & checked_apart  # TAKE checked
    assert await r.xlen(keys.REQUESTS_STREAM) == 0
    worker.stop()
    await asyncio.wait_for(task, 30)
    await queue.close()
    await worker.r.aclose()
    await r.aclose()
