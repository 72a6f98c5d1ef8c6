"""Splitting long replies at platform limits: on paragraph, then sentence, then word boundaries; never inside a
word or a link."""

from __future__ import annotations

import re

DISCORD_LIMIT = 2000
SLACK_LIMIT = 3900  # Slack truncates message text past 40,000 chars but renders best under ~4,000

_URL = re.compile(r"https?://\S+")


def split_message(text: str, limit: int) -> list[str]:
    """Parts of at most `limit` characters that join back (modulo the white space at cuts) to `text`."""
    if limit < 20:
        raise ValueError("limit too small")
    text = text.strip()
    parts: list[str] = []
    while len(text) > limit:
        cut = _best_cut(text, limit)
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts


def _best_cut(text: str, limit: int) -> int:
    window = text[: limit + 1]
    floor = limit // 3  # never make a tiny first part when a better boundary exists further on
    for pattern in (r"\n\s*\n", r"\n", r"(?<=[.!?…])[\"')\]]*\s+", r"\s+"):
        cuts = [m.end() for m in re.finditer(pattern, window) if floor <= m.start() <= limit and m.end() <= limit + 1]
        cuts = [c for c in cuts if not _inside_url(text, c)]
        if cuts:
            return min(cuts[-1], limit)
    # one enormous word: cut hard, but never inside a URL if one starts before the limit
    for m in _URL.finditer(window):
        if m.start() < limit < m.end() and m.start() > 0:
            return m.start()
    return limit


def _inside_url(text: str, pos: int) -> bool:
    return any(m.start() < pos < m.end() for m in _URL.finditer(text[: pos + 200]))
