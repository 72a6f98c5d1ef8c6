"""Admin alerts on a crisis screen: what an admin channel is told (no message text unless configured)."""

from __future__ import annotations

import hashlib
import time

from bot.safety.screen import Screening


def format_alert(platform: str, user_id: str, screening: Screening, text: str | None = None,
                 include_text: bool = False, user_mention: str | None = None) -> str:
    """One short alert line for admins. The person is named by mention only where the platform allows a
    private admin channel to see it; the message text is included only when `include_text` is set."""
    who = user_mention or f"user {hashlib.sha256(f'{platform}:{user_id}'.encode()).hexdigest()[:10]}"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    line = (f":rotating_light: Crisis screen on {platform}: category *{screening.category}* from {who} at {when}. "
            "The person was shown crisis resources at once.")
    if include_text and text:
        line += f"\n> {text[:500]}"
    return line
