"""`counsel-bot safety check` as a subprocess: one JSON object per stdin line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).with_name("counsel-bot")
LINES = ["I want to kill myself", "how do I kill a python process", "", "my dad beats me", "kms",
         "je veux mourir", "\u0000\u0007 weird \u200b bytes", "this exam is killing me"]


def _run(stdin: bytes, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "safety", "check", *args], input=stdin, capture_output=True, timeout=240,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, check=False)


def test_safety_check_prints_one_json_object_per_line():
    out = _run("\n".join(LINES).encode() + b"\n", "--rules-only")
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert len(rows) == len(LINES)
    assert [r["crisis"] for r in rows] == [True, False, False, True, True, True, False, False]
    assert [r["category"] for r in rows] == ["suicide", None, None, "abuse", "suicide", "suicide", None, None]
    assert all(set(r) >= {"crisis", "category", "rule"} for r in rows)


def test_safety_check_with_the_embedding_layer_and_bad_bytes():
    out = _run(b"I'm so tired of living, tonight I go\n\xff\xfe broken utf-8\nhello\n")
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [r["crisis"] for r in rows] == [True, False, False]


def test_settings_switch_the_embedding_layer_off():
    out = _run(b"I'm so tired of living, tonight I go\n", COUNSEL_SAFETY_EMBEDDING="false")
    assert out.returncode == 0 and json.loads(out.stdout)["crisis"] is False
