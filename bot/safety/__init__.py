"""Safety: the crisis screen (before the model), crisis resources, and the output guard (after it)."""

from bot.safety.guard import Guard
from bot.safety.resources import crisis_reply, resources_text
from bot.safety.screen import CATEGORIES, Screening, screen

__all__ = ["CATEGORIES", "Guard", "Screening", "crisis_reply", "resources_text", "screen"]
