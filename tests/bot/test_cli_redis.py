"""End to end through the console script: `counsel-bot chat` on Redis, answered by a `counsel-bot worker` process
(real SmolLM2, a few tokens), which drains and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from model import keys

BIN = Path(sys.executable).parent


def cli() -> str:
    return str(BIN / "counsel-bot") if (BIN / "counsel-bot").exists() else shutil.which("counsel-bot")


def test_chat_on_redis_is_answered_by_a_worker_process(redis_url, tmp_path):
    env = {**os.environ, "COUNSEL_REDIS_URL": redis_url, "COUNSEL_ADAPTER": "none", "COUNSEL_MAX_NEW_TOKENS": "6",
           "COUNSEL_TEMPERATURE": "0", "COUNSEL_SAFETY_EMBEDDING": "false", "COUNSEL_REQUEST_TIMEOUT_S": "240"}
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([cli(), "worker", "--name", "cli-test", "--heartbeat-s", "1"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        r = redis.Redis.from_url(redis_url)
        deadline = time.time() + 120
        while not r.exists(keys.worker_heartbeat("cli-test")):  # the model is loaded and the worker reads
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
            assert time.time() < deadline
            time.sleep(0.1)
        lines = "I feel anxious before every exam.\n/help\nThank you, that helps.\n"
        chat = subprocess.run([cli(), "chat", "--json"], input=lines, env=env, capture_output=True, text=True,
                              timeout=280, cwd=tmp_path)
        assert chat.returncode == 0, chat.stderr[-2000:]
        replies = [json.loads(line) for line in chat.stdout.splitlines()]
        assert [x["kind"] for x in replies] == ["answer", "command", "answer"]
        assert all(x["reply"].strip() for x in replies)
        status = json.loads(r.get(keys.worker_heartbeat("cli-test")))
        assert status["name"] == "cli-test"
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    assert code == 0
    assert not r.exists(keys.worker_heartbeat("cli-test"))  # a clean stop removes its heartbeat
    assert r.xlen(keys.REQUESTS_STREAM) == 0
