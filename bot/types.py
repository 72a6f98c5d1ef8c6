"""What adapters hand to the conversation manager, and what they get back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Platform = Literal["terminal", "discord", "slack", "test", "bench"]

ReplyKind = Literal["answer", "crisis", "command", "rate_limited", "fallback", "invalid", "check_in",
                    "invite"]


@dataclass(frozen=True)
class IncomingMessage:
    platform: str
    user_id: str
    text: str
    channel_id: str = ""
    thread_id: str | None = None  # a Slack thread or similar sub-conversation; None = the user's main conversation
    message_id: str | None = None  # platform message/event id: the dedupe key (a redelivery gets no second reply)
    is_private: bool = True  # a DM; False = a public channel (answers stay short, see the adapters)

    @property
    def user_key(self) -> str:
        return f"{self.platform}:{self.user_id}"

    @property
    def conversation_key(self) -> str:
        return self.user_key + (f":t:{self.thread_id}" if self.thread_id else "")


@dataclass
class Reply:
    text: str
    kind: ReplyKind = "answer"
    crisis: bool = False
    category: str | None = None  # crisis category, if any
    notice: str | None = None  # the first-contact notice, to show before the reply
    request_id: str | None = None
    meta: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"reply": self.text, "crisis": self.crisis, "category": self.category, "kind": self.kind,
                "notice": self.notice, "request_id": self.request_id, **self.meta}
