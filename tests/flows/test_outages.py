"""Real outages while ``asu run`` is in the middle of a round. A real ``mlflow server`` on PostgreSQL
(127.0.0.1:5432) stopped: the step retries, then the run fails with a message naming the store, and the request
stays queued; after the server is back, the next ``asu run`` completes it from its checkpoint. The PostgreSQL
ledger's connection cut (a TCP proxy in front of the server, closed): the run fails naming the ledger, and the next
run, with the connection back, releases the request its dead worker held and completes it. Slow: ``pytest -m slow``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from intake_helpers import PG_URL
from pipeline_helpers import queued_request_work


def _fresh_database(prefix: str):
    """Name of a fresh PostgreSQL database (dropped afterwards); skips without a server or driver."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL.split('@')[-1]} ({str(err).strip().splitlines()[0]})")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def mlflow_database():
    """SQLAlchemy URL of a fresh PostgreSQL database for MLflow's tables."""
    for name in _fresh_database("asu_mlflow"):
        yield PG_URL.replace("postgresql://", "postgresql+psycopg://", 1).rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def ledger_database():
    """Name of a fresh PostgreSQL database for the ledger."""
    yield from _fresh_database("asu_ledger_outage")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` in its own process group: PostgreSQL backend, artifacts proxied into a local folder."""

    def __init__(self, backend: str, artifacts: Path, port: int, log: Path) -> None:
        self.backend, self.artifacts, self.port, self.log = backend, artifacts, port, log
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
                   "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", "1"]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "mlflow server exited: " + self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("mlflow server did not answer /health: " + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)


def _asu_run(work: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "run", "--settings", str(work / "settings.yaml"),
                             "--work-dir", str(work)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


@pytest.mark.slow  # an MLflow server, a round of 30 epochs and its rerun: ~3 min on 2 idle cores (6.6 min shared)
def test_an_mlflow_server_stopped_mid_round_fails_the_run_clearly_and_a_rerun_completes(
        tiny_model_dir, tmp_path, mlflow_database):
    from pipelines.ledger.store import Ledger, default_ledger_url

    server = MlflowServer(mlflow_database, tmp_path / "artifacts", _free_port(), tmp_path / "mlflow-server.log")
    work = queued_request_work(tmp_path / "work", tiny_model_dir, epochs=30)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "ASU_CACHE_DIR": str(tiny_model_dir.parent.parent),
           "MLFLOW_TRACKING_URI": server.uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    env.pop("ASU_LEDGER_URL", None)
    server.start()
    try:
        first = _asu_run(work, env)
        checkpoints = work / "rounds" / "tofu-author-1" / "model" / ".checkpoint"
        deadline = time.monotonic() + 600
        while not any(checkpoints.glob("step-*")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, "the round ended before the server could be stopped: " + first.stderr.read()
        server.stop()  # in the middle of the round: its metrics go to MLflow every step
        _, err = first.communicate(timeout=600)
        assert first.returncode != 0
        assert f"MLflow at {server.uri} failed" in err and "Check that the tracking server is running" in err
        assert "Traceback" not in err
        with Ledger(default_ledger_url(work)) as ledger:
            assert ledger.get("tofu-author-1").state == "queued"  # nothing lost: it waits for the next run
            assert ledger.history("tofu-author-1")[-1].detail["error"] == "TrackingUnavailable"

        server.start()
        second = _asu_run(work, env)
        _, err = second.communicate(timeout=900)
        assert second.returncode == 0, err[-3000:]
        with Ledger(default_ledger_url(work)) as ledger:
            assert ledger.get("tofu-author-1").state == "registered"
            history = [t.to_state for t in ledger.history("tofu-author-1")]
        assert history.count("running") == 2 and history.count("registered") == 1
    finally:
        server.stop()


def _wait_mid_round(process: subprocess.Popen, work: Path) -> None:
    checkpoints = work / "rounds" / "tofu-author-1" / "model" / ".checkpoint"
    deadline = time.monotonic() + 600
    while not any(checkpoints.glob("step-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, "the round ended before the outage: " + process.stderr.read()


@pytest.mark.slow  # two runs of a 30-epoch round: ~3 min on 2 idle cores
def test_a_ledger_connection_cut_mid_round_fails_naming_the_ledger_and_the_next_run_completes(
        tiny_model_dir, tmp_path, ledger_database):
    from tcp_proxy import TcpProxy

    from pipelines.ledger.store import Ledger

    server = PG_URL.split("@", 1)[1].split("/", 1)[0]
    host, _, port = server.partition(":")
    proxy = TcpProxy((host, int(port or 5432)))
    proxy.start()
    user = PG_URL.split("//", 1)[1].split("@", 1)[0]
    ledger_url = f"postgresql://{user}@127.0.0.1:{proxy.port}/{ledger_database}"
    direct_url = PG_URL.rsplit("/", 1)[0] + f"/{ledger_database}"
    work = queued_request_work(tmp_path / "work", tiny_model_dir, epochs=30, ledger_url=ledger_url)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "ASU_CACHE_DIR": str(tiny_model_dir.parent.parent),
           "ASU_LEDGER_URL": ledger_url, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    env.pop("MLFLOW_TRACKING_URI", None)
    try:
        first = _asu_run(work, env)
        _wait_mid_round(first, work)
        proxy.stop()  # the round goes on; recording its outcome in the ledger cannot
        _, err = first.communicate(timeout=600)
        assert first.returncode == 4, err[-3000:]
        assert f"the ledger at postgresql+psycopg://{user}@127.0.0.1:{proxy.port}/{ledger_database}" in err
        assert "Traceback" not in err
        with Ledger(direct_url) as ledger:  # the server itself never went away
            assert ledger.get("tofu-author-1").state == "running"  # held by a worker that is gone

        proxy.start()
        second = _asu_run(work, env)
        _, err = second.communicate(timeout=900)
        assert second.returncode == 0, err[-3000:]
        assert "back in the queue" in err
        with Ledger(direct_url) as ledger:
            assert ledger.get("tofu-author-1").state == "registered"
            history = [t.to_state for t in ledger.history("tofu-author-1")]
        assert history.count("running") == 2 and history.count("registered") == 1
    finally:
        proxy.stop()
