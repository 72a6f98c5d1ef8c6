"""Data loading, cleaning, deduplication and the by-question split, on the real counsel-chat rows."""

from __future__ import annotations

import csv
import json
import re

import pytest

from tests.conftest import DATA_CSV
from training.data import (
    QA,
    clean_text,
    load_source,
    load_split,
    load_split_with_report,
    question_hash,
    split_by_question,
)

RUN_ON = re.compile(r"[a-z][.!?][A-Z]")
URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)


@pytest.fixture(scope="module")
def raw_rows() -> list[dict]:
    with DATA_CSV.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def loaded():
    return load_source(str(DATA_CSV))


# --- cleaning ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, clean", [
    ("to hang out with.Seriously, the social", "to hang out with. Seriously, the social"),
    ("media. \xa0Maybe read some", "media. Maybe read some"),
    ("<p>I hear you.</p><p>It&#39;s hard &amp; lonely.</p>", "I hear you.\n\nIt's hard & lonely."),
    ("Feel better?Then rest!Good", "Feel better? Then rest! Good"),
    ('the "hotline".Again, call', 'the "hotline". Again, call'),
    ("It costs 2.50 dollars.", "It costs 2.50 dollars."),
    ("see www.LivingYes.org or https://example.com/Breathing/Page.Html today", 
     "see www.LivingYes.org or https://example.com/Breathing/Page.Html today"),
    ("Jane Doe, Ph.D, LMFT", "Jane Doe, Ph.D, LMFT"),
    ("  many   spaces\n\n\n\nand lines  ", "many spaces\n\nand lines"),
    (float("nan"), ""),
    (None, ""),
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_real_answers_are_clean(loaded, raw_rows):
    rows, _ = loaded
    raw_answers = [r["answerText"] for r in raw_rows]
    # the raw file really has the problems the cleaner is for
    assert sum("\xa0" in a for a in raw_answers) > 1000
    assert sum(bool(RUN_ON.search(a)) for a in raw_answers) > 900
    for qa in rows:
        assert "\xa0" not in qa.answer and "\xa0" not in qa.question
        assert not RUN_ON.search(URL.sub("", qa.answer).replace("Ph.D", "")), qa.question_id
        assert qa.answer == qa.answer.strip() and "  " not in qa.answer


# --- loading and the report --------------------------------------------------------------------------------------

def test_report_accounts_for_every_real_row(loaded, raw_rows):
    rows, report = loaded
    assert report.rows_read == len(raw_rows) == 2012
    assert report.kept == len(rows)
    assert report.kept + sum(report.dropped.values()) == report.rows_read
    # "Certainly." (10 characters) is the one answer too short to teach anything
    assert report.dropped == {"too short": 1}
    short_row = report.dropped_rows["too short"][0]
    assert raw_rows[short_row - 1]["answerText"].strip() == "Certainly."
    assert report.questions == len({r["questionID"] for r in raw_rows}) == 776
    first = rows[0]
    assert first.question.startswith("Can I change my feeling of being worthless to everyone?\n\n")
    assert "I barely sleep" in first.question
    assert first.question_id == raw_rows[0]["questionID"]


def test_limit_reads_only_that_many_rows():
    rows, report = load_source(str(DATA_CSV), limit=25)
    assert report.rows_read == 25 and len(rows) + sum(report.dropped.values()) == 25


def test_context_response_files_count_bad_rows(tmp_path, raw_rows):
    """CSV and JSONL with Context/Response (the hub data set's columns): every bad row is counted, none crash."""
    real = raw_rows[:6]
    records = [{"Context": r["questionText"], "Response": r["answerText"]} for r in real]
    records += [
        {"Context": real[0]["questionText"], "Response": real[0]["answerText"]},  # exact duplicate
        {"Context": real[1]["questionText"], "Response": "  "},  # empty answer
        {"Context": real[2]["questionText"], "Response": "<p>&nbsp;</p>"},  # HTML only
        {"Context": real[3]["questionText"], "Response": "Certainly."},  # too short
        {"Context": "", "Response": real[4]["answerText"]},  # no question
        {"Prompt": "x", "Answer": "y"},  # unknown columns
    ]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n")
    csv_path = tmp_path / "pairs.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["Context", "Response"])
        w.writeheader()
        w.writerows(records[:-1])

    rows, report = load_source(str(jsonl))
    expected = {"duplicate": 1, "empty answer": 1, "html-only answer": 1, "too short": 1, "empty question": 1,
                "unknown columns": 1, "malformed line": 1}
    assert report.dropped == expected
    assert report.rows_read == len(records) + 1
    distinct = {(r["questionText"], r["answerText"]) for r in real}
    assert len(rows) == report.kept == len(distinct)
    # question_id is a hash of the cleaned context: several answers to one question share it
    assert rows[0].question_id == question_hash(clean_text(real[0]["questionText"]))
    assert len({qa.question_id for qa in rows}) == len({r["questionText"] for r in real})

    csv_rows, csv_report = load_source(str(csv_path))
    assert csv_rows == rows
    assert csv_report.dropped == {k: v for k, v in expected.items() if k not in ("unknown columns", "malformed line")}


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_source(str(tmp_path / "nope.csv"))


# --- the split ---------------------------------------------------------------------------------------------------

def test_file_split_column_keeps_questions_apart(raw_rows):
    train = load_split(str(DATA_CSV), "train")
    ev, report = load_split_with_report(str(DATA_CSV), "eval")
    train_ids, eval_ids = {r.question_id for r in train}, {r.question_id for r in ev}
    assert not train_ids & eval_ids
    assert eval_ids == {r["questionID"] for r in raw_rows if r["split"] == "val"}
    assert len(train) + len(ev) == report.kept


def test_split_by_question_never_by_row(loaded):
    rows, _ = loaded
    train, ev = split_by_question(rows, eval_fraction=0.1, seed=0)
    assert len(train) + len(ev) == len(rows)
    train_ids, eval_ids = {r.question_id for r in train}, {r.question_id for r in ev}
    assert not train_ids & eval_ids
    assert len(eval_ids) == round(0.1 * 776)
    # a question with many answers goes to one side with all of them
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.question_id] = counts.get(r.question_id, 0) + 1
    big = max(counts, key=counts.get)
    side = ev if big in eval_ids else train
    assert sum(r.question_id == big for r in side) == counts[big] > 20
    # deterministic for a seed, different for another
    assert split_by_question(rows, 0.1, 0) == (train, ev)
    assert {r.question_id for r in split_by_question(rows, 0.1, 1)[1]} != eval_ids


def test_split_of_tiny_sets_keeps_both_sides():
    rows = [QA("a", "q a", "answer a " * 5), QA("a", "q a", "answer b " * 5), QA("b", "q b", "answer c " * 5)]
    train, ev = split_by_question(rows, eval_fraction=0.1)
    assert train and ev and not {r.question_id for r in train} & {r.question_id for r in ev}


def test_split_without_column_falls_back_to_question_split(tmp_path, raw_rows):
    path = tmp_path / "nosplit.csv"
    cols = ["questionID", "questionTitle", "questionText", "answerText"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(raw_rows[:200])
    train = load_split(str(path), "train", eval_fraction=0.2, seed=3)
    ev = load_split(str(path), "eval", eval_fraction=0.2, seed=3)
    assert train and ev and not {r.question_id for r in train} & {r.question_id for r in ev}
    with pytest.raises(ValueError):
        load_split(str(path), "validation")
