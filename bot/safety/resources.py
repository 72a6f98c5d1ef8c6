"""Human crisis resources by region and category: the only phone numbers and links the assistant may show.

Numbers checked against the services' own pages (2026-11): 988 Suicide & Crisis Lifeline (US, call or text 988;
Canada's 9-8-8 line likewise), Crisis Text Line (US, text HOME to 741741), Samaritans (UK and Ireland, 116 123),
Shout (UK, text SHOUT to 85258), Text 50808 (Ireland), Lifeline (Australia, 13 11 14), US National Domestic
Violence Hotline (1-800-799-7233, text START to 88788), Childhelp (1-800-422-4453), RAINN (1-800-656-4673),
Poison Help (US, 1-800-222-1222), UK National Domestic Abuse Helpline (0808 2000 247), NSPCC (0808 800 5000),
Childline (UK 0800 1111; Ireland 1800 66 66 66), Women's Aid Ireland (1800 341 900), Kids Help Phone (Canada,
1-800-668-6868, text CONNECT to 686868), 1800RESPECT (1800 737 732), Kids Helpline (1800 55 1800),
findahelpline.com (everywhere else). Emergency numbers: 911 (US, CA), 999 (UK; IE with 112), 000 (AU), 112.
"""

from __future__ import annotations

FIND_A_HELPLINE = "https://findahelpline.com"
REGIONS = ("US", "CA", "UK", "IE", "AU", "INTL")
_ALIASES = {"GB": "UK", "EN": "UK", "USA": "US", "IRL": "IE", "AUS": "AU", "CAN": "CA"}

EMERGENCY = {"US": "call 911", "CA": "call 911", "UK": "call 999", "IE": "call 112 or 999", "AU": "call 000",
             "INTL": "call your local emergency number (112 works in the EU and from many mobile phones)"}

# region -> (label, contact). Every number and link here is allow-listed for the output guard.
GENERAL = {
    "US": [("988 Suicide & Crisis Lifeline", "call or text 988"), ("Crisis Text Line", "text HOME to 741741")],
    "CA": [("9-8-8 Suicide Crisis Helpline", "call or text 988")],
    "UK": [("Samaritans", "call 116 123"), ("Shout", "text SHOUT to 85258")],
    "IE": [("Samaritans", "call 116 123"), ("Text 50808", "text HELLO to 50808")],
    "AU": [("Lifeline", "call 13 11 14")],
    "INTL": [("Find a helpline in your country", FIND_A_HELPLINE)],
}
ABUSE = {
    "US": [("National Domestic Violence Hotline", "call 1-800-799-7233 or text START to 88788"),
           ("Childhelp National Child Abuse Hotline", "call or text 1-800-422-4453"),
           ("RAINN Sexual Assault Hotline", "call 1-800-656-4673")],
    "CA": [("Kids Help Phone", "call 1-800-668-6868 or text CONNECT to 686868")],
    "UK": [("National Domestic Abuse Helpline", "call 0808 2000 247"), ("NSPCC", "call 0808 800 5000"),
           ("Childline", "call 0800 1111")],
    "IE": [("Women's Aid", "call 1800 341 900"), ("Childline", "call 1800 66 66 66")],
    "AU": [("1800RESPECT", "call 1800 737 732"), ("Kids Helpline", "call 1800 55 1800")],
    "INTL": [],
}
POISON = {"US": [("Poison Help", "call 1-800-222-1222")]}

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
# Categories where the emergency number comes first.
_EMERGENCY_FIRST = {"medical_emergency", "harm_to_others"}


def region_of(region: str | None) -> str:
    r = (region or "").strip().upper()
    r = _ALIASES.get(r, r)
    return r if r in GENERAL else "INTL"


def lines(region: str, category: str | None = None) -> list[tuple[str, str]]:
    """The resources to show, in order, as (label, contact)."""
    region = region_of(region)
    emergency = ("Emergency services", EMERGENCY[region])
    out = list(GENERAL[region])
    if category == "abuse":
        out = ABUSE.get(region, []) + out
    if category == "medical_emergency":
        out = POISON.get(region, []) + out
    out = [emergency, *out] if category in _EMERGENCY_FIRST else [*out, emergency]
    if region != "INTL":
        out.append(("Outside this country", FIND_A_HELPLINE))
    return out


def resources_text(region: str = "US", category: str | None = None) -> str:
    return "\n".join(f"• {label}: {contact}" for label, contact in lines(region, category))


def crisis_reply(category: str | None, region: str = "US") -> str:
    opener = OPENERS.get(category or "", OPENERS["suicide"])
    closing = ("If you are in immediate danger, please call your local emergency number now. "
               "I'm an AI and can't contact anyone for you, but I'm here to keep talking while you reach out.")
    return f"{opener}\n\n{resources_text(region, category)}\n\n{closing}"


def allowed_contacts() -> set[str]:
    """Every contact string in the resource lists (the output guard's allow-list is built from these)."""
    out = {FIND_A_HELPLINE}
    for table in (GENERAL, ABUSE, POISON):
        for entries in table.values():
            out.update(c for _, c in entries)
    out.update(EMERGENCY.values())
    return out
