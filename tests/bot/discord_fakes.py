"""Discord at the network edge, without a network: real gateway payloads in, REST calls recorded out.

`Gateway` feeds JSON frames (op 0 dispatches, exactly as Discord sends them) through discord.py's own
`DiscordWebSocket.received_message`, so the real parsers and `Client.dispatch` run. `RestRecorder` replaces
`discord.http.HTTPClient.request` and the interaction webhook adapter's `request` (the two places discord.py
turns a call into an HTTP request) and answers like Discord's API would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import discord
from discord.gateway import DiscordWebSocket
from discord.webhook.async_ import AsyncWebhookAdapter

APP_ID = "1100000000000000001"
BOT_ID = APP_ID
OWNER_ID = "1100000000000000002"
USER_ID = "1200000000000000001"
OTHER_BOT_ID = "1200000000000000009"
GUILD_ID = "1300000000000000001"
GUILD_CHANNEL_ID = "1300000000000000002"
ADMIN_CHANNEL_ID = "1300000000000000003"
DM_CHANNEL_ID = "1400000000000000001"
TIMESTAMP = "2026-11-28T00:30:00.000000+00:00"

_snowflakes = itertools.count(1500000000000000001)


def snowflake() -> str:
    return str(next(_snowflakes))


def user(uid: str, name: str, bot: bool = False) -> dict:
    return {"id": uid, "username": name, "discriminator": "0", "global_name": name.title(), "avatar": None,
            "bot": bot, "public_flags": 0, "flags": 0}


BOT_USER = {**user(BOT_ID, "counsel", bot=True), "verified": True, "mfa_enabled": False}
HUMAN = user(USER_ID, "alex")
OTHER_BOT = user(OTHER_BOT_ID, "otherbot", bot=True)


def member(u: dict) -> dict:
    return {"user": u, "roles": [], "joined_at": TIMESTAMP, "deaf": False, "mute": False, "flags": 0, "nick": None}


def text_channel(cid: str, name: str) -> dict:
    return {"id": cid, "type": 0, "guild_id": GUILD_ID, "name": name, "position": 0, "permission_overwrites": [],
            "nsfw": False, "parent_id": None, "topic": None, "last_message_id": None, "rate_limit_per_user": 0,
            "flags": 0}


def ready() -> dict:
    return {"v": 10, "user": BOT_USER, "guilds": [{"id": GUILD_ID, "unavailable": True}],
            "session_id": "f1e2d3c4b5a6", "resume_gateway_url": "wss://gateway-us-east1-b.discord.gg",
            "application": {"id": APP_ID, "flags": 0}, "private_channels": [], "relationships": []}


def guild_create() -> dict:
    return {"id": GUILD_ID, "name": "Study group", "icon": None, "owner_id": OWNER_ID, "afk_channel_id": None,
            "verification_level": 1, "default_message_notifications": 1, "explicit_content_filter": 0,
            "features": [], "mfa_level": 0, "system_channel_id": None, "premium_tier": 0, "preferred_locale": "en-US",
            "nsfw_level": 0, "unavailable": False, "member_count": 3, "large": False, "joined_at": TIMESTAMP,
            "roles": [{"id": GUILD_ID, "name": "@everyone", "permissions": "1071698660929", "position": 0,
                       "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}],
            "emojis": [], "stickers": [], "voice_states": [], "presences": [], "threads": [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "members": [member(BOT_USER)],
            "channels": [text_channel(GUILD_CHANNEL_ID, "general"), text_channel(ADMIN_CHANNEL_ID, "crisis-alerts")]}


def dm_message(text: str, author: dict = HUMAN, message_id: str | None = None) -> dict:
    return {"id": message_id or snowflake(), "channel_id": DM_CHANNEL_ID, "type": 0, "content": text,
            "author": author, "attachments": [], "embeds": [], "mentions": [], "mention_roles": [],
            "mention_everyone": False, "pinned": False, "tts": False, "timestamp": TIMESTAMP,
            "edited_timestamp": None, "flags": 0, "components": [], "nonce": snowflake(), "channel_type": 1}


def guild_message(text: str, mention_bot: bool = True, author: dict = HUMAN, message_id: str | None = None) -> dict:
    content = f"<@{BOT_ID}> {text}" if mention_bot else text
    bot_member = {k: v for k, v in member(BOT_USER).items() if k != "user"}
    mentions = [{**BOT_USER, "member": bot_member}] if mention_bot else []
    return {"id": message_id or snowflake(), "channel_id": GUILD_CHANNEL_ID, "guild_id": GUILD_ID, "type": 0,
            "content": content, "author": author,
            "member": {k: v for k, v in member(author).items() if k != "user"}, "attachments": [], "embeds": [],
            "mentions": mentions, "mention_roles": [], "mention_everyone": False, "pinned": False, "tts": False,
            "timestamp": TIMESTAMP, "edited_timestamp": None, "flags": 0, "components": [], "nonce": snowflake(),
            "channel_type": 0}


def slash_command(name: str, command_id: str, in_dm: bool = True) -> dict:
    data = {"id": snowflake(), "application_id": APP_ID, "type": 2, "token": "aW50ZXJhY3Rpb246" + snowflake(),
            "version": 1, "locale": "en-US", "app_permissions": "2248473465835073", "entitlements": [],
            "attachment_size_limit": 10485760, "data": {"id": command_id, "name": name, "type": 1}}
    if in_dm:
        data.update(channel_id=DM_CHANNEL_ID, user=HUMAN, context=1, authorizing_integration_owners={"0": "0"},
                    channel={"id": DM_CHANNEL_ID, "type": 1, "recipients": [HUMAN], "last_message_id": None,
                             "flags": 0})
    else:
        data.update(channel_id=GUILD_CHANNEL_ID, guild_id=GUILD_ID, member={**member(HUMAN), "permissions": "0"},
                    context=0, authorizing_integration_owners={"0": GUILD_ID},
                    channel=text_channel(GUILD_CHANNEL_ID, "general"), guild_locale="en-US")
    return data


@dataclass
class Call:
    method: str
    path: str
    json: Any
    t: float  # the recorder's clock at the time of the call
    response_id: str | None = None  # the id of the message a POST created


@dataclass
class RestRecorder:
    """Records every REST call discord.py makes and answers it like Discord's API."""

    clock: Any = time.monotonic
    fail: dict = field(default_factory=dict)  # (method, path) -> HTTP status to answer with
    calls: list[Call] = field(default_factory=list)
    commands: dict = field(default_factory=dict)  # name -> registered command id

    def install(self, monkeypatch) -> RestRecorder:
        monkeypatch.setattr(discord.http.HTTPClient, "request", self._http_request)
        monkeypatch.setattr(AsyncWebhookAdapter, "request", self._webhook_request)
        return self

    async def _http_request(self, route, *, files=None, form=None, **kwargs):
        return self._answer(route, kwargs.get("json"))

    async def _webhook_request(self, route, session, *, payload=None, **kwargs):
        return self._answer(route, payload)

    def _answer(self, route, body):
        path = route.url.split("/api/v10", 1)[1]
        call = Call(route.method, path, body, self.clock())
        self.calls.append(call)
        response = self._respond(call)
        if isinstance(response, dict):
            call.response_id = response.get("id")
        return response

    def _respond(self, call: Call):
        path, body = call.path, call.json
        status = self.fail.get((call.method, path))
        if status:
            raise discord.HTTPException(SimpleNamespace(status=status, reason="Forbidden"),
                                        {"code": 50013, "message": "Missing Permissions"})
        parts = path.strip("/").split("/")
        m = call.method
        if (m, path) == ("GET", "/users/@me"):
            return BOT_USER
        if (m, path) == ("GET", "/oauth2/applications/@me"):
            return {"id": APP_ID, "name": "Counsel", "description": "", "icon": None, "bot_public": False,
                    "bot_require_code_grant": False, "owner": user(OWNER_ID, "owner"), "verify_key": "0f" * 32,
                    "flags": 0, "team": None, "summary": "", "rpc_origins": [], "interactions_endpoint_url": None}
        if m == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            out = []
            for cmd in body:
                self.commands[cmd["name"]] = cid = snowflake()
                out.append({**cmd, "id": cid, "application_id": APP_ID, "version": snowflake(),
                            "guild_id": parts[3] if "guilds" in parts else None, "default_member_permissions": None})
            return out
        if m == "POST" and parts[0] == "channels" and parts[-1] == "typing":
            return None
        if m == "POST" and parts[0] == "channels" and parts[-1] == "messages":
            return self._message(parts[1], snowflake(), body)
        if m == "PATCH" and parts[0] == "channels" and parts[2] == "messages":
            return {**self._message(parts[1], parts[3], body), "edited_timestamp": TIMESTAMP}
        if (m, path) == ("GET", f"/users/{USER_ID}"):
            return HUMAN
        if (m, path) == ("POST", "/users/@me/channels") and str(body["recipient_id"]) == USER_ID:
            return {"id": DM_CHANNEL_ID, "type": 1, "recipients": [HUMAN], "last_message_id": None, "flags": 0}
        if m == "DELETE" and parts[0] == "channels" and parts[2] == "messages":
            return None
        if m == "GET" and parts[0] == "channels" and len(parts) == 2:
            return text_channel(parts[1], "crisis-alerts")
        if m == "POST" and parts[0] == "interactions":
            mid = snowflake()
            return {"interaction": {"id": parts[1], "type": 2, "response_message_id": mid,
                                    "response_message_loading": False,
                                    "response_message_ephemeral": bool(body["data"].get("flags", 0) & 64)},
                    "resource": {"type": body["type"], "message": self._message(DM_CHANNEL_ID, mid, body["data"])}}
        raise AssertionError(f"unexpected REST call {m} {path}")

    @staticmethod
    def _message(channel_id: str, message_id: str, body: dict) -> dict:
        return {"id": message_id, "channel_id": channel_id, "type": 19 if body.get("message_reference") else 0,
                "content": body.get("content") or "", "author": BOT_USER, "attachments": [], "embeds": [],
                "mentions": [], "mention_roles": [], "mention_everyone": False, "pinned": False, "tts": False,
                "timestamp": TIMESTAMP, "edited_timestamp": None, "flags": body.get("flags", 0), "components": []}

    # --- what a person would see --------------------------------------------------------------------------------
    def to(self, channel_id: str, method: str | None = None, suffix: str = "") -> list[Call]:
        return [c for c in self.calls if c.path.startswith(f"/channels/{channel_id}/") and c.path.endswith(suffix)
                and (method is None or c.method == method)]

    def view(self, channel_id: str) -> list[str]:
        """The bot's messages in a channel, in order, with every edit applied."""
        shown: dict[str, str] = {}
        ids: list[str] = []
        for c in self.calls:
            if not c.path.startswith(f"/channels/{channel_id}/messages"):
                continue
            if c.method == "POST":
                ids.append(c.response_id)
                shown[c.response_id] = c.json["content"]
            elif c.method == "PATCH":
                shown[c.path.rsplit("/", 1)[1]] = c.json["content"]
            elif c.method == "DELETE":
                del shown[c.path.rsplit("/", 1)[1]]
        return [shown[i] for i in ids if i in shown]

    def interaction_replies(self) -> list[dict]:
        return [c.json for c in self.calls if c.path.startswith("/interactions/")]


class Gateway:
    """Feeds gateway dispatch frames to a client through discord.py's own websocket message handling."""

    def __init__(self, client: discord.Client):
        ws = DiscordWebSocket(socket=None, loop=asyncio.get_running_loop())
        ws.token = client.http.token
        ws._connection = client._connection
        ws._discord_parsers = client._connection.parsers
        ws._dispatch = client.dispatch
        ws.call_hooks = client._connection.call_hooks
        ws.shard_id = None
        ws.gateway = DiscordWebSocket.DEFAULT_GATEWAY
        self.ws, self.client, self.seq = ws, client, 0

    async def send(self, event: str, data: dict) -> None:
        self.seq += 1
        await self.ws.received_message(json.dumps({"op": 0, "t": event, "s": self.seq, "d": data}))
        await settle()

    async def connect(self) -> None:
        await self.send("READY", ready())
        await self.send("GUILD_CREATE", guild_create())
        await asyncio.wait_for(self.client.wait_until_ready(), 10)


async def settle(timeout_s: float = 120.0) -> None:
    """Wait until every event handler, command invocation and background task of the bot has finished."""
    prefixes = ("discord.py: on_message", "discord.py: on_interaction", "CommandTree-invoker", "counsel:")
    deadline = time.monotonic() + timeout_s
    await asyncio.sleep(0)
    while True:
        busy = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()
                and t.get_name().startswith(prefixes)]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"still running: {[t.get_name() for t in busy]}")
        await asyncio.wait(busy, timeout=max(0.01, deadline - time.monotonic()))
