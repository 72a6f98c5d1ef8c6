"""Everything the assistant says that is not generated: one place, so adapters and tests agree."""

from __future__ import annotations

from bot.safety.resources import resources_text

NAME = "Counsel"

FIRST_CONTACT = (
    f"Hi, I'm {NAME}, an AI assistant for emotional support. I'm not a therapist, doctor or emergency service, "
    "and I can't diagnose or give medical advice. If you are in danger, please contact local emergency services "
    "or a crisis line (type /resources). What you write is kept for a while so I can follow our conversation; "
    "type /forget at any time to erase it."
)

HELP = (
    f"I'm {NAME}, an AI that listens and offers support. Just write what's on your mind.\n"
    "Commands:\n"
    "• /resources - crisis lines and support services\n"
    "• /forget - erase everything I have stored about you\n"
    "• /help - this message"
)

FORGOTTEN = "Done: I've erased our conversation and everything I stored about you. We can start fresh any time."

EMPTY = "I didn't catch any words there. Whenever you're ready, tell me what's on your mind."

TRUNCATED_NOTE = "(Your message was very long, so I read the first part of it.)"

RATE_LIMITED = (
    "I want to give each message the attention it deserves, and a lot came in very quickly. Please give me a "
    "minute and then tell me more. If you're in crisis, please reach out now:\n"
)

UNKNOWN_COMMAND = "I don't know that command. Type /help to see what I can do."

INVITE_PRIVATE = (
    "Thanks for reaching out. Everyone in this channel can read what we write here, so I answer privately: "
    "send me a direct message and we can talk there. If you need help right now, type /resources."
)


def resources(region: str) -> str:
    return "Support is available any time:\n" + resources_text(region)


def fallback(region: str) -> str:
    return (
        "I'm sorry, I'm having trouble answering right now, and I don't want to leave you waiting. What you're "
        "going through matters. Please try again in a few minutes, and if you need someone now:\n"
        + resources_text(region)
    )


def rate_limited(region: str) -> str:
    return RATE_LIMITED + resources_text(region)


CHECK_IN = (
    "Thanks for telling me, and I'm sorry if I got it wrong. I'd still like to check in, because what you said "
    "earlier worried me: how are you feeling right now, and are you safe? There's no wrong answer, and you don't "
    "have to explain. If anything changes, or it gets heavy again, people are there any time:\n"
)


def check_in(region: str) -> str:
    return CHECK_IN + resources_text(region)
