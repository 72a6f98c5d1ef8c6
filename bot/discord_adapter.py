"""The Discord adapter: `counsel-bot discord`.

Translates Discord events into `IncomingMessage`s for the ConversationManager and delivers its replies: the typing
indicator while the model works, the reply streamed into one message (at most one edit per second), long replies
split at Discord's 2,000-character limit, the first-contact notice before the first reply. Slash commands
`/forget`, `/resources`, `/help` answer ephemerally. All conversation logic (commands, crisis screen, dedupe by
message id, history) stays in the manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import discord
from discord import app_commands

from bot import texts
from bot.manager import ConversationManager
from bot.safety.alerts import format_alert
from bot.safety.screen import Screening
from bot.settings import Settings
from bot.splitting import DISCORD_LIMIT, split_message
from bot.streaming import ThrottledEditor
from bot.types import IncomingMessage, Reply

log = logging.getLogger(__name__)

PLATFORM = "discord"
PORTAL = "https://discord.com/developers/applications"
MISSING_TOKEN = (f"error: DISCORD_TOKEN is not set. Get one in the Developer Portal ({PORTAL}) → your application → "
                 "Bot → Reset Token, then `export DISCORD_TOKEN=...` (or put it in .env).")
LOGIN_FAILED = ("error: Discord rejected DISCORD_TOKEN (login failed). Get a new one in the Developer Portal → your "
                "application → Bot → Reset Token.")
INTENT_MISSING = ("error: Discord refused the privileged Message Content intent. Enable it in the Developer Portal → "
                  "your application → Bot → Privileged Gateway Intents → MESSAGE CONTENT INTENT (Save), then start "
                  "again.")


def intents() -> discord.Intents:
    """DMs, server messages and their text (privileged: Message Content), plus guilds for the channel cache."""
    i = discord.Intents.none()
    i.guilds = True
    i.guild_messages = True
    i.dm_messages = True
    i.message_content = True
    return i


def user_key(user_id: int) -> str:
    return IncomingMessage(platform=PLATFORM, user_id=str(user_id), text="").user_key


def incoming_from(message: discord.Message, me: discord.abc.User) -> IncomingMessage | None:
    """The manager's view of a Discord message, or None when the bot should not answer it: other bots, webhooks,
    itself, system messages, and server messages that do not @mention it."""
    if message.author.bot or message.webhook_id is not None or message.author.id == me.id:
        return None
    if message.type not in (discord.MessageType.default, discord.MessageType.reply):
        return None
    private = message.guild is None
    text = message.content
    if not private:
        if not any(u.id == me.id for u in message.mentions):
            return None
        text = re.sub(rf"<@!?{me.id}>", " ", text)
    # Public conversations are kept apart from the person's DMs, so a DM can never surface in a public answer.
    thread = None if private else f"g{message.guild.id}c{message.channel.id}"
    return IncomingMessage(platform=PLATFORM, user_id=str(message.author.id), text=text.strip(),
                           channel_id=str(message.channel.id), thread_id=thread, message_id=str(message.id),
                           is_private=private)


class ReplyDelivery:
    """Delivers one reply into a channel.

    `partial(text)` streams the growing reply into one message, at most one update per `interval_s` (a reply that
    grows past 2,000 characters continues in a next message); `finish(reply)` shows the final text (also when the
    output guard replaced what was streamed) in ordered parts of at most 2,000 characters, split on paragraph or
    sentence boundaries, with the first-contact notice as the first message. The first message replies to
    `reference` (in a server channel).
    """

    def __init__(self, channel: discord.abc.Messageable, reference: discord.Message | None = None,
                 interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.channel, self.reference = channel, reference
        self.interval_s, self.clock, self.sleep = interval_s, clock, sleep
        self.messages: list[discord.Message] = []  # what this reply has put in the channel, in order
        self._shown: list[str] = []
        self._last_write = float("-inf")
        self._editor = ThrottledEditor(self._stream, interval_s, clock)
        self._notice: str | None = None

    async def notice(self, text: str) -> None:
        """The first-contact notice, shown as the first message before the reply starts streaming."""
        self._notice = text
        try:
            await self._show([text])
        except discord.HTTPException as e:  # finish() delivers it with the reply
            log.warning("notice failed (%s %s)", e.status, e.code)

    async def partial(self, text: str) -> None:
        try:
            await self._editor.update(text)
        except discord.HTTPException as e:  # the final text is delivered by finish(); generation goes on
            log.warning("streaming update failed (%s %s)", e.status, e.code)

    async def finish(self, reply: Reply) -> list[discord.Message]:
        notice = reply.notice or self._notice
        parts = ([notice] if notice else []) + split_message(reply.text, DISCORD_LIMIT)
        if any(i < len(self._shown) and self._shown[i] != p for i, p in enumerate(parts)):
            left = self.interval_s - (self.clock() - self._last_write)
            if left > 0:  # the final edit keeps the one-edit-per-second pace too
                await self.sleep(left)
        await self._show(parts)
        for extra in self.messages[len(parts):]:  # streamed text the output guard replaced by a shorter reply
            await extra.delete()
        del self.messages[len(parts):], self._shown[len(parts):]
        return list(self.messages)

    async def _stream(self, text: str) -> None:
        if text.strip():
            await self._show(([self._notice] if self._notice else []) + split_message(text, DISCORD_LIMIT))

    async def _show(self, parts: list[str]) -> None:
        """Make the channel show `parts`: edit the messages that differ, send the ones that are new."""
        for i, part in enumerate(parts):
            if i < len(self.messages):
                if self._shown[i] != part:
                    self._last_write = self.clock()
                    self.messages[i] = await self.messages[i].edit(content=part)
                    self._shown[i] = part
            else:
                self._last_write = self.clock()
                self.messages.append(await self._send(part))
                self._shown.append(part)

    async def _send(self, text: str) -> discord.Message:
        reference, self.reference = self.reference, None
        if reference is not None:
            return await self.channel.send(text, reference=reference, mention_author=False)
        return await self.channel.send(text)


@contextlib.asynccontextmanager
async def typing_indicator(channel: discord.abc.Messageable) -> AsyncIterator[None]:
    """Discord's typing indicator for the duration (renewed every 5 s); a failure to show it costs nothing else."""
    typing = channel.typing()
    try:
        await typing.__aenter__()
    except discord.HTTPException as e:
        log.warning("typing indicator failed (%s %s)", e.status, e.code)
        typing = None
    try:
        yield
    finally:
        if typing is not None:
            await typing.__aexit__(None, None, None)


class CounselBot(discord.Client):
    def __init__(self, settings: Settings, manager: ConversationManager | None = None, **options):
        super().__init__(intents=intents(), allowed_mentions=discord.AllowedMentions.none(), **options)
        self.settings = settings
        self.manager = manager  # set before start(); see run_discord
        self.tree = app_commands.CommandTree(self)
        self._background: set[asyncio.Task] = set()
        add_commands(self.tree, self)

    # --- start-up ----------------------------------------------------------------------------------------------
    async def setup_hook(self) -> None:
        await self.register_commands()

    async def register_commands(self) -> None:
        """Slash commands: to the test guild when configured (instant), otherwise globally (can take a while)."""
        guild = discord.Object(id=self.settings.discord_test_guild) if self.settings.discord_test_guild else None
        try:
            if guild is not None:
                self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        except discord.HTTPException as e:
            log.error("could not register slash commands (%s %s): invite the bot with the applications.commands "
                      "scope%s", e.status, e.code, " and check COUNSEL_DISCORD_TEST_GUILD" if guild else "")
            return
        log.info("registered slash commands %s %s", [c.name for c in synced],
                 f"to guild {guild.id}" if guild else "globally")

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s (id %s) in %d servers", self.user, self.user.id, len(self.guilds))

    # --- messages ----------------------------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        incoming = incoming_from(message, self.user)
        if incoming is None:
            return
        invite_only = not incoming.is_private and self.settings.discord_public_reply == "invite_dm"
        delivery = ReplyDelivery(message.channel, reference=None if incoming.is_private else message)
        try:
            async with typing_indicator(message.channel):
                reply = await self.manager.handle(incoming, on_partial=delivery.partial, invite_only=invite_only,
                                                  on_notice=delivery.notice)
                if reply is not None:
                    await delivery.finish(reply)
        except discord.HTTPException as e:
            where = "DM" if incoming.is_private else "server"
            log.error("could not deliver a reply in %s channel %s (%s %s)", where, message.channel.id, e.status, e.code)

    # Edits are ignored (the answer already went to the first version); deletes leave nothing to undo.

    # --- admin alerts ------------------------------------------------------------------------------------------
    async def alert_admins(self, msg: IncomingMessage, screening: Screening) -> None:
        """The manager's on_crisis hook: posts the alert in the background, so the person's resources go out first."""
        if not self.settings.admin_discord_channel:
            return
        task = asyncio.get_running_loop().create_task(self._post_alert(msg, screening), name="counsel: crisis alert")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _post_alert(self, msg: IncomingMessage, screening: Screening) -> None:
        channel_id = self.settings.admin_discord_channel
        try:
            channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
            await channel.send(format_alert(PLATFORM, msg.user_id, screening, msg.text,
                                            self.settings.alert_include_text, user_mention=f"<@{msg.user_id}>"))
        except Exception:  # an alert failure is logged and never reaches the person
            log.exception("could not post the crisis alert to channel %s", channel_id)


def add_commands(tree: app_commands.CommandTree, bot: CounselBot) -> None:
    everywhere = app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)

    @tree.command(name="forget", description="Erase everything Counsel has stored about you")
    @everywhere
    async def forget(interaction: discord.Interaction) -> None:
        await bot.manager.forget(user_key(interaction.user.id))
        await interaction.response.send_message(texts.FORGOTTEN, ephemeral=True)

    @tree.command(name="resources", description="Crisis lines and support services")
    @everywhere
    async def resources(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(texts.resources(bot.settings.region), ephemeral=True)

    @tree.command(name="help", description="What Counsel is and how to use it")
    @everywhere
    async def help_(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(texts.HELP, ephemeral=True)


async def run_discord(settings: Settings, engine=None) -> int:
    """Connect and serve until stopped. Returns the exit code (2 for a rejected token or a missing intent)."""
    from bot.runtime import build_runtime

    bot = CounselBot(settings)
    rt = await asyncio.to_thread(build_runtime, settings, bot.alert_admins, engine)
    bot.manager = rt.manager
    try:
        async with bot:
            await bot.start(settings.discord_token.get_secret_value().strip())
    except discord.LoginFailure:
        log.debug("login failed", exc_info=True)
        print(LOGIN_FAILED, file=sys.stderr)
        return 2
    except discord.PrivilegedIntentsRequired:
        print(INTENT_MISSING, file=sys.stderr)
        return 2
    finally:
        await rt.close()
    return 0
