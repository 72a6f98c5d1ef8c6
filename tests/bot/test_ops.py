"""Health, readiness and metrics endpoints (bot/ops.py) and structured logs, with a real redis-server, the real
SmolLM2 worker and real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bot.ops import OpsServer, redis_check, redis_client, redis_queue_depth, watch_queue_depth
from tests.conftest import REPO, RedisServer, free_port

COUNSEL_BOT = str(REPO / ".venv" / "bin" / "counsel-bot") if (REPO / ".venv" / "bin" / "counsel-bot").exists() \
    else "counsel-bot"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def ops():
    server = OpsServer("127.0.0.1", 0).start()
    yield server
    server.stop()


def test_readiness_flips_when_redis_goes_away_and_back(tmp_path, ops):
    redis = RedisServer(tmp_path / "r").start()
    try:
        ops.add_check("redis", redis_check(redis_client(redis.url, timeout_s=1.0)))
        status, body = get(ops.url + "/readyz")
        assert status == 200 and json.loads(body) == {"status": "ready", "checks": {"redis": "ok"}}

        redis.stop()
        status, body = get(ops.url + "/readyz")
        assert status == 503
        assert json.loads(body)["checks"]["redis"].startswith("failing")
        assert get(ops.url + "/healthz")[0] == 200  # alive all the same: restarting would not bring Redis back
        assert samples(get(ops.url + "/metrics")[1])[("counsel_ready", ())] == 0.0

        redis.start()
        assert get(ops.url + "/readyz")[0] == 200  # the client reconnects by itself
    finally:
        redis.stop()


def test_unknown_path_and_failing_check(ops):
    assert get(ops.url + "/nope")[0] == 404
    ops.add_check("model", lambda: False)
    status, body = get(ops.url + "/readyz")
    assert status == 503 and json.loads(body)["checks"] == {"model": "failing"}


async def test_metrics_count_real_turns_through_redis_and_the_worker(redis_url, engine, ops):
    """A streamed answer and a crisis message through Redis and a real InferenceWorker on SmolLM2; /metrics
    then shows the turn, generation and queue series moving."""
    from bot.runtime import build_runtime
    from bot.safety import Guard
    from bot.settings import Settings
    from bot.types import IncomingMessage
    from model.redis_io import connect
    from model.worker import InferenceWorker, WorkerConfig

    s = Settings(redis_url=redis_url, max_new_tokens=12, temperature=0.0, request_timeout_s=120, _env_file=None)
    sync = redis_client(redis_url)
    ops.add_check("redis", redis_check(sync))
    watch_queue_depth(redis_queue_depth(sync))
    worker = InferenceWorker(connect(redis_url), engine, Guard("US"), WorkerConfig(batch_wait_ms=5, block_ms=100))
    task = asyncio.create_task(worker.run())
    rt = build_runtime(s)
    before = {k: value(*k[:1], **dict(k[1])) for k in [
        ("counsel_replies_total", (("kind", "answer"),)),
        ("counsel_reply_seconds_count", (("kind", "answer"),)),
        ("counsel_time_to_first_token_seconds_count", ()),
        ("counsel_generation_tokens_total", ()),
        ("counsel_generation_batch_size_count", ()),
    ]}
    try:
        partials: list[str] = []

        async def on_partial(text: str) -> None:
            partials.append(text)

        answer = await rt.manager.handle(IncomingMessage("test", "ops-u1", "I feel stressed about work."), on_partial)
        crisis = await rt.manager.handle(IncomingMessage("test", "ops-u2", "I want to kill myself tonight"))
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await rt.close()
    assert answer.kind == "answer" and partials
    assert crisis.kind == "crisis" and crisis.category
    crisis_before = value("counsel_crisis_screens_total", category=crisis.category) - 1

    status, body = await asyncio.to_thread(get, ops.url + "/metrics")
    assert status == 200
    got = samples(body)
    assert got[("counsel_replies_total", (("kind", "answer"),))] == before[("counsel_replies_total", (("kind", "answer"),))] + 1
    assert got[("counsel_reply_seconds_count", (("kind", "answer"),))] == \
        before[("counsel_reply_seconds_count", (("kind", "answer"),))] + 1
    assert got[("counsel_time_to_first_token_seconds_count", ())] == \
        before[("counsel_time_to_first_token_seconds_count", ())] + 1
    assert got[("counsel_crisis_screens_total", (("category", crisis.category),))] == crisis_before + 1
    assert got[("counsel_generation_tokens_total", ())] == \
        before[("counsel_generation_tokens_total", ())] + answer.meta["completion_tokens"]
    assert got[("counsel_generation_batch_size_count", ())] >= before[("counsel_generation_batch_size_count", ())] + 1
    assert got[("counsel_queue_depth", (("state", "waiting"),))] == 0
    assert got[("counsel_queue_depth", (("state", "in_flight"),))] == 0
    assert got[("counsel_ready", ())] == 1.0


async def test_queue_depth_counts_waiting_requests(redis_url, ops):
    """Submitted but not yet read by any worker: they show as waiting."""
    from bot.stores.redis_stores import build_redis_stores
    from bot.settings import Settings
    from model.schema import GenerationRequest
    from model import keys

    sync = redis_client(redis_url)
    sync.xgroup_create(keys.REQUESTS_STREAM, keys.WORKER_GROUP, id="0", mkstream=True)
    watch_queue_depth(redis_queue_depth(sync))
    _, _, queue = build_redis_stores(Settings(redis_url=redis_url, _env_file=None))
    try:
        for i in range(3):
            await queue.submit(GenerationRequest(message=f"m{i}"))
    finally:
        await queue.close()
    got = samples((await asyncio.to_thread(get, ops.url + "/metrics"))[1])
    assert got[("counsel_queue_depth", (("state", "waiting"),))] == 3


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COUNSEL_", "DISCORD_", "SLACK_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


def test_worker_process_is_ready_only_with_its_model_and_logs_json(redis_url, tmp_path):
    """`counsel-bot worker` serves /healthz, /readyz (Redis + model loaded) and /metrics; JSON logs on stderr."""
    port = free_port()
    err = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([COUNSEL_BOT, "worker", "--heartbeat-s", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=err, env=_env(COUNSEL_REDIS_URL=redis_url, COUNSEL_METRICS_PORT=str(port),
                                                 COUNSEL_METRICS_HOST="127.0.0.1", COUNSEL_LOG_FORMAT="json",
                                                 COUNSEL_ADAPTER="none"))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline, ready = time.monotonic() + 180, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, body = get(url + "/readyz")
            except OSError:
                time.sleep(0.2)
                continue
            ready = (status, json.loads(body))
            if status == 200:
                break
            assert json.loads(body)["checks"]["redis"] == "ok"  # before the model: not ready, Redis fine
            time.sleep(0.2)
        assert ready is not None and ready[0] == 200, ready
        assert ready[1]["checks"] == {"redis": "ok", "model": "ok"}
        assert get(url + "/healthz")[0] == 200
        assert b"counsel_queue_depth" in get(url + "/metrics")[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    err.seek(0)
    lines = [line for line in err.read().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any("heartbeat" in r["msg"] for r in records)


async def test_json_logs_of_a_turn_carry_no_message_text(engine):
    """Every log record of a turn (DEBUG and up, every logger) as JSON lines, and the person's words in none."""
    import io
    import logging

    from bot.logs import JsonFormatter
    from bot.runtime import build_runtime
    from bot.settings import Settings
    from bot.types import IncomingMessage

    marker = "my-secret-sorrow-4411"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        rt = build_runtime(Settings(redis_url=None, max_new_tokens=8, _env_file=None), engine=engine)
        try:
            reply = await rt.manager.handle(IncomingMessage("test", "log-u1", f"I feel sad about {marker}",
                                                            message_id="m-1"))
            dup = await rt.manager.handle(IncomingMessage("test", "log-u1", f"I feel sad about {marker}",
                                                          message_id="m-1"))
            crisis = await rt.manager.handle(IncomingMessage("test", "log-u1", f"I want to kill myself {marker}"))
        finally:
            await rt.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert reply.kind == "answer" and dup is None and crisis.kind == "crisis"
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(r["logger"] == "bot.manager" and "duplicate" in r["msg"] for r in records)
    assert any(r["logger"] == "bot.manager" and "crisis screen" in r["msg"] for r in records)
    assert all({"ts", "level", "logger", "msg", "service", "host", "pid"} <= set(r) for r in records)
    assert marker not in stream.getvalue()


def test_queue_depth_of_the_in_process_queue_is_reported(engine, ops):
    from bot.runtime import build_runtime
    from bot.settings import Settings

    rt = build_runtime(Settings(redis_url=None, _env_file=None), engine=engine)
    got = samples(get(ops.url + "/metrics")[1])
    assert got[("counsel_queue_depth", (("state", "waiting"),))] == 0
    assert rt.queue.depth() == (0, 0)
    assert sys.modules["bot.ops"]._QUEUE_DEPTH.depth == rt.queue.depth


def test_a_busy_metrics_port_does_not_stop_the_process():
    import socket

    import bot.ops
    from bot.settings import Settings

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert bot.ops._server is None
        assert bot.ops.start_ops(Settings(metrics_port=port, metrics_host="127.0.0.1", _env_file=None)) is None
        assert bot.ops._server is None
