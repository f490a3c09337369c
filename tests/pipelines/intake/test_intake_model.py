"""The typed request, its hashes, the seeded validation split, the contracts runner and the validate benchmark."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from intake_helpers import SECRET, header, jsonl, qa

from bench.validate import format_report, run_validate_bench
from data_contracts import ContractViolation, RequestLimits, header_suite, records_suite, validate_frames
from pipelines.intake.formats import IntakeError, read_request_file
from pipelines.intake.submit import check_contracts, to_request
from pipelines.request import (
    ForgetRequest,
    Record,
    normalise_text,
    record_content_hash,
    record_key,
    request_content_hash,
    retain_keys,
    split_validation,
)


def test_hashes_ignore_ids_layout_and_urgency_but_not_content():
    a = {"record_id": "r1", "role": "forget", "question": "Who?", "answer": "Me."}
    assert record_content_hash(a) == record_content_hash({**a, "record_id": "other"})
    assert record_content_hash(a) != record_content_hash({**a, "answer": "You."})
    assert record_key("qa", a) == record_key("qa", {**a, "question": "  WHO? ", "answer": "x"})
    assert normalise_text("Ｊａｎｅ\u00a0 DOE\n") == "jane doe"
    assert record_key("qa", a) in retain_keys([{"question": "who?", "answer": "x"}])
    head = header()
    assert request_content_hash(head, [a]) == request_content_hash({**head, "urgency": "urgent"}, [a])
    assert request_content_hash(head, [a]) != request_content_hash(head, [{**a, "record_id": "r2"}])


def test_forget_request_round_trip_and_checks():
    records = tuple(Record(f"r{i}", question=f"Q{i}", answer=f"A{i}") for i in range(20))
    split = split_validation(records, fraction=0.25, seed=7)
    assert split == split_validation(records, fraction=0.25, seed=7) and len(split.record_ids) == 5
    assert split != split_validation(records, fraction=0.25, seed=8)
    req = ForgetRequest("req-1", "Jane", "qa", records, validation_split=split)
    assert ForgetRequest.from_dict(json.loads(json.dumps(req.to_dict()))) == req
    assert len(req.forget_records()) == 15 and {r.record_id for r in req.validation_items()} == set(split.record_ids)
    assert split_validation(records[:1]).record_ids == ()
    with pytest.raises(ValueError, match="kind='audio' is invalid"):
        ForgetRequest("x", "s", "audio", records)
    with pytest.raises(ValueError, match="fraction=1.5 is invalid"):
        split_validation(records, fraction=1.5)
    with pytest.raises(ValueError, match="paraphrase_of is set exactly when role is 'paraphrase'"):
        Record("p", role="paraphrase", question="Q", answer="A")
    with pytest.raises(ValueError, match="RequestLimits.max_records=0 is invalid"):
        RequestLimits(max_records=0)


def test_contract_violation_lists_failed_expectations_by_line_and_field(tmp_path):
    frame = pd.DataFrame({"request_id": ["a/b"], "subject": [None], "kind": ["qa"], "urgency": ["now"],
                          "requester": [None], "received_at": ["yesterday"], "notes": [None], "line": [4]},
                         dtype=object)
    with pytest.raises(ContractViolation) as info:
        validate_frames({"header": (frame, header_suite(RequestLimits()))}, source="h.jsonl", report_dir=tmp_path)
    failures = {f.field: f for f in info.value.failures}
    assert set(failures) == {"request_id", "subject", "urgency", "received_at"}
    assert all(f.lines == (4,) and f.severity == "error" and f.fix for f in failures.values())
    assert "h.jsonl:4: field 'received_at': is not an ISO 8601 timestamp" in str(info.value)
    result = info.value.result
    assert result.statistics["unsuccessful_expectations"] == 4
    summary = json.loads(result.report_json.read_text())
    assert summary["success"] is False and len(summary["errors"]) == 4
    assert "unexpected_list" not in result.report_json.read_text() and "a/b" not in result.report_json.read_text()
    assert "a/b" not in result.report_html.read_text()


def test_records_suite_limits_and_report_without_content(tmp_path):
    limits = RequestLimits(max_records=3, max_question_chars=20)
    lines = tmp_path / "r.jsonl"
    lines.write_text(jsonl(header(), *(qa(i) for i in range(4))))
    with pytest.raises(IntakeError, match="more than 3 records"):  # JSON Lines: counted before parsing
        read_request_file(lines, limits)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**header(), "records": [qa(i) for i in range(4)]}, indent=1))
    raw = read_request_file(path, limits)
    result = check_contracts(raw, limits=limits, report_dir=tmp_path / "rep")
    fields = {(f.field, f.lines) for f in result.errors}
    assert ("records", ()) in fields and ("question", (6, 11, 16, 21)) in fields
    assert "(found 4)" in next(f.message for f in result.errors if f.field == "records")
    for report in (result.report_json, result.report_html):
        assert SECRET not in report.read_text()
    assert records_suite(None, limits).name == "forget_request_records"


def test_to_request_marks_urgent_and_keeps_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(jsonl(header(), qa(1), qa(2)))
    req = to_request(read_request_file(path, RequestLimits()), urgent=True, seed=3)
    assert req.urgency == "urgent" and [r.line for r in req.records] == [2, 3]
    assert req.validation_split.seed == 3


def test_validate_bench_reports_phases(tmp_path):
    result = run_validate_bench(records=300, repeats=1, out=tmp_path / "v.json", measure_imports=False)
    assert result["records"] == 300 and result["meets_target"]
    assert set(result["median_seconds"]) == {"parse", "contracts", "report", "submit"}
    assert json.loads((tmp_path / "v.json").read_text()) == result
    assert "validation total" in format_report(result)
