"""Check the team deployment on real servers: Prefect and MLflow on PostgreSQL, the ledger on PostgreSQL, one
work queue per GPU.

    .venv/bin/python -m bench.verify_team [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--keep]
        [--out bench/results/verify_team.json]

What it starts (each in its own process group, stopped at the end, databases dropped unless ``--keep``):
- three fresh PostgreSQL databases on the ``--postgres`` server: Prefect's, MLflow's and the request ledger's;
- ``prefect server start`` with ``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://...``;
- ``mlflow server`` with the PostgreSQL backend store and a separate artifact root (``--artifacts-destination``,
  artifacts proxied through the server, so workers need no access to the folder);
- the process work pool ``team-pool`` with the queues ``gpu-0`` and ``gpu-1`` (one run at a time each), the
  global concurrency limit ``gpu``, ``prefect deploy --all --prefect-file deploy/team/prefect.yaml``, and one
  worker per queue with ``CUDA_VISIBLE_DEVICES`` set to its device.

Then two requests go through the deployments: request A is queued in the ledger and the ``nightly`` deployment
drains it on ``gpu-0``; once A is running, ``urgent-removal`` is started on ``gpu-1`` with request B. The two
workers run at the same time, and the lineage slot makes B's round wait for A's, so B starts from the model A
produced. Checked afterwards, from the servers and databases themselves:
- Prefect: both flow runs completed, one from each queue; the server's PostgreSQL database holds the flow runs;
- ledger (PostgreSQL): both requests reached a final state, each naming its model version;
- registry (MLflow server): one version per request, B's parent is A's version (the chain never branches), the
  champion is the newest version that passed its gate, and every version's files are in the artifact root;
- runs: the requests' MLflow runs finished, and MLflow's PostgreSQL database holds them.
Uses the tiny embedded model (a few minutes on 2 CPU cores). Prints progress and a JSON summary (also written to
``--out``); exit 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.verify_deployments import BIN, ROOT, _free_port, _prefect, _wait

TEAM_FILE = ROOT / "deploy" / "team" / "prefect.yaml"
QUEUES = ("gpu-0", "gpu-1")
FINAL = ("registered", "gate_failed", "superseded")


def _say(message: str) -> None:
    print(f"[verify-team {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Databases:
    """Fresh PostgreSQL databases named ``asu_team_<role>_<random>``, dropped by :meth:`drop`."""

    def __init__(self, admin_url: str, roles: tuple[str, ...]) -> None:
        import psycopg

        self.admin_url, self.suffix = admin_url, uuid.uuid4().hex[:8]
        self.names = {role: f"asu_team_{role}_{self.suffix}" for role in roles}
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                for name in self.names.values():
                    conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as err:
            raise SystemExit(f"PostgreSQL is not reachable at {admin_url.split('@')[-1]} "
                             f"({str(err).strip().splitlines()[0]}); pass --postgres URL of a server where this "
                             "user may create databases") from None

    def url(self, role: str, driver: str = "postgresql") -> str:
        base = self.admin_url.rsplit("/", 1)[0].replace("postgresql://", f"{driver}://", 1)
        return f"{base}/{self.names[role]}"

    def scalar(self, role: str, sql: str) -> int:
        import psycopg

        with psycopg.connect(self.url(role), connect_timeout=5) as conn:
            return conn.execute(sql).fetchone()[0]

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            for name in self.names.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Processes:
    """Long-running servers and workers, each in its own process group, all logging to one file."""

    def __init__(self, log: Path) -> None:
        self.log, self.started = log.open("a"), []

    def start(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        _say(f"starting {name}")
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.started.append((name, proc))
        return proc

    def stop(self) -> None:
        for name, proc in reversed(self.started):  # workers first, servers last
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            _say(f"stopped {name}")
        self.log.close()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _settings(tmp: Path) -> tuple[Path, object]:
    """The tiny demo's settings. Its gate is the demo's with forget efficacy >= 0.2 (not 0.3): the 4-author
    smoke-test model forgets ~0.27 in its short rounds, and what is checked here is the servers and a chain of
    promoted versions, not the model (the gate's other checks stay)."""
    import yaml

    from pipelines.demo.data import write_demo_files
    from pipelines.demo.product import TINY_DEMO, demo_settings

    files = write_demo_files(tmp / "inputs", "tiny", TINY_DEMO["authors"], urgent_author=TINY_DEMO["authors"][-1])
    gate = yaml.safe_load((ROOT / "configs" / "gate-demo.yaml").read_text())
    gate["forget_efficacy_min"] = 0.2
    (tmp / "gate.yaml").write_text(yaml.safe_dump(gate))
    settings = {**demo_settings(files, "tiny", **TINY_DEMO["settings"]), "benchmarks": [],
                "gate_file": str(tmp / "gate.yaml")}
    path = tmp / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path, files


def _deployment_runs(env: dict) -> list[dict]:
    """Flow runs started from a deployment (not subflows, not the nightly schedule's future runs)."""
    runs = json.loads(_prefect(env, "flow-run", "ls", "--limit", "50", "-o", "json", check=False) or "[]")
    return [r for r in runs if r.get("deployment_id") and r.get("start_time")]


def _checks(summary: dict, databases: Databases, env: dict, artifacts: Path, ids: dict[str, str]) -> dict:
    """Everything the module docstring promises, read back from the servers and databases."""
    from mlflow import MlflowClient

    from pipelines.ledger.store import Ledger
    from pipelines.tracking.registry import DEFAULT_MODEL_NAME, ModelRegistry
    from pipelines.tracking.runs import Tracker

    checks: dict[str, bool] = {}
    runs = _deployment_runs(env)
    summary["flow_runs"] = [{"queue": r.get("work_queue_name"),
                             "state": r.get("state_type"), "start": r.get("start_time"), "end": r.get("end_time")}
                            for r in sorted(runs, key=lambda r: r.get("start_time") or "")]
    checks["prefect_runs_completed"] = len(runs) == 2 and all(r["state_type"] == "COMPLETED" for r in runs)
    checks["prefect_one_run_per_queue"] = sorted(r.get("work_queue_name") for r in runs) == list(QUEUES)
    summary["prefect_postgres_flow_runs"] = databases.scalar("prefect", "SELECT count(*) FROM flow_run")
    checks["prefect_on_postgres"] = summary["prefect_postgres_flow_runs"] >= 2

    with Ledger(databases.url("ledger")) as ledger:
        entries = {name: ledger.get(rid) for name, rid in ids.items()}
    summary["ledger"] = {name: e.state for name, e in entries.items()}
    checks["ledger_final_states"] = all(e.state in FINAL for e in entries.values())

    registry = ModelRegistry(Tracker(uri=env["MLFLOW_TRACKING_URI"], work=env["ASU_WORK_DIR"]))
    versions = registry.history()
    by_request = {name: next((v for v in versions if rid in v.request_ids), None) for name, rid in ids.items()}
    summary["registry"] = {
        "versions": [{"version": v.version, "parent": v.parent_version, "requests": len(v.request_ids),
                      "gate_passed": v.gate_passed} for v in versions],
        "aliases": registry.aliases()}
    a, b = by_request["A"], by_request["B"]
    checks["registry_one_version_per_request"] = a is not None and b is not None and a.version != b.version
    # B starts from the champion A left: A's version when A passed its gate, else the version A started from.
    checks["registry_chain_never_branches"] = bool(a and b and b.parent_version == (
        a.version if a.gate_passed else a.parent_version))
    passed = [v for v in versions if v.gate_passed] or [v for v in versions if v.parent_version is None]
    newest_passed = max(passed, key=lambda v: int(v.version)).version if passed else None
    checks["registry_champion_newest_passed"] = registry.aliases().get("champion") == newest_passed
    stored = {p.name for p in artifacts.rglob("*") if p.is_file()}
    summary["artifact_root_files"] = len(stored)
    checks["artifacts_in_artifact_root"] = "model.safetensors" in stored or any(s.endswith(".safetensors")
                                                                                for s in stored)

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    run_ids = {v.run_id for v in (a, b) if v is not None and getattr(v, "run_id", None)}
    statuses = [client.get_run(rid).info.status for rid in run_ids]
    summary["mlflow_request_runs"] = statuses
    checks["mlflow_runs_finished"] = len(statuses) == 2 and all(s == "FINISHED" for s in statuses)
    summary["mlflow_postgres_runs"] = databases.scalar("mlflow", "SELECT count(*) FROM runs")
    summary["mlflow_postgres_model_versions"] = databases.scalar(
        "mlflow", f"SELECT count(*) FROM model_versions WHERE name = '{DEFAULT_MODEL_NAME}'")
    checks["mlflow_on_postgres"] = summary["mlflow_postgres_model_versions"] == len(versions) >= 2
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("ASU_TEST_POSTGRES_URL",
                                                             "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL URL whose user may create databases")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and the databases")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the servers, workers and databases are cleaned up.
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    previous_environ = dict(os.environ)
    tmp = Path(tempfile.mkdtemp(prefix="asu-team-"))
    databases = Databases(args.postgres, ("prefect", "mlflow", "ledger"))
    processes = Processes(tmp / "servers.log")
    prefect_port, mlflow_port = _free_port(), _free_port()
    artifacts = tmp / "mlflow-artifacts"
    quiet = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
             "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env = {**os.environ, **quiet, "PREFECT_HOME": str(tmp / "prefect"),
           "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
           "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
           "ASU_LEDGER_URL": databases.url("ledger"), "ASU_WORK_DIR": str(tmp / "work")}
    os.environ.update({k: env[k] for k in ("ASU_WORK_DIR", "ASU_LEDGER_URL", "MLFLOW_TRACKING_URI", "HF_HUB_OFFLINE",
                                           "PREFECT_API_URL")})
    summary: dict = {"tmp": str(tmp), "databases": sorted(databases.names.values())}
    started = time.time()
    try:
        processes.start("prefect server (PostgreSQL)", [str(BIN / "prefect"), "server", "start", "--host",
                        "127.0.0.1", "--port", str(prefect_port)],
                        {**env, "PREFECT_API_DATABASE_CONNECTION_URL": databases.url("prefect", "postgresql+asyncpg")})
        backend = databases.url("mlflow", "postgresql+psycopg")
        processes.start("mlflow server (PostgreSQL, artifact root)", [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
            str(artifacts), "--host", "127.0.0.1", "--port", str(mlflow_port),
            "--workers", "1"], env)
        _wait(lambda: _healthy(f"http://127.0.0.1:{prefect_port}/api/health"), 180, "the Prefect server")
        _wait(lambda: _healthy(f"http://127.0.0.1:{mlflow_port}/health"), 180, "the MLflow server")
        _say("servers up; creating the work pool, one queue per GPU, the gpu slot, the deployments")
        _prefect(env, "work-pool", "create", "team-pool", "--type", "process")
        for queue in QUEUES:
            _prefect(env, "work-queue", "create", queue, "--pool", "team-pool", "--limit", "1")
        _prefect(env, "gcl", "create", "gpu", "--limit", "1")
        _prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", str(TEAM_FILE))
        for device, queue in enumerate(QUEUES):
            processes.start(f"worker {queue}", [str(BIN / "prefect"), "worker", "start", "--pool", "team-pool",
                            "--work-queue", queue, "--limit", "1", "--name", queue],
                            {**env, "CUDA_VISIBLE_DEVICES": str(device)})

        from prefect.deployments import run_deployment

        from asu.data import load_qa_file
        from pipelines.intake.submit import submit_request
        from pipelines.ledger.store import Ledger

        settings, files = _settings(tmp)
        (request_a, _), (request_b, _) = files.requests
        ids = {"A": submit_request(request_a, retain=load_qa_file(files.retain), actor="verify-team").request_id}
        _say(f"request A queued ({ids['A']}); nightly deployment on gpu-0")
        run_deployment("continual-unlearning/nightly", parameters={"settings": str(settings), "max_requests": 1},
                       timeout=0)
        with Ledger(databases.url("ledger")) as ledger:
            _wait(lambda: ledger.get(ids["A"]).state != "queued", 600, "request A to be claimed", every=3)
        _say("request A running; urgent-removal of request B on gpu-1")
        run_deployment("urgent-removal/urgent-removal", work_queue_name="gpu-1", timeout=0,
                       parameters={"settings": str(settings), "request_file": str(request_b)})

        def both_done():
            runs = _deployment_runs(env)
            return len(runs) == 2 and all(r.get("state_type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                                          for r in runs)

        _wait(both_done, 1800, "both flow runs to finish", every=5)
        with Ledger(databases.url("ledger")) as ledger:
            ids["B"] = next(e.request_id for e in ledger.list_requests() if e.request_id != ids["A"])
        _say("both runs finished; reading back the servers and databases")
        checks = _checks(summary, databases, env, artifacts, ids)
        slot = [json.loads(line) for line in (tmp / "work" / "gpu-slot.jsonl").read_text().splitlines()]
        summary["slot_holdings"] = len(slot)
        checks["rounds_never_overlap"] = len(slot) == 2 and slot[0]["end"] <= slot[1]["start"]
        summary["checks"], summary["ok"] = checks, all(checks.values())
        summary["wall_seconds"] = round(time.time() - started, 1)
    except (Exception, KeyboardInterrupt) as err:  # report what was reached; everything is stopped below
        summary["error"], summary["ok"] = f"{type(err).__name__}: {err}", False
        summary["server_log_tail"] = (tmp / "servers.log").read_text()[-4000:]
    finally:
        processes.stop()
        if not args.keep:
            databases.drop()
            shutil.rmtree(tmp, ignore_errors=True)
        os.environ.clear()
        os.environ.update(previous_environ)  # the caller (a test process) keeps its own servers and work dir
        signal.signal(signal.SIGTERM, previous_handler)
    text = json.dumps(summary, indent=1, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
