"""The Slack adapter end to end on loopback: the real Bolt AsyncApp in HTTP mode (served by aiohttp exactly as
`counsel-bot slack` serves it) against a fake Slack Web API that records every call; correctly signed event
payloads in Slack's documented shapes; the real manager, in-process stores and the real SmolLM2."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot import slack_views as views
from bot import texts
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from bot.splitting import SLACK_LIMIT
from bot.slack_adapter import (BOT_EVENTS, BOT_SCOPES, PATH, SLASH_COMMANDS, AdminAlerts, build_app,
                               SlackReply, register_listeners, serve, start_http, web_client)
from model.schema import Turn
from tests.conftest import free_port

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM, APP_ID, BOT_USER, BOT_ID = "T0COUNSEL", "A0COUNSEL", "U0BOT", "B0BOT"
ADMIN_CHANNEL = "C0ADMINS"
WAIT_S = 200  # generous: on a shared 2-core machine one short generation has taken 40 s


# --- the fake Slack Web API ---------------------------------------------------------------------------------------
@dataclass
class Call:
    method: str
    data: dict
    at: float  # time.monotonic() when it arrived


@dataclass
class FakeSlack:
    """Answers the Web API methods the adapter uses, as Slack does, and records them (auth.test aside)."""
    calls: list[Call] = field(default_factory=list)
    failing_channels: set[str] = field(default_factory=set)
    tokens: set[str] = field(default_factory=set)
    api_url: str = ""
    socket_url: str = ""  # what apps.connections.open hands out (Socket Mode)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    socket_acks: list[dict] = field(default_factory=list)
    _ts: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.tokens.add(request.headers.get("Authorization", ""))
        if request.content_type == "application/json":
            data = await request.json()
        else:
            data = {**request.query, **(await request.post())}
        if method == "auth.test":
            return web.json_response({"ok": True, "url": "https://counsel-test.slack.com/", "team": "Counsel Test",
                                      "user": "counsel", "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID,
                                      "is_enterprise_install": False})
        if method == "apps.connections.open":
            return web.json_response({"ok": True, "url": self.socket_url})
        self.calls.append(Call(method, data, time.monotonic()))
        channel = data.get("channel")
        if channel in self.failing_channels:
            return web.json_response({"ok": False, "error": "not_in_channel"})
        if method == "chat.postMessage":
            self._ts += 1
            ts = f"1700000100.{self._ts:06d}"
            return web.json_response({"ok": True, "channel": channel, "ts": ts,
                                      "message": {"type": "message", "text": data.get("text"), "user": BOT_USER,
                                                  "bot_id": BOT_ID, "ts": ts}})
        if method == "chat.update":
            return web.json_response({"ok": True, "channel": channel, "ts": data["ts"], "text": data.get("text")})
        if method == "views.publish":
            return web.json_response({"ok": True, "view": {"id": "V0HOME", **json.loads(json.dumps(data["view"]))}})
        if method == "conversations.open":
            return web.json_response({"ok": True, "channel": {"id": "D" + data["users"][1:]}})
        return web.json_response({"ok": False, "error": "unknown_method"}, status=404)

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        """Slack's Socket Mode endpoint: says hello, then records the envelope acks the app sends back."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": APP_ID},
                            "debug_info": {"host": "applink-test", "approximate_connection_time": 18060}})
        self.sockets.append(ws)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.socket_acks.append(json.loads(message.data))
        return ws

    def of(self, method: str, channel: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (channel is None or c.data.get("channel") == channel)]

    def in_channel(self, channel: str) -> list[Call]:
        return [c for c in self.calls if c.data.get("channel") == channel]


class GatedEngine:
    """The real engine behind a gate: while the gate is closed the model is 'slow' (generation waits)."""

    def __init__(self, engine):
        self.engine, self.gate, self.entered = engine, threading.Event(), threading.Event()
        self.gate.set()

    def generate(self, requests, on_delta=None):
        self.entered.set()
        self.gate.wait(WAIT_S)
        return self.engine.generate(requests, on_delta=on_delta)


@dataclass
class Harness:
    fake: FakeSlack
    rt: Runtime
    model: GatedEngine
    session: aiohttp.ClientSession
    url: str

    async def post(self, body: str, content_type: str, headers: dict | None = None,
                   timestamp: int | None = None, signature: str | None = None) -> aiohttp.ClientResponse:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = signature or SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)
        hdrs = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig,
                **(headers or {})}
        async with self.session.post(self.url, data=body.encode(), headers=hdrs) as resp:
            await resp.read()
            resp.arrived = time.monotonic()
            return resp

    async def event(self, event: dict, event_id: str, **kw) -> aiohttp.ClientResponse:
        return await self.post(json.dumps(envelope(event, event_id)), "application/json", **kw)

    async def command(self, command: str, user: str) -> aiohttp.ClientResponse:
        form = {"token": "legacy-verification-token", "team_id": TEAM, "team_domain": "counsel-test",
                "channel_id": "C0GENERAL", "channel_name": "general", "user_id": user, "user_name": "someone",
                "command": command, "text": "", "api_app_id": APP_ID, "is_enterprise_install": "false",
                "response_url": "https://hooks.slack.com/commands/T0COUNSEL/1/abc", "trigger_id": "1.2.3"}
        return await self.post(urlencode(form), "application/x-www-form-urlencoded")

    async def block_action(self, action_id: str, user: str, container: dict) -> aiohttp.ClientResponse:
        payload = {"type": "block_actions", "team": {"id": TEAM, "domain": "counsel-test"},
                   "user": {"id": user, "username": "someone", "team_id": TEAM}, "api_app_id": APP_ID,
                   "token": "legacy-verification-token", "container": container, "trigger_id": "1.2.3",
                   "actions": [{"action_id": action_id, "block_id": "b1", "type": "button", "value": "x",
                                "text": {"type": "plain_text", "text": "button"}, "action_ts": "1700000200.1"}]}
        return await self.post(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded")


def envelope(event: dict, event_id: str) -> dict:
    """An Events API `event_callback` envelope, as Slack sends it."""
    return {"token": "legacy-verification-token", "team_id": TEAM, "api_app_id": APP_ID, "event": event,
            "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": BOT_USER,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False, "event_context": "4-eyJldCI6ImFwcF9tZW50aW9uIn0"}


def dm(user: str, text: str, ts: str, **extra) -> dict:
    return {"type": "message", "channel": "D" + user[1:], "user": user, "text": text, "ts": ts,
            "event_ts": ts, "channel_type": "im", "client_msg_id": hashlib.md5(ts.encode()).hexdigest(), **extra}


def mention(user: str, text: str, ts: str, channel: str = "C0GENERAL", **extra) -> dict:
    return {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}", "ts": ts, "channel": channel,
            "event_ts": ts, "client_msg_id": hashlib.md5(ts.encode()).hexdigest(), **extra}


async def eventually(predicate, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def final_reply(h: Harness, conversation: str, channel: str, turns: int = 2) -> Call:
    """The call that showed the stored answer of `conversation` (its last assistant turn) in `channel`."""
    history = await eventually(lambda: _history_with(h, conversation, turns), f"{turns} turns in {conversation}")
    shown = views.reply_text(history[-1].content)
    return await eventually(lambda: next((c for c in h.fake.in_channel(channel)
                                          if c.data.get("text", "").endswith(shown)), None),
                            f"the reply shown in {channel}")


async def _history_with(h: Harness, conversation: str, turns: int):
    history = await h.rt.history.load(conversation)
    return history if len(history) >= turns else None


@pytest.fixture
async def fake_slack():
    fake = FakeSlack()
    api = web.Application()
    api.router.add_post("/api/{method}", fake.handle)
    api.router.add_get("/link", fake.socket)
    runner = web.AppRunner(api)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.socket_url = f"ws://127.0.0.1:{port}/link?ticket=test"
    fake.api_url = f"http://127.0.0.1:{port}/api/"
    yield fake
    for ws in fake.sockets:
        await ws.close()
    await runner.cleanup()


def settings(fake: FakeSlack, **kw) -> Settings:
    # The crisis screen's embedding layer is tested with the screen; here the rules catch the crisis messages used.
    return Settings(_env_file=None, slack_bot_token="xoxb-test-token", slack_api_url=fake.api_url,
                    admin_slack_channel=ADMIN_CHANNEL, max_new_tokens=8, temperature=0.0, request_timeout_s=WAIT_S,
                    region="US", safety_embedding=False, **kw)


@pytest.fixture(autouse=True)
def restore_embedding_switch(monkeypatch):
    from bot.safety import embed

    monkeypatch.setattr(embed, "ENABLED", embed.ENABLED)  # build_runtime sets it from the settings


async def adapter(s: Settings, engine=None) -> tuple[Runtime, web.AppRunner, str]:
    """One adapter as `counsel-bot slack` builds it in HTTP mode, on a free loopback port."""
    client = web_client(s)
    rt = build_runtime(s, on_crisis=AdminAlerts(client, s), engine=engine)
    app = build_app(s, client)
    register_listeners(app, rt.manager, s)
    port = free_port()
    return rt, await start_http(app, port, host="127.0.0.1"), f"http://127.0.0.1:{port}{PATH}"


@pytest.fixture
async def slack(engine, fake_slack):
    model = GatedEngine(engine)
    rt, bot_runner, url = await adapter(settings(fake_slack, slack_signing_secret=SECRET), engine=model)
    async with aiohttp.ClientSession() as session:
        yield Harness(fake_slack, rt, model, session, url)
    model.gate.set()
    await bot_runner.cleanup()
    await rt.close()


# --- conversations ----------------------------------------------------------------------------------------------
async def test_mention_is_answered_in_its_thread_with_an_offer_to_continue_privately(slack: Harness):
    ts = "1700000000.000100"
    resp = await slack.event(mention("U0ANA", "I've been so stressed about my exams.", ts), "Ev0MENTION1")
    assert resp.status == 200

    offer = await eventually(lambda: next((c for c in slack.fake.of("chat.postMessage", "C0GENERAL")
                                           if c.data.get("blocks")), None), "the DM offer")
    conversation = f"slack:U0ANA:t:{ts}"  # one conversation per person and thread
    answer = await final_reply(slack, conversation, "C0GENERAL")
    posts = slack.fake.of("chat.postMessage", "C0GENERAL")
    assert [p.data["thread_ts"] for p in posts] == [ts, ts]  # placeholder + offer, both in the thread
    assert posts[0].data["text"] == views.THINKING
    assert answer.method == "chat.update" and answer.data["ts"] == "1700000100.000001"  # the placeholder, updated
    assert answer.at < offer.at
    assert offer.data["blocks"][1]["elements"][0]["action_id"] == views.ACTION_OPEN_DM
    history = await slack.rt.history.load(conversation)
    assert history[0] == Turn(role="user", content="I've been so stressed about my exams.")  # mention stripped
    assert slack.fake.tokens == {"Bearer xoxb-test-token"}

    # A follow-up mention inside the thread continues the same conversation; the offer is not repeated.
    await slack.event(mention("U0ANA", "Mostly at night.", "1700000000.000200", thread_ts=ts), "Ev0MENTION2")
    await final_reply(slack, conversation, "C0GENERAL", turns=4)
    posts = slack.fake.of("chat.postMessage", "C0GENERAL")
    assert [p.data["thread_ts"] for p in posts] == [ts] * 3
    assert sum(1 for p in posts if p.data.get("blocks")) == 1

    # "Talk privately" opens a DM with the person and greets them there.
    resp = await slack.block_action(views.ACTION_OPEN_DM, "U0ANA",
                                    {"type": "message", "message_ts": offer.data.get("ts", ts),
                                     "channel_id": "C0GENERAL", "is_ephemeral": False})
    assert resp.status == 200
    welcome = await eventually(lambda: slack.fake.of("chat.postMessage", "D0ANA"), "the DM welcome")
    assert slack.fake.of("conversations.open")[0].data["users"] == "U0ANA"
    assert welcome[0].data["text"] == views.DM_WELCOME


async def test_direct_message_is_answered_in_the_dm_with_the_first_contact_notice(slack: Harness):
    resp = await slack.event(dm("U0BEN", "I can't sleep and I feel on edge all the time.", "1700000001.000100"),
                             "Ev0DM1")
    assert resp.status == 200
    answer = await final_reply(slack, "slack:U0BEN", "D0BEN")
    posts = slack.fake.of("chat.postMessage", "D0BEN")
    assert len(posts) == 1 and posts[0].data["text"] == views.THINKING and posts[0].data.get("thread_ts") is None
    assert answer.method == "chat.update"
    notice = views.reply_text(texts.FIRST_CONTACT)
    assert answer.data["text"].startswith(f"_{notice}_")
    assert "/counsel-forget" in notice and "/forget" not in notice.replace("/counsel-forget", "")


async def test_crisis_message_gets_resources_first_and_alerts_admins_without_the_text(slack: Harness):
    await slack.event(dm("U0CAL", "I want to kill myself tonight", "1700000002.000100"), "Ev0CRISIS")
    posts = await eventually(lambda: slack.fake.of("chat.postMessage", "D0CAL"), "the crisis reply")
    first = posts[0].data["text"]
    assert "988" in first and views.THINKING not in first  # resources are the very first thing shown
    alert = await eventually(lambda: slack.fake.of("chat.postMessage", ADMIN_CHANNEL), "the admin alert")
    assert "Crisis screen on slack" in alert[0].data["text"] and "suicide" in alert[0].data["text"]
    assert "kill myself" not in alert[0].data["text"]  # no message text unless alert_include_text
    assert not slack.model.entered.is_set()  # the model was never asked


async def test_failing_admin_alert_never_costs_the_reply(slack: Harness, caplog):
    slack.fake.failing_channels.add(ADMIN_CHANNEL)
    with caplog.at_level(logging.ERROR, logger="bot.slack_adapter"):
        await slack.event(dm("U0DEE", "I want to kill myself", "1700000003.000100"), "Ev0CRISIS2")
        posts = await eventually(lambda: slack.fake.of("chat.postMessage", "D0DEE"), "the crisis reply")
        assert "988" in posts[0].data["text"]
        await eventually(lambda: any("crisis alert" in r.getMessage() for r in caplog.records), "the logged failure")
    assert not any("kill myself" in r.getMessage() for r in caplog.records)


# --- delivery: signatures, acks, retries, what is ignored ---------------------------------------------------------
async def test_bad_or_stale_signature_gets_401_and_no_reply(slack: Harness):
    bad = await slack.event(dm("U0EVE", "hello", "1700000004.000100"), "Ev0BAD", signature="v0=" + "0" * 64)
    stale = await slack.event(dm("U0EVE", "hello", "1700000004.000200"), "Ev0STALE",
                              timestamp=int(time.time()) - 600)  # correctly signed, but 10 minutes old
    assert (bad.status, stale.status) == (401, 401)
    assert slack.fake.calls == []
    assert await slack.rt.history.load("slack:U0EVE") == []


async def test_ack_arrives_while_the_model_is_still_generating(slack: Harness):
    slack.model.gate.clear()  # a slow model: generation waits until the test opens the gate
    resp = await slack.event(dm("U0FIN", "Work has been overwhelming this month.", "1700000005.000100"), "Ev0SLOW")
    assert resp.status == 200
    await eventually(slack.model.entered.is_set, "generation to start")
    placeholder = await eventually(lambda: slack.fake.of("chat.postMessage", "D0FIN"), "the placeholder")
    assert slack.fake.of("chat.update", "D0FIN") == []  # acked, placeholder shown, no answer yet
    slack.model.gate.set()
    answer = await final_reply(slack, "slack:U0FIN", "D0FIN")
    assert resp.arrived < answer.at and placeholder[0].at < answer.at


async def test_retry_and_duplicate_event_id_get_no_second_reply(slack: Harness, caplog):
    event = dm("U0GUS", "My brother and I keep arguing.", "1700000006.000100")
    slack.model.gate.clear()
    with caplog.at_level(logging.INFO, logger="bot.manager"):
        first = await slack.event(event, "Ev0ONCE")
        await eventually(lambda: slack.fake.of("chat.postMessage", "D0GUS"), "the placeholder")
        # Slack retries a delivery it thinks failed, with the same event_id, while we are still answering.
        retry = await slack.event(event, "Ev0ONCE", headers={"X-Slack-Retry-Num": "1",
                                                             "X-Slack-Retry-Reason": "http_timeout"})
        assert (first.status, retry.status) == (200, 200)
        await eventually(lambda: _duplicates(caplog) == 1, "the retry to be dropped")
        slack.model.gate.set()
        await final_reply(slack, "slack:U0GUS", "D0GUS")
        # ... and the same event once more after the answer.
        await slack.event(event, "Ev0ONCE", headers={"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_error"})
        await eventually(lambda: _duplicates(caplog) == 2, "the second retry to be dropped")
    assert len(slack.fake.of("chat.postMessage", "D0GUS")) == 1
    assert len(await slack.rt.history.load("slack:U0GUS")) == 2


async def test_two_adapter_processes_on_redis_answer_an_event_once(fake_slack, redis_url, caplog):
    """Two adapters (as two `counsel-bot slack` processes behind a load balancer) share Redis; Slack delivers the
    same event to both. A crisis message needs no worker, so this runs without one."""
    adapters = [await adapter(settings(fake_slack, slack_signing_secret=SECRET, redis_url=redis_url))
                for _ in range(2)]
    try:
        async with aiohttp.ClientSession() as session:
            deliveries = [Harness(fake_slack, rt, None, session, url) for rt, _, url in adapters]
            event = dm("U0LIV", "I want to end my life", "1700000011.000100")
            with caplog.at_level(logging.INFO, logger="bot.manager"):
                first, retry = await asyncio.gather(
                    deliveries[0].event(event, "Ev0TWICE"),
                    deliveries[1].event(event, "Ev0TWICE", headers={"X-Slack-Retry-Num": "1",
                                                                     "X-Slack-Retry-Reason": "http_timeout"}))
                assert (first.status, retry.status) == (200, 200)
                await eventually(lambda: fake_slack.of("chat.postMessage", "D0LIV"), "the crisis reply")
                await eventually(lambda: _duplicates(caplog) == 1, "one of the deliveries to be dropped")
                await eventually(lambda: fake_slack.of("chat.postMessage", ADMIN_CHANNEL), "the admin alert")
        assert len(fake_slack.of("chat.postMessage", "D0LIV")) == 1
        assert len(fake_slack.of("chat.postMessage", ADMIN_CHANNEL)) == 1
        assert len(await adapters[0][0].history.load("slack:U0LIV")) == 2  # stored once, visible to both
    finally:
        for rt, runner, _ in adapters:
            await runner.cleanup()
            await rt.close()


def _duplicates(caplog) -> int:
    return sum("duplicate delivery" in r.getMessage() for r in caplog.records)


async def test_bot_messages_edits_and_deletions_are_ignored(slack: Harness):
    ts = "1700000007.000100"
    ignored = [
        {"type": "message", "subtype": "bot_message", "bot_id": "B0OTHER", "text": "beep", "ts": ts,
         "channel": "D0HAL", "channel_type": "im", "event_ts": ts},
        dm(BOT_USER, "my own message", "1700000007.000150", bot_id=BOT_ID),
        {"type": "message", "subtype": "message_changed", "channel": "D0HAL", "channel_type": "im", "ts": ts,
         "event_ts": ts, "hidden": True, "message": {"type": "message", "user": "U0HAL", "text": "edited", "ts": ts,
                                                      "edited": {"user": "U0HAL", "ts": ts}},
         "previous_message": {"type": "message", "user": "U0HAL", "text": "before", "ts": ts}},
        {"type": "message", "subtype": "message_deleted", "channel": "D0HAL", "channel_type": "im", "ts": ts,
         "event_ts": ts, "hidden": True, "deleted_ts": ts,
         "previous_message": {"type": "message", "user": "U0HAL", "text": "gone", "ts": ts}},
    ]
    for i, event in enumerate(ignored):
        assert (await slack.event(event, f"Ev0IGN{i}")).status == 200
    await slack.event(dm("U0HAL", "Hello, is anyone there?", "1700000007.000200"), "Ev0REAL")
    await final_reply(slack, "slack:U0HAL", "D0HAL")
    assert len(slack.fake.of("chat.postMessage", "D0HAL")) == 1  # only the real message's placeholder
    assert await slack.rt.history.load(f"slack:{BOT_USER}") == []


async def test_long_reply_updates_the_placeholder_then_continues_below_slacks_limit(fake_slack):
    out = SlackReply(web_client(settings(fake_slack)), "D0LEO", None)
    await out.start()
    text = " ".join(f"Sentence number {i} about coping with stress." for i in range(300))  # ~13,500 characters
    await out.finish(text)
    updates, posts = fake_slack.of("chat.update", "D0LEO"), fake_slack.of("chat.postMessage", "D0LEO")
    assert posts[0].data["text"] == views.THINKING and [u.data["ts"] for u in updates] == ["1700000100.000001"]
    parts = [updates[0].data["text"]] + [p.data["text"] for p in posts[1:]]
    assert len(parts) == 4 and all(len(p) <= SLACK_LIMIT for p in parts)
    assert " ".join(parts) == text


# --- commands, App Home ---------------------------------------------------------------------------------------
async def test_forget_command_erases_history_ephemerally(slack: Harness):
    await slack.rt.history.append("slack:U0IDA", Turn(role="user", content="I had a rough day."),
                                  Turn(role="assistant", content="I'm sorry to hear that."))
    await slack.rt.history.append("slack:U0IDA:t:1700000000.000900", Turn(role="user", content="in a thread"))
    await slack.rt.state.set_field("slack:U0IDA", "seen", "1")

    resp = await slack.command("/counsel-forget", "U0IDA")
    assert resp.status == 200
    body = await resp.json()
    assert body["response_type"] == "ephemeral" and "erased" in body["text"]
    assert await slack.rt.history.load("slack:U0IDA") == []
    assert await slack.rt.history.load("slack:U0IDA:t:1700000000.000900") == []
    assert await slack.rt.state.get_field("slack:U0IDA", "seen") is None  # the next DM is a first contact again


async def test_home_tab_is_published_and_its_button_erases_data(slack: Harness):
    await slack.rt.history.append("slack:U0JO", Turn(role="user", content="hi"), Turn(role="assistant", content="hey"))
    opened = {"type": "app_home_opened", "user": "U0JO", "channel": "D0JO", "tab": "home",
              "event_ts": "1700000009.000100"}
    assert (await slack.event(opened, "Ev0HOME")).status == 200
    published = await eventually(lambda: slack.fake.of("views.publish"), "views.publish")
    view = published[0].data["view"]
    assert published[0].data["user_id"] == "U0JO" and view["type"] == "home"
    shown = json.dumps(view)
    assert "988" in shown and "not a therapist" in shown and views.ACTION_FORGET in shown

    resp = await slack.block_action(views.ACTION_FORGET, "U0JO", {"type": "view", "view_id": "V0HOME"})
    assert resp.status == 200
    again = await eventually(lambda: slack.fake.of("views.publish")[1:], "the republished Home tab")
    assert texts.FORGOTTEN in json.dumps(again[0].data["view"])
    assert await slack.rt.history.load("slack:U0JO") == []


# --- Socket Mode ------------------------------------------------------------------------------------------------
async def test_socket_mode_acks_the_envelope_and_answers(engine, fake_slack):
    """`serve` as `counsel-bot slack` runs it with SLACK_APP_TOKEN set: no HTTP server, a WebSocket to Slack."""
    task = asyncio.create_task(serve(settings(fake_slack, slack_app_token="xapp-test-token"), engine=engine))
    try:
        sockets = await eventually(lambda: fake_slack.sockets or task.done(), "the Socket Mode connection")
        assert not task.done(), task.exception()
        event = dm("U0KIM", "I feel lonely since I moved cities.", "1700000010.000100")
        await sockets[0].send_json({"envelope_id": "57d6a792-4d35-4d0b-b6aa-3361493e1caf", "type": "events_api",
                                    "accepts_response_payload": False, "retry_attempt": 0, "retry_reason": "",
                                    "payload": envelope(event, "Ev0SOCKET")})
        await eventually(lambda: {"envelope_id": "57d6a792-4d35-4d0b-b6aa-3361493e1caf"} in fake_slack.socket_acks,
                         "the envelope ack")
        notice = views.reply_text(texts.FIRST_CONTACT)
        final = await eventually(lambda: [c for c in fake_slack.of("chat.update", "D0KIM")
                                          if c.data["text"].startswith(f"_{notice}_")], "the answer")
        assert len(final[0].data["text"]) > len(notice) + 4
        assert fake_slack.of("chat.postMessage", "D0KIM")[0].data["text"] == views.THINKING
        assert "Bearer xapp-test-token" in fake_slack.tokens  # apps.connections.open uses the app-level token
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- configuration --------------------------------------------------------------------------------------------
def test_manifest_asks_for_exactly_what_the_adapter_uses():
    manifest = yaml.safe_load((Path(__file__).parents[2] / "bot" / "slack_manifest.yaml").read_text())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == set(BOT_SCOPES)
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == set(BOT_EVENTS)
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == list(SLASH_COMMANDS)
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["features"]["bot_user"]["display_name"]


def test_cli_without_tokens_says_what_to_set_and_exits_2(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from bot.cli import app

    monkeypatch.chdir(tmp_path)  # no .env here
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["slack"])
    assert result.exit_code == 2
    assert "SLACK_BOT_TOKEN" in result.output and len(result.output.strip().splitlines()) == 1

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    result = CliRunner().invoke(app, ["slack"])
    assert result.exit_code == 2
    assert "SLACK_APP_TOKEN" in result.output and "SLACK_SIGNING_SECRET" in result.output
