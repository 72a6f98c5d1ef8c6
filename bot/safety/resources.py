"""Human crisis resources by region and category: the only phone numbers and links the assistant may show."""

from __future__ import annotations

# region -> list of (label, contact). Every number here is allow-listed for the output guard.
GENERAL = {
    "US": [("988 Suicide & Crisis Lifeline", "call or text 988"),
           ("Crisis Text Line", "text HOME to 741741"), ("Emergency services", "call 911")],
    "CA": [("Suicide Crisis Helpline", "call or text 988"), ("Emergency services", "call 911")],
    "UK": [("Samaritans", "call 116 123"), ("Shout", "text SHOUT to 85258"), ("Emergency services", "call 999")],
    "IE": [("Samaritans", "call 116 123"), ("Emergency services", "call 112 or 999")],
    "AU": [("Lifeline", "call 13 11 14"), ("Emergency services", "call 000")],
    "INTL": [("Find a helpline in your country", "https://findahelpline.com"), ("Emergency services", "call 112")],
}
ABUSE = {
    "US": [("National Domestic Violence Hotline", "call 1-800-799-7233 or text START to 88788"),
           ("Childhelp National Child Abuse Hotline", "call or text 1-800-422-4453")],
    "CA": [("Kids Help Phone", "call 1-800-668-6868 or text CONNECT to 686868")],
    "UK": [("National Domestic Abuse Helpline", "call 0808 2000 247"), ("NSPCC", "call 0808 800 5000"),
           ("Childline", "call 0800 1111")],
    "IE": [("Women's Aid", "call 1800 341 900"), ("Childline", "call 1800 66 66 66")],
    "AU": [("1800RESPECT", "call 1800 737 732"), ("Kids Helpline", "call 1800 55 1800")],
    "INTL": [],
}
FIND_A_HELPLINE = "https://findahelpline.com"

OPENERS = {
    "suicide": "I'm really glad you told me, and I'm so sorry you're carrying this much pain right now. "
               "Your life matters, and you deserve support from a real person right now.",
    "self_harm": "Thank you for trusting me with this. You don't have to go through this alone, and you deserve "
                 "care and support from a real person right now.",
    "harm_to_others": "It sounds like things feel really intense right now. Before anything else, please reach "
                      "out to someone who can help keep everyone safe, including you.",
    "abuse": "I'm so sorry this is happening to you. It is not your fault, and you deserve to be safe. "
             "People who specialise in this can help you right now, confidentially.",
    "medical_emergency": "This sounds like a medical emergency. Please call your local emergency number right "
                         "now, or ask someone near you to call for you.",
}


def _lines(region: str, category: str | None) -> list[tuple[str, str]]:
    region = region.upper() if region.upper() in GENERAL else "INTL"
    lines = list(GENERAL[region])
    if category == "abuse":
        lines = ABUSE.get(region, []) + lines
    if region != "INTL":
        lines.append(("Outside this country", FIND_A_HELPLINE))
    return lines


def resources_text(region: str = "US", category: str | None = None) -> str:
    return "\n".join(f"• {label}: {contact}" for label, contact in _lines(region, category))


def crisis_reply(category: str, region: str = "US") -> str:
    opener = OPENERS.get(category, OPENERS["suicide"])
    closing = ("If you are in immediate danger, please call your local emergency number now. "
               "I'm an AI and can't contact anyone for you, but I'm here to keep talking while you reach out.")
    return f"{opener}\n\n{resources_text(region, category)}\n\n{closing}"


def allowed_contacts() -> set[str]:
    """Every contact string in the resource lists (the output guard's allow-list)."""
    out = {FIND_A_HELPLINE}
    for table in (GENERAL, ABUSE):
        for lines in table.values():
            out.update(c for _, c in lines)
    return out
