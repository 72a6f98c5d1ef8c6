"""The Slack adapter (`counsel-bot slack`): Slack events in, replies out; the conversation itself is the manager's.

- `app_mention` in a channel: answered in the thread of the mention (one conversation per person and thread),
  with an offer to continue privately in a DM. `message.im`: answered in the DM. Bot messages, edits, deletions
  and other subtypes are ignored.
- Events are acknowledged at once (Bolt lazy listeners) and the work happens after; the manager dedupes by
  `event_id` in its store, so a retried delivery never gets a second reply, across adapter processes too.
- A placeholder is posted as soon as a message goes to the model and updated with `chat.update` as tokens stream,
  at most once per second; long replies are split below Slack's limit.
- `/counsel-forget` (ephemeral), an App Home tab with a button to erase one's data, admin alerts on a crisis.
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import slack_views as views
from bot import texts
from bot.manager import ConversationManager
from bot.safety.alerts import format_alert
from bot.safety.screen import Screening
from bot.settings import Settings
from bot.splitting import SLACK_LIMIT, split_message
from bot.streaming import ThrottledEditor
from bot.types import IncomingMessage, Reply

log = logging.getLogger(__name__)

PATH = "/slack/events"
PLATFORM = "slack"
# What the adapter subscribes to and calls; bot/slack_manifest.yaml asks for exactly this (a test checks).
BOT_EVENTS = ("app_mention", "message.im", "app_home_opened")
BOT_SCOPES = ("app_mentions:read",  # app_mention
              "im:history",  # message.im
              "chat:write",  # chat.postMessage, chat.update
              "im:write",  # conversations.open (the "Talk privately" button)
              "commands")  # /counsel-forget
SLASH_COMMANDS = (views.FORGET_COMMAND,)


def missing_settings(s: Settings) -> str | None:
    """What to set before the adapter can start, as one line; None when nothing is missing."""
    if s.slack_bot_token is None:
        need = "SLACK_BOT_TOKEN (xoxb-...)"
        if s.slack_app_token is None and s.slack_signing_secret is None:
            need += " and SLACK_APP_TOKEN (xapp-..., Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)"
        return f"set {need} in the environment or .env (see README, Slack)"
    if s.slack_app_token is None and s.slack_signing_secret is None:
        return ("set SLACK_APP_TOKEN (xapp-..., Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode on "
                "COUNSEL_SLACK_PORT) in the environment or .env (see README, Slack)")
    return None


def web_client(s: Settings) -> AsyncWebClient:
    token = s.slack_bot_token.get_secret_value() if s.slack_bot_token else None
    return AsyncWebClient(token=token, base_url=s.slack_api_url)


def build_app(s: Settings, client: AsyncWebClient) -> AsyncApp:
    secret = s.slack_signing_secret.get_secret_value() if s.slack_signing_secret else ""
    return AsyncApp(client=client, signing_secret=secret, name="counsel-bot",
                    # Socket Mode needs no signing secret; HTTP mode always verifies (missing_settings insists).
                    request_verification_enabled=bool(secret))


class AdminAlerts:
    """The manager's `on_crisis`: posts an alert to `admin_slack_channel` in the background, so a slow or failing
    alert never delays or costs the person their reply. Failures are logged."""

    def __init__(self, client: AsyncWebClient, s: Settings):
        self.client, self.channel, self.include_text = client, s.admin_slack_channel, s.alert_include_text
        self._tasks: set[asyncio.Task] = set()

    async def __call__(self, msg: IncomingMessage, screening: Screening) -> None:
        if not self.channel or msg.platform != PLATFORM:
            return
        text = format_alert(PLATFORM, msg.user_id, screening, msg.text, self.include_text,
                            user_mention=f"<@{msg.user_id}>")
        task = asyncio.create_task(self._post(text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, text: str) -> None:
        try:
            await self.client.chat_postMessage(channel=self.channel, text=text)
        except Exception as e:  # noqa: BLE001 - an alert failure must never reach the person's turn
            log.error("crisis alert to the admin channel failed: %s", _error(e))


class SlackReply:
    """One reply in one place (a DM or a thread): the placeholder, streamed edits, then the final parts."""

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str | None):
        self.client, self.channel, self.thread_ts = client, channel, thread_ts
        self.ts: str | None = None  # the placeholder, once posted
        self.editor = ThrottledEditor(self._edit, interval_s=1.0)

    async def _post(self, text: str, **kw) -> str | None:
        res = await self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts, text=text, **kw)
        return res.get("ts")

    async def _edit(self, text: str) -> None:
        await self.client.chat_update(channel=self.channel, ts=self.ts, text=text)

    async def start(self) -> None:
        try:
            self.ts = await self._post(views.THINKING)
        except Exception as e:  # noqa: BLE001 - without a placeholder the reply is simply posted at the end
            log.warning("could not post the placeholder: %s", _error(e))

    async def partial(self, text: str) -> None:
        if self.ts is None:
            return
        shown = split_message(views.reply_text(text), SLACK_LIMIT)
        if shown:
            try:
                await self.editor.update(shown[0] + (" …" if len(shown) == 1 else ""))
            except Exception as e:  # noqa: BLE001 - a failed edit only delays what the person sees
                log.warning("streaming edit failed: %s", _error(e))

    async def finish(self, text: str) -> None:
        parts = split_message(text, SLACK_LIMIT) or [text]
        if self.ts is not None:
            try:
                await self.editor.update(parts[0])
                await self.editor.flush()
                parts = parts[1:]
            except Exception as e:  # noqa: BLE001 - the placeholder can't be edited: post the reply instead
                log.warning("could not update the placeholder: %s", _error(e))
        for part in parts:
            await self._post(part)


def register_listeners(app: AsyncApp, manager: ConversationManager, s: Settings) -> None:
    """Wire every Slack listener to the manager. Events are acknowledged at once; the work runs lazily."""

    async def ack_now(ack) -> None:
        await ack()

    async def on_mention(body: dict, event: dict, client: AsyncWebClient, context) -> None:
        if _ignored(event) or event.get("channel", "").startswith("D"):  # a DM arrives as message.im too
            return
        thread_ts = event.get("thread_ts") or event["ts"]
        text = _strip_mention(event.get("text", ""), context.get("bot_user_id"))
        msg = IncomingMessage(platform=PLATFORM, user_id=event["user"], text=text, channel_id=event["channel"],
                              thread_id=thread_ts, message_id=body.get("event_id"), is_private=False)
        answered = await _answer(manager, SlackReply(client, event["channel"], thread_ts), msg)
        if answered and not event.get("thread_ts"):  # a new thread: offer to continue privately, once
            await _safely(client.chat_postMessage(channel=event["channel"], thread_ts=thread_ts,
                                                  text=views.DM_OFFER, blocks=views.dm_offer_blocks()),
                          "DM offer")

    async def on_message(body: dict, event: dict, client: AsyncWebClient) -> None:
        if _ignored(event) or event.get("channel_type") != "im":
            return
        msg = IncomingMessage(platform=PLATFORM, user_id=event["user"], text=event.get("text", ""),
                              channel_id=event["channel"], message_id=body.get("event_id"), is_private=True)
        await _answer(manager, SlackReply(client, event["channel"], event.get("thread_ts")), msg)

    async def on_home_opened(event: dict, client: AsyncWebClient) -> None:
        if event.get("tab", "home") == "home":
            await _safely(client.views_publish(user_id=event["user"], view=_home(s)), "App Home publish")

    async def on_forget_command(ack, command: dict) -> None:
        await manager.forget(_user_key(command["user_id"]))
        await ack(text=views.reply_text(texts.FORGOTTEN), response_type="ephemeral")

    async def on_forget_button(ack, body: dict, client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        await manager.forget(_user_key(user))
        await _safely(client.views_publish(user_id=user, view=_home(s, erased=True)), "App Home publish")

    async def on_open_dm(ack, body: dict, client: AsyncWebClient) -> None:
        await ack()
        try:
            opened = await client.conversations_open(users=body["user"]["id"])
            await client.chat_postMessage(channel=opened["channel"]["id"], text=views.DM_WELCOME)
        except Exception as e:  # noqa: BLE001
            log.error("could not open a DM: %s", _error(e))

    app.event("app_mention")(ack=ack_now, lazy=[on_mention])
    app.event("message")(ack=ack_now, lazy=[on_message])
    app.event("app_home_opened")(ack=ack_now, lazy=[on_home_opened])
    app.command(views.FORGET_COMMAND)(on_forget_command)
    app.action(views.ACTION_FORGET)(on_forget_button)
    app.action(views.ACTION_OPEN_DM)(on_open_dm)


async def _answer(manager: ConversationManager, out: SlackReply, msg: IncomingMessage) -> bool:
    """One turn: the manager's reply shown in Slack. False when nothing was sent (a duplicate delivery)."""
    try:
        reply: Reply | None = await manager.handle(msg, on_partial=out.partial, on_start=out.start)
    except Exception:
        log.exception("turn failed on slack")
        reply = Reply(texts.fallback(manager.cfg.region), kind="fallback")
    if reply is None:
        return False
    try:
        await out.finish(views.reply_text(reply.text, reply.notice))
    except Exception as e:  # noqa: BLE001 - nothing more to do than log; Slack is unreachable or refused
        log.error("could not deliver a reply on slack: %s", _error(e))
        return False
    return True


async def start_http(app: AsyncApp, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Serve the app's Events API / commands / interactivity endpoint at PATH (HTTP mode)."""
    runner = web.AppRunner(app.web_app(path=PATH, port=port))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def serve(s: Settings, engine=None) -> None:
    """`counsel-bot slack`: Socket Mode when SLACK_APP_TOKEN is set, otherwise HTTP on COUNSEL_SLACK_PORT.
    Runs until cancelled. `engine`: an already loaded in-process engine (tests); default: load per settings."""
    from bot.runtime import build_runtime

    client = web_client(s)
    rt = await asyncio.to_thread(build_runtime, s, AdminAlerts(client, s), engine)
    app = build_app(s, client)
    register_listeners(app, rt.manager, s)
    try:
        if s.slack_app_token is not None:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            handler = AsyncSocketModeHandler(app, s.slack_app_token.get_secret_value(), web_client=client)
            log.info("Slack adapter connecting in Socket Mode")
            try:
                await handler.start_async()
            finally:
                await handler.close_async()
        else:
            runner = await start_http(app, s.slack_port)
            log.info("Slack adapter listening on port %d at %s", s.slack_port, PATH)
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()
    finally:
        await rt.close()


def _home(s: Settings, erased: bool = False) -> dict:
    return views.home_view(s.region, s.history_ttl_days, erased)


def _ignored(event: dict) -> bool:
    """Bot messages, edits, deletions and every other subtype; only plain messages from people count."""
    return bool(event.get("subtype") or event.get("bot_id") or event.get("edited") or not event.get("user"))


def _strip_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", " ", text)
    return text.strip()


def _user_key(user_id: str) -> str:
    return IncomingMessage(platform=PLATFORM, user_id=user_id, text="").user_key


async def _safely(call, what: str) -> None:
    try:
        await call
    except Exception as e:  # noqa: BLE001
        log.error("%s failed: %s", what, _error(e))


def _error(e: Exception) -> str:
    """A Slack API error without the request body (which may hold message text)."""
    response = getattr(e, "response", None)
    if response is not None and hasattr(response, "get"):
        return f"{type(e).__name__}: {response.get('error')}"
    return type(e).__name__
