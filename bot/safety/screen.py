"""The crisis screen: runs on every incoming message before the model.

A transparent rule layer: phrases per category, with hyperbole and topic mentions excluded. See
tests/bot/test_safety_screen.py and the labelled set in benchmarks/safety_set.jsonl for what it must catch.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

CATEGORIES = ("suicide", "self_harm", "harm_to_others", "abuse", "medical_emergency")


@dataclass(frozen=True)
class Screening:
    crisis: bool
    category: str | None = None
    rule: str | None = None  # which rule matched (never message text)

    def as_json(self) -> dict:
        return {"crisis": self.crisis, "category": self.category, "rule": self.rule}


def normalize(text: str) -> str:
    """Lower-case, strip accents/zalgo and control characters, fold common leetspeak and repeated letters."""
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c) and (c.isprintable() or c in "\n\t"))
    t = t.lower().replace("’", "'")
    t = re.sub(r"(.)\1{2,}", r"\1\1", t)
    return re.sub(r"\s+", " ", t).strip()


_P = {
    "suicide": [
        r"\b(kill|killing|end|ending|take|taking) (myself|my own life|my life|it all)\b",
        r"\bkms\b", r"\bunalive (myself|me)\b", r"\bsuicid(e|al)\b", r"\bwant(ed)? to die\b", r"\bwanna die\b",
        r"\bbetter off (dead|without me)\b", r"\bno (reason|point) (to|in) (live|living|go on|going on)\b",
        r"\b(don't|do not|dont) want to (live|be alive|wake up|exist)\b", r"\bend (it|things) (all )?tonight\b",
        r"\bsaved up (pills|my pills|meds)\b", r"\b(on|at) the (bridge|edge|roof|ledge)\b.*\b(jump|end|goodbye)\b",
        r"\bjump (off|from) (the|a) (bridge|roof|building)\b", r"\bgoodbye (note|letter)\b", r"\bsuicide note\b",
        r"\bquiero morir(me)?\b", r"\bme quiero matar\b", r"\bje veux mourir\b", r"\bich will sterben\b",
        r"\bvoglio morire\b", r"\bquero morrer\b",
    ],
    "self_harm": [
        r"\b(cut|cutting|burn|burning|hurt|hurting|harm|harming) myself\b", r"\bself[- ]?harm(ing)?\b",
        r"\bi (cut|burned|burnt) (my|myself)\b",
    ],
    "harm_to_others": [
        r"\b(kill|hurt|shoot|stab|murder) (him|her|them|my (wife|husband|boss|dad|mom|mother|father|partner))\b",
        r"\bgoing to (kill|hurt|shoot|stab) (someone|somebody|people)\b",
    ],
    "abuse": [
        r"\b(he|she|they|my (dad|father|mom|mother|husband|wife|partner|boyfriend|girlfriend|stepdad)) "
        r"(hits|beats|chokes|hurts|abuses|rapes|raped|hit|beat|choked) me\b",
        r"\bi'?m (being )?(abused|raped)\b", r"\bafraid (he|she|they)('ll| will) (kill|hurt) me\b",
    ],
    "medical_emergency": [
        r"\b(took|swallowed|taken) (a lot of|too many|all (my|the)|\d+) (pills|tablets|sleeping pills)\b",
        r"\boverdos(e|ed|ing)\b", r"\b(can't|cannot|cant) breathe\b", r"\bchest pain\b", r"\bbleeding (a lot|heavily)\b",
    ],
}

_NOT_CRISIS = [
    r"\b(exam|test|homework|job|work|traffic|heat|commute|this|it|that|my feet) is killing me\b",
    r"\b(kill|killing|end|ending) (a|the|this) (process|task|job|thread|program|script|bug)\b",
    r"\bkill -9\b", r"\bkilling it\b", r"\bdying (to|of laughter)\b", r"\bi could kill for\b",
]
_TOPIC = r"\b(nurse|teacher|student|researcher|writing|essay|paper|class|course|learn(ing)? (about|to talk))\b"

_COMPILED = {c: [re.compile(p) for p in ps] for c, ps in _P.items()}
_NEG = [re.compile(p) for p in _NOT_CRISIS]
_TOPIC_RE = re.compile(_TOPIC)
_FIRST_PERSON = re.compile(r"\b(i|i'm|im|me|my|myself)\b")


def screen(text: str) -> Screening:
    t = normalize(text)
    if not t:
        return Screening(False)
    cleaned = t
    for neg in _NEG:
        cleaned = neg.sub(" ", cleaned)
    for category in ("medical_emergency", "suicide", "self_harm", "harm_to_others", "abuse"):
        for i, rx in enumerate(_COMPILED[category]):
            if rx.search(cleaned):
                if _TOPIC_RE.search(cleaned) and not _FIRST_PERSON_RISK(cleaned):
                    continue
                return Screening(True, category, f"{category}:{i}")
    return Screening(False)


def _FIRST_PERSON_RISK(t: str) -> bool:
    """A topic mention ("I'm a nurse learning about self-harm") is not a crisis unless the person speaks of
    wanting or doing it themselves."""
    return bool(re.search(r"\b(i|i'm|im) (want|wanna|am going|'m going|will|keep|have been|feel like)\b", t))


_RETRACTION = re.compile(
    r"\b(never ?mind|nvm|forget (it|i said|what i said)|you misunderstood|misunderstood me|(just|only) (kidding|joking)|"
    r"i was (kidding|joking)|i'?m (fine|ok|okay|good) (now|really)|didn'?t mean (it|that)|not serious|jk)\b")


def is_retraction(text: str) -> bool:
    """'Never mind / you misunderstood' after a crisis: it gets a gentle check-in, not a silent reset."""
    return bool(_RETRACTION.search(normalize(text)))


def check_in_reply(region: str = "US") -> str:
    from bot.safety.resources import resources_text

    return ("Thanks for letting me know, and I'm sorry if I got it wrong. I just want to check in, because what you "
            "said earlier worried me: how are you feeling right now, and are you safe? If anything changes, these "
            "are there for you any time:\n" + resources_text(region))
