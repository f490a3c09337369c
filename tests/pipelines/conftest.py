"""Fixtures of the intake tests: a work dir with a SQLite ledger that already holds one queued request, a helper
that submits a bad file and checks what every refusal must guarantee, and a throw-away PostgreSQL database."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from intake_helpers import PG_URL, IntakeEnv, other_request

from pipelines.ledger.store import Ledger


@pytest.fixture
def env(tmp_path: Path) -> IntakeEnv:
    work, files = tmp_path / "work", tmp_path / "files"
    files.mkdir()
    ledger = Ledger(f"sqlite:///{work / 'ledger.db'}")
    ledger.accept(other_request(), actor="test")
    yield IntakeEnv(work, ledger, files)
    ledger.close()


@pytest.fixture(scope="session")
def pg_database() -> str:
    """URL of a fresh PostgreSQL database (dropped at the end); skips when the server or driver is missing."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]'): "
                                                    "PostgreSQL ledger tests skipped")
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL.split('@')[-1]} ({str(err).strip().splitlines()[0]}); "
                    "set ASU_TEST_POSTGRES_URL to a server with trust auth to run these tests")
    name = f"asu_intake_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _clear(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE asu_transitions, asu_record_hashes, asu_rejections, asu_requests"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path: Path) -> str:
    """An empty ledger on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url = request.getfixturevalue("pg_database")
    Ledger(url).close()  # creates the tables
    _clear(url)
    return url
