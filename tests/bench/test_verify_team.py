"""``bench/verify_team.py`` end to end: Prefect and MLflow servers on PostgreSQL, the ledger on PostgreSQL, two
workers on per-GPU queues, two requests through the team deployments, every check read back from the servers.
Slow (~80 s on 2 idle cores); skipped without a reachable PostgreSQL server."""

from __future__ import annotations

import json

import pytest
from intake_helpers import PG_URL


@pytest.mark.slow
def test_the_team_deployment_runs_two_requests_on_real_servers(tmp_path):
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    admin = PG_URL.rsplit("/", 1)[0] + "/postgres"
    try:
        psycopg.connect(admin, connect_timeout=3).close()
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL is not reachable ({str(err).strip().splitlines()[0]})")
    from bench.verify_team import main

    out = tmp_path / "verify_team.json"
    assert main(["--postgres", admin, "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["ok"] and all(summary["checks"].values()), summary["checks"]
    assert sorted(run["queue"] for run in summary["flow_runs"]) == ["gpu-0", "gpu-1"]
    with psycopg.connect(admin) as conn:  # the databases were dropped
        assert not conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                                (summary["databases"],)).fetchall()
