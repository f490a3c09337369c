"""Check prefect.yaml against a real Prefect server: the nightly schedule fires, an urgent run jumps the queue.

    .venv/bin/python -m bench.verify_deployments [--keep]

Starts `prefect server start` on a free local port with its own PREFECT_HOME, creates the work pool, the
`scheduled` (priority 10) and `urgent` (priority 1) queues and the `gpu` concurrency limit, runs
`prefect deploy --all`, then:
1. schedule: the server's scheduler must create scheduled runs of `continual-unlearning/nightly` at 02:00 UTC;
2. priority: with two tiny requests queued, a `nightly` run is created first and an `urgent-removal` run second;
   one worker with one slot must start the urgent run first, and both must complete.
Uses the tiny embedded model and a work dir under a temporary folder. Prints a JSON summary; exit 0 when both hold.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect(env: dict, *args: str, check: bool = True) -> str:
    out = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if check and out.returncode:
        raise RuntimeError(f"prefect {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def _wait(predicate, timeout: float, what: str, every: float = 2.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _settings(tmp: Path) -> Path:
    from pipelines.demo.data import write_demo_files

    files = write_demo_files(tmp / "inputs", "tiny", (1, 2), urgent_author=2)
    settings = {
        "base_model": "embedded:tiny", "retain_file": str(files.retain), "holdout_file": str(files.holdout),
        "overrides": {"epochs": 2}, "report_retain_items": 8, "max_new_tokens": 48,
        "search": {"tau_grid": [2.0, 3.0], "stage2_candidates": 1, "retain_validation_size": 8,
                   "max_new_tokens": 48, "lr_multipliers": [1.0, 2.0]},
        "gate_file": str(ROOT / "configs" / "gate-demo.yaml"),
    }  # fmt: skip
    path = tmp / "settings.yaml"
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path, files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="asu-verify-"))
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "ASU_WORK_DIR": str(tmp / "work"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
           "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    os.environ.update({k: env[k] for k in ("ASU_WORK_DIR", "HF_HUB_OFFLINE")})
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = None
    summary: dict = {"tmp": str(tmp)}
    try:
        def healthy():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2).status == 200
            except OSError:
                return False

        _wait(healthy, 90, "the Prefect server")
        _prefect(env, "work-pool", "create", "local-pool", "--type", "process")
        _prefect(env, "work-queue", "create", "scheduled", "--pool", "local-pool", "--priority", "10")
        _prefect(env, "work-queue", "create", "urgent", "--pool", "local-pool", "--priority", "1")
        _prefect(env, "gcl", "create", "gpu", "--limit", "1")
        _prefect(env, "--no-prompt", "deploy", "--all")

        # 1. The scheduler creates the nightly runs (02:00 UTC) by itself.
        def scheduled():
            out = _prefect(env, "flow-run", "ls", "--state-type", "SCHEDULED", "--limit", "20", "-o", "json",
                           check=False)
            runs = json.loads(out or "[]")
            return [r for r in runs if r.get("expected_start_time", "").endswith(("02:00:00Z", "02:00:00+00:00"))]

        nightly_runs = _wait(scheduled, 120, "scheduled nightly runs")
        summary["scheduled_nightly_runs"] = sorted(r["expected_start_time"] for r in nightly_runs)[:3]

        # 2. Two requests queued; a nightly run is created first, an urgent run second; one worker slot.
        from asu.data import load_qa_file
        from pipelines.intake.submit import submit_request

        settings, files = _settings(tmp)
        (normal, _), (urgent_file, _) = files.requests
        submit_request(normal, retain=load_qa_file(files.retain), actor="verify")
        settings_param = f"settings={json.dumps(str(settings))}"
        _prefect(env, "deployment", "run", "continual-unlearning/nightly", "--param", settings_param)
        time.sleep(1)
        _prefect(env, "deployment", "run", "urgent-removal/urgent-removal", "--param", settings_param,
                 "--param", f"request_file={json.dumps(str(urgent_file))}")
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "local-pool", "--limit", "1"],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

        def finished():
            runs = json.loads(_prefect(env, "flow-run", "ls", "--limit", "50", "-o", "json", check=False) or "[]")
            mine = [r for r in runs if r.get("deployment_id") and r.get("start_time")  # not subflows
                    and r.get("state_type") in ("COMPLETED", "FAILED", "CRASHED")]
            return mine if len(mine) >= 2 else None

        done = _wait(finished, 900, "both runs to finish", every=5)
        ordered = sorted(done, key=lambda r: r["start_time"])
        summary["runs_by_start"] = [{"flow": r.get("flow_name") or r.get("flow_id"), "created": r.get("created"),
                                     "started": r["start_time"], "state": r["state_type"],
                                     "parameters": sorted(r.get("parameters", {}))} for r in ordered]
        first = ordered[0].get("parameters", {})
        summary["urgent_started_first"] = "request_file" in first
        summary["all_completed"] = all(r["state_type"] == "COMPLETED" for r in done)
        ok = bool(nightly_runs) and summary["urgent_started_first"] and summary["all_completed"]
        summary["ok"] = ok
        print(json.dumps(summary, indent=1))
        return 0 if ok else 1
    finally:
        for proc in (worker, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        log.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
