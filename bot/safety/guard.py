"""The output guard: every model reply passes it before anyone sees it."""

from __future__ import annotations

import re

from bot.safety.resources import allowed_contacts, resources_text

_PHONE = re.compile(r"(?<![\w.])\+?\d[\d\s().-]{5,}\d(?![\w.])")
_LINK = re.compile(r"\b(?:https?://|www\.)\S+|\b[\w-]+\.(?:com|org|net|gov|io|co\.uk|info)\b", re.IGNORECASE)
_DOSE = re.compile(r"\b\d+(?:\.\d+)?\s?(?:mg|mcg|µg|ml|milligrams?|g)\b", re.IGNORECASE)
_DIAGNOSIS = re.compile(
    r"\byou (?:have|suffer from|are suffering from|definitely have|probably have|clearly have) "
    r"(?:a |an )?(?:clinical |major )?(?:depression|bipolar|schizophrenia|ptsd|ocd|adhd|bpd|borderline|"
    r"an? (?:anxiety|personality|eating|mood) disorder|anxiety disorder)\b", re.IGNORECASE)
_HUMAN = re.compile(r"\b(?:i am|i'm) (?:a |an )?(?:human|real person|licensed|certified|board[- ]certified|"
                    r"therapist|psychologist|psychiatrist|counselor|counsellor|doctor)\b", re.IGNORECASE)


def _degenerate(text: str) -> bool:
    words = text.split()
    if len(words) < 2:
        return len(text.strip()) < 2
    if len(words) >= 24:
        grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        if len(set(grams)) / len(grams) < 0.5:
            return True
    return False


class Guard:
    def __init__(self, region: str = "US"):
        self.region = region
        self.allowed = allowed_contacts()

    def violations(self, text: str, final: bool = True) -> list[str]:
        """Reason codes; `final=False` checks streamed partial text (no length or repetition checks)."""
        found = []
        stripped = text
        for contact in self.allowed:
            stripped = stripped.replace(contact, " ")
        if _PHONE.search(stripped):
            found.append("phone_number")
        if _LINK.search(stripped):
            found.append("link")
        if _DOSE.search(text):
            found.append("medication_dose")
        if _DIAGNOSIS.search(text):
            found.append("diagnosis")
        if _HUMAN.search(text):
            found.append("claims_human_or_clinician")
        if final and _degenerate(text):
            found.append("degenerate")
        return found

    def safe_reply(self, request=None) -> str:
        return ("I want to make sure I respond to you well, and I don't have a good answer right now. "
                "What you're going through matters. If it would help to talk to someone, a licensed counselor or "
                "someone you trust can be a real support, and if you ever feel unsafe, these are there any time:\n"
                + resources_text(self.region))
