"""The crisis screen: runs on every incoming message before the model.

Two layers, both cheap and explainable:
1. normalization (accents, zalgo, control characters, leetspeak, repeated letters, slang and common typos);
2. context that makes a match not a crisis (hyperbole, programming, games, accidents, recovered past
   experiences; since round 6 also hedged negations, other people's words reported, idioms of dying, a light tone
   with nothing serious in it, anger told as a joke, someone else's past overdose, medicines taken as prescribed,
   safety and first-aid questions), removed or noted before
3. the rule tables in `bot.safety.rules` (first-person phrasing per category, several languages).

Behind the rules, a learned layer (`bot.safety.classifier`: logistic regression over sentence embeddings, from
multilingual-e5-small since round 5, and word features, weights in classifier.json) adds recall for implicit
phrasing; `bot.safety.embed` holds the encoders and the switch (and the older nearest-example layer, kept for comparison in benchmarks/safety.py). The labelled set is benchmarks/safety_set.jsonl.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from bot.safety.rules import COMPILED, ORDER

CATEGORIES = ("suicide", "self_harm", "harm_to_others", "abuse", "medical_emergency")


@dataclass(frozen=True)
class Screening:
    crisis: bool
    category: str | None = None
    rule: str | None = None  # which rule matched, e.g. "suicide:kill_myself" (never message text)

    def as_json(self) -> dict:
        return {"crisis": self.crisis, "category": self.category, "rule": self.rule}


# --- normalization -------------------------------------------------------------------------------------------
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_MIXED = re.compile(r"\b(?=[a-z0-9@$]*[a-z])(?=[a-z0-9@$]*[0-9@$])[a-z0-9@$]+\b")

# Slang, contractions without apostrophes and common typos -> the words the rules are written in.
_WORDS = {
    "wanna": "want to", "gonna": "going to", "gotta": "got to", "im": "i'm", "ive": "i've", "ill": "i'll",
    "dont": "don't", "dnt": "don't", "cant": "can't", "wont": "won't", "didnt": "didn't", "isnt": "isn't",
    "doesnt": "doesn't", "wasnt": "wasn't", "whats": "what's", "theres": "there's", "id": "i'd", "u": "you",
    "ur": "your", "cuz": "because", "bc": "because", "tn": "tonight", "tonite": "tonight", "2nite": "tonight",
    "rn": "right now", "bf": "boyfriend", "gf": "girlfriend", "wnat": "want", "wnt": "want", "wamt": "want",
    "wan": "want", "liv": "live", "lfie": "life", "lief": "life", "agian": "again", "kil": "kill",
    "myslef": "myself", "myslf": "myself", "mysef": "myself", "mself": "myself", "myelf": "myself",
    "slef": "self", "cuting": "cutting", "sucide": "suicide", "suicde": "suicide", "sucicide": "suicide",
    "suiside": "suicide", "suicid": "suicide", "sucidal": "suicidal", "suicdal": "suicidal", "suisidal": "suicidal",
    "suicidle": "suicidal", "sucidial": "suicidal", "kms": "kill myself", "kmys": "kill myself",
    "unaliving": "unalive", "unalived": "unalive", "od'd": "overdosed", "oded": "overdosed", "od'ed": "overdosed",
    "overdoesd": "overdosed", "overdozed": "overdosed", "pils": "pills", "selfharm": "self harm",
    "suicidel": "suicidal", "sucidel": "suicidal", "bout": "about", "abt": "about", "tho": "though",
    "2 die": "to die", "2 live": "to live", "2 kill": "to kill", "2 be": "to be",
    "2 many": "too many", "2 much": "too much",
}
_WORD_RE = re.compile(r"(?<![\w'])(" + "|".join(re.escape(w) for w in sorted(_WORDS, key=len, reverse=True))
                      + r")(?![\w'])")


_ING_STEMS = {"think", "kill", "cutt", "end", "try", "plann", "hurt", "burn", "sav", "die", "dy", "jump", "start",
              "want", "go", "hat", "feel", "bleed", "starv", "unaliv", "slitt", "carv", "hang"}


def _g_drop(m: re.Match) -> str:
    stem = m.group(1)
    return stem + "ing" if stem in _ING_STEMS else m.group(0)


def normalize(text: str) -> str:
    """Lower-case; strip accents, zalgo and control characters; fold leetspeak inside words, letters repeated 3+
    times, slang and common typos; collapse white space."""
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c) and (c.isprintable() or c in "\n\t"))
    t = t.lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    t = re.sub(r"(.)\1{2,}", r"\1\1", t)
    t = _MIXED.sub(lambda m: m.group(0).translate(_LEET), t)
    t = re.sub(r"\b(\w{3,}?)in'?(?=\s|$|[.,!?])", _g_drop, t)  # thinkin' -> thinking, killin -> killing
    t = re.sub(r"\b(die|dead|kill|cut)(e|ee|d)?\b", lambda m: m.group(1) if m.group(2) in ("e", "ee") else m.group(0), t)
    t = _WORD_RE.sub(lambda m: _WORDS[m.group(1)], t)
    return re.sub(r"\s+", " ", t).strip()


# --- context that is not a crisis ----------------------------------------------------------------------------
# Spans removed before the rules run: figures of speech and technical uses of violent words.
_NOT_CRISIS = [re.compile(p) for p in (
    r"\b(\w+ ){0,3}(is|are|was|were|'s|'re) (literally |totally |just |really |so )?killing me\b",
    r"\bkill me now\b", r"\b(killed|killing|kill) it\b", r"\bkill (some |the )?time\b", r"\bi('d| would) kill for\b",
    r"\bi could (die|kill|murder)\b", r"\b(i'd|i would) rather die than\b", r"\bdying (to|of (laughter|boredom|"
    r"hunger|embarrassment|cringe))\b", r"\b(dead|died) (tired|of (laughter|embarrassment))\b",
    r"\bcan't breathe (when|from|because|with|i'm) (i )?laugh\w*\b|\blaugh\w* (so hard )?(that )?i can't breathe\b",
    r"\b(kill|killing|killed|kills|terminate|end|ending) (-\d+ |all )?(the |a |this |my |its |all |every )?(\w+ )?"
    r"(process(es)?|task|tasks|thread|threads|job|jobs|program|script|server|container|pod|session|pid|app|query|"
    r"loop|signal|command|bug|tab|browser)\b",
    r"\bkill -\d+\b", r"\boom killer\b", r"\bkill ?switch\b", r"\bchild process\w*\b",
    r"\btake my life back\b", r"\bcut (all )?(ties|contact|off contact|back|down)\b",  r"\b(die|dying|died) of (embarrassment|shame|cringe|boredom|laughter|laughing)\b",
    r"\bdie (my |her |his |the )?(hair|shirt|clothes|eggs|fabric)\b",
    # negated: "I don't want to die, I'm not suicidal", "I don't want to hurt him"
    r"\b(don't|do not|never|wouldn't|would never|not|no longer) (really |actually )?(want|wanna|going|plan|planning|mean|"
    r"meant) to (die|hurt|kill|harm|drown|cut)( (myself|him|her|them|anyone|my \w+))?\b",
    r"\b(i'm|i am|i was) not (really |actually )?suicidal\b",
    # round 6: hedged negations ("not like wanting to die", "it's not that I want to die", "I'm not thinking of ending
    # my life, I'm thinking of ending my lease")
    r"\b(not|never|isn't|it's not|doesn't mean|don't mean|not that|not because) (like |that |in a |as in |as if |because )?"
    r"(i |i'm |i am )?(want|wanting|wanted|thinking (of|about)|planning( on| to)?|going to) (to )?(die|kill myself|end(ing)? "
    r"(it|it all|my life)|be dead)\b",
    # round 6: someone else's words reported ("my friend keeps joking about wanting to die", "my son said 'I want to
    # die' when he lost the game"): the rules speak of the writer
    r"\b(he|she|they|my (\w+ ){0,2}\w+|(a |my )?friends?|someone|somebody|people|kids|teens|students?|clients?|"
    r"patients?) (\w+ ){0,3}(said|says|say|tell|tells|told|keeps saying|keep saying|jok\w*|talk\w*|post\w*|text\w*|"
    r"mention\w*|wrote|writes|memes?)\b[^.!?]{0,20}?\b(wanting|wants|want|wanted|going) to (die|kill myself|be dead|"
    r"end it( all)?|not exist)\b",
    # round 6: idioms of dying and fear of dying, not a wish ("I'm going to die on this hill", "so hungry I could die",
    # "I'm gonna die if I don't get tickets", "I feel like I'm going to die" in a panic attack)
    r"\b(going to|will|i'll|gonna) (literally )?die on (this|that) hill\b",
    r"\b(going to|will|'ll) (literally |actually )?die (if i (don't|can't|do not|cannot) (get|see|have|eat|sleep|find|go)"
    r"\b(?! (some )?help)|without (my )?(coffee|food|snacks|wifi|phone|sleep|tickets))",
    r"\bso (hungry|full|hot|cold|thirsty|sleepy|bored|excited|nervous|stuffed|hangry) (that )?(i('m| am) )?(going to|could|"
    r"might|will|'ll) (literally )?die\b",
    r"\b(feel|felt|feels|feeling) like i('m| am| was) (going to|about to|gonna) die\b",
    # round 6: someone else's overdose or death told as a past event ("my cousin overdosed and passed last year")
    r"\b(he|she|they|my (\w+ ){0,2}\w+) (\w+ )?(overdosed|died|passed)\b[^.!?]{0,60}\b(last (year|month|summer|winter|"
    r"spring|fall|autumn|christmas)|(years?|months?) ago|anniversary|funeral|passed away|and (died|passed))\b",
    # round 6: "overdosed on" things that are not drugs ("overdosed on cold brew", "OD'd on netflix")
    r"\boverdos\w* on (\w+ ){0,2}(chocolate|candy|sugar|caffeine|coffee|cold brew|espresso|energy drinks?|red ?bull|"
    r"monster|tea|matcha|boba|netflix|tv|anime|k-?dramas?|tiktok|youtube|memes|sweets|cake|cookies|carbs|pizza|junk "
    r"food|cheese|nostalgia|cuteness|serotonin|dopamine|sunshine|christmas|podcasts|true crime|music|cardio|gym|"
    r"sunlight|reality tv|marvel|sleep|naps?)\b",
    # round 6: medicines taken as prescribed ("took all my morning meds on time for a whole week")
    r"\b(took|taken|take|taking) (all )?(of )?my (\w+ )?(meds|medication|medicine|pills|tablets)\b(?=[^.!?]{0,20}\b(on "
    r"time|as prescribed|like (i'm|i am|i was) (supposed|told) to|on schedule|every (day|morning|night)|for a (whole )?"
    r"(week|month)|without missing|streak)\b)",
    # round 6: a first-aid question about someone hypothetical ("how do I tell if someone is having a stroke")
    r"\b((if|when|for) (someone|somebody|a person|people|a child|anyone|a friend) (who )?|how (do|should|can|would) "
    r"(i|you|we|one) (help|treat|assist|look after) (someone|somebody|a person|a child|anyone) who )(is|are|has|have|'s|gets?) "
    r"(\w+ ){0,2}(bleeding|having a (stroke|seizure|heart attack)|not breathing|choking|overdosing|unconscious|"
    r"unresponsive)\b",
    r"\b(afraid|scared|worried|fear)\b( that)?.{0,20}\b(i will|i'll|i might|i would|i could) hurt\b", r"\bthought i was going to die\b",
    r"\b(would|will|i'd|i'll) never (\w+ )?(hurt|harm|kill|cut) (myself|anyone|him|her|them)\b",
    r"\b(not|never|no|don't have any|don't have|without any) (thinking|thought|thoughts) (about|of) (hurting|harming|killing) "
    r"(myself|anyone|him|her|them)( or (anyone|myself|anybody))?\b",
    r"\b(kill|murder|strangle) (him|her|them|my \w+) (for|if) [^.!?]{0,50}(\blol\b|\bhaha+\b|\blmao\b|😂|🤣)",
    # everyday uses of the rules' words
    r"\bi could (strangle|throttle|choke) (him|her|them|my \w+)\b", r"\bjump off a (bridge|cliff) for\b",
    r"\b(bungee|base|cliff|ski|sky|trampoline|pier|dock)[ -]?jump\w*\b", r"\bend (it|things) with (him|her|them|my \w+)\b",
    # round 6: jumping for fun ("went bridge jumping with friends", "jump off the rocks into the lake this summer")
    r"\b(went|go|goes|going|love|loved|tried|did|do) (\w+ )?(bridge|rock|cliff|pier|dock)[ -]?jump\w*\b",
    r"\bjump\w* (off|from) (the |a )?(\w+ )?(rocks?|pier|dock|boat|bridge|cliff|ledge)\b (\w+ ){0,2}into the (lake|water|"
    r"river|sea|ocean|pool|quarry|waves)\b(?=[^.!?]{0,60}\b(summer|friends|fun|swim\w*|vacation|holiday|trip|camp\w*|"
    r"weekend)\b)", r"\bjump\w* (off|from) (the |a )?(diving board|rope swing|high dive)\b",
    r"\brope for (the |my |a )?(tent|clothes ?line|climbing|boat|camping|garden|swing|hammock|dog)\b",
    r"\b(phone|battery|laptop)\b.{0,30}\bgoodbye (world|everyone)\b",
    r"\b(character|novel|story|book|film|movie|show|episode|scene|play)\b.{0,40}\bsuicide (note|letter)s?\b",
    r"\b(hit|hits|hitting) me with (a|the|her|his|their) (pillow|snowball|ball|water balloon|cushion|sock|toy \w+|nerf \w+|foam \w+)s?\b",
    r"\b(beat|beats|beating) (me|us) (at|in) (golf|chess|cards|poker|tennis|pool|darts|scrabble|monopoly|the race|a race|"
    r"mario kart|fifa|every game|the game|ping pong|arm wrestling|trivia|wordle|video games|basketball|football|soccer)\b",
    r"\bcan't breathe (through|out of) my nose\b",
    r"\b(my|last) (message|post)s? (before|until) (i|we) (go|head|leave|log)\b",
    # quoted lyrics or lines discussed as such, a slang word asked about, a petty grievance, a bored "if I have to ..."
    r"['\"][^'\"]{3,120}['\"](?=[^.?!]{0,80}\b(song|lyrics?|version|cover|album|band|line from|quote)\b)",
    r"\bwhat (does|do|is) ['\"]?(kill myself|kys|ctb|unalive|sewer slide)['\"]? (mean|stand for)\b",
    r"\b(ctb|kys|sewer slide|unalive)\b['\"]? (\w+ ){0,5}(means?|meant|stands? for|stood for|is short for)\b",
    # round 6: "kms" as a curse at a thing ("kms this bug has been haunting me for 6 hours")
    r"\bkill myself\b(?= ?[,!.:]? ?(this|these|that|those) (\w+ ){0,2}(bugs?|code|build|compiler|homework|exams?|tests?|"
    r"quiz|meetings?|lectures?|class|assignments?|essays?|paper|traffic|printer|wifi|commute|deadlines?|spreadsheets?|"
    r"games?|levels?|songs?|projects?|queue|weather|heat|group chat|emails?|updates?)\b)",
    r"\b(going to |gonna |i'll |i will |i'm going to )(kill|murder|strangle|throttle) (him|her|them|my \w+)\b(?=[^.!?]"
    r"{0,60}\b(leftovers|snacks?|fries|pizza|cake|chocolate|charger|spoil\w*|ate my|drank my|finished my)\b)",
    r"\bif i have to (\w+ ){0,6}(one more|another)\b[^.!?]{0,60}\b(i'm going to|i'll|i will|going to) (kill myself|walk "
    r"into the (sea|ocean|lake)|jump off \w+ \w+)\b",
    r"\b(why do people|people|they|you) (say|use|write|type) ['\"]?(sewer slide|ctb|unalive|kill myself)\b",
    r"\bintrusive thoughts? (about|of) (pushing|hurting|stabbing|harming) (someone|people|others|strangers|my \w+)\b[^.!?]*",
    r"\bnot (actually |really )?(jumping|going to jump) off\b",
    r"\bgiving (away )?(all )?my (stuff|things|belongings|clothes)( away)?\b(?=.{0,60}\b(mov\w*|declutter\w*|downsiz\w*|"
    r"donat\w*|charity|garage sale|minimalis\w*)\b)",
    r"\bwon't be (here|around)\b.{0,25}\b(i'm|we're|because|as|since) (moving|transferring|travell?ing|going (to|away)|"
    r"away|on holiday|at)\b",
)]
# Round 6: a safety question about a child, a pet or people in general ("can kids overdose on melatonin?"), when
# nothing has been swallowed.
_DOSE_QUESTION = re.compile(
    r"\b(can|could|is it possible for|how easily can) (kids|children|a child|a kid|babies|a baby|toddlers?|dogs?|cats?|"
    r"a dog|a cat|pets?|people|someone|my (kid|son|daughter|dog|cat|baby|toddler|child|puppy|kitten)) (\w+ ){0,2}"
    r"overdose on\b")
_INGESTED = re.compile(r"\b(took|taken|swallowed|ate|eaten|drank|drunk|got into|chewed|downed|gave (him|her|them|it))\b")
# Someone else's suicidal thoughts asked about in a professional or caring role.
_CARER = re.compile(r"\b(client|clients|patient|patients|student|students|someone|a friend|my friend|people|a person|"
                    r"teens?|kids|children)\b.{0,40}\bsuicidal\b|\bsuicidal\b.{0,40}\b(client|patient|student)s?\b")
# "going to kill me if ..." is a figure of speech unless fear or a threat is spoken of.
_HYPERBOLE_ME = re.compile(r"\b(going to|will|'ll|gonna|'d|would) (literally |actually |totally |so )?(kill|murder|strangle|"
                           r"throttle) me (if|for|when|because)\b(?! (i|i'm|i've) (ever )?(tell|told|leave|left|call|"
                           r"report|go to|talk to|try to leave|say anything|speak|don't (do what|give|pay)))")
_FEAR = re.compile(r"\b(afraid|scared|terrified|fear|threat\w*|hurts? me|hits? me|beats? me)\b")
_GAME = re.compile(r"\b(game|games|gaming|boss|respawn\w*|cod|fortnite|minecraft|elden ring|valorant|grenade|level|"
                   r"lobby|pvp|npc|my character|raid|headshot|noob|ranked|warzone|apex|halo|skyrim|dlc|multiplayer)\b")
_GAMING = re.compile(r"\b(gaming|respawn\w*|fortnite|minecraft|valorant|lobby|pvp|ranked|warzone|apex|multiplayer|"
                     r"teammates?|lag|lagging|controller|twitch|stream(ing)?|discord)\b")  # no "boss", "level" here
_GAME_PAST = re.compile(r"\b(killed|kill|killing) (myself|him|her|them|everyone)\b|\b(died|dying|bled out)\b")
_ACCIDENT = re.compile(r"\b(on the (stove|oven|iron|pan|grill|kettle)|by accident|accidentally|while (cooking|shaving|"
                       r"working out|running|playing|lifting)|at the gym|pulled a muscle|sprained|tripped|fell off)\b")
_ON_PURPOSE = re.compile(r"\bon purpose\b|\bto feel\b|\bdeserve\b")
# Something that was and is over: a past experience told from safety.
_RECOVERED = re.compile(r"\b(used to|years ago|back when|back in ((19|20)\d\d|college|school|high school|the day)|sober (for )?"
                        r"\w+ (years?|months?)|\w+ (years?|months?) sober|in high school|when i was "
                        r"(younger|a kid|a teen|a teenager|little|\d+)|when we were (kids|little|young|children|teens)|as a (child|kid|teen|teenager)|growing up|clean for|been clean|recovered|in recovery|survived|i'm (doing )?"
                        r"(well|better|okay|ok|safe) now|i'm safe now|therapy (really )?helped|i left (him|her|them)?)\b")
# A hard past told as hope or a milestone: "Two years ago today I tried to end my life. Today I'm at my kid's graduation."
_HOPE = re.compile(r"\b(celebrat\w*|proud|(some )?hope|genuinely happy|graduation|first (real )?job|job offer|"
                   r"(years?|months?|days?) (without|free of|clean from) (hurting|harming|cutting|self harm|sh)\b|wanted to "
                   r"(share|say (that|it) out loud|tell someone))")
_FRESH = re.compile(r"\b(again|tonight|right now|back|relapse\w*|urges?|lately|these days)\b")
_PANIC = re.compile(r"\b(panic|anxiety|anxious|laugh\w*|crying so hard|funn(y|iest)|hilarious|lmf?ao|rofl|haha\w*|memes?)\b|😂|🤣|💀")
# Round 6: a light tone ("lol", "😭", "so embarrassing") with nothing serious in the message: a mild death wish there is
# a figure of speech ("laughed so hard I peed, now I want to die 😭"); the learned layer still reads the message.
_LEVITY = re.compile(r"\b(lol|lmf?ao|haha\w*|jk|embarrass\w*|cringe\w*|mortif\w*)\b|😂|🤣|😭|💀|🙃|😅|\bin front of (my "
                     r"crush|everyone|everybody|the (whole )?(class|team|office|school))\b")
_SERIOUS = re.compile(r"\b(tonight|pills|overdos\w*|rope|noose|gun|bridge|roof|plan\w*|(suicide|goodbye) note|left a "
                      r"note|goodbye|suicid\w*|end it|"
                      r"end my life|kill myself|anymore|any more|can't (do|take|go on|keep)|hopeless|worthless|burden|no "
                      r"one|nobody|alone|for real|not (joking|kidding)|i mean it|seriously|every (day|night)|always|"
                      r"honestly|really do|cut\w*|self harm|hurt myself|knife|blade)\b")
_MILD_WISH = re.compile(r"\b(i )?(now |just |literally |actually |kinda |lowkey )?(want to|going to|could|might|('m|am) going "
                        r"to) (literally |actually )?(die|disappear( forever| for good| permanently)?|not exist)\b|\b(makes?|"
                        r"made|making) me want to (die|disappear)\b|\bend me\b")
# Round 6: anger at someone told as a joke ("bro I'm gonna strangle my group partner 😤", "gonna hurt someone if the
# wifi drops during ranked again") unless a weapon, a plan or earnestness is there.
_PLAYFUL = re.compile(r"\b(lol|lmf?ao|haha\w*|jk|smh|bro|ugh)\b|😤|🙄|😂|🤣|💀|😭")
_EARNEST = re.compile(r"\b(gun|knife|weapon|bat|ammo|rifle|plan\w*|for real|not (joking|kidding)|i mean it|seriously|tonight|"
                      r"tomorrow|when (he|she|they) (gets?|comes?) home|after school|waiting|list|schedule|not (the |in a )?(funny|joking)"
                      r" way|not a joke)\b")
_ANGRY_AT = re.compile(r"\b(going to|i'll|i will|i'm going to|about to|i swear i'll|want to) (literally |actually |lowkey )?"
                       r"(kill|murder|strangle|throttle|hurt|fight|punch|slap|choke|break) (someone|somebody|him|her|them|"
                       r"everyone|my (\w+ ){0,2}\w+|(his|her|their) (legs?|arms?|jaw|face|nose|neck))\b")
_NOW = re.compile(r"\b(again|right now|tonight|today|now i want|lately|currently|these days|this week)\b")


def _context(t: str) -> tuple[str, set[str]]:
    """The text with not-a-crisis spans removed, and the categories this context rules out."""
    for rx in _NOT_CRISIS:
        t = rx.sub(" ", t)
    if not _FEAR.search(t):
        t = _HYPERBOLE_ME.sub(" ", t)
    if _GAME.search(t):
        t = _GAME_PAST.sub(" ", t)
    if not _INGESTED.search(t):
        t = _DOSE_QUESTION.sub(" ", t)
    if _LEVITY.search(t) and not _SERIOUS.search(t):
        t = _MILD_WISH.sub(" ", t)
    if (_PLAYFUL.search(t) or _GAMING.search(t)) and not _EARNEST.search(t):
        t = _ANGRY_AT.sub(" ", t)
    ruled_out: set[str] = set()
    if _ACCIDENT.search(t) and not _ON_PURPOSE.search(t):
        ruled_out.add("self_harm")
    if _CARER.search(t) and not re.search(r"\b(i'm|i am|i feel|feeling) suicidal\b", t):
        t = re.sub(r"\bsuicidal\b", " ", t)
    if _PANIC.search(t):
        t = re.sub(r"\b(can't|cannot) breathe\b", " ", t)
    if re.search(r"\b(when we were playing|play fight\w*|roughhous\w*|kids are rough|sibling fight)", t):
        ruled_out.add("abuse")
    if (_RECOVERED.search(t) or re.search(r"\b(years?|months?) ago\b", t)) and _HOPE.search(t) and not _FRESH.search(t):
        ruled_out.update(CATEGORIES)
    if _HOPE.search(t) and re.search(r"\b\w+ (years?|months?|days?) (without|free of) (hurting|harming|cutting) myself\b", t):
        ruled_out.update(CATEGORIES)
    if _RECOVERED.search(t) and not _NOW.search(t):
        ruled_out.update(CATEGORIES)
    return t, ruled_out


SCREEN_CHARS = 64_000  # screened whole up to this (Slack allows 40,000 characters; the model sees fewer)


def screen_rules(text: str) -> Screening:
    t = normalize(text[:SCREEN_CHARS])
    if not t:
        return Screening(False)
    cleaned, ruled_out = _context(t)
    for category in ORDER:
        if category in ruled_out:
            continue
        for name, rx in COMPILED[category]:
            if rx.search(cleaned):
                return Screening(True, category, f"{category}:{name}")
    return Screening(False)


def screen(text: str) -> Screening:
    """The crisis screen for one message: the rules, then (where enabled) the learned layer over sentence
    embeddings (`bot.safety.classifier`), which sees what no rule was written for."""
    result = screen_rules(text)
    if result.crisis:
        return result
    from bot.safety import classifier, embed  # noqa: PLC0415 (the layer loads lazily, once)

    return classifier.screen(text) if embed.ENABLED else result


# --- careful mode -------------------------------------------------------------------------------------------
_RETRACTION = re.compile(
    r"\b(never ?mind|nvm|forget (it|i said|what i said|about it)|you misunderstood|misunderstood me|you got it wrong|"
    r"(just|only) (kidding|joking)|i was (kidding|joking)|it was a joke|didn't mean (it|that)|not serious|wasn't "
    r"serious|jk|lol jk|calm down|relax|overreact\w*|i'm (fine|ok|okay|good|alright) (now|really|honestly|lol)|"
    r"i'm not (going to|actually) (do|doing) (it|anything)|ignore (that|what i said|my last message))\b")
_SHORT_FINE = re.compile(r"^(i'm |i am |i'm actually |honestly )?(fine|ok|okay|good|alright)[.! ]*$")


def is_retraction(text: str) -> bool:
    """'Never mind / you misunderstood' after a crisis: it gets a gentle check-in, not a silent reset."""
    t = normalize(text)
    return bool(_RETRACTION.search(t) or _SHORT_FINE.match(t))


def check_in_reply(region: str = "US") -> str:
    from bot import texts  # noqa: PLC0415 (texts imports the resources, which import nothing of ours)

    return texts.check_in(region)
