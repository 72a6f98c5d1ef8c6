"""Redis plumbing of model/redis_io.py on a real redis-server: AutoPipeline, Link, the worker's batch publication."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from model import keys
from model.redis_io import PUBLISH_BATCH_LUA, AutoPipeline, Link, Lua, connect, decode_outbox_entry, entries
from model.schema import GenerationResult
from tests.conftest import RedisServer


@pytest.fixture
async def r(redis_url):
    client = connect(redis_url, 2.0)
    yield client
    await client.aclose()


async def test_auto_pipeline_keeps_issue_order_and_batches(r):
    pipe = AutoPipeline(r)
    sent = []
    real = pipe.link.execute

    async def counting(commands, block_s=0.0):
        sent.append(len(commands))
        return await real(commands, block_s)

    pipe.link.execute = counting

    async def task(i: int):
        await asyncio.sleep(0.001 * (i % 5))
        return await pipe.call("RPUSH", "order", i)

    lengths = await asyncio.gather(*(task(i) for i in range(300)))
    pushed = [int(x) for x in await r.lrange("order", 0, -1)]
    assert sorted(lengths) == list(range(1, 301))
    # every caller got the reply of its own command: its value sits at the index its RPUSH reported
    assert all(pushed[n - 1] == i for i, n in enumerate(lengths))
    assert sum(sent) == 300 and len(sent) < 300  # commands issued together shared a round trip
    await pipe.close()


async def test_auto_pipeline_errors_go_to_their_caller_only(r):
    pipe = AutoPipeline(r)
    await r.rpush("a-list", "x")
    ok1, bad, ok2 = pipe.call("SET", "k", "v"), pipe.call("INCR", "a-list"), pipe.call("GET", "k")
    assert await ok1 in (True, b"OK")
    with pytest.raises(ResponseError):
        await bad
    assert await ok2 == b"v"
    await pipe.close()


async def test_scripts_survive_a_lost_script_cache(r):
    lua = Lua("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    pipe = AutoPipeline(r)
    assert await pipe.script(lua, ["n"], [2]) == 2
    await r.script_flush()  # what a restarted Redis forgets
    first, second = pipe.script(lua, ["n"], [3]), pipe.script(lua, ["n"], [4])
    assert (await first, await second) == (5, 9)  # EVAL fallback, still in order
    await r.script_flush()
    assert await lua(r, ["n"], [1]) == 10
    await pipe.close()


async def test_link_rides_out_a_redis_restart(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    client = connect(server.url, 2.0)
    link = Link(client)
    try:
        assert (await link.execute([("SET", "k", "1"), ("INCR", "k")]))[1] == 2
        await asyncio.to_thread(server.restart)
        assert await link.execute([("INCR", "k")]) == [3]  # reconnected by itself; AOF kept the value
        fails = Link(client, retry_s=0)
        server.stop()
        with pytest.raises(Exception):
            await fails.execute([("PING",)])
    finally:
        await link.close()
        await client.aclose()
        server.stop()


async def test_publish_batch_publishes_once_and_acknowledges(r):
    group, stream = keys.WORKER_GROUP, keys.REQUESTS_STREAM
    await r.xgroup_create(stream, group, id="0", mkstream=True)
    ids = [await r.xadd(stream, {"req": f"r{i}"}) for i in range(3)]
    await r.xreadgroup(group, "w1", {stream: ">"}, count=10)
    await r.set(keys.result("r1"), "already")  # published earlier by another worker
    results = [GenerationResult(request_id=f"r{i}", text=f"answer {i}") for i in range(3)]
    ks, per = [stream], []
    for res in results:
        rid = res.request_id
        replies = keys.replies("proc") if rid != "r2" else None
        ks += [keys.result(rid), keys.outbox(rid), replies or keys.outbox(rid)]
        per += [res.model_dump_json(), f"w1:{rid}", "1" if replies else "0"]
    n = await Lua(PUBLISH_BATCH_LUA)(r, ks, [group, 60000, 1000, 3, *per, *ids])
    assert n == 2
    assert await r.get(keys.result("r1")) == b"already" and await r.xlen(keys.outbox("r1")) == 0
    for rid in ("r0", "r2"):
        [(_, fields)] = await r.xrange(keys.outbox(rid))
        attempt, result = decode_outbox_entry(fields)
        assert attempt == f"w1:{rid}" and result.text == f"answer {rid[1]}"
    assert [decode_outbox_entry(f)[1].request_id for _, f in await r.xrange(keys.replies("proc"))] == ["r0"]
    assert await r.xlen(stream) == 0 and (await r.xpending(stream, group))["pending"] == 0
    again = await Lua(PUBLISH_BATCH_LUA)(r, ks, [group, 60000, 1000, 3, *per, *ids])  # a retry: nothing twice
    assert again == 0 and await r.xlen(keys.outbox("r0")) == 1


async def test_entries_reads_resp2_and_resp3_replies():
    resp3 = {b"s": [[b"1-0", [b"a", b"b"]], [b"2-0", None]]}
    resp2 = [[b"s", [[b"1-0", [b"a", b"b"]], [b"2-0", None]]]]
    assert entries(resp3) == entries(resp2) == [(b"1-0", {b"a": b"b"}), (b"2-0", None)]
    assert entries(None) == []


async def test_take_reads_waiting_entries_and_checks_those_with_a_request_id(r):
    from model.redis_io import RID_FIELD, STREAM_FIELD, TAKE_LUA

    group, stream = keys.WORKER_GROUP, keys.REQUESTS_STREAM
    take = Lua(TAKE_LUA)
    args = [group, "w1", 8, 60, keys.result(""), keys.attempts("")]
    await r.xgroup_create(stream, group, id="0", mkstream=True)
    assert await take(r, [stream], args) == []  # nothing waiting: nothing taken, no blocking
    await r.set(keys.result("done"), "x")
    await r.set(keys.attempts("again"), 2)
    for rid in ("new", "done", "again"):
        await r.xadd(stream, {STREAM_FIELD: b"{}", RID_FIELD: rid})
    await r.xadd(stream, {STREAM_FIELD: b"{}"})  # no request id field: left to the worker's own checks
    got = await take(r, [stream], args)
    assert [(done, n) for _, _, done, n in got] == [(0, 1), (1, 1), (0, 3), (-1, -1)]
    assert dict(zip(got[0][1][::2], got[0][1][1::2]))[RID_FIELD] == b"new"
    assert (await r.xpending(stream, group))["pending"] == 4  # delivered to w1, like XREADGROUP
    assert await r.ttl(keys.attempts("new")) > 0
    assert await take(r, [stream], args) == []
