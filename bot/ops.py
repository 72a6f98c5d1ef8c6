"""Health and metrics over HTTP, one small endpoint per process, on COUNSEL_METRICS_PORT:

- `/healthz` liveness: 200 while the process serves HTTP at all (restart the container when it fails);
- `/readyz` readiness: 200 when every check passes (Redis answers PING when Redis is configured; the worker's
  model is loaded), else 503 with the failing checks, as JSON;
- `/metrics` Prometheus text format: everything registered in this process (bot/metrics.py, model/metrics.py,
  queue depth, prometheus-client's process and platform collectors).

It runs in a daemon thread with the standard library's HTTP server, so it answers whatever the main thread's
event loop (discord.py, Bolt, the worker) is doing, and needs no cooperation from it. Checks are plain callables
registered with `add_check`; they run at request time with short timeouts.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily

from model import keys

log = logging.getLogger(__name__)

Check = Callable[[], bool]

READY = Gauge("counsel_ready", "1 when /readyz passes, else 0 (updated on each /readyz or /metrics request)")


class OpsServer:
    """/healthz, /readyz and /metrics on (host, port), in a daemon thread. `port=0` picks a free port."""

    def __init__(self, host: str = "0.0.0.0", port: int = 0):
        self.checks: dict[str, Check] = {}
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"ops": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    def add_check(self, name: str, check: Check) -> None:
        with self._lock:
            self.checks[name] = check

    def readiness(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            checks = dict(self.checks)
        out: dict[str, str] = {}
        for name, check in checks.items():
            try:
                out[name] = "ok" if check() else "failing"
            except Exception as e:  # a check that raises is a failing check, with its exception type as detail
                out[name] = f"failing: {type(e).__name__}"
        ok = all(v == "ok" for v in out.values())
        READY.set(1 if ok else 0)
        return ok, out

    def start(self) -> OpsServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ops-http", daemon=True)
        self._thread.start()
        log.info("health and metrics on %s (/healthz /readyz /metrics)", self.url)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    ops: OpsServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, "application/json", b'{"status": "ok"}')
        elif path == "/readyz":
            ok, checks = self.ops.readiness()
            body = json.dumps({"status": "ready" if ok else "not ready", "checks": checks}).encode()
            self._send(200 if ok else 503, "application/json", body)
        elif path == "/metrics":
            self.ops.readiness()
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
        else:
            self._send(404, "text/plain", b"not found\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - scrapes and probes are not worth a log line
        pass


# --- checks and gauges ------------------------------------------------------------------------------------------

def redis_client(url: str, timeout_s: float = 2.0):
    """A synchronous client for the ops thread (its own connection pool; reconnects by itself)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: a probe answers within timeout_s, and the next probe tries again.
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                retry=Retry(NoBackoff(), 0))


def redis_check(client) -> Check:
    def check() -> bool:
        return bool(client.ping())

    return check


def redis_queue_depth(client) -> Callable[[], tuple[int, int]]:
    """(waiting, in_flight) of the request stream's consumer group, from XINFO GROUPS (Redis 7: lag, pending)."""

    def depth() -> tuple[int, int]:
        try:
            groups = client.xinfo_groups(keys.REQUESTS_STREAM)
        except Exception:  # no stream yet (nothing submitted) or Redis away: nothing measurable
            return 0, 0
        for g in groups:
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == keys.WORKER_GROUP:
                pending = int(g.get("pending") or 0)
                lag = g.get("lag")
                if lag is None:  # Redis cannot tell after some deletions; workers XDEL what they acknowledge,
                    lag = max(0, client.xlen(keys.REQUESTS_STREAM) - pending)  # so the stream is waiting + pending
                return int(lag), pending
        return 0, 0

    return depth


class _QueueDepth:
    """counsel_queue_depth{state=waiting|in_flight}, from one `depth()` call per scrape."""

    def __init__(self):
        self.depth: Callable[[], tuple[int, int]] | None = None

    def collect(self):
        g = GaugeMetricFamily("counsel_queue_depth", "Generation requests not yet answered: waiting = not yet "
                                                     "read by a worker, in_flight = read, not yet acknowledged",
                              labels=["state"])
        if self.depth is not None:
            waiting, in_flight = self.depth()
            g.add_metric(["waiting"], waiting)
            g.add_metric(["in_flight"], in_flight)
        yield g


_QUEUE_DEPTH = _QueueDepth()
REGISTRY.register(_QUEUE_DEPTH)


def watch_queue_depth(depth: Callable[[], tuple[int, int]] | None) -> None:
    """Report `depth()` -> (waiting, in_flight) as counsel_queue_depth at scrape time (None: stop reporting)."""
    _QUEUE_DEPTH.depth = depth


_server: OpsServer | None = None


def start_ops(settings, **checks: Check) -> OpsServer | None:
    """Start this process's endpoint if COUNSEL_METRICS_PORT is set (once per process); add `checks`.

    With COUNSEL_REDIS_URL the endpoint checks Redis and reports the request queue's depth."""
    global _server
    if settings.metrics_port is None:
        return None
    if _server is None:
        try:
            _server = OpsServer(settings.metrics_host, settings.metrics_port)
        except OSError as e:  # a busy port must not take the bot down with it: no endpoint, loudly
            log.error("cannot serve health and metrics on %s:%s: %s", settings.metrics_host, settings.metrics_port, e)
            return None
        if settings.redis_url:
            client = redis_client(settings.redis_url, min(2.0, settings.redis_timeout_s))
            _server.add_check("redis", redis_check(client))
            watch_queue_depth(redis_queue_depth(client))
        for name, check in checks.items():  # before it serves: /readyz never answers without them
            _server.add_check(name, check)
        _server.start()
        return _server
    for name, check in checks.items():
        _server.add_check(name, check)
    return _server

