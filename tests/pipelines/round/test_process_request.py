"""``process_request`` is the round: called from Python without Prefect it gives the record the flow gives, and
every model it scores lands on the configured device and dtype."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
from pipeline_helpers import TEST_SEARCH
from pipeline_helpers import write_gate as _gate

ONE_TAU = {**TEST_SEARCH, "tau_grid": [2.0]}  # the mechanics are under test: one trial keeps this quick


def _request(tmp_path, monkeypatch, tiny_model_dir, **settings):
    """One queued-and-claimed request (author 1 of the tiny model) in a fresh work dir; returns the settings."""
    from asu.data import load_qa_file
    from pipelines.demo.data import write_demo_files
    from pipelines.intake.submit import submit_request
    from pipelines.ledger.store import Ledger, default_ledger_url

    monkeypatch.setenv("ASU_WORK_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ASU_LEDGER_URL", raising=False)
    files = write_demo_files(tmp_path / "inputs", "tiny", (1,), 1)
    with Ledger(default_ledger_url(tmp_path)) as ledger:
        submit_request(files.requests[0][0], ledger=ledger, retain=load_qa_file(files.retain), actor="test")
        ledger.claim_next(actor="test")
    return {
        "base_model": str(tiny_model_dir), "retain_file": str(files.retain), "holdout_file": str(files.holdout),
        "recipe": "embedded", "overrides": {"epochs": 2}, "search": ONE_TAU, "report_retain_items": 8,
        "gate_file": _gate(tmp_path / "gate.yaml"), "max_new_tokens": 48, **settings,
    }  # fmt: skip


def _comparable(record):
    """The record without what differs by construction between two runs (wall times, the report's folder), its
    numbers rounded to 6 decimals (the same seeded CPU computation, in two processes' worth of state)."""
    if isinstance(record, dict):
        return {k: _comparable(v) for k, v in record.items() if k not in ("seconds", "report")}
    if isinstance(record, list | tuple):
        return [_comparable(v) for v in record]
    return round(record, 6) if isinstance(record, float) else record


def test_process_request_without_prefect_equals_the_flow(prefect_harness, tiny_model_dir, tmp_path, monkeypatch):
    from flows.continual import process_request as process_request_flow
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.round import RoundRecord, process_request
    from pipelines.settings import PipelineSettings

    settings = _request(tmp_path / "plain", monkeypatch, tiny_model_dir)
    with Ledger(default_ledger_url(tmp_path / "plain")) as ledger:
        record = process_request("tofu-author-1", PipelineSettings.from_dict(settings), ledger)
        assert ledger.get("tofu-author-1").state == "registered"
        outcome = ledger.history("tofu-author-1")[-1].detail["outcome"]
    assert isinstance(record, RoundRecord) and record.status == "registered" and record.version == "2"
    assert outcome["model_version"] == "2" and outcome["settings"]["tau"] == 2.0  # the ledger holds the outcome
    assert set(record.seconds) == {"search", "round", "measure_before", "measure_after"}

    settings = _request(tmp_path / "flow", monkeypatch, tiny_model_dir)
    through_flow = process_request_flow("tofu-author-1", settings)
    assert _comparable(through_flow) == _comparable(record.to_dict())


def test_trials_on_the_round_items_register_the_chosen_trial_without_training_again(tiny_model_dir, tmp_path,
                                                                                      monkeypatch):
    """``search.trial_items: round``: the round's model is the chosen trial's (no training after the search: the
    trainer is made to fail there), registered and gated like any round."""
    import json

    import pipelines.round.steps as steps
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.round import process_request
    from pipelines.settings import PipelineSettings

    def no_second_training(*args, **kwargs):
        raise AssertionError("the round was trained again after the search")

    monkeypatch.setattr(steps, "run_round", no_second_training)
    settings = _request(tmp_path, monkeypatch, tiny_model_dir, search={**ONE_TAU, "trial_items": "round"})
    with Ledger(default_ledger_url(tmp_path)) as ledger:
        record = process_request("tofu-author-1", PipelineSettings.from_dict(settings), ledger)
    assert record.status == "registered" and record.version == "2"
    model = tmp_path / "rounds" / "tofu-author-1" / "model"
    assert json.loads((model / "round.json").read_text())["config"]["tau"] == record.tau == 2.0
    assert not any((tmp_path / "rounds" / "tofu-author-1" / "search" / "trials").iterdir())


def test_a_gate_that_asks_every_fact_gone_makes_the_search_refuse_before_any_round(tiny_model_dir, tmp_path,
                                                                                    monkeypatch):
    """The gate's forget-efficacy bar is the search's effect floor: no trial reaches it, so nothing is trained,
    measured or registered, and the ledger says the search found no effect."""
    import pipelines.round.steps as steps
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.round import process_request
    from pipelines.settings import PipelineSettings

    def no_round(*args, **kwargs):
        raise AssertionError("a round was trained although the search chose nothing")

    monkeypatch.setattr(steps, "unlearn", no_round)
    settings = _request(tmp_path, monkeypatch, tiny_model_dir,
                        gate_file=_gate(tmp_path / "strict.yaml", forget_efficacy_min=1.0))
    with Ledger(default_ledger_url(tmp_path)) as ledger:
        record = process_request("tofu-author-1", PipelineSettings.from_dict(settings), ledger)
        assert ledger.get("tofu-author-1").state == "gate_failed"
        assert ledger.history("tofu-author-1")[-1].detail["reason"] == "no_effect"
    assert record.status == "gate_failed" and record.version is None and record.search.status == "no_effect"
    assert record.failed_checks == ["temperature_search"]
    assert "forget_efficacy_floor 1" in record.search.reasons[0]


def test_every_scoring_load_lands_on_the_configured_device_and_dtype(tiny_model_dir, tmp_path, monkeypatch, caplog):
    """With ``dtype: bfloat16`` every model the search, judge and measurement load is bfloat16 on the CPU; the only
    float32 loads are the trainer's (its master weights), so CPU-only or fp32 scoring cannot come back unnoticed."""
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.round import process_request
    from pipelines.settings import PipelineSettings

    settings = PipelineSettings.from_dict(_request(tmp_path, monkeypatch, tiny_model_dir, device="cpu",
                                                   dtype="bfloat16"))
    with caplog.at_level(logging.INFO, logger="asu.modeling"), Ledger(default_ledger_url(tmp_path)) as ledger:
        record = process_request("tofu-author-1", settings, ledger)
    loads = [(r.pathname, r.asu_device, r.asu_dtype) for r in caplog.records if hasattr(r, "asu_dtype")]
    scoring = [load for load in loads if not load[0].endswith(("asu/trainer.py", "asu\\trainer.py"))]
    training = [load for load in loads if load not in scoring]
    assert record.status in ("registered", "gate_failed") and record.after is not None
    # search (current model, one trial), the judge, measurement before and after
    assert len(scoring) >= 5 and len(training) >= 2
    assert {(d, t) for _, d, t in scoring} == {("cpu", "torch.bfloat16")}
    assert {(d, t) for _, d, t in training} == {("cpu", "torch.float32")}
    # the champion is loaded once per role: the search's scan, the fluency judge, the "before" measurement
    # (the benchmarks reuse the measurement's model), and the trainer's student and teacher of each round
    champion = [r for r in caplog.records if Path(getattr(r, "asu_model", "")).name.startswith("v1-")]  # version 1
    roles = Counter((Path(r.pathname).name, r.funcName) for r in champion)
    scoring_roles = {role: n for role, n in roles.items() if role[0] != "trainer.py"}
    assert scoring_roles and all(n == 1 for n in scoring_roles.values()), roles


def test_a_cuda_device_on_a_machine_without_one_is_refused_naming_the_setting(tmp_path):
    import torch

    from pipelines.settings import PipelineSettings

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device='cuda'.*no CUDA device; set device: auto or cpu"):
        PipelineSettings(retain_file=str(tmp_path / "r.json"), device="cuda")
    with pytest.raises(ValueError, match="dtype='fp8'"):
        PipelineSettings(retain_file=str(tmp_path / "r.json"), dtype="fp8")


def test_configured_attacks_run_on_the_candidate_and_the_gate_holds_the_required_ones(tiny_model_dir, tmp_path,
                                                                                      monkeypatch):
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.round import process_request
    from pipelines.round.report import load_report
    from pipelines.settings import PipelineSettings

    settings = _request(tmp_path, monkeypatch, tiny_model_dir,
                        robustness={"attacks": ["quantize_8bit", "prefix"], "max_new_tokens": 32},
                        gate_file=_gate(tmp_path / "attack-gate.yaml", attacks_required=["quantize_8bit", "relearn"],
                                        attack_recovery_max=1.0))
    with Ledger(default_ledger_url(tmp_path)) as ledger:
        record = process_request("tofu-author-1", PipelineSettings.from_dict(settings), ledger)
    assert set(record.after.robustness) == {"quantize_8bit", "prefix"} and record.before.robustness == {}
    assert 0.0 <= record.after.robustness["quantize_8bit"]["fact_recall"] <= 1.0
    checks = {c.subject: c.status for c in record.gate.checks if c.name == "attack_recovery"}
    assert checks == {"quantize_8bit": "pass", "relearn": "fail"}  # relearn is required but was not measured
    assert record.status == "gate_failed"
    _, markdown = load_report("tofu-author-1", tmp_path)
    assert "| quantize_8bit |" in markdown and "| prefix |" in markdown and "not required" in markdown


def test_a_mixed_request_is_unlearnt_measured_and_reported_without_its_passages(tiny_model_dir, tmp_path, monkeypatch):
    """A ``kind: mixed`` request (passages of the tiny model's own authors and question-answer records about one of
    them) through the whole round: passages cut into pieces, searched on validation pieces and questions,
    unlearnt, measured (VerbMem of the reported passages, fact recall of the answers), gated on the verbatim checks
    and reported with figures and hashes only."""
    import json

    from asu.data import load_qa_file
    from asu.embedded import tofu_items
    from pipelines.intake.submit import submit_request
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.round import process_request
    from pipelines.settings import PipelineSettings

    settings = _request(tmp_path, monkeypatch, tiny_model_dir)  # the QA request stays queued behind ours
    answers = [it["answer"] for it in tofu_items([1, 2])]
    passages = [" ".join(answers[i:i + 10]) for i in range(0, 40, 10)]
    path = tmp_path / "text-request.jsonl"
    questions = [{"question": it["question"], "answer": it["answer"]} for it in tofu_items([1])[:10]]
    knowledge = [{**q, "role": "knowledge"} for q in questions[8:]]  # asked after the round, never trained on
    path.write_text("\n".join(json.dumps(row) for row in [
        {"request_id": "article-1", "subject": "two biographies", "kind": "mixed"},
        *({"text": p} for p in passages), *questions[:8], *knowledge]))
    settings["search"] = {**ONE_TAU, "min_validation_items": 2}
    unseen = [it["answer"] for it in tofu_items([150])]  # an author the tiny model never saw: the MIA non-members
    (tmp_path / "holdout.jsonl").write_text("".join(json.dumps({"text": " ".join(unseen[i:i + 10])}) + "\n"
                                                    for i in range(0, 20, 10)))
    settings["holdout_file"] = str(tmp_path / "holdout.jsonl")
    settings["privleak_reference"] = str(tiny_model_dir)
    with Ledger(default_ledger_url(tmp_path)) as ledger:
        submit_request(path, ledger=ledger, retain=load_qa_file(settings["retain_file"]), actor="test",
                       validation_fraction=0.25)
        while ledger.claim_next(actor="test").request_id != "article-1":
            pass
        record = process_request("article-1", PipelineSettings.from_dict(settings), ledger)
        assert ledger.get("article-1").state == "registered", record.search.reasons
    report = json.loads(Path(record.report).with_suffix(".json").read_text())
    before, after = report["figures"]["before"]["verbmem"], report["figures"]["after"]["verbmem"]
    assert 0.0 <= after <= 1.0 and 0.0 <= before <= 1.0 and report["figures"]["after"]["retain_verbmem"] is None
    assert {c["subject"] for c in report["gate"]["checks"] if c["name"] == "verbatim"} == {"forget"}
    assert 0.0 <= report["figures"]["after"]["mia_auc"] <= 1.0  # the passages against held-out passages
    markdown = Path(record.report).read_text()
    assert "| forget passages |" in markdown and "| knowledge questions |" in markdown
    assert all(0.0 <= report["metrics"][k]["forget_knowmem"] <= 1.0 for k in ("before", "after"))
    # the reference (the tiny model, which learnt these passages) recognises every one: privleak is undefined
    assert report["figures"]["before"]["mia_auc"] == 1.0 and "privleak" not in report["metrics"]["after"]
    saved = markdown + json.dumps(report) + (tmp_path / "rounds" / "article-1" / "search" / "search.json").read_text()
    assert not any(p[:40] in saved or p[-40:] in saved for p in passages)  # hashes and figures, never the text
    assert not any(q["question"] in saved or q["answer"] in saved for q in questions)
    assert 0.0 <= report["figures"]["after"]["forget_efficacy"] <= 1.0  # the questions and probes, scored together


@pytest.mark.parametrize("retries", [1, 0])
def test_a_round_that_fails_the_gate_trains_the_searchs_next_best_setting(retries, tiny_model_dir, tmp_path,
                                                                           monkeypatch):
    """``gate_retries``: the chosen setting's round fails the gate (injected: its MIA band is made impossible on the
    first verdict only), so the search's runner-up is trained and gated. Both candidates are registered with their
    verdicts, the ledger moves on once, and the report lists the failed attempt; with 0 retries the first verdict
    stands."""
    from dataclasses import replace

    import pipelines.round.steps as steps
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.round import process_request
    from pipelines.settings import PipelineSettings
    from pipelines.tracking.registry import ModelRegistry
    from pipelines.tracking.runs import Tracker

    real_decide, verdicts = steps.decide, []

    def first_verdict_fails(before, after, recorded, thresholds):
        if not verdicts:
            thresholds = replace(thresholds, mia_auc_band=(0.0, 0.001))
        verdicts.append(real_decide(before, after, recorded, thresholds))
        return verdicts[-1]

    monkeypatch.setattr(steps, "decide", first_verdict_fails)
    settings = _request(tmp_path, monkeypatch, tiny_model_dir, gate_retries=retries,
                        search={**TEST_SEARCH, "tau_grid": [3.0, 4.0], "stage2_candidates": 2})
    with Ledger(default_ledger_url(tmp_path)) as ledger:
        record = process_request("tofu-author-1", PipelineSettings.from_dict(settings), ledger)
        states = [t.to_state for t in ledger.history("tofu-author-1")]
    assert len(record.search.runner_ups()) >= 1, record.search.format_table()  # a runner-up to fall back on
    round_dir = tmp_path / "rounds" / "tofu-author-1"
    if retries == 0:
        assert record.status == "gate_failed" and record.attempt == 1 and record.failed_checks == ["mia_auc"]
        assert not record.failed_attempts and not (round_dir / "model-retry-1").exists()
        return
    assert len(verdicts) == 2 and not verdicts[0][0].passed
    assert record.status == "registered" and record.attempt == 2 and record.version == "3" and record.promoted
    failed = record.failed_attempts[0]
    assert failed["model_version"] == "2" and failed["failed_checks"] == ["mia_auc"] and failed["attempt"] == 1
    assert failed["settings"]["tau"] != record.tau  # the runner-up is another setting
    assert states.count("evaluated") == 1 and states[-1] == "registered" and "gate_failed" not in states
    assert {"round", "round_retry_1", "measure_before", "measure_after", "measure_after_retry_1"} <= set(
        record.seconds)
    assert (round_dir / "model").is_dir() and (round_dir / "model-retry-1").is_dir()
    registry = ModelRegistry(Tracker(), PipelineSettings.from_dict(settings).model_name)
    assert registry.get("2").gate_passed is False and registry.get("3").gate_passed is True
    assert registry.aliases().get("champion") == "3"
    report = Path(record.report).read_text()
    assert "## Earlier attempts" in report and "mia_auc" in report.split("## Earlier attempts")[1]
    assert record.to_dict()["failed_attempts"][0]["model_version"] == "2"


def test_a_round_that_damaged_the_model_is_retrained_one_strength_level_gentler(tiny_model_dir, tmp_path,
                                                                               monkeypatch):
    """``gate_retry: gentler_strength``: the first verdict sees the candidate's answers as not fluent (injected: its
    fluency figure set to 0), so the same tau is trained at the next learning rate down the search's ladder, a
    setting no trial ran, and the gate judges it."""
    from dataclasses import replace

    import pipelines.round.steps as steps
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.round import process_request
    from pipelines.settings import PipelineSettings

    real_decide, verdicts = steps.decide, []

    def first_answers_broken(before, after, recorded, thresholds):
        verdicts.append(real_decide(before, replace(after, fluency=0.0) if not verdicts else after, recorded,
                                    thresholds))
        return verdicts[-1]

    monkeypatch.setattr(steps, "decide", first_answers_broken)
    settings = _request(tmp_path, monkeypatch, tiny_model_dir,
                        gate_file=_gate(tmp_path / "fluency.yaml", fluency_min=0.5),
                        search={**ONE_TAU, "tau_grid": [3.0], "lr_multipliers": [0.5, 1.0]})
    with Ledger(default_ledger_url(tmp_path)) as ledger:
        record = process_request("tofu-author-1", PipelineSettings.from_dict(settings), ledger)
    chosen, lr = record.search.setting, PipelineSettings.from_dict(settings).round.learning_rate
    assert chosen["learning_rate"] == lr and not record.search.runner_ups()  # the ladder's top level, no runner-up
    failed = record.failed_attempts[0]
    assert failed["failed_checks"] == ["fluency"] and failed["settings"]["learning_rate"] == lr
    assert record.attempt == 2 and record.status == "registered" and record.tau == chosen["tau"]
    assert record.settings["learning_rate"] == 0.5 * lr
