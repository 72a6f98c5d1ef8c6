"""The conversation manager: owns one turn, from an adapter's IncomingMessage to a Reply.

Commands, first-contact notice, crisis screen, per-conversation ordering and rate limits, the history window,
submitting a GenerationRequest and awaiting its (streamed) result, the timeout fallback, storing the turn.
Knows nothing of platforms, Redis or models: those sit behind the stores and the queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import unicodedata
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bot import texts
from bot.metrics import observed_turn
from bot.safety import embed
from bot.safety import screen as safety_screen
from bot.safety.resources import crisis_reply
from bot.safety.screen import Screening, check_in_reply, is_retraction
from bot.stores import Admission, HistoryStore, RequestQueue, StateStore, TurnContext, turn_gate
from bot.types import IncomingMessage, Reply
from model.schema import GenerationRequest, GenerationResult, SamplingParams, StreamChunk, Turn

log = logging.getLogger(__name__)

PartialCallback = Callable[[str], Awaitable[None]]
StartCallback = Callable[[], Awaitable[None]]
CrisisAlert = Callable[[IncomingMessage, Screening], Awaitable[None]]

DEDUPE_TTL_S = 24 * 3600
_SCREEN_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crisis-screen")


@dataclass
class ManagerConfig:
    region: str = "US"
    max_message_chars: int = 4000
    history_max_turns: int = 40
    rate_limit_messages: int = 12
    rate_limit_window_s: float = 60.0
    request_timeout_s: float = 120.0
    careful_mode_s: float = 24 * 3600
    sampling: SamplingParams = SamplingParams()
    log_message_text: bool = False

    @classmethod
    def from_settings(cls, s) -> ManagerConfig:
        return cls(region=s.region, max_message_chars=s.max_message_chars, history_max_turns=s.history_max_turns,
                   rate_limit_messages=s.rate_limit_messages, rate_limit_window_s=s.rate_limit_window_s,
                   request_timeout_s=s.request_timeout_s, careful_mode_s=s.careful_mode_hours * 3600,
                   sampling=SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                           top_p=s.top_p, repetition_penalty=s.repetition_penalty),
                   log_message_text=s.log_message_text)


def clean_text(text: str) -> str:
    """Drop control and formatting characters (keeping newlines and tabs) and surrounding white space; text with
    nothing visible left (only combining marks or spaces) is empty."""
    cleaned = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C").strip()
    return cleaned if any(unicodedata.category(c)[0] not in "MZ" for c in cleaned) else ""


def request_id_for(msg: IncomingMessage) -> str:
    """Deterministic for a platform message (a redelivery maps to the same request); random otherwise."""
    if msg.message_id:
        return hashlib.sha256(f"{msg.platform}:{msg.message_id}".encode()).hexdigest()[:32]
    return hashlib.sha256(f"{time.time_ns()}:{id(msg)}".encode()).hexdigest()[:32]


class ConversationManager:
    def __init__(self, history: HistoryStore, state: StateStore, queue: RequestQueue,
                 config: ManagerConfig | None = None, on_crisis: CrisisAlert | None = None):
        self.history, self.state, self.queue = history, state, queue
        self.gate = turn_gate(history, state)  # pre- and post-model steps (Redis: one script each)
        self.cfg = config or ManagerConfig()
        self.on_crisis = on_crisis

    # --- commands --------------------------------------------------------------------------------------------
    async def forget(self, user_key: str) -> None:
        await self.history.forget(user_key)
        await self.state.forget(user_key)
        log.info("erased data of %s", _anon(user_key))

    def command(self, text: str) -> str | None:
        """The command word if `text` is a command ('/help', '!help', 'help' alone is a message)."""
        t = text.strip().lower()
        if t[:1] in "/!" and len(t) > 1 and " " not in t:
            return t[1:]
        return None

    async def _run_command(self, msg: IncomingMessage, name: str) -> Reply:
        if name in ("help", "start"):
            return Reply(texts.HELP, kind="command")
        if name in ("forget", "erase", "delete", "reset"):
            await self.forget(msg.user_key)
            return Reply(texts.FORGOTTEN, kind="command")
        if name in ("resources", "crisis", "help-now"):
            return Reply(texts.resources(self.cfg.region), kind="command")
        return Reply(texts.UNKNOWN_COMMAND, kind="command")

    # --- a turn ------------------------------------------------------------------------------------------------
    @observed_turn  # /metrics: replies by kind, latency, time to first token, crisis screens (bot/metrics.py)
    async def handle(self, msg: IncomingMessage, on_partial: PartialCallback | None = None, *,
                     invite_only: bool = False, on_start: StartCallback | None = None,
                     on_notice: PartialCallback | None = None) -> Reply | None:
        """The reply to one message, or None for a redelivery that was already answered (send nothing).

        `invite_only` (a public channel, where counseling is not private): commands and the crisis screen run as
        usual, anything else gets a short invitation to continue in a direct message instead of a model answer.
        `on_start` is awaited once a message is going to the model (not a duplicate, command, crisis or rate-limited
        message), before any waiting: adapters show "thinking..." there. `on_notice`, if given, gets the
        first-contact notice as soon as it is known (before the reply streams) instead of `Reply.notice`."""
        text = clean_text(msg.text)
        name = self.command(text) if text else None
        if not text or name is not None:
            if not await self._claim(msg):
                return None
            if not text:
                return Reply(texts.INVITE_PRIVATE, kind="invite") if invite_only else Reply(texts.EMPTY,
                                                                                            kind="invalid")
            return await self._run_command(msg, name)
        full = text  # screened whole (up to the screen's own cap): a crisis late in a long message still counts
        truncated = len(text) > self.cfg.max_message_chars
        if truncated:
            text = text[: self.cfg.max_message_chars]

        # Crisis first: screened before rate limits and before any waiting. The rules alone (~0.2 ms) run here;
        # with the embedding layer (CPU work, loads its encoder on first use) the screen runs in a thread so the event
        # loop stays free to acknowledge other events (Slack's 3 s) and keep gateway heartbeats. One screening
        # thread, first in first out: messages leave the screen in the order they arrived.
        if embed.ENABLED:
            screening = await asyncio.get_running_loop().run_in_executor(_SCREEN_POOL, safety_screen, full)
        else:
            screening = safety_screen(full)
        if screening.crisis or invite_only:
            if not await self._claim(msg):
                return None
            if self.cfg.log_message_text:
                log.info("message from %s: %r", _anon(msg.user_key), text)
            if screening.crisis:
                return await self._crisis(msg, text, screening)
            return Reply(texts.INVITE_PRIVATE, kind="invite")

        # Nothing awaited between the screen and admit(): a process admits one person's messages in the order
        # they left the screen, i.e. arrived. admit() = dedupe claim + rate limit + a place in the conversation's
        # queue in one step (Redis: one script), so the order of a person's messages is the order of admission.
        adm = await self.gate.admit(
            dedupe_key=f"{msg.platform}:{msg.message_id}" if msg.message_id else None, dedupe_ttl_s=DEDUPE_TTL_S,
            rate_key=f"rate:{msg.user_key}", rate_limit=self.cfg.rate_limit_messages,
            rate_window_s=self.cfg.rate_limit_window_s, user_key=msg.user_key, conversation=msg.conversation_key,
            hold_s=self.cfg.request_timeout_s + 30, history_turns=self.cfg.history_max_turns)
        if adm.outcome == "duplicate":
            log.info("duplicate delivery of a %s message ignored", msg.platform)
            return None
        if self.cfg.log_message_text:
            log.info("message from %s: %r", _anon(msg.user_key), text)
        if adm.outcome == "rate_limited":
            return Reply(texts.rate_limited(self.cfg.region), kind="rate_limited")
        try:
            if on_start is not None:
                await on_start()
            ctx = await adm.enter(self.cfg.request_timeout_s + 30)  # the previous turn of this conversation ended
            notice = texts.FIRST_CONTACT if ctx.first_contact else None
            if notice and on_notice is not None:
                await on_notice(notice)
                notice = None
            if ctx.careful and is_retraction(text):
                reply = Reply(check_in_reply(self.cfg.region), kind="check_in", notice=notice)
                await adm.finish(Turn(role="user", content=text), Turn(role="assistant", content=reply.text))
                return reply
            reply = await self._generate(msg, text, ctx, adm, on_partial)
            reply.notice = notice
            if truncated:
                reply.text = texts.TRUNCATED_NOTE + "\n\n" + reply.text
            return reply
        finally:
            await adm.release()

    async def _claim(self, msg: IncomingMessage) -> bool:
        """False for a redelivery of a platform message already claimed (it gets no reply)."""
        if msg.message_id and not await self.state.claim(f"{msg.platform}:{msg.message_id}", DEDUPE_TTL_S):
            log.info("duplicate delivery of a %s message ignored", msg.platform)
            return False
        return True

    async def _crisis(self, msg: IncomingMessage, text: str, screening: Screening) -> Reply:
        log.warning("crisis screen: category=%s rule=%s user=%s", screening.category, screening.rule,
                    _anon(msg.user_key))
        reply = Reply(crisis_reply(screening.category, self.cfg.region), kind="crisis", crisis=True,
                      category=screening.category)
        await self.state.set_field(msg.user_key, "careful", screening.category or "1", self.cfg.careful_mode_s)
        await self.state.set_field(msg.user_key, "seen", "1")
        await self.history.append(msg.conversation_key, Turn(role="user", content=text),
                                  Turn(role="assistant", content=reply.text))
        if self.on_crisis is not None:
            try:
                await self.on_crisis(msg, screening)
            except Exception:  # an alert failure must never cost the person their reply
                log.exception("crisis alert failed")
        return reply

    async def _generate(self, msg: IncomingMessage, text: str, ctx: TurnContext, adm: Admission,
                        on_partial: PartialCallback | None) -> Reply:
        req = GenerationRequest(request_id=request_id_for(msg), conversation=msg.conversation_key,
                                history=ctx.history, message=text, careful=ctx.careful, sampling=self.cfg.sampling,
                                stream=on_partial is not None,
                                deadline=time.time() + self.cfg.request_timeout_s)
        await self.queue.submit(req)
        result: GenerationResult | None = None
        shown = ""
        try:
            async for event in self.queue.events(req.request_id, self.cfg.request_timeout_s):
                if isinstance(event, StreamChunk):
                    shown += event.delta
                    if on_partial is not None:
                        await on_partial(shown)
                else:
                    result = event
        except TimeoutError:
            log.warning("request %s timed out after %.0fs", req.request_id, self.cfg.request_timeout_s)
            return Reply(texts.fallback(self.cfg.region), kind="fallback", request_id=req.request_id)
        if result is None or not result.ok or not result.text.strip():
            log.warning("request %s failed: %s", req.request_id, result.error if result else "no result")
            return Reply(texts.fallback(self.cfg.region), kind="fallback", request_id=req.request_id)
        await adm.finish(Turn(role="user", content=text), Turn(role="assistant", content=result.text))
        return Reply(result.text, kind="answer", request_id=req.request_id,
                     meta={"completion_tokens": result.completion_tokens, "guarded": result.replaced})


def _anon(user_key: str) -> str:
    """A stable pseudonym for logs: platform plus a short hash, never the raw user id."""
    platform = user_key.split(":", 1)[0]
    return f"{platform}:{hashlib.sha256(user_key.encode()).hexdigest()[:10]}"
