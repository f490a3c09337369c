"""Where the request ledger lives and how it connects: environment variables, defaults, the SQLAlchemy engine.

- ``$ASU_WORK_DIR`` (default ``./asu-work``): the work dir (ledger, quarantine, reports).
- ``$ASU_LEDGER_URL`` (default ``sqlite:///<work dir>/asu-ledger.db``): the ledger database.
- ``$ASU_RETENTION_DAYS`` (default 30): how long completed requests keep their raw content.

SQLite connections run in WAL mode and open every transaction with ``BEGIN IMMEDIATE`` (one writer at a time,
60 s busy timeout), so several processes can share one file; ``postgresql://`` URLs use psycopg 3.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from asu.errors import InfrastructureError, UsageError
from pipelines.workspace import work_dir as resolve_work_dir

LEDGER_ENV, RETENTION_ENV = "ASU_LEDGER_URL", "ASU_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30


def default_ledger_url(work: str | Path | None = None) -> str:
    """``$ASU_LEDGER_URL``, else SQLite at ``<work dir>/asu-ledger.db`` (absolute path)."""
    return os.environ.get(LEDGER_ENV) or f"sqlite:///{(resolve_work_dir(work) / 'asu-ledger.db').resolve()}"


def retention_from_env() -> timedelta:
    raw = os.environ.get(RETENTION_ENV, str(DEFAULT_RETENTION_DAYS))
    try:
        days = float(raw)
    except ValueError:
        raise UsageError(f"{RETENTION_ENV}={raw!r} is invalid; set a number of days, e.g. 30") from None
    if days < 0:
        raise UsageError(f"{RETENTION_ENV}={raw!r} is invalid; set a number of days >= 0")
    return timedelta(days=days)


class LedgerUnavailable(InfrastructureError):
    """The ledger URL is malformed, its driver is missing, or its database cannot be reached."""


def make_engine(url: str) -> sa.Engine:
    """A SQLAlchemy engine for a ledger URL (SQLite: WAL + BEGIN IMMEDIATE; PostgreSQL: psycopg 3)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise UsageError(f"ledger URL {url!r} is not a database URL; use sqlite:///path/to/ledger.db or "
                                "postgresql://user@host:5432/db") from None
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        if not memory:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        pool = {"poolclass": sa.pool.StaticPool} if memory else {}
        engine = sa.create_engine(parsed, connect_args={"timeout": 60, "check_same_thread": False}, **pool)

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" below open the transactions
            # secure_delete: a purged request's content is overwritten on disk, not left in free pages
            for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=60000", "secure_delete=ON"):
                dbapi_connection.execute(f"PRAGMA {pragma}")

        @sa.event.listens_for(engine, "begin")
        def _begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks

        return engine
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True)
    except ModuleNotFoundError as err:
        raise UsageError(f"the ledger URL needs the database driver {err.name!r}; install it "
                          "(PostgreSQL: pip install 'psycopg[binary]')") from None
    except sa.exc.NoSuchModuleError:
        raise UsageError(f"ledger URL {parsed.render_as_string(hide_password=True)!r} names an unknown "
                                "database or driver; use sqlite:///... or postgresql://...") from None
    where = parsed.render_as_string(hide_password=True)

    @sa.event.listens_for(engine, "handle_error")
    def _unreachable(context):
        # A server that went away (stopped, network cut) mid-run: say which ledger, not a driver traceback. Other
        # database errors (constraints, serialisation) keep their type: the ledger's own logic handles them.
        if context.is_disconnect or isinstance(context.sqlalchemy_exception, sa.exc.OperationalError):
            raise LedgerUnavailable(
                f"the ledger at {where} is unreachable ({str(context.original_exception).strip()[:200]}); check that "
                f"the database server runs and is reachable ({LEDGER_ENV} or --ledger); requests it holds resume on "
                "the next run") from context.original_exception

    return engine
