"""One batch through the engine and the output guard: shared by the in-process queue and the Redis worker."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from model.metrics import observe_batch
from model.schema import GenerationRequest, GenerationResult

log = logging.getLogger(__name__)


class Generator(Protocol):
    def generate(self, requests: Sequence[GenerationRequest], on_delta=None) -> list[GenerationResult]: ...


class OutputGuard(Protocol):
    def violations(self, text: str, final: bool = True) -> list[str]:
        """Reason codes for what is wrong with a reply (empty = fine); final=False for streamed partial text."""

    def safe_reply(self, request: GenerationRequest) -> str:
        """What to say instead when the model's reply is unusable twice."""


def run_batch(engine: Generator, requests: Sequence[GenerationRequest], on_delta=None,
              guard: OutputGuard | None = None) -> list[GenerationResult]:
    """`_run_batch`, recorded in the generation metrics (model/metrics.py) for the worker and the local queue."""
    results = _run_batch(engine, requests, on_delta, guard)
    observe_batch(results)
    return results


def _run_batch(engine: Generator, requests: Sequence[GenerationRequest], on_delta=None,
               guard: OutputGuard | None = None) -> list[GenerationResult]:
    """Generate, guard every reply, regenerate the failures once (not streamed), then fall back to a safe reply.

    Streamed text passes the same guard: once a request's partial text violates it, that request's stream stops
    (the adapter then shows the final, guarded text).
    """
    muted: set[str] = set()
    partial: dict[str, str] = {}

    def guarded_delta(request_id: str, delta: str) -> None:
        if on_delta is None or request_id in muted:
            return
        partial[request_id] = partial.get(request_id, "") + delta
        if guard is not None and guard.violations(partial[request_id], final=False):
            muted.add(request_id)
            return
        on_delta(request_id, delta)

    results = engine.generate(requests, on_delta=guarded_delta if on_delta else None)
    if guard is None:
        return results
    by_id = {r.request_id: r for r in requests}
    bad = [res for res in results if res.ok and guard.violations(res.text)]
    if not bad:
        return results
    retry_reqs = []
    for res in bad:
        req = by_id[res.request_id]
        s = req.sampling.model_copy(update={"seed": (req.sampling.seed or 0) + 1,
                                            "temperature": max(req.sampling.temperature, 0.7)})
        retry_reqs.append(req.model_copy(update={"sampling": s}))
    retried = {r.request_id: r for r in engine.generate(retry_reqs)}
    out = []
    for res in results:
        if res.request_id not in retried:
            out.append(res)
            continue
        first = guard.violations(res.text)
        again = retried[res.request_id]
        second = guard.violations(again.text) if again.ok else ["error"]
        if not second:
            out.append(again.model_copy(update={"guard_violations": first}))
        else:
            log.info("output guard replaced a reply (%s)", ",".join(sorted(set(first + second))))
            out.append(again.model_copy(update={
                "text": guard.safe_reply(by_id[res.request_id]), "guard_violations": first + second,
                "replaced": True, "error": None, "finish_reason": "stop"}))
    return out
