"""The inference worker: the only process that touches the GPU (`counsel-bot worker`).

Reads batches from `keys.REQUESTS_STREAM` in consumer group `keys.WORKER_GROUP` (up to `batch_size` requests or
`batch_wait_ms`), runs `model.batching.run_batch` (engine + output guard), publishes chunks and results through
each request's outbox and the submitting process's replies stream (model.redis_io), then XACKs and XDELs the
entries in the same atomic script as the results (one round trip per batch). Several workers share the group.

Nothing accepted is lost, nothing is answered twice:
- entries pending longer than `claim_idle_ms` (their worker died) are taken over with XAUTOCLAIM; a live worker
  keeps the idle time of the entries it is generating for near zero (XCLAIM to itself), so it is never robbed;
- a request whose result already exists is acknowledged without generating again; results are published with
  SET NX, so the first publisher wins;
- a request that keeps killing workers (`max_attempts`) gets an error result; an unparseable one gets an error
  result; a request past its deadline gets an "expired" result. The worker itself never dies of a request.

Between batches it applies adapter rollouts: a path PUBLISHed on `keys.ADAPTER_RELOAD_CHANNEL` or SET in
`keys.ADAPTER_CURRENT` makes it call `engine_factory(path)` and serve the new engine from the next batch on (the
old engine keeps serving if loading fails). SIGTERM (`stop()`) drains: the batch in hand is finished, published and
acknowledged, then `run()` returns. A heartbeat key with a TTL reports throughput and queue depth.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from model import keys
from model.batching import Generator, OutputGuard, run_batch
from model.redis_io import (PUBLISH_BATCH_LUA, REPLIES_MAXLEN, REPLY_TO_FIELD, RESULT_TTL_S, RID_FIELD,
                            STREAM_FIELD, TAKE_LUA, AutoPipeline, Link, Lua, chunk_fields, entries)
from model.rollout import AdapterAnnouncements, free_accelerator_memory, same_path
from model.schema import GenerationRequest, GenerationResult, StreamChunk, error_result

log = logging.getLogger(__name__)

EngineFactory = Callable[[str | None], Generator]  # adapter path (None = no adapter) -> a loaded engine


def _default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerConfig:
    batch_size: int = 8
    batch_wait_ms: int = 20
    block_ms: int = 1000  # longest wait for new work before housekeeping (stop, reload, heartbeat)
    claim_idle_ms: int = 60_000  # entries pending this long belong to a dead worker and are taken over
    max_attempts: int = 3  # deliveries of one request before it gets an error result
    heartbeat_s: float = 5.0
    chunk_flush_ms: int = 50  # streamed text is published at most this often per batch
    max_inflight_batches: int = 8  # with an engine that shares decode steps across calls (`concurrent`), batches
    # read while others generate join the running decode (continuous batching); 1 for other engines
    adapter_poll_s: float = 1.0  # how often ADAPTER_CURRENT is read (the reload channel is instant)
    name: str = field(default_factory=_default_name)


@dataclass
class _Stats:
    batches: int = 0
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    generation_s: float = 0.0
    started: float = field(default_factory=time.time)


class InferenceWorker:
    def __init__(self, redis, engine: Generator, guard: OutputGuard | None = None,
                 config: WorkerConfig | None = None, engine_factory: EngineFactory | None = None,
                 adapter: str | None = None):
        self.r, self.engine, self.guard = redis, engine, guard
        self.cfg = config or WorkerConfig()
        self.engine_factory, self.adapter = engine_factory, adapter
        self.name = self.cfg.name
        self.stats = _Stats()
        self._publish = Lua(PUBLISH_BATCH_LUA)
        self._take = Lua(TAKE_LUA)
        self._taking = False  # take the next batch along with a publication (one batch in flight at a time)
        self._taken: list[tuple[bytes, dict]] = []  # entries taken that way, not processed yet
        self._checked: dict[bytes, tuple[int, int]] = {}  # entry id -> (result exists, attempts) checked by TAKE
        self._reads = Link(redis)  # blocking XREADGROUP on its own connection
        self._pipe = AutoPipeline(redis)  # per-batch checks and publication, on one more connection
        self._reply_to: dict[str, str] = {}
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task] = set()
        self._announcements = AdapterAnnouncements(redis, self.cfg.adapter_poll_s)
        self._failed_adapter: str | None = None
        self._next_heartbeat = 0.0
        self._next_claim = 0.0

    # --- lifecycle -----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish the batch in hand, publish and acknowledge it, then return from run()."""
        if not self._stopping.is_set():
            log.info("worker %s stopping after the current batch", self.name)
        self._stopping.set()

    async def run(self) -> None:
        log.info("worker %s reading %s (group %s)", self.name, keys.REQUESTS_STREAM, keys.WORKER_GROUP)
        pause = 0.1
        try:
            await self._ensure_group()
        except Exception as e:  # Redis not up yet: the loop below retries
            log.warning("cannot create the consumer group yet: %s", e)
        inflight_max = self.cfg.max_inflight_batches if getattr(self.engine, "concurrent", False) else 1
        self._taking = inflight_max == 1
        while not self._stopping.is_set() or self._taken:
            try:
                await self._housekeeping()
                if len(self._inflight) >= inflight_max:
                    await asyncio.wait(self._inflight, timeout=self.cfg.block_ms / 1000,
                                       return_when=asyncio.FIRST_COMPLETED)
                    continue
                entries = await self._next_entries()
                if entries and inflight_max == 1:
                    await self._process(entries)
                elif entries:  # new conversations join the engine's running decode instead of waiting for it
                    task = asyncio.create_task(self._process_logged(entries))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                pause = 0.1
            except Exception as e:  # never a dead worker: Redis away, a bug in one batch, ...
                if _is_nogroup(e):
                    await self._ensure_group()
                    continue
                log.warning("worker loop error (%s: %s); retrying in %.1fs", type(e).__name__, e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
        if self._inflight:  # drain: every batch in hand is finished, published and acknowledged
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._close()
        log.info("worker %s stopped: %d requests in %d batches", self.name, self.stats.requests, self.stats.batches)

    async def _process_logged(self, entries: list[tuple[bytes, dict]]) -> None:
        try:
            await self._process(entries)
        except Exception:  # its entries stay pending and are claimed again; the worker goes on
            log.exception("a concurrent batch failed")

    async def _close(self) -> None:
        try:
            await self.r.delete(keys.worker_heartbeat(self.name))
            await self.r.srem(keys.WORKERS, self.name)
        except Exception:
            pass
        await self._announcements.close()
        await self._reads.close()
        await self._pipe.close()

    async def _ensure_group(self) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.r.xgroup_create(keys.REQUESTS_STREAM, keys.WORKER_GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    # --- reading -------------------------------------------------------------------------------------------------
    async def _next_entries(self) -> list[tuple[bytes, dict]]:
        if self._taken:  # taken with the last publication: requests were waiting
            entries, self._taken = self._taken, []
            return await self._fill(entries)
        now = time.monotonic()
        if now >= self._next_claim:  # a dead worker's entries first: they are the oldest
            self._next_claim = now + self.cfg.claim_idle_ms / 2000
            _next, claimed, _deleted = await self.r.xautoclaim(
                keys.REQUESTS_STREAM, keys.WORKER_GROUP, self.name, self.cfg.claim_idle_ms, "0-0",
                count=self.cfg.batch_size)
            if claimed:
                log.warning("took over %d request(s) left pending by a dead worker", len(claimed))
                return claimed
        return await self._fill(await self._read(self.cfg.batch_size, self.cfg.block_ms))

    async def _fill(self, entries: list[tuple[bytes, dict]]) -> list[tuple[bytes, dict]]:
        """Up to batch_size entries, waiting at most batch_wait_ms after the first for more."""
        if entries and len(entries) < self.cfg.batch_size and self.cfg.batch_wait_ms > 0:
            end = time.monotonic() + self.cfg.batch_wait_ms / 1000
            while len(entries) < self.cfg.batch_size and (left := end - time.monotonic()) > 0:
                more = await self._read(self.cfg.batch_size - len(entries), max(1, int(left * 1000)))
                if not more:
                    break
                entries += more
        return entries

    async def _read(self, count: int, block_ms: int) -> list[tuple[bytes, dict]]:
        [got] = await self._reads.execute([("XREADGROUP", "GROUP", keys.WORKER_GROUP, self.name, "COUNT", count,
                                            "BLOCK", block_ms, "STREAMS", keys.REQUESTS_STREAM, ">")],
                                          block_s=block_ms / 1000)
        if isinstance(got, Exception):
            raise got
        return [e for e in entries(got) if e[1] is not None]

    # --- one batch -----------------------------------------------------------------------------------------------
    async def _process(self, entries: list[tuple[bytes, dict]]) -> None:
        self._reply_to = {}  # request id -> replies stream of the process waiting for it
        ids = [eid for eid, _ in entries]
        parsed: list[tuple[bytes, GenerationRequest]] = []
        outcomes: list[GenerationResult] = []
        for eid, fields in entries:
            req, bad = _parse(fields)
            reply_to = fields.get(REPLY_TO_FIELD)
            rid = req.request_id if req is not None else (bad or "").partition("|")[2]
            if reply_to and rid:
                self._reply_to[rid] = reply_to.decode()
            if req is None:
                self.stats.errors += 1
                log.warning("unparseable request %s (%s)", eid.decode(), bad)
                if bad and bad != "no_id":
                    outcomes.append(error_result(bad.split("|", 1)[1], "bad_request"))
                continue
            parsed.append((eid, req))
        checks = []
        for eid, req in parsed:  # one round trip for the whole batch (none for entries TAKE checked)
            done_n = self._checked.pop(eid, None)
            if done_n is not None and done_n[0] >= 0 and _rid(entries, eid) == req.request_id:
                checks += [_done(done_n[0]), _done(done_n[1]), _done(None)]
                continue
            checks += [self._pipe.call("EXISTS", keys.result(req.request_id)),
                       self._pipe.call("INCR", keys.attempts(req.request_id)),
                       self._pipe.call("EXPIRE", keys.attempts(req.request_id), RESULT_TTL_S)]
        for eid in ids:
            self._checked.pop(eid, None)
        flags = await asyncio.gather(*checks)
        live: list[GenerationRequest] = []
        attempt: dict[str, str] = {}
        now = time.time()
        for i, (_eid, req) in enumerate(parsed):
            done, n = flags[3 * i], int(flags[3 * i + 1])
            attempt[req.request_id] = f"{self.name}:{n}"
            if done:
                continue  # answered already (by a worker that died before acknowledging): just acknowledge
            if n > self.cfg.max_attempts:
                log.error("request %s failed %d deliveries; giving up", req.request_id, n - 1)
                outcomes.append(error_result(req.request_id, "too_many_attempts"))
            elif req.deadline is not None and req.deadline <= now:
                outcomes.append(error_result(req.request_id, "expired", finish_reason="expired"))
            else:
                live.append(req)
        if live:
            live_ids = {r.request_id for r in live}
            outcomes += await self._generate(live, [eid for eid, r in parsed if r.request_id in live_ids], attempt)
        for res in outcomes:
            res.worker = self.name
        await self._retrying(lambda: self._publish_and_ack(outcomes, attempt, ids), "publish results")

    async def _generate(self, live: list[GenerationRequest], entry_ids: list[bytes],
                        attempt: dict[str, str]) -> list[GenerationResult]:
        loop = asyncio.get_running_loop()
        pending: dict[str, list[str]] = {}
        index: dict[str, int] = {}
        streamed = {r.request_id for r in live if r.stream}

        def on_delta(request_id: str, delta: str) -> None:  # called from the engine thread
            if request_id in streamed:
                loop.call_soon_threadsafe(lambda: pending.setdefault(request_id, []).append(delta))

        async def flush() -> None:
            if not pending:
                return
            batch = {rid: "".join(parts) for rid, parts in pending.items()}
            pending.clear()
            async with self.r.pipeline(transaction=False) as p:
                for rid, text in batch.items():
                    i = index.get(rid, 0)
                    index[rid] = i + 1
                    fields = chunk_fields(StreamChunk(request_id=rid, index=i, delta=text), attempt[rid])
                    p.xadd(keys.outbox(rid), fields)
                    p.expire(keys.outbox(rid), RESULT_TTL_S)
                    if reply_to := self._reply_to.get(rid):
                        p.xadd(reply_to, fields, maxlen=REPLIES_MAXLEN, approximate=True)
                        p.expire(reply_to, RESULT_TTL_S)
                await p.execute()

        finished = asyncio.Event()

        async def side_jobs() -> None:  # stream chunks; keep our entries' idle time low so nobody takes them
            next_touch = 0.0
            while not finished.is_set():
                try:  # stopped by the event, not by cancel(): a cancelled Redis call can lose its connection
                    async with asyncio.timeout(self.cfg.chunk_flush_ms / 1000):  # (no extra task, unlike wait_for)
                        await finished.wait()
                except TimeoutError:
                    pass
                try:
                    await flush()
                    if not finished.is_set() and time.monotonic() >= self._next_heartbeat:  # long batches
                        self._next_heartbeat = time.monotonic() + self.cfg.heartbeat_s
                        await self.heartbeat()
                    if not finished.is_set() and time.monotonic() >= next_touch:
                        next_touch = time.monotonic() + self.cfg.claim_idle_ms / 3000
                        await self.r.xclaim(keys.REQUESTS_STREAM, keys.WORKER_GROUP, self.name, 0, entry_ids,
                                            justid=True)
                except Exception as e:  # streaming is best effort; the result is what counts
                    log.debug("chunk publish failed: %s", e)

        jobs = asyncio.create_task(side_jobs())
        t0 = time.time()
        try:
            results = await asyncio.to_thread(run_batch, self.engine, live, on_delta, self.guard)
        except Exception as e:  # a batch that breaks the engine: error results, the worker goes on
            log.exception("batch of %d failed", len(live))
            results = [error_result(r.request_id, type(e).__name__) for r in live]
        finally:
            await asyncio.sleep(0)  # let the engine thread's last call_soon_threadsafe deltas land
            finished.set()
            await jobs  # its last round flushes the remaining chunks
        created = {r.request_id: r.created_at for r in live}
        self.stats.batches += 1
        self.stats.requests += len(live)
        self.stats.generation_s += time.time() - t0
        for res in results:
            res.queue_seconds = max(0.0, t0 - created.get(res.request_id, t0))
            self.stats.tokens += res.completion_tokens
            self.stats.errors += 0 if res.ok else 1
        return results

    async def _publish_and_ack(self, results: list[GenerationResult], attempt: dict[str, str],
                               ids: list[bytes]) -> None:
        """One script, one round trip, atomic: every result published once (SET NX, see model.redis_io), the
        entries acknowledged and deleted. A retry after a lost reply is harmless: published results are not
        published again."""
        ks: list = [keys.REQUESTS_STREAM]
        per_result: list = []
        for res in results:
            rid = res.request_id
            reply_to = self._reply_to.get(rid)
            ks += [keys.result(rid), keys.outbox(rid), reply_to or keys.outbox(rid)]
            per_result += [res.model_dump_json(), attempt.get(rid, self.name), "1" if reply_to else "0"]
        published = self._pipe.script(self._publish, ks, [keys.WORKER_GROUP, RESULT_TTL_S * 1000, REPLIES_MAXLEN,
                                                          len(results), *per_result, *ids])
        if not (self._taking and not self._taken and not self._stopping.is_set()
                and time.monotonic() < self._next_claim):
            await published
            return
        # the same write takes the next batch if requests are waiting (saves the read and check round trips)
        taken = self._pipe.script(self._take, [keys.REQUESTS_STREAM], [
            keys.WORKER_GROUP, self.name, self.cfg.batch_size, RESULT_TTL_S, keys.result(""), keys.attempts("")])
        pub, got = await asyncio.gather(published, taken, return_exceptions=True)
        if not isinstance(got, BaseException):
            for eid, flat, done, n in got or []:
                self._taken.append((eid, dict(zip(flat[::2], flat[1::2]))))
                self._checked[eid] = (int(done), int(n))
        if isinstance(pub, BaseException):
            raise pub

    async def _retrying(self, call, what: str, give_up_s: float = 120.0) -> None:
        """Results must get out: retry through a Redis restart (unpublished entries stay pending otherwise)."""
        end, pause = time.monotonic() + give_up_s, 0.1
        while True:
            try:
                await call()
                return
            except Exception as e:
                if time.monotonic() > end:
                    log.error("could not %s for %.0fs: %s (left pending for another worker)", what, give_up_s, e)
                    return
                log.warning("could not %s (%s); retrying", what, type(e).__name__)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    # --- between batches -----------------------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if self._next_heartbeat <= now:
            self._next_heartbeat = now + self.cfg.heartbeat_s
            await self.heartbeat()
        await self._maybe_reload()

    async def heartbeat(self) -> dict:
        async with self.r.pipeline(transaction=False) as p:
            p.xlen(keys.REQUESTS_STREAM)
            p.xpending(keys.REQUESTS_STREAM, keys.WORKER_GROUP)
            depth, pending = await p.execute(raise_on_error=False)
        st = self.stats
        status = {"name": self.name, "time": time.time(), "adapter": self.adapter, "batches": st.batches,
                  "requests": st.requests, "errors": st.errors, "completion_tokens": st.tokens,
                  "tokens_per_s": round(st.tokens / st.generation_s, 1) if st.generation_s else 0.0,
                  "queue_depth": depth if isinstance(depth, int) else None,
                  "pending": pending.get("pending") if isinstance(pending, dict) else None}
        ttl = max(3, int(self.cfg.heartbeat_s * 3))
        async with self.r.pipeline(transaction=False) as p:
            p.set(keys.worker_heartbeat(self.name), json.dumps(status), ex=ttl)
            p.sadd(keys.WORKERS, self.name)
            await p.execute()
        log.info("heartbeat: %d requests, %.1f tokens/s, queue depth %s, pending %s", st.requests,
                 status["tokens_per_s"], status["queue_depth"], status["pending"])
        return status

    async def _maybe_reload(self) -> None:
        wanted, fresh = await self._announcements.check()
        if fresh:
            self._failed_adapter = None  # announced again: try again
        if wanted is None or same_path(wanted, self.adapter) or wanted == self._failed_adapter:
            return
        if self.engine_factory is None:
            log.warning("adapter %s announced but this worker has no engine factory; keeping %s", wanted,
                        self.adapter)
            self._failed_adapter = wanted
            return
        if self._inflight:  # the old engine finishes the batches it has; new entries wait for the new engine
            await asyncio.gather(*self._inflight, return_exceptions=True)
        log.info("loading adapter %s", wanted)
        t0 = time.perf_counter()
        try:
            engine = await self._beating(asyncio.to_thread(self.engine_factory, wanted))
        except Exception as e:  # a bad adapter must not take the service down: keep the old engine
            log.error("loading adapter %s failed (%s: %s); keeping %s", wanted, type(e).__name__, e, self.adapter)
            self._failed_adapter = wanted
            return
        old, self.engine, self.adapter, self._failed_adapter = self.engine, engine, wanted, None
        del old
        free_accelerator_memory()
        log.info("now serving adapter %s (loaded in %.1fs)", wanted, time.perf_counter() - t0)
        await self.heartbeat()

    async def _beating(self, work):
        """Await `work` (a slow load) while keeping the heartbeat alive."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=self.cfg.heartbeat_s)
            if done:
                return task.result()
            try:
                await self.heartbeat()
            except Exception as e:
                log.debug("heartbeat failed: %s", e)


def _parse(fields: dict) -> tuple[GenerationRequest | None, str | None]:
    """(request, None), or (None, 'reason|request_id') when it can't be parsed, or (None, 'no_id')."""
    raw = fields.get(STREAM_FIELD)
    try:
        return GenerationRequest.model_validate_json(raw), None
    except Exception:
        pass
    try:
        rid = json.loads(raw).get("request_id")
        if isinstance(rid, str) and rid:
            return None, f"bad|{rid}"
    except Exception:
        pass
    return None, "no_id"


def _rid(entries: list[tuple[bytes, dict]], entry_id: bytes) -> str | None:
    fields = next((f for eid, f in entries if eid == entry_id), None) or {}
    rid = fields.get(RID_FIELD)
    return rid.decode() if rid is not None else None


def _done(value):
    """An already-completed future (a check TAKE made), awaited like the pipelined ones."""
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


def _is_nogroup(e: Exception) -> bool:
    return "NOGROUP" in str(e)
