"""The continual pipeline under Prefect's test harness, MLflow in a temporary SQLite store, the tiny model.

Scenario A: three successive requests (one urgent) drained by two continual flows started at once: each request is
processed exactly once, urgent first, each round starts from the previous champion, earlier requests are
re-checked, GPU slots never overlap, the evidence never holds forget content.
Scenario B: a crash in the middle of the round puts the request back in the queue with nothing registered; the
retry resumes from the round's checkpoint and completes; a strict gate then fails a request and leaves the champion
unchanged.
"""

from __future__ import annotations

import json
import threading

import pytest
from pipeline_helpers import TEST_SEARCH
from pipeline_helpers import write_gate as _gate


def _setup(tmp_path, monkeypatch, tiny_model_dir, authors, urgent_author, **gate):
    from asu.data import load_qa_file
    from pipelines.demo.data import write_demo_files
    from pipelines.intake.submit import submit_request
    from pipelines.ledger.store import Ledger, default_ledger_url

    monkeypatch.setenv("ASU_WORK_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ASU_LEDGER_URL", raising=False)
    files = write_demo_files(tmp_path / "inputs", "tiny", authors, urgent_author)
    settings = {
        "base_model": str(tiny_model_dir), "retain_file": str(files.retain), "holdout_file": str(files.holdout),
        "recipe": "embedded", "overrides": {"epochs": 2}, "search": TEST_SEARCH,
        "gate_file": _gate(tmp_path / "gate.yaml", **gate), "report_retain_items": 8, "max_new_tokens": 48,
    }  # fmt: skip
    ledger = Ledger(default_ledger_url(tmp_path))
    retain = load_qa_file(files.retain)
    for path, urgent in files.requests:
        submit_request(path, urgent=urgent, ledger=ledger, retain=retain, actor="test")
    ledger.close()
    return settings, files


@pytest.fixture(scope="module")
def scenario_a(prefect_harness, tiny_model_dir, tmp_path_factory):
    from flows.continual import continual_unlearning

    tmp_path = tmp_path_factory.mktemp("continual")
    with pytest.MonkeyPatch.context() as mp:
        settings, files = _setup(tmp_path, mp, tiny_model_dir, (1, 2, 3), urgent_author=3)
        outcomes: list[list[dict]] = []
        errors: list[BaseException] = []

        def worker():
            try:
                outcomes.append(continual_unlearning(settings))
            except BaseException as err:  # noqa: BLE001 - re-raised in the test
                errors.append(err)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        yield {"tmp": tmp_path, "settings": settings, "files": files, "outcomes": outcomes, "errors": errors}


def test_two_concurrent_flows_process_each_request_once_urgent_first(scenario_a):
    assert not scenario_a["errors"]
    done = [o for run in scenario_a["outcomes"] for o in run]
    assert sorted(o["request_id"] for o in done) == ["tofu-author-1", "tofu-author-2", "tofu-author-3"]
    slots = [json.loads(line) for line in (scenario_a["tmp"] / "gpu-slot.jsonl").read_text().splitlines()]
    slots.sort(key=lambda s: s["start"])
    assert [s["holder"] for s in slots][0] == "tofu-author-3"  # the urgent request was claimed first
    assert all(a["end"] <= b["start"] for a, b in zip(slots, slots[1:], strict=False))  # never overlapping


def test_each_round_starts_from_the_previous_champion_and_rechecks_earlier(scenario_a):
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.tracking.registry import ModelRegistry
    from pipelines.tracking.runs import Tracker

    done = sorted((o for run in scenario_a["outcomes"] for o in run), key=lambda o: int(o["model_version"]))
    assert all(o["status"] == "registered" and o["promoted"] for o in done)
    assert [o["parent_version"] for o in done] == ["1", done[0]["model_version"], done[1]["model_version"]]
    assert set(done[1]["after"]["earlier"]) == {done[0]["request_id"]}
    assert set(done[2]["after"]["earlier"]) == {done[0]["request_id"], done[1]["request_id"]}
    registry = ModelRegistry(Tracker(), "asu-unlearned")
    assert registry.champion().version == done[-1]["model_version"]
    assert registry.get(done[-1]["model_version"]).parent_version == done[1]["model_version"]
    ledger = Ledger(default_ledger_url(scenario_a["tmp"]))
    states = [t.to_state for t in ledger.history("tofu-author-1")]
    ledger.close()
    assert states[-4:] == ["running", "evaluated", "approved", "registered"]


def test_evidence_report_and_mlflow_hold_no_forget_content(scenario_a):
    from pipelines.tracking.runs import Tracker

    request = scenario_a["files"].requests[0][0].read_text().splitlines()
    answer = json.loads(request[1])["answer"]
    report_dir = scenario_a["tmp"] / "reports" / "tofu-author-1"
    text = (report_dir / "report.md").read_text() + (report_dir / "report.json").read_text()
    assert "empirical evidence" in text.lower() and answer[:30] not in text
    tracker = Tracker()
    [run_id] = tracker.request_runs("tofu-author-1")
    run = tracker.client.get_run(run_id)
    assert float(run.data.params["tau"]) in (2.0, 3.0)
    assert "after/forget_efficacy" in run.data.metrics
    assert all(answer[:20] not in str(v) for v in run.data.params.values())


def test_crash_requeues_then_retry_completes_and_strict_gate_keeps_champion(prefect_harness, tiny_model_dir,
                                                                           tmp_path, monkeypatch):
    import pipelines.round.steps as steps
    from flows.continual import continual_unlearning
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.tracking.registry import ModelRegistry
    from pipelines.tracking.runs import Tracker

    settings, _ = _setup(tmp_path, monkeypatch, tiny_model_dir, (1, 2), urgent_author=2,
                         forget_efficacy_min=0.0, utility_drop_max=1.0)
    import asu.trainer

    real_unlearn, real_loss = steps.unlearn, asu.trainer.objective_loss
    calls = {"n": 0}

    def crash_mid_round(*args, **kwargs):
        # The final round (not the search's trials) dies during its 4th optimizer step, after a checkpoint.
        def loss(*a, **k):
            calls["n"] += 1
            if calls["n"] == 4:
                raise RuntimeError("injected crash mid-round")
            return real_loss(*a, **k)

        monkeypatch.setattr(asu.trainer, "objective_loss", loss)
        try:
            return real_unlearn(*args, **kwargs)
        finally:
            monkeypatch.setattr(asu.trainer, "objective_loss", real_loss)

    monkeypatch.setattr("flows.continual.unlearn.fn", crash_mid_round)
    with pytest.raises(RuntimeError, match="injected crash"):
        continual_unlearning(settings, max_requests=1)
    ledger = Ledger(default_ledger_url(tmp_path))
    assert ledger.get("tofu-author-2").state == "queued"  # back in the queue, the error recorded
    assert ledger.history("tofu-author-2")[-1].detail["error"] == "RuntimeError"
    model_dir = tmp_path / "rounds" / "tofu-author-2" / "model"
    assert (model_dir / ".checkpoint").is_dir() and not (model_dir / "round.json").exists()
    registry = ModelRegistry(Tracker(), "asu-unlearned")
    assert [v.version for v in registry.history()] == ["1"]  # only the base model: nothing partial registered
    monkeypatch.setattr("flows.continual.unlearn.fn", real_unlearn)
    [retried] = continual_unlearning(settings, max_requests=1)
    assert retried["request_id"] == "tofu-author-2" and retried["status"] == "registered"
    assert json.loads((model_dir / "round.json").read_text())["metrics"]["resumed_from_step"] > 0

    # A check the search cannot foresee (forget efficacy, utility and fluency it already holds to the gate's bars):
    # a membership AUC band no memorised set lands in.
    strict = {**settings, "gate_file": _gate(tmp_path / "strict.yaml", mia_auc_band=[0.0, 0.001])}
    [failed] = continual_unlearning(strict)
    assert failed["request_id"] == "tofu-author-1" and failed["status"] == "gate_failed"
    assert failed["failed_checks"] == ["mia_auc"]
    assert registry.champion().version == retried["model_version"]  # champion unchanged
    assert registry.get(failed["model_version"]).gate_passed is False
    assert ledger.get("tofu-author-1").state == "gate_failed"
    ledger.close()


def test_a_request_the_round_cannot_process_is_refused_with_its_reason_and_the_queue_goes_on(
        prefect_harness, tiny_model_dir, tmp_path, monkeypatch):
    """An urgent text request whose passage is too short to measure is found out when the round tokenises it: the
    flow refuses it in the ledger (``rejected``, the reason without the text) and returns, instead of sending it
    back to the queue to fail again ahead of every other request."""
    from flows.continual import continual_unlearning
    from pipelines.intake.submit import submit_request
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.round.record import format_rounds

    settings, _ = _setup(tmp_path, monkeypatch, tiny_model_dir, (1,), urgent_author=-1)  # not urgent
    passage = "A short passage about nobody in particular."
    path = tmp_path / "short.jsonl"
    path.write_text(json.dumps({"request_id": "short-1", "subject": "a note", "kind": "text"}) + "\n"
                    + json.dumps({"text": passage}) + "\n")
    with Ledger(default_ledger_url(tmp_path)) as ledger:
        submit_request(path, urgent=True, ledger=ledger, actor="test")
    outcomes = continual_unlearning(settings, max_requests=1)
    assert [(o["request_id"], o["status"]) for o in outcomes] == [("short-1", "rejected")]
    assert "needs at least 80" in outcomes[0]["reason"] and passage not in json.dumps(outcomes)
    assert "REFUSED" in format_rounds([o["table"] for o in outcomes])
    with Ledger(default_ledger_url(tmp_path)) as ledger:
        assert ledger.get("short-1").state == "rejected"
        assert "needs at least 80" in ledger.history("short-1")[-1].detail["reason"]
        assert ledger.get("tofu-author-1").state == "queued"  # next in line, untouched
