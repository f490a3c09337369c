"""Accepted requests: the three formats, the ledger record, idempotency, urgency, validation split, reports."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import timedelta
from pathlib import Path

from intake_helpers import SECRET, header, jsonl, qa

from pipelines.intake.submit import purge_expired
from pipelines.ledger.schema import utcnow
from pipelines.request import ForgetRequest


def _csv(head: dict, *rows: dict) -> str:
    out = io.StringIO()
    columns = list(head) + ["record_id", "role", "question", "answer", "paraphrase_of"]
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for i, row in enumerate(rows):
        writer.writerow({**(head if i == 0 else {}), **row})  # request fields on the first row only
    return out.getvalue()


def test_jsonl_request_is_recorded_queued_with_history_hashes_and_report(env):
    rows = [qa(i) for i in range(1, 11)] + [qa(11, role="paraphrase", paraphrase_of="r1")]
    path = env.write("req.jsonl", jsonl(header(requester="legal@example.org"), *rows))
    sub = env.submit(path, actor="tester")
    assert (sub.request_id, sub.state, sub.created, sub.record_count) == ("req-1", "queued", True, 11)
    history = env.ledger.history("req-1")
    assert [(t.from_state, t.to_state) for t in history] == [(None, "received"), ("received", "validated"),
                                                             ("validated", "queued")]
    assert all(t.actor == "tester" and t.at.tzinfo is not None for t in history)
    assert history[0].at <= history[1].at <= history[2].at
    assert history[1].detail["report_html"] == str(sub.report_html)
    # Seeded validation split: 10% of the 10 forget records, chosen by random.Random(seed), recorded with the seed.
    chosen = f"r{random.Random(0).sample(range(10), 1)[0] + 1}"
    assert sub.validation_split == {"seed": 0, "fraction": 0.1, "record_ids": [chosen]}
    stored = env.ledger.load_request("req-1")
    assert isinstance(stored, ForgetRequest) and stored.content_sha256 == sub.content_sha256
    assert [r.record_id for r in stored.validation_items()] == [chosen] and len(stored.forget_records()) == 9
    assert stored.paraphrases[0].paraphrase_of == "r1"
    hashes = env.ledger.record_hashes("req-1")
    assert len(hashes) == 11 and all(len(h["content_sha256"]) == 64 and len(h["key_sha256"]) == 64 for h in hashes)
    # Reports and the audit trail refer to content by hash and line only.
    report = json.loads(sub.report_json.read_text())
    assert report["success"] and report["statistics"]["unsuccessful_expectations"] == 0
    assert "<html" in sub.report_html.read_text().lower()
    for text in (sub.report_json.read_text(), sub.report_html.read_text(), json.dumps([t.to_dict() for t in history],
                                                                                      default=str)):
        assert SECRET not in text


def test_the_three_formats_give_the_same_request(env):
    head, rows = header(), [qa(1), qa(2), qa(3, role="validation")]
    doc = {**head, "records": rows[:2], "validation": [{k: v for k, v in rows[2].items() if k != "role"}]}
    subs = [env.submit(env.write("a.jsonl", jsonl(head, *rows))),
            env.submit(env.write("b.json", json.dumps(doc, indent=2))),
            env.submit(env.write("c.csv", _csv(head, *rows)))]
    assert [s.created for s in subs] == [True, False, False]
    assert len({s.content_sha256 for s in subs}) == 1
    stored = env.ledger.load_request("req-1")
    assert [r.record_id for r in stored.validation] == ["r3"] and stored.validation_split is None


def test_text_kind_and_default_record_ids(env):
    rows = [{"text": f"Passage {i} about the book."} for i in range(3)]
    sub = env.submit(env.write("text.jsonl", jsonl(header(kind="text", urgency="urgent"), *rows)))
    assert sub.urgent and sub.state == "queued"
    stored = env.ledger.load_request("req-1")
    assert [r.record_id for r in stored.records] == ["forget-1", "forget-2", "forget-3"]


def test_mixed_kind_takes_both_shapes_splits_validation_per_shape_and_refuses_a_record_of_neither_or_both(env):
    """``kind: mixed``: each record a question-answer pair or a passage; the seeded validation split holds some of
    each, so the search validates on both; a record with both shapes or with neither is refused, by line."""
    rows = [qa(i) for i in range(1, 11)] + [{"record_id": f"t{i}", "text": f"Passage {i} about Jane Doe."}
                                            for i in range(1, 11)]
    sub = env.submit(env.write("mixed.jsonl", jsonl(header(kind="mixed"), *rows)))
    assert sub.state == "queued"
    stored = env.ledger.load_request("req-1")
    chosen = set(stored.validation_split.record_ids)
    assert {i[0] for i in chosen} == {"r", "t"} and len(chosen) == 2
    both = {**qa(1), "text": "A passage as well."}
    err = env.refused(env.write("both.jsonl", jsonl(header(request_id="req-2", kind="mixed"), both, qa(2))))
    assert {(p.field, tuple(p.lines)) for p in err.problems} == {("question", (2,)), ("answer", (2,))}
    neither = {"record_id": "r9", "answer": "An answer without its question."}
    err = env.refused(env.write("neither.jsonl", jsonl(header(request_id="req-3", kind="mixed"), qa(1), neither)))
    assert [(p.field, tuple(p.lines)) for p in err.problems] == [("question", (3,))]
    assert "without text" in err.problems[0].message and "text" in err.problems[0].fix


def test_knowledge_questions_of_a_text_request_are_stored_apart_and_must_be_question_answer_pairs(env):
    """``role: knowledge``: questions about the passages, kept apart from the forget records (never trained on,
    never in the validation split) in JSON Lines and JSON alike; one with text, or without its answer, is refused."""
    rows = [{"text": f"Passage {i} about the book."} for i in range(3)]
    known = [qa(i, role="knowledge") for i in (1, 2)]
    sub = env.submit(env.write("text.jsonl", jsonl(header(kind="text"), *rows, *known)))
    stored = env.ledger.load_request("req-1")
    assert [r.record_id for r in stored.knowledge] == ["r1", "r2"] and len(stored.records) == 3
    assert not set(stored.validation_split.record_ids) & {"r1", "r2"}
    doc = {**header(kind="text"), "records": rows, "knowledge": [{k: v for k, v in r.items() if k != "role"}
                                                                 for r in known]}
    again = env.submit(env.write("text.json", json.dumps(doc, indent=2)))
    assert not again.created and again.content_sha256 == sub.content_sha256
    bad = {**qa(3, role="knowledge"), "text": "Passage 9."}
    err = env.refused(env.write("k1.jsonl", jsonl(header(request_id="req-2", kind="text"), *rows, bad)))
    assert [(p.field, tuple(p.lines), p.message) for p in err.problems] == [
        ("text", (5,), "is set on a knowledge question")]
    no_answer = {"record_id": "k9", "role": "knowledge", "question": "What happens in the book?"}
    err = env.refused(env.write("k2.jsonl", jsonl(header(request_id="req-3", kind="text"), *rows, no_answer)))
    assert [(p.field, tuple(p.lines)) for p in err.problems] == [("answer", (5,))]
    stray = {"text": "Passage 7 about the book.", "question": "A question on a forget passage?"}
    err = env.refused(env.write("k3.jsonl", jsonl(header(request_id="req-4", kind="text"), *rows, stray)))
    assert [(p.field, tuple(p.lines)) for p in err.problems] == [("question", (5,))]


def test_same_content_again_is_the_same_request_and_urgent_escalates(env):
    path = env.write("req.jsonl", jsonl(header(), qa(1), qa(2)))
    first = env.submit(path)
    again = env.submit(path)
    assert not again.created and again.content_sha256 == first.content_sha256 and not again.urgent
    assert len(env.ledger.history("req-1")) == 3
    urgent = env.submit(path, urgent=True)
    assert urgent.urgent and urgent.escalated and env.ledger.get("req-1").urgent
    assert not env.submit(path, urgent=True).escalated  # already urgent
    assert env.ledger.history("req-1")[-1].event == "escalated"
    assert len(env.ledger.list_requests(["queued"])) == 2  # req-1 and the fixture's other-1


def test_a_rejected_request_can_be_fixed_and_resubmitted(env):
    bad = env.write("v1.jsonl", jsonl(header(), qa(1), qa(2, question=3)))
    env.refused(bad)
    assert env.ledger.get("req-1").state == "rejected"
    fixed = env.submit(env.write("v2.jsonl", jsonl(header(), qa(1), qa(2))))
    assert fixed.created and fixed.state == "queued"
    states = [(t.from_state, t.to_state) for t in env.ledger.history("req-1")]
    assert states == [(None, "received"), ("received", "rejected"), ("rejected", "received"),
                      ("received", "validated"), ("validated", "queued")]
    assert env.ledger.history("req-1")[1].detail["problems"][0]["field"] == "question"


def test_records_forgotten_by_an_earlier_request_are_reported_not_rejected(env):
    env.submit(env.write("first.jsonl", jsonl(header(), qa(1), qa(2))))
    later = env.submit(env.write("second.jsonl", jsonl(header(request_id="req-2"), qa(2), qa(3))))
    assert later.state == "queued" and len(later.warnings) == 1
    warning = later.warnings[0]
    assert warning.lines == (2,) and "already forgotten by an earlier request" in warning.message


def test_big_json_lines_request_within_limits(env):
    rows = [qa(i) for i in range(2000)]
    sub = env.submit(env.write("big.jsonl", jsonl(header(), *rows)))
    assert sub.record_count == 2000 and len(sub.validation_split["record_ids"]) == 200


def test_retention_purges_ledger_content_and_old_quarantine_files(env):
    sub = env.submit(env.write("req.jsonl", jsonl(header(), qa(1), qa(2))))
    assert env.ledger.latest_report("req-1") == {"report_json": str(sub.report_json),
                                                 "report_html": str(sub.report_html)}
    for state in ("running", "evaluated", "approved", "registered"):
        env.ledger.transition("req-1", state, actor="flow")
    refused = env.refused(env.write("bad.jsonl", b""))
    assert purge_expired(env.ledger, work_dir=env.work) == ([], [])  # nothing is old enough yet
    later = utcnow() + timedelta(days=31)
    purged, removed = purge_expired(env.ledger, work_dir=env.work, retention=timedelta(days=30), now=later)
    assert purged == ["req-1"]  # other-1 is still queued: its content stays
    assert sorted(removed) == sorted([refused.quarantine_path, Path(f"{refused.quarantine_path}.reasons.json")])
    assert not refused.quarantine_path.exists() and env.ledger.get("other-1").has_content
    assert not env.ledger.get("req-1").has_content and len(env.ledger.record_hashes("req-1")) == 2


def test_values_that_look_like_fields_never_reach_messages_or_reports(env):
    text = jsonl(header(), qa(1)) + '{"record_id": "r2", "question": "Q", "' + SECRET + '": "x" "answer": 1}\n'
    err = env.refused(env.write("quoted.jsonl", text))
    assert err.problems[0].field == "question"  # the last known field before the break, not the unknown text
    err = env.refused(env.write("role.jsonl", jsonl(header(request_id="req-9"), qa(1, role=SECRET))))
    assert err.problems[0].field == "role"
    report = env.ledger.latest_report("req-9")
    for path in report.values():
        assert SECRET not in Path(path).read_text()
