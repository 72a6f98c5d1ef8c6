"""The output guard: every model reply passes it before anyone sees it (model/batching.run_batch).

Reason codes: phone_number, link (anything not in the crisis-resource allow-list), medication_dose,
medication_advice (a named psychiatric medication with take/start/stop advice, unless it defers to a prescriber),
diagnosis, claims_human_or_clinician, degenerate (empty, no words, repetition loops, leaked chat markers).
Checked against real therapists' answers (tests/bot/test_guard.py): ordinary empathetic text passes.
"""

from __future__ import annotations

import re

from bot.safety.resources import allowed_contacts, resources_text

# --- numbers and links -------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"\+?\(?\d[\d ().\-]*\d|\d")
_CALL = re.compile(r"\b(?:call|text|dial|ring|phone|whatsapp|sms)(?:\s+(?:or\s+text|or\s+call|us|them|[A-Z]+\s+to))?"
                   r"\s+(?:at\s+|on\s+)?(\+?\(?\d[\d ().\-]*\d|\d)", re.IGNORECASE)
_YEARS = re.compile(r"^(19|20)\d\d\s*[-–]\s*(19|20)?\d\d$")
# Bare domains: common generic TLDs (lower-case, as written in links) so "you.It" from a missing space is no link.
_TLD = r"(?:com|org|net|gov|edu|io|info|health|ngo|co\.uk|org\.uk|nhs\.uk|gov\.uk|ie|com\.au|org\.au|ca)"
_URL = re.compile(rf"(?i:\b(?:https?://|www\.)[^\s<>\"')\]]+)|\b(?:[a-z0-9-]+\.)+{_TLD}(?![\w-])(?:/[^\s<>\"')\]]*)?"
                  r"|(?i:\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+)")


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _host(link: str) -> str:
    h = re.sub(r"^(?:https?://)?(?:www\.)?", "", link.lower())
    return re.split(r"[/?#:]", h, maxsplit=1)[0].rstrip(".")


# --- medication ----------------------------------------------------------------------------------------------------
MEDICATIONS = (
    # antidepressants
    "sertraline zoloft fluoxetine prozac escitalopram lexapro cipralex citalopram celexa paroxetine paxil seroxat "
    "fluvoxamine luvox venlafaxine effexor desvenlafaxine pristiq duloxetine cymbalta bupropion wellbutrin "
    "mirtazapine remeron trazodone desyrel vortioxetine trintellix brintellix vilazodone viibryd amitriptyline elavil "
    "nortriptyline pamelor imipramine clomipramine anafranil doxepin phenelzine nardil tranylcypromine parnate "
    "esketamine spravato ketamine agomelatine "
    # mood stabilisers and antipsychotics
    "lithium lamotrigine lamictal valproate depakote valproic carbamazepine tegretol oxcarbazepine trileptal "
    "quetiapine seroquel olanzapine zyprexa risperidone risperdal aripiprazole abilify brexpiprazole rexulti "
    "cariprazine vraylar lurasidone latuda ziprasidone geodon clozapine clozaril haloperidol haldol paliperidone "
    "invega chlorpromazine "
    # anxiolytics, sleep
    "alprazolam xanax lorazepam ativan clonazepam klonopin rivotril diazepam valium chlordiazepoxide librium "
    "buspirone buspar hydroxyzine atarax vistaril propranolol inderal zolpidem ambien zopiclone eszopiclone lunesta "
    "temazepam gabapentin neurontin pregabalin lyrica prazosin melatonin "
    # ADHD
    "methylphenidate ritalin concerta adderall amphetamine dexamphetamine lisdexamfetamine vyvanse elvanse "
    "atomoxetine strattera guanfacine intuniv clonidine modafinil "
    # addiction
    "naltrexone buprenorphine suboxone methadone disulfiram antabuse acamprosate"
).split()
_MED = re.compile(r"\b(" + "|".join(MEDICATIONS) + r")\b", re.IGNORECASE)
_DOSE = re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:mg|mcg|µg|ug|milligrams?|micrograms?)\b", re.IGNORECASE)
_ML_DOSE = re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:ml|millilit(?:er|re)s?|tablets?|pills?|capsules?)\b", re.IGNORECASE)
_ADVICE = re.compile(r"\b(take|taking|start|starting|stop|stopping|try|trying|increase|increasing|decrease|"
                     r"decreasing|double|doubling|halve|switch(?:ing)? to|go on|get on|come off|coming off|quit|skip|"
                     r"skipping|ask for|you should|you could|you need|recommend)\b", re.IGNORECASE)
_PRESCRIBER = re.compile(r"\b(doctor|doctors|prescriber|psychiatrist|pharmacist|gp|physician|nurse practitioner|"
                         r"health ?care provider|medical (?:professional|provider|team)|care team)\b", re.IGNORECASE)

# --- diagnosis -------------------------------------------------------------------------------------------------------
_CONDITION = (r"(?:(?:clinical|major|severe|chronic|manic|postpartum|persistent) )?(?:depression|depressive disorder|"
              r"bipolar(?: disorder| i+)?|schizophrenia|schizoaffective disorder|psychosis|c?-?ptsd|post-traumatic "
              r"stress disorder|ocd|obsessive[- ]compulsive disorder|adhd|add|autism|asperger'?s|bpd|borderline "
              r"personality disorder|narcissistic personality disorder|npd|(?:an? )?(?:\w+ )?personality disorder|"
              r"(?:generali[sz]ed )?anxiety disorder|gad|panic disorder|social anxiety disorder|(?:an? )?eating "
              r"disorder|anorexia|bulimia|binge[- ]eating disorder|dissociative identity disorder|dysthymia|"
              r"(?:an? )?(?:mental|mood|psychiatric) (?:illness|disorder))")
_DIAGNOSIS = re.compile(
    rf"\byou(?:'ve| have| are|'re)? (?:definitely |probably |clearly |likely |certainly |obviously |might |may |"
    rf"could |must |seem to |appear to )?(?:have|got|suffer from|suffering from|be suffering from|showing (?:clear )?"
    rf"signs of) (?:a |an )?(?:case of )?{_CONDITION}\b"
    rf"|\byou(?:'re| are) (?:definitely |probably |clearly |obviously )?(?:bipolar|schizophrenic|autistic|psychotic|"
    rf"anorexic|bulimic|a narcissist|clinically depressed|a sociopath|a psychopath)\b"
    rf"|\b(?:it|this|that) (?:is|sounds like|looks like|seems like) (?:definitely |clearly |probably |classic |a "
    rf"classic case of |textbook )+{_CONDITION}\b"
    rf"|\bi (?:would |can )?diagnose you\b|\bmy diagnosis (?:is|would be)\b|\byou (?:meet|fit) (?:the )?"
    rf"(?:dsm )?criteria for\b|\byou (?:would|will) be diagnosed with\b|\byour diagnosis is\b",
    re.IGNORECASE)

# --- claims to be human or a clinician --------------------------------------------------------------------------
_ROLE = (r"(?:human|a human|human being|a real person|real person|a person|licensed|certified|board[- ]certified|a "
         r"(?:licensed |certified |clinical )?(?:therapist|psychologist|psychiatrist|counsel(?:l)?or|psychotherapist|"
         r"doctor|physician|nurse|social worker|clinician|mental health professional)|an? (?:lmft|lcsw|lpc|mft|md))")
_HUMAN = re.compile(
    rf"\b(?:i am|i'm|im) (?:also |actually |really |just |only |a real )?{_ROLE}\b"
    r"|(?<!such )(?<!job )\bas an? (?:licensed |certified |practicing |clinical )?(?:therapist|psychologist|psychiatrist|"
    r"counsel(?:l)?or|psychotherapist|clinician|doctor|physician|lmft|lcsw|lpc|mft)(?: \w+){0,6},? (?:i|i'm|i've|we)\b"
    r"|\b(?:in my (?:practice|office|clinic|clinical (?:work|experience|practice))|my (?:clients|patients)|"
    r"i'?ve worked with (?:many )?(?:clients|patients)|i (?:work|have worked) with (?:many )?(?:clients|patients)|"
    r"(?:schedule|book) (?:a session|an appointment) with me|my (?:private )?practice)\b"
    r"|\bi(?:'m| am) not an? (?:ai|bot|chatbot|machine|computer program|language model)\b",
    re.IGNORECASE)

_MARKERS = re.compile(r"<\|im_(?:start|end)\|>|<\|endoftext\|>|<\|(?:system|user|assistant)\|>|\[/?INST\]|<</?SYS>>")


def degenerate(text: str) -> bool:
    """Empty, no words, a loop of the same words, or leaked chat-template markers."""
    t = text.strip()
    if sum(c.isalpha() for c in t) < 2:
        return True
    if _MARKERS.search(t):
        return True
    if re.search(r"([^\W\d_])\1{19,}", t):
        return True
    for m in re.finditer(r"(.{2,40}?)(?:\s*\1){5,}", t, re.DOTALL):
        if sum(c.isalpha() for c in m.group(1)) >= 2:
            return True
    words = t.lower().split()
    if len(words) >= 24:
        grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        if len(set(grams)) / len(grams) < 0.5:
            return True
    return False


STREAM_WINDOW = 400  # characters of streamed text checked per delta (keeps streaming linear in reply length)


class Guard:
    def __init__(self, region: str = "US"):
        self.region = region
        contacts = allowed_contacts()
        self.allowed_numbers = {_digits(m.group(0)) for c in contacts for m in _NUMBER.finditer(c)}
        self.allowed_hosts = {_host(m.group(0)) for c in contacts for m in _URL.finditer(c)}

    def _bad_numbers(self, text: str, final: bool) -> bool:
        spans = [m for m in _NUMBER.finditer(text) if len(_digits(m.group(0))) >= 7 and not _YEARS.match(m.group(0))]
        spans += [m for m in _CALL.finditer(text)]
        for m in spans:
            number = m.group(1) if m.re is _CALL else m.group(0)
            end = m.end(1) if m.re is _CALL else m.end()
            if not final and end >= len(text.rstrip()):  # still being typed in a stream
                continue
            if _digits(number) not in self.allowed_numbers:
                return True
        return False

    def _bad_links(self, text: str, final: bool) -> bool:
        for m in _URL.finditer(text):
            if not final and m.end() >= len(text.rstrip()):
                continue
            if _host(m.group(0)) not in self.allowed_hosts:
                return True
        return False

    @staticmethod
    def _medication_advice(text: str) -> bool:
        for sentence in re.split(r"(?<=[.!?;\n])\s+", text):
            if _MED.search(sentence) and _ADVICE.search(sentence) and not _PRESCRIBER.search(sentence):
                return True
        return False

    @staticmethod
    def _diagnosis(text: str) -> bool:
        """A diagnosis stated, not one negated or put as a question ("that doesn't mean you have ...", "if you
        think you may have ..., see a doctor")."""
        for m in _DIAGNOSIS.finditer(text):
            before = text[max(0, m.start() - 40):m.start()].lower()
            if not re.search(r"\b(not|no|if|whether|unless|wonder)\b|n't\b", before):
                return True
        return False

    def violations(self, text: str, final: bool = True) -> list[str]:
        """Reason codes; `final=False` checks streamed partial text (no degenerate check; numbers and links at the
        very end may still be being typed)."""
        found = []
        if not final:  # streamed: earlier text was checked when it was the tail; final replies are checked whole
            text = text[-STREAM_WINDOW:]
        if self._bad_numbers(text, final):
            found.append("phone_number")
        if self._bad_links(text, final):
            found.append("link")
        if _DOSE.search(text) or (_MED.search(text) and _ML_DOSE.search(text)):
            found.append("medication_dose")
        if self._medication_advice(text):
            found.append("medication_advice")
        if self._diagnosis(text):
            found.append("diagnosis")
        if _HUMAN.search(text):
            found.append("claims_human_or_clinician")
        if final and degenerate(text):
            found.append("degenerate")
        return found

    def safe_reply(self, request=None) -> str:
        return ("I want to make sure I respond to you well, and I don't have a good answer right now. "
                "What you're going through matters. If it would help to talk to someone, a licensed counselor or "
                "someone you trust can be a real support, and if you ever feel unsafe, these are there any time:\n"
                + resources_text(self.region))
