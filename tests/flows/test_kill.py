"""A real crash: ``asu run`` killed with SIGKILL in the middle of a round, and in the middle of registering the model
(after MLflow created the version, before the ledger recorded it; no cleanup runs). The next ``asu run`` puts the
orphaned request back in the queue, frees the ``gpu`` slot the dead worker held, resumes the round from its
checkpoint and ends with the weights of an uninterrupted run; nothing is registered twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline_helpers import queued_request_work as _work

from asu.hashing import sha256_file


def _run(work: Path, env: dict, pause_marker: Path | None = None, **kw) -> subprocess.Popen:
    """``asu run`` on ``work`` in a new session; with ``pause_marker``, the process pauses once MLflow has created the
    candidate's model version (``fault_injection.py``), after touching the marker."""
    args = ["run", "--settings", str(work / "settings.yaml"), "--work-dir", str(work)]
    command = [sys.executable, "-m", "cli.main", *args]
    if pause_marker is not None:
        tests = Path(__file__).resolve().parents[1]
        command = [sys.executable, "-c", f"import sys; sys.path[:0] = [{str(tests)!r}, {str(tests.parent)!r}]; "
                   f"import fault_injection; fault_injection.pause_after_model_version({str(pause_marker)!r}); "
                   f"from cli.main import main; sys.exit(main({args!r}))"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def _registered(work: Path, env: dict) -> list[tuple[str, str | None]]:
    code = ("import json; from pipelines.tracking.registry import ModelRegistry; from pipelines.tracking.runs import "
            f"Tracker; print(json.dumps([(v.version, v.tags.get('asu.model_sha256')) for v in "
            f"ModelRegistry(Tracker(work={str(work)!r}), 'asu-unlearned').history()]))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return [tuple(v) for v in __import__("json").loads(done.stdout.strip().splitlines()[-1])]


def test_a_killed_run_resumes_and_ends_with_the_uninterrupted_weights(tiny_model_dir, tmp_path):
    from pipelines.ledger.store import Ledger, default_ledger_url

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "ASU_CACHE_DIR": str(tiny_model_dir.parent.parent)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("ASU_LEDGER_URL", None)
    killed = _work(tmp_path / "killed", tiny_model_dir)
    first = _run(killed, env)
    checkpoints = killed / "rounds" / "tofu-author-1" / "model" / ".checkpoint"
    deadline = time.monotonic() + 300
    while not any(checkpoints.glob("step-*")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, "the round ended before it could be killed: " + first.stderr.read()[-2000:]
    time.sleep(1.0)  # a few more optimizer steps
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    with Ledger(default_ledger_url(killed)) as ledger:
        assert ledger.get("tofu-author-1").state == "running"  # the dead worker could not say anything

    second = _run(killed, env)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    assert "back in the queue" in err and "gpu slot was held by a worker that is gone" in err
    with Ledger(default_ledger_url(killed)) as ledger:
        history = [t.to_state for t in ledger.history("tofu-author-1")]
    assert history[-6:] == ["running", "queued", "running", "evaluated", "approved", "registered"]
    assert history.count("registered") == 1 and history.count("running") == 2

    clean = _work(tmp_path / "clean", tiny_model_dir)
    third = _run(clean, env)
    _, err = third.communicate(timeout=600)
    assert third.returncode == 0, err[-3000:]
    assert len(_registered(killed, env)) == len(_registered(clean, env)) == 2  # the base and one candidate each
    weights = [sha256_file(w / "rounds" / "tofu-author-1" / "model" / "model.safetensors") for w in (killed, clean)]
    assert weights[0] == weights[1]  # byte for byte (round.json differs: it records the resume)


def test_a_run_killed_while_registering_registers_the_model_once(tiny_model_dir, tmp_path):
    from pipelines.ledger.store import Ledger, default_ledger_url

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "ASU_CACHE_DIR": str(tiny_model_dir.parent.parent)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("ASU_LEDGER_URL", None)
    work = _work(tmp_path / "killed", tiny_model_dir, epochs=2)
    marker = tmp_path / "version-created"
    first = _run(work, env, pause_marker=marker)
    deadline = time.monotonic() + 600
    while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the run never reached registration: " + first.stderr.read()[-2000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert [v for v, _ in _registered(work, env)] == ["1", marker.read_text()]  # MLflow has the version...
    with Ledger(default_ledger_url(work)) as ledger:
        assert ledger.get("tofu-author-1").state == "evaluated"  # ...the ledger does not know it yet

    second = _run(work, env)
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    assert "back in the queue" in err and "registered before an interruption" in err
    versions = _registered(work, env)
    assert [v for v, _ in versions] == ["1", "2"]  # the base and the candidate, once
    with Ledger(default_ledger_url(work)) as ledger:
        history = [t.to_state for t in ledger.history("tofu-author-1")]
        assert history.count("registered") == 1 and history[-1] == "registered"
        assert ledger.history("tofu-author-1")[-1].detail["model_version"] == "2"


def test_worker_liveness_is_known_only_on_this_host():
    import socket

    from flows.continual import worker_alive, worker_id

    assert worker_alive(worker_id("x")) is True
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert worker_alive(f"flow:x@{socket.gethostname()}:{gone.pid}") is False
    assert worker_alive("flow:x@another-host:1") is None and worker_alive("flow:continual-unlearning") is None
