"""Prometheus metrics of generation, recorded where every batch passes (`model.batching.run_batch`), so the Redis
worker and the in-process queue report the same series. Served by the process's /metrics endpoint (bot/ops.py).

Labels are bounded: finish reasons, short error codes and True/False, never request or user ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Histogram

from model.schema import GenerationResult

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
_TPS = (1, 2, 5, 10, 20, 40, 80, 160, 320, 640)

BATCHES = Histogram("counsel_generation_batch_size", "Requests per generated batch",
                    buckets=(1, 2, 4, 8, 16, 32, 64))
RESULTS = Counter("counsel_generation_results", "Generation results by finish reason (stop, length, error, expired)",
                  ["finish_reason"])
ERRORS = Counter("counsel_generation_errors", "Generation errors by short error code", ["error"])
GUARD_REPLACED = Counter("counsel_generation_guard_replaced", "Replies the output guard replaced with a safe reply")
TOKENS = Counter("counsel_generation_tokens", "Completion tokens generated (rate() = tokens/s)")
FIRST_TOKEN = Histogram("counsel_generation_first_token_seconds",
                        "From generation start to the first token, per request", buckets=_LATENCY)
GENERATION = Histogram("counsel_generation_seconds", "Generation time of a request's batch", buckets=_LATENCY)
TOKENS_PER_S = Histogram("counsel_generation_tokens_per_second", "Completion tokens per second, per request",
                         buckets=_TPS)


def observe_batch(results: Sequence[GenerationResult]) -> None:
    """Record one batch's results (never raises: metrics must not cost anyone a reply)."""
    try:
        BATCHES.observe(len(results))
        for r in results:
            RESULTS.labels(r.finish_reason).inc()
            if r.error:
                ERRORS.labels(r.error[:40]).inc()
            if r.replaced:
                GUARD_REPLACED.inc()
            if r.completion_tokens:
                TOKENS.inc(r.completion_tokens)
            if r.first_token_seconds is not None:
                FIRST_TOKEN.observe(r.first_token_seconds)
            if r.ok and r.generation_seconds > 0:
                GENERATION.observe(r.generation_seconds)
                if r.completion_tokens:
                    TOKENS_PER_S.observe(r.tokens_per_second)
    except Exception:  # noqa: BLE001 - a metrics bug is logged by prometheus_client users, not fatal
        pass
