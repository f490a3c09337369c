"""pipelines.round.report: the evidence report says what it must (hashes, tau, figures vs thresholds, versions, digests,
the not-a-guarantee statement) and never the forget content, even when content is fed into its inputs."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipelines.round.gate import EarlierRecheck, GateFigures, GateThresholds, evaluate_gate
from pipelines.round.report import (
    STATEMENT,
    EvidenceReport,
    ModelRef,
    SearchCandidate,
    ValidationSummary,
    load_report,
    write_report,
)
from pipelines.tracking.runs import sha256_json


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def record(tiny_sets) -> dict:
    """A real forget record (TOFU question and answer)."""
    return tiny_sets[0][0]


@pytest.fixture
def report(record) -> EvidenceReport:
    q, a = record["question"], record["answer"]
    before = GateFigures(forget_efficacy=0.02, utility=0.95, fluency=1.0, mia_auc=0.97)
    after = GateFigures(forget_efficacy=0.58, utility=0.93, fluency=1.0, mia_auc=0.52)
    earlier = [EarlierRecheck("req-001", 0.61, 0.59)]
    thresholds = GateThresholds()
    gx_like = {  # a validation result carrying offending values, as GX reports them
        "success": False,
        "statistics": {"evaluated_expectations": 9, "successful_expectations": 8, "unsuccessful_expectations": 1},
        "results": [{"success": False, "expectation_config": {"type": "expect_column_values_to_be_unique",
                                                              "kwargs": {"column": "question"}},
                     "result": {"partial_unexpected_list": [q, a]}}],
        "errors": [{"suite": "records", "expectation": "unique", "field": a, "message": f"duplicate {q}"}],
        "warnings": [{"message": a}],
    }
    return EvidenceReport(
        request_id="req-002",
        content_hashes={"request": _sha(q + a), "forget_set": _sha(q)},
        validation=ValidationSummary.from_result(gx_like),
        method="asu_gd",
        tau=2.3,
        search=[SearchCandidate(1.5, {"forget": {"rouge_l_recall": 0.61, "sample_answer": a}}, run_id="abc123"),
                SearchCandidate(2.3, {"forget": {"rouge_l_recall": 0.42}, "question": q}, chosen=True)],
        before=before,
        after=after,
        gate=evaluate_gate(before, after, earlier, thresholds),
        earlier=earlier,
        model=ModelRef("asu-unlearned", "3", ("candidate",), "2"),
        code_version="v0.1.0-12-gabcdef0",
        config_digests={"asu_config": sha256_json({"tau": 2.3}), "gate_thresholds": sha256_json(thresholds.to_dict())},
        metrics_before={"forget": {"rouge_l_recall": 0.98, "generations": [a], "first_answer": a}},
        metrics_after={"forget": {"rouge_l_recall": 0.42, "generations": [q]}},
    )


def test_report_states_the_evidence(report, tmp_path):
    json_path, md_path = write_report(report, tmp_path)
    assert json_path == tmp_path / "reports" / "req-002" / "report.json" and md_path.name == "report.md"
    data, markdown = load_report("req-002", tmp_path)
    assert data["schema"] == "asu.evidence/1" and data["statement"] == STATEMENT
    assert "not a formal guarantee" in markdown and STATEMENT in markdown
    assert data["content_hashes"]["forget_set"] == report.content_hashes["forget_set"]
    assert data["validation"] == {
        "passed": False, "warnings": 1,
        "statistics": {"evaluated_expectations": 9, "successful_expectations": 8, "unsuccessful_expectations": 1},
        "failed": ["records:unique:[redacted]", "expect_column_values_to_be_unique:question"]}
    assert data["tau"] == 2.3 and [c["chosen"] for c in data["search"]] == [False, True]
    assert data["search"][0]["metrics"] == {"forget/rouge_l_recall": 0.61}
    assert data["figures"]["after"]["forget_efficacy"] == 0.58 and data["metrics"]["after"] == {
        "forget/rouge_l_recall": 0.42}
    assert data["gate"]["passed"] and {c["name"] for c in data["gate"]["checks"]} == {
        "forget_efficacy", "utility_drop", "fluency", "resurgence", "mia_auc", "verbatim"}
    assert data["earlier_requests"][0]["request_id"] == "req-001"
    assert data["model"] == {"name": "asu-unlearned", "version": "3", "aliases": ["candidate"], "parent_version": "2"}
    assert set(data["config_digests"]) == {"asu_config", "gate_thresholds"}
    for text in ["gate **PASSED**", "chosen tau **2.3000**", "| forget_efficacy | 0.0200 | 0.5800 | forget_efficacy",
                 "| resurgence | req-001 | 0.0200 | <= 0.1000 | pass |", "version **3**, aliases `candidate`",
                 "v0.1.0-12-gabcdef0", report.config_digests["gate_thresholds"], "## Earlier requests re-checked"]:
        assert text in markdown, text


def test_forget_content_never_reaches_the_report(report, record, tmp_path):
    json_path, md_path = write_report(report, tmp_path)
    outputs = json_path.read_text() + md_path.read_text() + json.dumps(report.to_dict()) + report.to_markdown()
    for text in (record["question"], record["answer"]):
        assert text not in outputs
        assert text[:24] not in outputs  # not even a prefix
    assert "[redacted]" in outputs


def test_content_shaped_names_and_bad_hashes_are_refused(report, record):
    from dataclasses import replace

    with pytest.raises(ValueError, match="looks like content") as err:
        replace(report, metrics_after={"per_question": {record["question"]: 0.5}}).to_dict()
    assert record["question"] not in str(err.value)
    with pytest.raises(ValueError, match="SHA-256"):
        replace(report, content_hashes={"request": record["answer"]}).to_dict()
    with pytest.raises(ValueError, match="request id"):
        replace(report, request_id=record["question"])
    assert replace(report, method=record["answer"]).to_dict()["method"] == "[redacted]"


def test_a_failed_gate_and_missing_figures_are_reported(report, tmp_path):
    from dataclasses import replace

    after = GateFigures(forget_efficacy=0.1, utility=0.5, fluency=0.4, mia_auc=float("nan"))
    failed = replace(report, after=after, search=[], earlier=[],
                     gate=evaluate_gate(report.before, after, [], GateThresholds()))
    json_path, md_path = write_report(failed, tmp_path)
    data = json.loads(json_path.read_text())  # strict JSON: NaN became null
    assert data["figures"]["after"]["mia_auc"] is None and not data["gate"]["passed"]
    markdown = md_path.read_text()
    assert "gate **FAILED**" in markdown and "No temperature search was run." in markdown
    assert "None: no request was forgotten before this one." in markdown
    assert "| fluency | 1.0000 | 0.4000 | fluency | 0.4000 | >= 0.9000 | fail |" in markdown


def test_loading_a_missing_report_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="no evidence report for request 'req-404'"):
        load_report("req-404", tmp_path)


def test_attacks_get_their_own_section_with_the_gate_verdict(report, tmp_path):
    from dataclasses import replace

    thresholds = GateThresholds(attacks_required=("relearn",))
    after = replace(report.after, attack_recovery={"relearn": 0.05, "quantize_4bit": 0.3})
    robust = replace(report, after=after, gate=evaluate_gate(report.before, after, report.earlier, thresholds),
                     metrics_after={"robustness": {
                         "relearn": {"fact_recall": 0.15, "baseline_fact_recall": 0.1, "recovery": 0.05},
                         "quantize_4bit": {"fact_recall": 0.4, "baseline_fact_recall": 0.1, "recovery": 0.3}}})
    _, md_path = write_report(robust, tmp_path)
    markdown = md_path.read_text()
    assert "## Robustness of the forgetting" in markdown
    assert "| relearn | 0.1000 | 0.1500 | 0.0500 | pass |" in markdown
    assert "| quantize_4bit | 0.1000 | 0.4000 | 0.3000 | not required |" in markdown
    assert "robustness/relearn" not in markdown.split("## Robustness")[0]  # not repeated among the other figures
    _, plain = write_report(report, tmp_path / "plain")
    assert "No attack was run" in plain.read_text()


def test_a_text_request_report_shows_the_verbatim_figures_against_the_gate(report):
    from dataclasses import replace

    before = GateFigures(0.02, 0.95, 1.0, None, verbmem=0.98, retain_verbmem=0.97)
    after = GateFigures(0.58, 0.93, 1.0, None, verbmem=0.13, retain_verbmem=0.95)
    text = replace(report, before=before, after=after, gate=evaluate_gate(before, after, [], GateThresholds()))
    markdown = text.to_markdown()
    assert "## Verbatim memorisation (text requests)" in markdown
    assert "| forget passages | 0.9800 | 0.1300 | pass |" in markdown
    assert "| retain passages | 0.9700 | 0.9500 | pass |" in markdown
    assert "The request holds no passages." in report.to_markdown()
