"""Counseling Q&A data: load, clean, deduplicate and split by question.

Sources (all real):
- a hub data set id such as `Amod/mental_health_counseling_conversations` (columns Context/Response), via
  `datasets.load_dataset`;
- a counsel-chat CSV (questionID, questionTitle, questionText, answerText, optional split);
- a CSV or JSONL file with Context/Response columns (question_id = hash of the cleaned context).

Bad rows (empty or very short answers, HTML-only answers, duplicates, malformed lines) are counted in a
`DataReport` with their row numbers, never silently dropped and never a crash. Splitting is always by question:
several therapists often answer the same question, and a row split would leak questions into the eval set.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import logging
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MIN_ANSWER_CHARS = 30  # "Certainly." is not a counseling answer
EVAL_SPLITS = ("val", "validation", "eval", "test")
_EXAMPLES_PER_REASON = 10


@dataclass(frozen=True)
class QA:
    question_id: str
    question: str  # title + text joined, cleaned
    answer: str  # cleaned


@dataclass
class DataReport:
    rows_read: int
    kept: int
    dropped: dict[str, int]  # reason -> count
    source: str = ""
    questions: int = 0  # distinct question ids kept
    dropped_rows: dict[str, list[int]] = field(default_factory=dict)  # reason -> first row numbers (1-based)

    def add_drop(self, reason: str, row: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        rows = self.dropped_rows.setdefault(reason, [])
        if len(rows) < _EXAMPLES_PER_REASON:
            rows.append(row)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        drops = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        return (f"{self.source}: read {self.rows_read} rows, kept {self.kept} answers to {self.questions} "
                f"questions; dropped: {drops}")


# --- cleaning (pure) ---------------------------------------------------------------------------------------------

_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][^<>]*>")
_BR = re.compile(r"<\s*(br|/p|p|/div|div|li)\b[^<>]*>", re.IGNORECASE)
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# "word.Next" / "so!Then" / 'line".Again' -> insert a space; a decimal ("2.5") never matches (uppercase needed).
_RUN_ON = re.compile(r"(?<=[a-z0-9)\]\"'”’%])([.!?]+[\"'”’)]?)(?=[A-Z])")
_NO_SPLIT_BEFORE = re.compile(r"(?:\bPh|\b[a-z]\.[a-z]|\bSt|\bMr|\bMrs|\bMs|\bDr)$")
_SPACES = re.compile(r"[ \t\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(\n\s*)+")


def _fix_run_on(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if _NO_SPLIT_BEFORE.search(text[max(0, m.start() - 4):m.start()]):
            return m.group(1)
        return m.group(1) + " "

    # URLs are left exactly as written: "example.com/Page" must not become "example. com/Page".
    out, last = [], 0
    for url in _URL.finditer(text):
        out.append(_RUN_ON.sub(repl, text[last:url.start()]))
        out.append(url.group(0))
        last = url.end()
    out.append(_RUN_ON.sub(repl, text[last:]))
    return "".join(out)


def clean_text(text: object) -> str:
    """Plain text: HTML tags and entities resolved, non-breaking and odd spaces normalized, run-on sentences
    separated, whitespace tidied. Non-strings (NaN, None) give ""."""
    if not isinstance(text, str):
        return ""
    t = _BR.sub("\n", text)
    t = _TAG.sub(" ", t)
    t = html.unescape(html.unescape(t))  # some scrapes are double-escaped (&amp;nbsp;)
    t = t.replace("\r\n", "\n").replace("\r", "\n")
    t = "".join(" " if (unicodedata.category(c) == "Zs" or c in "\u200b\ufeff") else c for c in t)
    t = _fix_run_on(t)
    t = "\n".join(_SPACES.sub(" ", line).strip() for line in t.split("\n"))
    t = _BLANK_LINES.sub("\n\n", t)
    return t.strip()


def join_question(title: object, text: object) -> str:
    title_c, text_c = clean_text(title), clean_text(text)
    if not title_c:
        return text_c
    if not text_c or text_c.lower().startswith(title_c.rstrip("?.! ").lower()):
        return text_c or title_c
    return f"{title_c}\n\n{text_c}"


def question_hash(question: str) -> str:
    norm = " ".join(question.lower().split())
    return hashlib.sha256(norm.encode()).hexdigest()[:16]


def _drop_reason(raw_answer: object, answer: str, question: str, min_answer_chars: int) -> str | None:
    if not question:
        return "empty question"
    if not isinstance(raw_answer, str) or not raw_answer.strip():
        return "empty answer"
    if not answer:
        return "html-only answer"
    if len(answer) < min_answer_chars:
        return "too short"
    return None


# --- reading (I/O) -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Raw:
    row: int  # 1-based data row number
    question_id: str | None
    title: object
    text: object
    answer: object
    split: str | None


def _is_hub_id(source: str) -> bool:
    return not Path(source).expanduser().exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None


def _records(source: str, report: DataReport) -> Iterator[dict | None]:
    if _is_hub_id(source):
        import datasets

        yield from datasets.load_dataset(source, split="train")
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data source not found: {source} (a CSV/JSONL file or a hub data set id)")
    if path.suffix.lower() in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    rec = None
                if not isinstance(rec, dict):
                    report.rows_read += 1
                    report.add_drop("malformed line", n)
                    yield None  # keeps row numbering; already counted as malformed
                    continue
                yield rec
        return
    with path.open(encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def _raw_rows(source: str, limit: int | None, report: DataReport) -> Iterator[_Raw]:
    n = 0
    for rec in _records(source, report):
        if limit is not None and n >= limit:
            return
        n += 1
        if rec is None:
            continue  # malformed, already counted
        report.rows_read += 1
        split = rec.get("split")
        split = str(split).strip().lower() if split not in (None, "") else None
        if "answerText" in rec or "questionText" in rec:  # counsel-chat format
            qid = rec.get("questionID")
            qid = str(qid).strip() if qid not in (None, "") else None
            yield _Raw(n, qid, rec.get("questionTitle"), rec.get("questionText"), rec.get("answerText"), split)
        elif "Context" in rec or "Response" in rec:
            yield _Raw(n, None, None, rec.get("Context"), rec.get("Response"), split)
        else:
            report.add_drop("unknown columns", n)


def _load(source: str, limit: int | None, min_answer_chars: int) -> tuple[list[tuple[QA, str | None]], DataReport]:
    report = DataReport(rows_read=0, kept=0, dropped={}, source=str(source))
    kept: list[tuple[QA, str | None]] = []
    seen: set[tuple[str, str]] = set()
    for raw in _raw_rows(source, limit, report):
        question = join_question(raw.title, raw.text)
        answer = clean_text(raw.answer)
        reason = _drop_reason(raw.answer, answer, question, min_answer_chars)
        if reason:
            report.add_drop(reason, raw.row)
            continue
        qid = raw.question_id or question_hash(question)
        key = (qid, " ".join(answer.lower().split()))
        if key in seen:
            report.add_drop("duplicate", raw.row)
            continue
        seen.add(key)
        kept.append((QA(qid, question, answer), raw.split))
    report.kept = len(kept)
    report.questions = len({qa.question_id for qa, _ in kept})
    for reason, n in sorted(report.dropped.items()):
        log.warning("%s: dropped %d rows (%s), e.g. rows %s", source, n, reason, report.dropped_rows.get(reason))
    return kept, report


def load_source(source: str, limit: int | None = None,
                min_answer_chars: int = MIN_ANSWER_CHARS) -> tuple[list[QA], DataReport]:
    """Read, clean and deduplicate every row of `source` (at most `limit` raw rows)."""
    kept, report = _load(source, limit, min_answer_chars)
    return [qa for qa, _ in kept], report


def split_by_question(rows: list[QA], eval_fraction: float = 0.1, seed: int = 0) -> tuple[list[QA], list[QA]]:
    """(train, eval), with every answer to a question on the same side. Deterministic for a seed; keeps order."""
    qids = sorted({r.question_id for r in rows})
    random.Random(seed).shuffle(qids)
    n_eval = round(len(qids) * eval_fraction)
    if eval_fraction > 0 and len(qids) >= 2:
        n_eval = min(max(n_eval, 1), len(qids) - 1)
    eval_ids = set(qids[:n_eval])
    return [r for r in rows if r.question_id not in eval_ids], [r for r in rows if r.question_id in eval_ids]


def _has_split_column(labels: Iterable[str | None]) -> bool:
    labels = list(labels)
    return bool(labels) and all(lab is not None for lab in labels)


def load_split(source: str, split: str, eval_fraction: float = 0.1, seed: int = 0,
               limit: int | None = None) -> list[QA]:
    """The "train" or "eval" rows of `source`: by the file's own `split` column when every row has one
    (counsel_chat.csv: train/val, "eval" = val), otherwise `split_by_question`."""
    rows, _ = load_split_with_report(source, split, eval_fraction, seed, limit)
    return rows


def load_split_with_report(source: str, split: str, eval_fraction: float = 0.1, seed: int = 0,
                           limit: int | None = None) -> tuple[list[QA], DataReport]:
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    kept, report = _load(source, limit, MIN_ANSWER_CHARS)
    if _has_split_column(lab for _, lab in kept):
        if split == "train":
            return [qa for qa, lab in kept if lab == "train"], report
        return [qa for qa, lab in kept if lab in EVAL_SPLITS], report
    train, ev = split_by_question([qa for qa, _ in kept], eval_fraction, seed)
    return (train if split == "train" else ev), report


def split_counts(train: list[QA], ev: list[QA]) -> dict:
    return {"train_answers": len(train), "train_questions": len({r.question_id for r in train}),
            "eval_answers": len(ev), "eval_questions": len({r.question_id for r in ev}),
            "answers_per_question": dict(Counter(Counter(r.question_id for r in train + ev).values()))}
