"""The Discord adapter end to end without a network: the real discord.Client fed real gateway payloads, REST calls
recorded at discord.py's HTTP layer, the real ConversationManager with in-process stores and the real SmolLM2."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from bot import texts
from bot.discord_adapter import INTENT_MISSING, LOGIN_FAILED, CounselBot, ReplyDelivery, run_discord
from bot.runtime import build_runtime
from bot.safety.resources import crisis_reply
from bot.settings import Settings
from bot.splitting import DISCORD_LIMIT
from bot.types import Reply
from tests.bot.discord_fakes import (
    ADMIN_CHANNEL_ID, APP_ID, DM_CHANNEL_ID, GUILD_CHANNEL_ID, GUILD_ID, OTHER_BOT, USER_ID, BOT_USER,
    Gateway, RestRecorder, dm_message, guild_message, slash_command,
)

USER_KEY = f"discord:{USER_ID}"
CRISIS_TEXT = "i want to die, i can't do this anymore"


def settings(**overrides) -> Settings:
    base = dict(max_new_tokens=16, temperature=0.0, region="US", discord_token="not-a-real-token",
                discord_test_guild=int(GUILD_ID), admin_discord_channel=int(ADMIN_CHANNEL_ID),
                redis_url=None, _env_file=None)
    return Settings(**{**base, **overrides})


@pytest.fixture
def rest(monkeypatch) -> RestRecorder:
    return RestRecorder().install(monkeypatch)


@pytest.fixture
async def make_bot(engine, rest):
    """Builds a logged-in, connected bot (slash commands synced) over the recorder; closes everything after."""
    opened = []

    async def make(**overrides):
        s = settings(**overrides)
        bot = CounselBot(s, guild_ready_timeout=0.05)
        rt = build_runtime(s, on_crisis=bot.alert_admins, engine=engine)
        bot.manager = rt.manager
        opened.append((bot, rt))
        await bot.login(s.discord_token.get_secret_value())
        gateway = Gateway(bot)
        await gateway.connect()
        return bot, rt, gateway

    yield make
    for bot, rt in opened:
        await bot.close()
        await rt.close()


async def test_slash_commands_are_registered_to_the_test_guild_on_start(make_bot, rest):
    await make_bot()
    syncs = [c for c in rest.calls if c.method == "PUT"]
    assert [c.path for c in syncs] == [f"/applications/{APP_ID}/guilds/{GUILD_ID}/commands"]
    assert sorted(cmd["name"] for cmd in syncs[0].json) == ["forget", "help", "resources"]
    assert all(cmd["contexts"] == [0, 1, 2] for cmd in syncs[0].json)  # usable in servers and in DMs


async def test_without_a_test_guild_commands_are_registered_globally(make_bot, rest):
    await make_bot(discord_test_guild=None)
    assert [c.path for c in rest.calls if c.method == "PUT"] == [f"/applications/{APP_ID}/commands"]


async def test_a_dm_gets_typing_the_notice_then_a_streamed_answer(make_bot, rest):
    bot, rt, gw = await make_bot()
    await gw.send("MESSAGE_CREATE", dm_message("I have been feeling anxious before every exam. Any advice?"))

    dm_calls = rest.to(DM_CHANNEL_ID)
    assert dm_calls[0].path.endswith("/typing"), "typing starts before anything is sent"
    seen = rest.view(DM_CHANNEL_ID)
    history = await rt.history.load(USER_KEY)
    assert [t.role for t in history] == ["user", "assistant"]
    assert seen == [texts.FIRST_CONTACT, history[-1].content.strip()], "notice first, then the model's answer"
    writes = [c for c in dm_calls if "/messages" in c.path]
    assert writes[0].method == "POST" and writes[0].json["content"] == texts.FIRST_CONTACT, \
        "the notice is the first thing sent, before the answer streams (no message edited into the notice)"
    assert all(c.json["content"] != texts.FIRST_CONTACT for c in writes[1:])
    assert rest.to(GUILD_CHANNEL_ID) == [] and rest.to(ADMIN_CHANNEL_ID) == []

    before = len(rest.calls)
    await gw.send("MESSAGE_CREATE", dm_message("Thanks. What can I do the night before?"))
    history = await rt.history.load(USER_KEY)
    assert len(history) == 4
    new = [c for c in rest.calls[before:] if "/messages" in c.path]
    assert new[0].method == "POST" and all(c.method == "PATCH" for c in new[1:]), "one message, then edits"
    assert rest.view(DM_CHANNEL_ID)[2:] == [history[-1].content.strip()], "no second notice"


async def test_a_redelivered_message_gets_one_reply(make_bot, rest):
    bot, rt, gw = await make_bot()
    payload = dm_message("/help")
    await gw.send("MESSAGE_CREATE", payload)
    await gw.send("RESUMED", {})  # a reconnect: Discord may replay the event
    await gw.send("MESSAGE_CREATE", payload)
    assert rest.view(DM_CHANNEL_ID) == [texts.HELP]


async def test_bots_and_itself_are_ignored(make_bot, rest):
    bot, rt, gw = await make_bot()
    before = len(rest.calls)
    await gw.send("MESSAGE_CREATE", dm_message("hello, fellow bot", author=OTHER_BOT))
    await gw.send("MESSAGE_CREATE", dm_message("my own reply", author=BOT_USER))
    await gw.send("MESSAGE_CREATE", guild_message("ping", author=OTHER_BOT))
    assert rest.calls[before:] == []


async def test_a_server_mention_gets_an_invitation_to_dm(make_bot, rest):
    bot, rt, gw = await make_bot()
    before = len(rest.calls)
    await gw.send("MESSAGE_CREATE", guild_message("I'm so stressed about work"))
    await gw.send("MESSAGE_CREATE", guild_message("not talking to the bot", mention_bot=False))
    sent = [c for c in rest.calls[before:] if c.method == "POST" and c.path.endswith("/messages")]
    assert [(c.path, c.json["content"]) for c in sent] == [(f"/channels/{GUILD_CHANNEL_ID}/messages",
                                                            texts.INVITE_PRIVATE)]
    assert str(sent[0].json["message_reference"]["channel_id"]) == GUILD_CHANNEL_ID, "a reply to the person's message"
    assert sent[0].json["allowed_mentions"] == {"parse": [], "replied_user": False}
    assert rest.to(GUILD_CHANNEL_ID, "POST", "/typing")
    assert await rt.history.load(f"{USER_KEY}:t:g{GUILD_ID}c{GUILD_CHANNEL_ID}") == [], "no model answer in public"


async def test_public_full_mode_answers_in_the_channel_apart_from_dms(make_bot, rest):
    bot, rt, gw = await make_bot(discord_public_reply="full")
    await gw.send("MESSAGE_CREATE", guild_message("How do I keep calm before a presentation?"))
    public = await rt.history.load(f"{USER_KEY}:t:g{GUILD_ID}c{GUILD_CHANNEL_ID}")
    assert len(public) == 2 and await rt.history.load(USER_KEY) == []
    assert rest.view(GUILD_CHANNEL_ID)[-1] == public[-1].content.strip()


async def test_crisis_gets_resources_at_once_and_alerts_admins_without_the_text(make_bot, rest):
    bot, rt, gw = await make_bot()
    await gw.send("MESSAGE_CREATE", guild_message(CRISIS_TEXT))
    await gw.send("MESSAGE_CREATE", dm_message(CRISIS_TEXT))
    expected = crisis_reply("suicide", "US")
    assert rest.view(GUILD_CHANNEL_ID) == [expected], "resources in public too, not an invitation"
    assert rest.view(DM_CHANNEL_ID) == [expected], "resources first, no notice and no model in the way"
    alerts = rest.view(ADMIN_CHANNEL_ID)
    assert len(alerts) == 2 and all("suicide" in a and f"<@{USER_ID}>" in a for a in alerts)
    assert not any("want to die" in a for a in alerts)


async def test_a_failing_admin_alert_never_costs_the_reply(make_bot, rest):
    bot, rt, gw = await make_bot()
    rest.fail[("POST", f"/channels/{ADMIN_CHANNEL_ID}/messages")] = 403
    await gw.send("MESSAGE_CREATE", dm_message(CRISIS_TEXT))
    assert rest.view(DM_CHANNEL_ID) == [crisis_reply("suicide", "US")]
    assert len(rest.to(ADMIN_CHANNEL_ID, "POST", "/messages")) == 1  # tried, failed, logged


async def test_slash_commands_answer_ephemerally_and_forget_erases_history(make_bot, rest):
    bot, rt, gw = await make_bot()
    await gw.send("MESSAGE_CREATE", dm_message(CRISIS_TEXT))  # stores a turn without waiting on the model
    assert len(await rt.history.load(USER_KEY)) == 2

    await gw.send("INTERACTION_CREATE", slash_command("help", rest.commands["help"]))
    await gw.send("INTERACTION_CREATE", slash_command("resources", rest.commands["resources"], in_dm=False))
    await gw.send("INTERACTION_CREATE", slash_command("forget", rest.commands["forget"]))
    replies = rest.interaction_replies()
    assert [r["data"]["content"] for r in replies] == [texts.HELP, texts.resources("US"), texts.FORGOTTEN]
    assert all(r["type"] == 4 and r["data"]["flags"] & 64 for r in replies), "ephemeral channel messages"
    assert await rt.history.load(USER_KEY) == []

    await gw.send("MESSAGE_CREATE", dm_message("Hi again."))
    assert rest.view(DM_CHANNEL_ID)[-2] == texts.FIRST_CONTACT, "forgotten: greeted as a new person"


# --- delivery, driven directly with known text ------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.now += s


async def test_a_5000_character_reply_streams_with_throttled_edits_and_arrives_in_ordered_parts(make_bot, rest):
    bot, rt, gw = await make_bot()
    clock = FakeClock()
    rest.clock = clock
    sentences = [f"Sentence {i:03d} is a calm and kind thought about taking one small step at a time." for i in
                 range(70)]
    text = " ".join(sentences)
    assert 5000 <= len(text) <= 5600
    channel = await bot.create_dm(bot.get_user(int(USER_ID)) or await bot.fetch_user(int(USER_ID)))
    delivery = ReplyDelivery(channel, clock=clock, sleep=clock.sleep)
    before = len(rest.calls)
    for end in range(0, len(text) + 50, 50):  # tokens arriving over 10 simulated seconds
        await delivery.partial(text[:end])
        clock.now += 0.1
    await delivery.finish(Reply(text))

    parts = rest.view(str(channel.id))
    assert len(parts) == 3 and all(len(p) <= DISCORD_LIMIT for p in parts)
    assert " ".join(parts) == text, "ordered, nothing lost, no word cut"
    assert all(p.endswith(".") for p in parts), "cut at sentence boundaries"
    writes = [c for c in rest.calls[before:] if "/messages" in c.path and c.method in ("POST", "PATCH")]
    assert 10 <= len(writes) <= 11 + 3, "the text grew visibly about once per simulated second, not per token"
    last_write: dict[str, float] = {}
    for c in writes:
        mid = c.response_id if c.method == "POST" else c.path.rsplit("/", 1)[1]
        assert c.t - last_write.get(mid, float("-inf")) >= 1.0, "each message is edited at most once per second"
        last_write[mid] = c.t


async def test_the_final_edit_shows_the_guarded_text_not_what_was_streamed(make_bot, rest):
    bot, rt, gw = await make_bot()
    clock = FakeClock()
    channel = bot.get_channel(int(GUILD_CHANNEL_ID))
    delivery = ReplyDelivery(channel, clock=clock, sleep=clock.sleep)
    await delivery.partial("You should take 20mg of")
    await delivery.finish(Reply("I can't advise on medication; a doctor or pharmacist can help with that.",
                                notice=None))
    assert rest.view(GUILD_CHANNEL_ID) == [
        "I can't advise on medication; a doctor or pharmacist can help with that."]
    assert clock.now >= 1.0, "the final edit also waited out the one-second interval"


async def test_a_long_streamed_text_replaced_by_a_short_one_leaves_only_the_short_one(make_bot, rest):
    bot, rt, gw = await make_bot()
    clock = FakeClock()
    delivery = ReplyDelivery(bot.get_channel(int(GUILD_CHANNEL_ID)), clock=clock, sleep=clock.sleep)
    await delivery.partial(("Take this dose. " * 150).strip())  # 2,399 characters: two messages
    assert len(rest.view(GUILD_CHANNEL_ID)) == 2
    await delivery.finish(Reply("Please ask a doctor or pharmacist about doses."))
    assert rest.view(GUILD_CHANNEL_ID) == ["Please ask a doctor or pharmacist about doses."]


# --- start-up errors -----------------------------------------------------------------------------------------

def test_missing_token_says_how_to_get_one(monkeypatch, tmp_path):
    from bot.cli import app

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("discord_token", raising=False)
    result = CliRunner().invoke(app, ["discord"])
    assert result.exit_code == 2
    assert "Developer Portal" in result.stderr and "Bot → Reset Token" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_a_rejected_token_exits_2_with_how_to_fix_it(engine, rest, capsys):
    rest.fail[("GET", "/users/@me")] = 401
    assert await run_discord(settings(), engine=engine) == 2
    assert LOGIN_FAILED in capsys.readouterr().err


async def test_a_missing_message_content_intent_is_named(engine, rest, capsys, monkeypatch):
    """A loopback gateway that answers IDENTIFY as Discord does when the intent is not enabled (close 4014)."""
    import yarl
    from aiohttp import web
    from discord.gateway import DiscordWebSocket

    identified = asyncio.Event()

    async def gateway(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
        async for msg in ws:
            if msg.json().get("op") == 2:
                identified.set()
                intents = msg.json()["d"]["intents"]
                assert intents & (1 << 15), "the Message Content intent is requested"
                await ws.close(code=4014, message=b"Disallowed intent(s).")
        return ws

    app = web.Application()
    app.router.add_get("/", gateway)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(f"ws://127.0.0.1:{port}/"))
    try:
        assert await asyncio.wait_for(run_discord(settings(), engine=engine), 60) == 2
    finally:
        await runner.cleanup()
    assert identified.is_set()
    err = capsys.readouterr().err
    assert INTENT_MISSING in err and "MESSAGE CONTENT INTENT" in err
