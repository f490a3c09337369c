"""The demo's request files on a real model: parts of a real-world scenario, accepted by the real intake."""

from __future__ import annotations

import json

import pytest

from asu.scenarios import load_scenario
from pipelines.demo.data import scenario_request_lines, write_scenario_demo_files


def test_scenario_parts_cover_every_forget_fact_once_with_their_own_validation_items():
    scenario = load_scenario("paris")
    parts = [scenario_request_lines(scenario, k, 3) for k in range(3)]
    forget = [line["question"] for lines in parts for line in lines[1:] if line["role"] == "forget"]
    assert forget == [it["question"] for it in scenario.forget]  # contiguous parts, in the scenario's order
    for lines in parts:
        assert lines[0]["request_id"].startswith("paris-part-") and "Paris" in lines[0]["subject"]
        # 2 of the scenario's 6 validation items, and the paraphrase probes of the part's own facts
        assert sum(line["role"] == "validation" for line in lines[1:]) >= 5
    ids = [line["record_id"] for lines in parts for line in lines[1:]]
    assert len(ids) == len(set(ids))
    with pytest.raises(ValueError, match="too few .* use fewer parts"):
        scenario_request_lines(scenario, 6, 7)  # 7 parts: too few held-out questions each


def test_scenario_demo_files_pass_the_intake(tmp_path):
    from asu.data import load_qa_file
    from pipelines.intake.submit import submit_request
    from pipelines.ledger.store import Ledger, default_ledger_url

    files = write_scenario_demo_files(tmp_path / "inputs")
    assert [urgent for _, urgent in files.requests] == [False, False, True]
    retain = load_qa_file(files.retain)
    assert len(retain) == len(load_scenario("paris").retain) and load_qa_file(files.holdout)
    ledger = Ledger(default_ledger_url(tmp_path))
    try:
        for path, urgent in files.requests:
            sub = submit_request(path, urgent=urgent, ledger=ledger, retain=retain, actor="test")
            assert sub.state == "queued", sub
            assert json.loads(path.read_text().splitlines()[0])["request_id"] == sub.request_id
    finally:
        ledger.close()


def test_embedded_demo_files_with_a_text_request_pass_the_intake_and_keep_its_authors_out_of_the_retain_set(
        tmp_path):
    from asu.data import load_qa_file
    from asu.embedded import tofu_items
    from pipelines.demo.data import PASSAGE_MIN_WORDS, write_demo_files
    from pipelines.demo.product import DEMO_TEXT_AUTHORS
    from pipelines.intake.submit import submit_request
    from pipelines.ledger.store import Ledger, default_ledger_url

    files = write_demo_files(tmp_path / "inputs", "default", (1, 4, 7), text_authors=DEMO_TEXT_AUTHORS)
    assert [urgent for _, urgent in files.requests] == [False, False, True, False]  # the text request comes last
    retain = load_qa_file(files.retain)
    answers = [it["answer"] for it in tofu_items(DEMO_TEXT_AUTHORS)]
    assert len(retain) == 7 * 20 and not set(answers) & {it["answer"] for it in retain}
    with Ledger(default_ledger_url(tmp_path)) as ledger:
        for path, urgent in files.requests:
            assert submit_request(path, urgent=urgent, ledger=ledger, retain=retain, actor="test").state == "queued"
        stored = ledger.load_request("tofu-passages")
    passages = [r.text for r in (*stored.records, *stored.validation)]
    assert stored.kind == "text" and (len(stored.records), len(stored.validation)) == (7, 3)
    assert " ".join(passages) == " ".join(answers) and min(len(p.split()) for p in passages) >= PASSAGE_MIN_WORDS
    with pytest.raises(ValueError, match="distinct authors"):
        write_demo_files(tmp_path / "again", "default", (1, 4, 7), text_authors=(7,))
