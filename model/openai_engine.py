"""An engine that sends the worker's batches to an OpenAI-compatible server (vLLM, TGI, SGLang) instead of running
the model in this process. Same interface as `model.engine.Engine`: `generate(requests, on_delta) -> results`, so
the queue, the output guard, history and safety stay exactly as they are (COUNSEL_ENGINE=openai).

Why /v1/completions with our own rendered prompt, not /v1/chat/completions: the model must see exactly the format
it was trained on. `model.prompt` renders the system prompt (and the careful-mode addendum), neutralizes role
markers in user text and trims the oldest history to the context by counting tokens with the model's own
tokenizer. A chat endpoint would re-render with whatever template the server has (vLLM needs one for Llama 2 and
may differ from training's), and could not trim by tokens for us. Only the tokenizer is loaded here (no weights).

Each request of a batch is one streamed completion (SSE); up to `concurrency` run at once, which the server batches
continuously. A failing, slow or malformed request gets an error result; generate() never raises for one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from model.engine import DeltaCallback
from model.loading import ModelSpec, load_tokenizer, resolve_base
from model.prompt import render_request
from model.schema import SCHEMA_VERSION, GenerationRequest, GenerationResult, error_result

log = logging.getLogger(__name__)

FINISH_REASONS = {"stop": "stop", "eos": "stop", "eos_token": "stop", "stop_sequence": "stop", "length": "length"}


class OpenAIEngine:
    def __init__(self, tokenizer: Any, base_url: str, model: str, api_key: str | None = None, *,
                 timeout_s: float = 60.0, concurrency: int = 16, max_context: int = 4096,
                 connect_timeout_s: float = 5.0, base: str | None = None):
        self.tokenizer = tokenizer
        self.url = base_url.rstrip("/") + "/completions"
        self.model, self.api_key = model, api_key
        self.timeout_s, self.concurrency, self.connect_timeout_s = timeout_s, concurrency, connect_timeout_s
        self.max_context = max_context
        self.base = base
        # The server tokenizes the prompt text itself and adds what a plain tokenization adds (Llama 2: BOS).
        # Our rendered prompt already starts with that BOS text, so it is sent without it: same tokens either way.
        bos = getattr(tokenizer, "bos_token", None)
        ids = tokenizer("x", add_special_tokens=True)["input_ids"]
        self._server_adds_bos = bool(bos) and bool(ids) and ids[0] == getattr(tokenizer, "bos_token_id", None)

    @classmethod
    def from_spec(cls, spec: ModelSpec, base_url: str, model: str, api_key: str | None = None, *,
                  timeout_s: float = 60.0, concurrency: int = 16, max_context_tokens: int | None = None
                  ) -> OpenAIEngine:
        """Loads only the base model's tokenizer and config (for the prompt format and the context length)."""
        from transformers import AutoConfig

        base = resolve_base(spec)
        tok = load_tokenizer(base)
        model_ctx = int(getattr(AutoConfig.from_pretrained(base), "max_position_embeddings", 4096) or 4096)
        max_ctx = min(max_context_tokens or model_ctx, model_ctx)
        return cls(tok, base_url, model, api_key, timeout_s=timeout_s, concurrency=concurrency,
                   max_context=max_ctx, base=base)

    @property
    def description(self) -> dict:
        return {"engine": "openai", "url": self.url, "model": self.model, "base": self.base,
                "max_context": self.max_context, "concurrency": self.concurrency}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_for(self, req: GenerationRequest) -> str:
        """Exactly the prompt `model.engine.Engine` would generate from."""
        return render_request(self.tokenizer, req, self.max_context, self.count_tokens)

    def body_for(self, req: GenerationRequest) -> dict:
        prompt = self.prompt_for(req)
        bos = self.tokenizer.bos_token
        if self._server_adds_bos and prompt.startswith(bos):
            prompt = prompt[len(bos):]
        s = req.sampling
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "max_tokens": s.max_new_tokens,
                                "temperature": s.temperature, "top_p": s.top_p if not s.greedy else 1.0,
                                "stream": True, "stream_options": {"include_usage": True}}
        if s.repetition_penalty != 1.0:  # vLLM, SGLang and TGI accept it beside the OpenAI fields
            body["repetition_penalty"] = s.repetition_penalty
        if s.seed is not None:
            body["seed"] = s.seed
        return body

    # --- generation ------------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], on_delta: DeltaCallback | None = None
                 ) -> list[GenerationResult]:
        """One result per request, in order; blocking (the worker runs engines in a thread)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._generate(requests, on_delta))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from inside an event loop: use a thread
            return pool.submit(asyncio.run, self._generate(requests, on_delta)).result()

    async def _generate(self, requests: Sequence[GenerationRequest], on_delta: DeltaCallback | None
                        ) -> list[GenerationResult]:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s)
        sem = asyncio.Semaphore(self.concurrency)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

            async def one(req: GenerationRequest) -> GenerationResult:
                async with sem:
                    return await self._one(session, req, on_delta)

            return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _one(self, session, req: GenerationRequest, on_delta: DeltaCallback | None) -> GenerationResult:
        import aiohttp

        if req.schema_version != SCHEMA_VERSION:
            return error_result(req.request_id, "schema_version")
        budget = self.timeout_s
        if req.deadline is not None:
            budget = min(budget, req.deadline - time.time())
            if budget <= 0:
                return error_result(req.request_id, "expired", finish_reason="expired")
        t0 = time.perf_counter()
        text, shown = "", ""
        first: float | None = None
        finish, usage = "stop", {}
        try:
            body = self.body_for(req)
            async with asyncio.timeout(budget):
                async with session.post(self.url, json=body) as resp:
                    if resp.status != 200:
                        log.warning("request %s: server answered HTTP %d", req.request_id, resp.status)
                        return error_result(req.request_id, f"http_{resp.status}",
                                            generation_seconds=time.perf_counter() - t0)
                    async for data in sse_data(resp.content):
                        if data == "[DONE]":
                            break
                        event = json.loads(data)
                        if event.get("error"):
                            log.warning("request %s: server error event", req.request_id)
                            return error_result(req.request_id, "server_error",
                                                generation_seconds=time.perf_counter() - t0)
                        usage = event.get("usage") or usage
                        for choice in event.get("choices") or []:
                            delta = choice.get("text") or ""
                            if choice.get("finish_reason"):
                                finish = FINISH_REASONS.get(choice["finish_reason"], "stop")
                            if not delta:
                                continue
                            if first is None:
                                first = time.perf_counter() - t0
                            text += delta
                            if not shown.strip():  # like the local engine: no leading white space shown
                                delta = delta.lstrip()
                            shown += delta
                            if on_delta is not None and delta:
                                on_delta(req.request_id, delta)
        except TimeoutError:
            log.warning("request %s: no complete answer within %.0fs", req.request_id, budget)
            return error_result(req.request_id, "timeout", generation_seconds=time.perf_counter() - t0)
        except aiohttp.ClientError as e:
            log.warning("request %s: %s", req.request_id, type(e).__name__)
            return error_result(req.request_id, "connection", generation_seconds=time.perf_counter() - t0)
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # malformed JSON or event shape
            log.warning("request %s: malformed server response (%s)", req.request_id, type(e).__name__)
            return error_result(req.request_id, "bad_response", generation_seconds=time.perf_counter() - t0)
        text = text.strip()
        completion = int(usage.get("completion_tokens") or 0) or (self.count_tokens(text) if text else 0)
        return GenerationResult(request_id=req.request_id, text=text, finish_reason=finish,
                                prompt_tokens=int(usage.get("prompt_tokens") or 0), completion_tokens=completion,
                                first_token_seconds=first, generation_seconds=time.perf_counter() - t0)


async def sse_data(stream: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The `data` of each server-sent event (multi-line data joined with newlines; comments and other fields
    skipped). `stream` yields lines, as aiohttp's StreamReader does."""
    buf: list[str] = []
    async for raw in stream:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if buf:
                yield "\n".join(buf)
                buf = []
        elif line.startswith("data:"):
            value = line[5:]
            buf.append(value[1:] if value.startswith(" ") else value)
    if buf:
        yield "\n".join(buf)
