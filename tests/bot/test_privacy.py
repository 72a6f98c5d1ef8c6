"""Privacy: no message text in logs by default (full manager turns, crisis included), and crisis alerts carry no
text unless configured."""

from __future__ import annotations

import logging

import pytest

from bot.runtime import build_runtime
from bot.safety.alerts import format_alert
from bot.safety.screen import Screening
from bot.settings import Settings
from bot.types import IncomingMessage

SECRET = "Zanzibar-Quokka"  # a marker no log line could contain by chance
MESSAGES = [f"My neighbour {SECRET} keeps me up at night and I feel low.",
            f"I want to kill myself, {SECRET} says nobody would care",
            f"never mind, {SECRET}, you misunderstood",
            f"Thanks. Anyway {SECRET} moved out."]


async def _turns(engine, caplog, **settings) -> str:
    runtime = build_runtime(Settings(max_new_tokens=8, temperature=0.0, rate_limit_messages=100,
                                     safety_embedding=False, **settings), engine=engine)
    alerts = []

    async def on_crisis(msg, screening):
        alerts.append(format_alert(msg.platform, msg.user_id, screening, msg.text))
        logging.getLogger("bot.test_alerts").warning("alert sent: %s", alerts[-1])

    runtime.manager.on_crisis = on_crisis
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        kinds = []
        for i, text in enumerate(MESSAGES):
            reply = await runtime.manager.handle(IncomingMessage(platform="test", user_id="alice@example.com",
                                                                 text=text, message_id=f"m{i}"))
            kinds.append(reply.kind)
        await runtime.manager.handle(IncomingMessage(platform="test", user_id="alice@example.com", text="/forget"))
    await runtime.close()
    assert kinds == ["answer", "crisis", "check_in", "answer"] and len(alerts) == 1
    return "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)


async def test_no_message_text_or_user_id_in_logs_by_default(engine, caplog):
    logs = await _turns(engine, caplog)
    assert "crisis screen" in logs  # the crisis was logged (category and rule only)
    assert SECRET not in logs and "kill myself" not in logs and "alice@example.com" not in logs


async def test_log_message_text_setting_does_log_text(engine, caplog):
    """The opposite setting shows the test above can fail."""
    logs = await _turns(engine, caplog, log_message_text=True)
    assert SECRET in logs


def test_alert_has_no_text_unless_configured():
    screening = Screening(True, "suicide", "suicide:kill_myself")
    alert = format_alert("discord", "12345", screening, "I want to kill myself")
    assert "suicide" in alert and "kill myself" not in alert and "12345" not in alert
    assert "kill myself" in format_alert("discord", "12345", screening, "I want to kill myself", include_text=True)


@pytest.mark.parametrize("category", ["suicide", "abuse"])
def test_screening_json_carries_no_text(category):
    assert set(Screening(True, category, f"{category}:x").as_json()) == {"crisis", "category", "rule"}
