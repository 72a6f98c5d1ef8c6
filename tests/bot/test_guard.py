"""The output guard: each violation, the allow-listed resources, streamed partial text, real therapists' answers,
and the resource tables it is built from."""

from __future__ import annotations

import csv
import re

import pytest

from bot import texts
from bot.safety.guard import Guard
from bot.safety.resources import REGIONS, crisis_reply, lines, region_of, resources_text
from bot.safety.screen import CATEGORIES
from tests.conftest import DATA_CSV


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard("US")


VIOLATIONS = {
    "phone_number": ["You can call the hotline at 1-800-273-8255 any time.", "Call me on (555) 010-0199.",
                     "Please text 12345 for help.", "Ring +44 20 7946 0958."],
    "link": ["There is a great article at https://example.com/anxiety-tips.", "Try www.betterhelp.com for therapy.",
             "psychologytoday.com lists therapists near you.", "Email me at joe@example.org"],
    "medication_dose": ["Many people take 50 mg of sertraline a day.", "Try 0.5mg of Xanax when you panic.",
                        "A dose of 20 milligrams usually helps."],
    "medication_advice": ["You should start taking Zoloft.", "Try Xanax next time you feel a panic attack.",
                          "Maybe stop your lithium for a while and see how you feel."],
    "diagnosis": ["It sounds like you have bipolar disorder.", "You definitely have depression.",
                  "You are clearly suffering from PTSD.", "This is a classic case of borderline personality disorder.",
                  "You're bipolar.", "You meet the criteria for generalized anxiety disorder."],
    "claims_human_or_clinician": ["I'm a licensed therapist, so trust me.", "As a therapist, I see this a lot.",
                                  "I'm a real person, not a bot.", "In my practice, clients often feel this way.",
                                  "I am not an AI."],
    "degenerate": ["", "   ", "...", "I'm here for you. " * 12, "hello hello hello hello hello hello hello",
                   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "That sounds hard.<|im_end|><|im_start|>user"],
}

FINE = [
    "That sounds really hard. It makes sense that you feel exhausted after everything this week.",
    "I'm an AI, not a therapist, but I'm here to listen. What has been weighing on you most?",
    "It might help to talk with a doctor about how you've been sleeping; they can look at the whole picture.",
    "Please don't stop taking your sertraline without talking to your prescriber first.",
    "Some people with depression find small routines helpful, but everyone is different.",
    "If you ever feel unsafe, you can call or text 988, or text HOME to 741741.",
    "Samaritans are there on 116 123, and https://findahelpline.com lists lines in other countries.",
    "Between 2019-2021 a lot changed for you. That is 3 years of upheaval, and 1 or 2 bad days are normal.",
    "You are not alone in this, and you are not a burden.",
    "I wouldn't say you are clinically depressed from what you've told me, and I can't diagnose anyone.",
]


@pytest.mark.parametrize("reason,text", [(r, t) for r, ts in VIOLATIONS.items() for t in ts])
def test_each_violation_is_caught(guard, reason, text):
    assert reason in guard.violations(text)


@pytest.mark.parametrize("text", FINE)
def test_ordinary_supportive_replies_pass(guard, text):
    assert guard.violations(text) == []


@pytest.mark.parametrize("region", REGIONS)
def test_every_resource_text_passes_the_guard(region):
    guard = Guard(region)
    for category in (None, *CATEGORIES):
        assert guard.violations(crisis_reply(category, region)) == []
        assert guard.violations(resources_text(region, category)) == []
    for text in (texts.fallback(region), texts.rate_limited(region), texts.check_in(region), guard.safe_reply()):
        assert guard.violations(text) == []


def test_streamed_partial_text_is_not_cut_off_mid_number(guard):
    assert guard.violations("You can text HOME to 7417", final=False) == []
    assert guard.violations("You can text HOME to 741741", final=False) == []
    assert guard.violations("Call 1-800-273-8255 now", final=False) == ["phone_number"]
    assert guard.violations("", final=False) == []  # empty is only degenerate once final


def test_resources_by_region():
    us = resources_text("US", "abuse")
    assert "1-800-799-7233" in us and "1-800-422-4453" in us and "988" in us and "741741" in us
    uk = resources_text("UK")
    assert "116 123" in uk and "999" in uk and "988" not in uk
    assert "116 123" in resources_text("IE") and "112" in resources_text("IE")
    assert "13 11 14" in resources_text("AU") and "000" in resources_text("AU")
    assert "findahelpline.com" in resources_text("FR") and region_of("fr") == "INTL" and region_of("gb") == "UK"
    assert lines("US", "medical_emergency")[0] == ("Emergency services", "call 911")
    assert lines("US", "harm_to_others")[0] == ("Emergency services", "call 911")
    assert "1-800-222-1222" in resources_text("US", "medical_emergency")


def _answers() -> list[str]:
    with open(DATA_CSV, encoding="utf-8") as f:
        return [r["answerText"] for r in csv.DictReader(f) if r["answerText"].strip()]


def test_real_counselor_answers_pass_unless_they_break_the_bots_rules(guard):
    """Therapists' own answers may link their websites, give their office numbers and speak of 'my clients': all
    things the bot must not do. The rest, ordinary empathetic text, must pass (a few hedged diagnoses and
    medication remarks are real violations for an AI)."""
    own = re.compile(r"http|www\.|\.com|\.org|\d{3}|my (clients|practice|office|patients)|as a (therapist|counsel)|"
                     r"i am (a|licensed)|i'm a", re.IGNORECASE)
    plain = [a for a in _answers() if not own.search(a)]
    assert len(plain) > 1000
    flagged = [a for a in plain if guard.violations(a)]
    assert len(flagged) / len(plain) <= 0.02, len(flagged)
