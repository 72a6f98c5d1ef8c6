"""A small OpenAI-compatible completions server on loopback (aiohttp), streaming SSE the way vLLM does:
`data: {"choices": [{"index": 0, "text": ..., "finish_reason": null}]}` chunks, a usage-only chunk when
`stream_options.include_usage` is set, then `data: [DONE]`.

Behaviour per request is chosen by a marker in the prompt: FAIL -> HTTP 500, STALL -> stops sending mid-answer,
GARBLE -> a malformed event, ERROREVENT -> an `error` event mid-stream. Everything else gets REPLY, word by word.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

REPLY = "That sounds really hard. It makes sense that you feel tired after a week like that."
FAIL, STALL, GARBLE, ERROREVENT = "please-fail-now", "please-stall-now", "please-garble-now", "please-error-event"


class FakeOpenAI:
    def __init__(self, chunk_delay_s: float = 0.01, api_key: str | None = None):
        self.chunk_delay_s, self.api_key = chunk_delay_s, api_key
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.in_flight = self.max_in_flight = 0
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()  # set on stop: stalled streams end so the server shuts down at once
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.auth.append(request.headers.get("Authorization"))
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "bad key", "type": "auth"}}, status=401)
        prompt = body["prompt"]
        if FAIL in prompt:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._stream(request, body, prompt)
        finally:
            self.in_flight -= 1

    async def _stream(self, request: web.Request, body: dict, prompt: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        cid, created = f"cmpl-{len(self.requests)}", int(time.time())

        async def send(obj) -> None:
            await resp.write(f"data: {json.dumps(obj) if not isinstance(obj, str) else obj}\n\n".encode())

        words = REPLY.split(" ")[: body.get("max_tokens", 256)]
        for i, word in enumerate(words):
            if i == 3 and STALL in prompt:
                await self._release.wait()
                return resp
            if i == 3 and GARBLE in prompt:
                await send("{not json")
            if i == 3 and ERROREVENT in prompt:
                await send({"error": {"message": "overloaded", "type": "server_error", "code": 503}})
                break
            # Llama 2 style: every piece starts with a space, the first included.
            await send({"id": cid, "object": "text_completion", "created": created, "model": body["model"],
                        "choices": [{"index": 0, "text": " " + word, "logprobs": None, "finish_reason": None}]})
            await asyncio.sleep(self.chunk_delay_s)
        finish = "length" if len(words) < len(REPLY.split(" ")) else "stop"
        await send({"id": cid, "object": "text_completion", "created": created, "model": body["model"],
                    "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({"id": cid, "object": "text_completion", "created": created, "model": body["model"],
                        "choices": [], "usage": {"prompt_tokens": len(prompt.split()),
                                                 "completion_tokens": len(words),
                                                 "total_tokens": len(prompt.split()) + len(words)}})
        await send("[DONE]")
        await resp.write_eof()
        return resp
