"""What the Slack adapter shows besides replies: Block Kit for the App Home tab and the DM offer, and the small
text transformations Slack needs (mrkdwn escaping, command names). Pure functions, no I/O."""

from __future__ import annotations

import re

from bot import texts
from bot.safety.resources import resources_text

THINKING = f"{texts.NAME} is thinking…"
FORGET_COMMAND = "/counsel-forget"
ACTION_FORGET = "counsel_forget_data"  # App Home button: erase my data
ACTION_OPEN_DM = "counsel_open_dm"  # button under a threaded answer: continue privately

DM_OFFER = ("This thread is visible to everyone in the channel. If you'd rather talk privately, "
            "I can continue in a direct message.")
DM_WELCOME = ("Here's a private space for us. Nothing from the channel thread is carried over, so tell me "
              "what's on your mind.")

# Slack's client takes any message that starts with "/" as a slash command, so the manager's commands are typed
# with "!" here (the manager accepts both); forgetting has its own registered slash command.
_COMMAND = re.compile(r"(?<![\w/<])/(forget|resources|help)\b")


def slack_commands(text: str) -> str:
    return _COMMAND.sub(lambda m: FORGET_COMMAND if m.group(1) == "forget" else "!" + m.group(1), text)


def escape(text: str) -> str:
    """Slack mrkdwn control characters (so model output can never form a mention, link or channel ping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def reply_text(text: str, notice: str | None = None) -> str:
    """A reply as Slack text: the first-contact notice (in italics) above it, commands spelled for Slack."""
    body = slack_commands(escape(text))
    if notice:
        return f"_{slack_commands(escape(notice))}_\n\n{body}"
    return body


def dm_offer_blocks() -> list[dict]:
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": DM_OFFER}},
        {"type": "actions", "elements": [
            {"type": "button", "action_id": ACTION_OPEN_DM, "text": {"type": "plain_text", "text": "Talk privately"},
             "value": "open_dm"},
        ]},
    ]


def home_view(region: str, history_days: float, erased: bool = False) -> dict:
    """The App Home tab: what the assistant is, its limits, crisis resources, and a button to erase one's data."""
    days = f"{history_days:g} day" + ("" if history_days == 1 else "s")
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": texts.NAME}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            f"I'm {texts.NAME}, an AI assistant for emotional support. Send me a direct message in the "
            "*Messages* tab, or mention me in a channel and I'll answer in a thread.")}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            "*What I am not*\n"
            "• not a therapist, doctor or emergency service, and I can't contact anyone for you\n"
            "• I don't diagnose and I don't give medication advice\n"
            "• I'm an AI and can be wrong: please check anything important with a professional")}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            "*If you need someone now*\n" + escape(resources_text(region)))}},
        {"type": "divider"},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*Your data*\nI keep our conversations for {days} after your last message so I can follow them. "
            f"Message text is not written to logs. Erase everything at any time here or with `{FORGET_COMMAND}`.")}},
        {"type": "actions", "elements": [
            {"type": "button", "action_id": ACTION_FORGET, "style": "danger", "value": "forget",
             "text": {"type": "plain_text", "text": "Erase my data"},
             "confirm": {"title": {"type": "plain_text", "text": "Erase your data?"},
                         "text": {"type": "plain_text", "text": "This deletes our conversations and everything "
                                                                "I stored about you. It can't be undone."},
                         "confirm": {"type": "plain_text", "text": "Erase"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}},
        ]},
    ]
    if erased:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": texts.FORGOTTEN}]})
    return {"type": "home", "blocks": blocks}
