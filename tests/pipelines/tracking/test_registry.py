"""pipelines.tracking.registry on a real MLflow SQLite registry with a real round output of the tiny embedded model."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from pipelines.tracking.registry import CANDIDATE, CHAMPION, ModelRegistry, PartialModelError, RegistryError
from pipelines.tracking.runs import RetryPolicy, Tracker, sha256_dir

PASSED = {"passed": True, "checks": [{"name": "forget_efficacy", "status": "pass", "value": 0.6}]}
FAILED = {"passed": False, "checks": [{"name": "fluency", "status": "fail", "value": 0.2}]}


@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> Tracker:
    return Tracker(work=tmp_path_factory.mktemp("work"), retry=RetryPolicy(attempts=2, delay_s=0.0))


@pytest.fixture(scope="module")
def round_run(tracker, tiny_model_dir, tiny_sets, tmp_path_factory):
    """A real one-step round on the tiny model, tracked through ``MlflowMetricLogger``: (run id, output folder)."""
    from asu.config import ASUConfig
    from asu.recipes import get_recipe
    from asu.trainer import run_round

    forget, retain = tiny_sets
    config = ASUConfig.from_dict({**get_recipe("embedded").to_dict(), "epochs": 1})
    with tracker.request_run("req-round") as run:
        result = run_round(tiny_model_dir, forget[:4], retain[:4], config, tmp_path_factory.mktemp("round") / "out",
                           metric_logger=run.metric_logger(), progress=False)
    return run.run_id, result.model_dir


def test_the_round_reports_through_the_mlflow_metric_logger(tracker, round_run):
    run = tracker.client.get_run(round_run[0])
    assert run.data.params["method"] == "asu_gd" and run.data.params["num_forget"] == "4"
    assert [m.step for m in tracker.client.get_metric_history(run.info.run_id, "train/loss")] == [1]
    assert "train/round_seconds" in run.data.metrics


def test_register_promote_rollback_and_load_the_champion(tracker, round_run, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    registry = ModelRegistry(tracker, name="cycle")
    assert registry.champion() is None and registry.history() == [] and registry.events() == []
    base = registry.register_base(tiny_model_dir)
    registry.promote(base.version, "starting model")
    first = registry.register_candidate(round_run[1], request_ids=["req-round"], parent_version=base.version,
                                        gate_results=PASSED, tau=2.3, run_id=round_run[0],
                                        tags={"model_hash": "c" * 64})
    assert first.aliases == (CANDIDATE,) and first.request_ids == ("req-round",) and first.gate_passed is True
    assert first.parent_version == base.version and first.tags["asu.tau"] == "2.3" and first.run_id == round_run[0]
    assert json.loads(first.tags["asu.gate"])["checks"][0]["value"] == 0.6
    assert first.tags["asu.model_sha256"] == sha256_dir(round_run[1])

    promoted = registry.promote(first.version, "gate passed")
    assert promoted.aliases == (CHAMPION,) and CANDIDATE not in registry.aliases()
    assert promoted.tags["asu.previous_champion"] == base.version
    version, path = registry.champion()
    assert version == first.version and sha256_dir(path) == sha256_dir(round_run[1])
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert model.generate(**tokenizer("Hello", return_tensors="pt"), max_new_tokens=2).shape[1] >= 2

    second = registry.register_candidate(round_run[1], request_ids=["req-2", "req-3"], parent_version=first.version,
                                         gate_results=PASSED, tau=1.8)
    registry.promote(second.version, "gate passed")
    back = registry.rollback("answers on retain questions degraded")
    assert back.version == first.version and registry.aliases()[CHAMPION] == first.version
    demoted = registry.get(second.version)
    assert demoted.tags["asu.rolled_back"] == "true"
    assert demoted.tags["asu.rollback_reason"] == "answers on retain questions degraded"
    assert registry.rollback("second thoughts").version == base.version
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback("again")
    events = registry.events()
    assert [(e["action"], e["version"], e["previous"]) for e in events] == [
        ("promote", "1", "none"), ("promote", "2", "1"), ("promote", "3", "2"), ("rollback", "2", "3"),
        ("rollback", "1", "2")]
    assert [(v.version, v.aliases) for v in registry.history()] == [("1", (CHAMPION,)), ("2", ()), ("3", ())]


def test_a_gate_failed_candidate_needs_force(tracker, round_run):
    registry = ModelRegistry(tracker, name="gated")
    failed = registry.register_candidate(round_run[1], request_ids=["req-x"], parent_version=None,
                                         gate_results=FAILED, tau=2.0)
    assert failed.gate_passed is False and failed.parent_version is None
    with pytest.raises(RegistryError, match="failed its gate"):
        registry.promote(failed.version, "try")
    assert CHAMPION not in registry.aliases()
    assert registry.promote(failed.version, "reviewed by hand", force=True).aliases == (CHAMPION,)
    assert registry.promote(failed.version, "again", force=True).tags["asu.promotion_reason"] == "reviewed by hand"


@pytest.mark.parametrize("damage", ["no_marker", "no_weights", "bad_marker", "stale_marker", "no_config", "shards"])
def test_partial_folders_are_refused(tracker, round_run, tmp_path, damage):
    folder = tmp_path / "model"
    shutil.copytree(round_run[1], folder)
    marker, weights = folder / "round.json", folder / "model.safetensors"
    if damage == "no_marker":
        marker.unlink()
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "bad_marker":
        marker.write_text('{"config": {')
    elif damage == "stale_marker":
        os.utime(marker, (time.time() - 60, time.time() - 60))
    elif damage == "no_config":
        (folder / "config.json").unlink()
    else:
        index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        weights.rename(folder / "model-00001-of-00002.safetensors")
    registry = ModelRegistry(tracker, name=f"partial-{damage.replace('_', '-')}")
    with pytest.raises(PartialModelError) as err:
        registry.register_candidate(folder, request_ids=["req-p"], parent_version=None, gate_results=PASSED, tau=2.0)
    assert str(folder) in str(err.value)
    assert registry.history() == []


def test_unknown_versions_and_bad_arguments(tracker, round_run):
    registry = ModelRegistry(tracker, name="errors")
    registry.register_candidate(round_run[1], request_ids=["req-e"], parent_version=None, gate_results=PASSED, tau=2.0)
    with pytest.raises(RegistryError, match="no version 7; known versions: 1"):
        registry.promote(7, "x")
    with pytest.raises(RegistryError, match="positive integer"):
        registry.promote("latest", "x")
    with pytest.raises(RegistryError, match="no champion"):
        registry.rollback("nothing promoted yet")
    with pytest.raises(ValueError, match="needs a reason"):
        registry.rollback("  ")
    with pytest.raises(ValueError, match="request id"):
        registry.register_candidate(round_run[1], request_ids=["Who is the author?"], parent_version=None,
                                    gate_results=PASSED, tau=2.0)
    with pytest.raises(ValueError, match="boolean 'passed'"):
        registry.register_candidate(round_run[1], request_ids=["req-e"], parent_version=None, gate_results={}, tau=2.0)
    assert len(registry.history()) == 1


def _write_a_report(work, request_id: str) -> None:
    from pipelines.round.gate import GateFigures, GateThresholds, evaluate_gate
    from pipelines.round.report import EvidenceReport, ModelRef, ValidationSummary, write_report

    before, after = GateFigures(0.0, 0.9, 1.0, 0.9), GateFigures(0.6, 0.89, 1.0, 0.5)
    write_report(EvidenceReport(
        request_id, {"request": "d" * 64}, ValidationSummary(True), "asu_gd", 2.3, [], before, after,
        evaluate_gate(before, after, [], GateThresholds()), [], ModelRef("cli", "1", ("champion",)), "abc",
        {"asu_config": "e" * 64}), work)


def test_cli_promote_rollback_and_report(tracker, round_run, tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry = ModelRegistry(tracker, name="cli")
    good = registry.register_candidate(round_run[1], request_ids=["req-a"], parent_version=None, gate_results=PASSED,
                                       tau=2.3)
    bad = registry.register_candidate(round_run[1], request_ids=["req-b"], parent_version=good.version,
                                      gate_results=FAILED, tau=2.3)
    opts = ["--work-dir", str(tracker.work_dir), "--model-name", "cli"]

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, *opts])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    assert run("promote", good.version) == (0, "cli version 1 is the champion (previous champion: none)\n", "")
    code, _, err = run("promote", bad.version)
    assert code == 2 and "failed its gate" in err and "--force" in err
    assert run("promote", bad.version, "--force", "--reason", "reviewed")[0] == 0
    assert run("rollback", "--reason", "retain answers degraded") == (
        0, "cli champion rolled back to version 1 (previous champion: 2)\n", "")
    assert registry.get(bad.version).tags["asu.rollback_reason"] == "retain answers degraded"
    code, _, err = run("rollback", "--reason", "again")
    assert code == 2 and "no previous champion" in err
    code, _, err = run("promote", "99")
    assert code == 2 and "no version 99" in err

    _write_a_report(tracker.work_dir, "req-cli")
    report = ["report", "req-cli", "--work-dir", str(tracker.work_dir)]
    assert main(report) == 0 and "# Evidence report: request req-cli" in capsys.readouterr().out
    assert main([*report, "--json"]) == 0 and json.loads(capsys.readouterr().out)["request_id"] == "req-cli"
    assert main(["report", "req-none", "--work-dir", str(tracker.work_dir)]) == 2
    assert "no evidence report for request 'req-none'" in capsys.readouterr().err


def _ledger_with(work, states: dict[str, list[str]]):
    """A ledger at ``work`` holding one accepted request per key, walked through the given states."""
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.request import ForgetRequest, Record

    ledger = Ledger(default_ledger_url(work))
    for rid, path in states.items():
        ledger.accept(ForgetRequest(request_id=rid, subject="s", kind="qa",
                                    records=(Record("r1", question=f"Who is {rid}?", answer="Nobody."),)),
                      actor="test")
        for state in path:
            ledger.transition(rid, state, actor="test")
    return ledger


def test_promote_and_rollback_move_the_ledger_states(tracker, round_run):
    """The ledger follows the champion: rollback -> rolled_back, a champion without the round -> superseded,
    a forced promotion of a failed version -> registered."""
    from pipelines.tracking.promotion import promote, rollback

    done = ["running", "evaluated", "approved", "registered"]
    ledger = _ledger_with(tracker.work_dir, {"req-a": done, "req-b": ["running", "evaluated", "gate_failed"],
                                             "req-c": done})
    registry = ModelRegistry(tracker, name="ledger-sync")
    a = registry.register_candidate(round_run[1], request_ids=["req-a"], parent_version=None, gate_results=PASSED,
                                    tau=2.3)
    b = registry.register_candidate(round_run[1], request_ids=["req-b"], parent_version=a.version,
                                    gate_results=FAILED, tau=2.3)
    c = registry.register_candidate(round_run[1], request_ids=["req-c"], parent_version=a.version,
                                    gate_results=PASSED, tau=2.3)
    work = tracker.work_dir
    registry.promote(a.version, "start")
    registry.promote(c.version, "auto")
    assert ledger.get("req-c").state == "registered"

    moved = promote(b.version, "reviewed by hand", force=True, work=work, model_name="ledger-sync")
    assert moved.moved == {"req-b": "registered", "req-c": "superseded"}
    assert ledger.latest_outcome("req-b") is None
    detail = ledger.history("req-c")[-1].detail
    assert detail == {"champion": b.version, "action": "promote", "model_version": None, "reason": "reviewed by hand"}

    moved = rollback("retain degraded", work=work, model_name="ledger-sync")
    assert moved.version == c.version and moved.moved == {"req-b": "rolled_back", "req-c": "registered"}
    assert "req-b: rolled_back" in moved.describe()
    assert {e.request_id: e.state for e in ledger.list_requests()} == {
        "req-a": "registered", "req-b": "rolled_back", "req-c": "registered"}
    ledger.close()


def test_cli_fails_clearly_when_mlflow_is_unreachable(tmp_path, monkeypatch, capsys):
    from cli.main import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")
    assert main(["rollback", "--reason", "x"]) == 4  # asu.errors.InfrastructureError
    err = capsys.readouterr().err
    assert "error: MLflow at sqlite:///" in err and "Check that" in err and "Traceback" not in err
