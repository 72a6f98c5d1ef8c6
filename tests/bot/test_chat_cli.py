"""`counsel-bot chat` as a subprocess fed on stdin, the way a script would use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "counsel-bot"
ENV = {**os.environ, "COUNSEL_MAX_NEW_TOKENS": "8", "COUNSEL_TEMPERATURE": "0", "COUNSEL_REDIS_URL": "",
       "COUNSEL_ADAPTER": "none"}


def run_chat(lines: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "chat", *args], input="\n".join(lines) + "\n", capture_output=True, text=True,
                          env=ENV, timeout=280)


@pytest.mark.usefixtures("engine")  # the converted model is cached before the subprocess starts
def test_json_one_object_per_input_line_then_exit_on_eof():
    lines = ["I feel anxious before every exam.", "/help", "", "I want to kill myself", "/forget"]
    out = run_chat(lines, "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    objs = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(objs) == len(lines)
    assert all(isinstance(o["reply"], str) and isinstance(o["crisis"], bool) for o in objs)
    assert objs[0]["kind"] == "answer" and objs[0]["reply"] and objs[0]["notice"]
    assert objs[1]["kind"] == "command" and "/forget" in objs[1]["reply"]
    assert objs[2]["kind"] == "invalid"
    assert objs[3]["crisis"] is True and objs[3]["category"] == "suicide" and "988" in objs[3]["reply"]
    assert objs[4]["kind"] == "command"
    assert "I feel anxious" not in out.stderr  # message text is not logged


@pytest.mark.usefixtures("engine")
def test_plain_mode_prints_one_line_per_message():
    out = run_chat(["hello", "/resources", "/quit", "never read"])
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and "988" in lines[1]
    assert "not a therapist" in out.stderr  # the first-contact notice goes to stderr, stdout stays one line each


@pytest.mark.parametrize("cmd", [[], ["chat"], ["worker"], ["discord"], ["slack"], ["safety", "check"], ["train"],
                                 ["eval"], ["retrain"]])
def test_every_subcommand_has_help(cmd):
    out = subprocess.run([str(BIN), *cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
