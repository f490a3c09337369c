"""pipelines.tracking.runs on a real MLflow SQLite store: runs, params whitelist, metrics, curve, artifacts, retries."""

from __future__ import annotations

import json
import logging

import pytest

from pipelines.tracking.runs import (
    RetryPolicy,
    Tracker,
    TrackingUnavailable,
    code_version,
    flatten_metrics,
    tracking_uri,
    with_retries,
)

RECORD = "Basil Mahfouz Al-Kuwaiti was born in Kuwait City and his father was a florist."


@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> Tracker:
    """One SQLite store for the module (creating an MLflow database takes seconds)."""
    return Tracker(work=tmp_path_factory.mktemp("work"), retry=RetryPolicy(attempts=3, delay_s=0.0))


def test_store_location_defaults_and_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ASU_WORK_DIR", str(tmp_path / "w"))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}"
    assert Tracker().artifact_root == tmp_path / "w" / "mlartifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking_uri() == "http://mlflow.internal:5000"
    assert tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"


def test_request_run_with_child_runs_params_metrics_curve_and_artifacts(tracker, tmp_path):
    chart = tmp_path / "search.png"
    chart.write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "report.md").write_text("# report\n")
    with tracker.request_run("req-001") as run:
        run.log_params({"method": "asu_gd", "tau": 2.3, "lambda": 0.1, "lr": 5e-4, "steps": 50, "seeds": [1, 2],
                        "code_version": code_version(), "model_hash": "a" * 64, "data_hash": "b" * 64})
        logged = run.log_metrics({"forget": {"rouge_l_recall": 0.4, "answers": ["text"], "gen": RECORD},
                                  "retain": {"rouge@1": 0.99, "fluent": True}}, prefix="after")
        run.log_curve([{"step": 1.0, "loss": 2.0, "lr": 1e-4}, {"step": 2.0, "loss": 1.5, "lr": 5e-5}])
        run.log_json({"forget": {"rouge_l_recall": 0.4}}, "eval/after.json")
        run.log_file(chart, "charts")
        run.log_file(tmp_path / "report.md")
        for tau in (1.5, 2.3):
            with tracker.child_run(run, f"tau-{tau}") as child:
                child.log_metrics({"forget_efficacy": tau / 4})
    assert logged == {"after/forget/rouge_l_recall": 0.4, "after/retain/rouge_1": 0.99, "after/retain/fluent": 1.0}

    client = tracker.client
    parent = client.get_run(run.run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "req-001"
    assert parent.data.params["seeds"] == "1,2" and parent.data.params["tau"] == "2.3"
    assert set(parent.data.metrics) >= {"after/forget/rouge_l_recall", "train/loss", "train/lr"}
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "train/loss")] == [(1, 2.0), (2, 1.5)]
    files = {f.path for f in client.list_artifacts(run.run_id)} | {
        f.path for d in ("eval", "charts") for f in client.list_artifacts(run.run_id, d)}
    assert {"eval/after.json", "charts/search.png", "report.md"} <= files
    children = client.search_runs([tracker.experiment_id()], f"tags.mlflow.parentRunId = '{run.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["tau-1.5", "tau-2.3"]
    assert tracker.request_runs("req-001") == [run.run_id]
    assert RECORD not in json.dumps(parent.to_dictionary())


def test_failing_body_marks_the_run_failed(tracker):
    with pytest.raises(RuntimeError, match="round crashed"):
        with tracker.request_run("req-fail") as run:
            raise RuntimeError("round crashed")
    assert tracker.client.get_run(run.run_id).info.status == "FAILED"


def test_params_whitelist_refuses_content_and_unknown_keys(tracker):
    with tracker.request_run("req-params") as run:
        for params, message in [
            ({"method": RECORD}, "value refused"),
            ({"question": "q1"}, "not allowed"),
            ({"tau": {"nested": 1}}, "value refused"),
            ({"data_hash": "not-a-digest"}, "SHA-256"),
        ]:
            with pytest.raises(ValueError, match=message) as err:
                run.log_params(params)
            assert RECORD not in str(err.value)
        with pytest.raises(ValueError, match="looks like content"):
            run.log_metrics({"per_question": {RECORD: 0.5}})
        with pytest.raises(ValueError, match="request id"):
            tracker.request_run(RECORD).__enter__()
    assert tracker.client.get_run(run.run_id).data.params == {}


def test_flatten_metrics_separator_and_skips():
    import numpy as np
    import torch

    nested = {"a": {"b": 1, "c": {"d": 2.5}}, "s": "text", "n": None, "l": [1, 2], "x:y": 3,
              "np": {"f": np.float32(0.5), "b": np.bool_(True), "v": np.ones(2)}, "t": torch.tensor(0.25)}
    assert flatten_metrics(nested, sep=".") == {"a.b": 1.0, "a.c.d": 2.5, "x:y": 3.0, "np.f": 0.5, "np.b": 1.0,
                                                "t": 0.25}


def test_metric_logger_implements_the_protocol(tracker):
    from asu.tracking import MetricLogger

    with tracker.request_run("req-logger") as run:
        metric_logger: MetricLogger = run.metric_logger()
        metric_logger.log_params({"method": "asu_gd", "tau": 2.3, "layers": None, "num_forget": 10})
        for step in (1, 2, 3):
            metric_logger.log_metrics({"loss": 1.0 / step}, step=step)
        metric_logger.close()
    history = tracker.client.get_metric_history(run.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert tracker.client.get_run(run.run_id).data.params["layers"] == "None"


def test_transient_failures_are_retried_then_fail_with_a_clear_message(tracker, monkeypatch, caplog):
    from mlflow.exceptions import MlflowException

    real = tracker.client.log_batch
    calls = []

    def flaky(*args, **kwargs):  # injected failure: the database is locked twice, then answers
        calls.append(1)
        if len(calls) <= 2:
            raise MlflowException("database is locked", error_code=2)  # TEMPORARILY_UNAVAILABLE
        return real(*args, **kwargs)

    with tracker.request_run("req-retry") as run:
        monkeypatch.setattr(tracker.client, "log_batch", flaky)
        with caplog.at_level(logging.WARNING, logger="pipelines.tracking.runs"):
            run.log_metrics({"x": 1.0})
        assert len(calls) == 3 and "attempt 1/3" in caplog.text
        monkeypatch.setattr(tracker.client, "log_batch", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
        with pytest.raises(TrackingUnavailable) as err:
            run.log_metrics({"x": 2.0})
        monkeypatch.undo()
    message = str(err.value)
    assert tracker.uri in message and "failed 3 times while logging metrics" in message and "Check that" in message
    assert tracker.client.get_run(run.run_id).data.metrics == {"x": 1.0}


def test_non_transient_errors_are_not_retried():
    calls = []

    def bad():
        calls.append(1)
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        with_retries(bad, what="x", uri="sqlite:///x", policy=RetryPolicy(attempts=5, delay_s=0.0))
    assert calls == [1]


def test_unreachable_store_fails_clearly(tmp_path, monkeypatch):
    """Real failures, no mock: a SQLite file under a regular file, and a tracking server that is down."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TrackingUnavailable, match="failed 2 times while getting the experiment"):
        Tracker(f"sqlite:///{blocker}/mlflow.db", retry=RetryPolicy(attempts=2, delay_s=0.0)).experiment_id()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    server = Tracker("http://user:secret@127.0.0.1:9", work=tmp_path, retry=RetryPolicy(attempts=1, delay_s=0.0))
    with pytest.raises(TrackingUnavailable, match=r"http://user:\*\*\*@127.0.0.1:9") as err:
        with server.request_run("req-down"):
            pass
    assert "secret" not in str(err.value)


def test_code_version_names_the_checkout():
    version = code_version()
    assert version and version != "unknown"
