"""The request ledger: durable store of every forget request, its state history and its record hashes.

Where it lives:
- ``Ledger(url)`` takes a SQLAlchemy URL. Default: ``$ASU_LEDGER_URL``, else
  ``sqlite:///<work dir>/asu-ledger.db`` with the work dir ``$ASU_WORK_DIR`` or ``./asu-work``.
- PostgreSQL: ``postgresql://user@host:5432/db`` (driven by psycopg 3, ``pip install 'psycopg[binary]'``).
  The same code runs on both; tables are created on first use.

Guarantees:
- Idempotent intake: ``accept`` of the same request id with the same content hash returns the existing entry;
  the same id with other content raises ``RequestConflict`` (a rejected request may be resubmitted).
- Several processes may submit and claim at once: SQLite transactions start with ``BEGIN IMMEDIATE`` (one
  writer at a time, 60 s busy timeout); PostgreSQL relies on the unique request id and on
  ``SELECT ... FOR UPDATE SKIP LOCKED`` for claims. Every state change is a conditional update plus a
  ``transitions`` row (UTC time, actor) in one transaction.
- Content is sensitive: it lives only in ``asu_requests.content_json``; transitions, rejections and logs hold
  ids, SHA-256 hashes and line numbers. ``purge_content`` drops the content of completed requests older than
  the retention (``$ASU_RETENTION_DAYS``, default 30) and keeps hashes and the audit trail.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from asu.errors import ConflictError, UsageError
from pipelines.ledger.config import (
    DEFAULT_RETENTION_DAYS,
    LEDGER_ENV,
    RETENTION_ENV,
    LedgerUnavailable,
    default_ledger_url,
    make_engine,
    resolve_work_dir,
    retention_from_env,
)
from pipelines.ledger.queries import ContentPurged, LedgerReads, UnknownRequest
from pipelines.ledger.records import Acceptance, LedgerEntry
from pipelines.ledger.schema import (
    ALLOWED,
    COMPLETED,
    ESCALATABLE,
    IN_PROGRESS,
    STATES,
    RequestState,
    metadata,
    record_hashes,
    rejections,
    requests,
    transitions,
    utcnow,
)
from pipelines.workspace import DEFAULT_WORK_DIR, WORK_DIR_ENV

if TYPE_CHECKING:
    from pipelines.request import ForgetRequest

__all__ = [
    "DEFAULT_RETENTION_DAYS", "DEFAULT_WORK_DIR", "LEDGER_ENV", "RETENTION_ENV", "WORK_DIR_ENV", "ContentPurged",
    "Ledger", "LedgerUnavailable", "RequestConflict", "StateConflict", "UnknownRequest", "default_ledger_url",
    "resolve_work_dir", "retention_from_env",
]

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x41535531  # PostgreSQL advisory lock serialising table creation


class RequestConflict(ConflictError):
    """The request id is already taken by a request with other content."""


class StateConflict(ConflictError):
    """The request's state changed under us (another process moved it first)."""


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


class Ledger(LedgerReads):
    """Durable request store (see the module docstring). Safe to use from several processes at once."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_ledger_url()
        self.engine = make_engine(self.url)
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                metadata.create_all(conn)
        except (sa.exc.OperationalError, LedgerUnavailable) as err:
            self.engine.dispose()
            where = self.engine.url.render_as_string(hide_password=True)
            cause = err.orig if isinstance(err, sa.exc.OperationalError) else err.__cause__
            raise LedgerUnavailable(f"the ledger at {where} cannot be opened ({str(cause).strip()[:200]}); check "
                                    f"that the database server runs and the URL is right ({LEDGER_ENV} or "
                                    "--ledger)") from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writes -----------------------------------------------------------------------------------------------

    def _log(self, conn, request_id: str, from_state: str | None, to_state: str, *, actor: str, at: datetime,
             event: str = "transition", detail: dict | None = None) -> None:
        conn.execute(transitions.insert().values(request_id=request_id, event=event, from_state=from_state,
                                                 to_state=to_state, at=at, actor=actor, detail_json=_json(detail)))

    def _locked_row(self, conn, request_id: str):
        query = sa.select(requests).where(requests.c.request_id == request_id).with_for_update()
        return conn.execute(query).mappings().first()

    def _existing(self, row, content_sha256: str, *, urgent: bool, actor: str) -> Acceptance:
        if row["content_sha256"] != content_sha256:
            raise RequestConflict(
                f"request_id {row['request_id']!r} is already used by another request (content SHA-256 "
                f"{row['content_sha256'][:12]}..., state {row['state']}); give this request a new request_id, or "
                "resubmit the original content unchanged")
        if urgent and not row["urgent"]:
            self.escalate(row["request_id"], actor=actor)
        return Acceptance(self.get(row["request_id"]), created=False)

    def accept(self, request: ForgetRequest, *, actor: str, urgent: bool = False, source_name: str | None = None,
               received_at: datetime | None = None, validated_at: datetime | None = None,
               detail: dict | None = None) -> Acceptance:
        """Record a validated request: received -> validated -> queued in one transaction, with its content and
        record hashes. Same id and content already accepted: returns it (``created=False``; ``urgent`` raises its
        urgency). Same id, other content: ``RequestConflict``. A ``rejected`` request id is taken over."""
        from pipelines.request import canonical_json

        content_sha256, now = request.content_sha256, utcnow()
        received_at, validated_at = received_at or now, validated_at or now
        urgent = urgent or request.urgency == "urgent"
        values = {
            "state": "queued", "content_sha256": content_sha256, "urgent": urgent, "kind": request.kind,
            "record_count": len(request.all_records()), "source_name": source_name,
            "submitted_received_at": request.received_at, "updated_at": now,
            "content_json": json.dumps(request.to_dict(), ensure_ascii=False), "content_purged_at": None,
            "validation_split_json": canonical_json(request.validation_split.to_dict())
            if request.validation_split else None,
        }
        hashes = [{"request_id": request.request_id, "record_id": r.record_id, "role": r.role,
                   "content_sha256": r.content_sha256, "key_sha256": r.key_sha256(request.kind)}
                  for r in request.all_records()]
        for attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    row = self._locked_row(conn, request.request_id)
                    if row is not None and row["state"] != "rejected":
                        break
                    if row is None:
                        conn.execute(requests.insert().values(request_id=request.request_id, created_at=received_at,
                                                              **values))
                    else:
                        conn.execute(requests.update().where(requests.c.request_id == request.request_id)
                                     .values(**values))
                        conn.execute(record_hashes.delete().where(record_hashes.c.request_id == request.request_id))
                    previous = None if row is None else "rejected"
                    self._log(conn, request.request_id, previous, "received", actor=actor, at=received_at,
                              detail={"source": source_name, "content_sha256": content_sha256})
                    self._log(conn, request.request_id, "received", "validated", actor=actor, at=validated_at,
                              detail=detail)
                    self._log(conn, request.request_id, "validated", "queued", actor=actor, at=now,
                              detail={"urgent": urgent})
                    conn.execute(record_hashes.insert(), hashes)
                logger.info("request %s queued (content %s)", request.request_id, content_sha256[:12])
                return Acceptance(self.get(request.request_id), created=True)
            except sa.exc.IntegrityError:
                if attempt:
                    raise
                logger.info("request %s was inserted concurrently; re-reading", request.request_id)
        return self._existing(row, content_sha256, urgent=urgent, actor=actor)

    def reject(self, request_id: str, content_sha256: str, *, actor: str, detail: dict,
               source_name: str | None = None, received_at: datetime | None = None) -> LedgerEntry | None:
        """Record a request that failed validation: received -> rejected (content not stored; it is in
        quarantine). Returns ``None`` when the id already belongs to an accepted request (nothing changes)."""
        now = utcnow()
        for attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    row = self._locked_row(conn, request_id)
                    if row is not None and row["state"] != "rejected":
                        return None
                    values = {"state": "rejected", "content_sha256": content_sha256, "source_name": source_name,
                              "updated_at": now, "content_json": None}
                    if row is None:
                        conn.execute(requests.insert().values(request_id=request_id, created_at=received_at or now,
                                                              urgent=False, record_count=0, **values))
                    else:
                        conn.execute(requests.update().where(requests.c.request_id == request_id).values(**values))
                    self._log(conn, request_id, None if row is None else "rejected", "received", actor=actor,
                              at=received_at or now, detail={"source": source_name, "content_sha256": content_sha256})
                    self._log(conn, request_id, "received", "rejected", actor=actor, at=now, detail=detail)
                return self.get(request_id)
            except sa.exc.IntegrityError:
                if attempt:
                    raise
        return None

    def record_rejection(self, *, actor: str, problems: list[dict], source_name: str | None,
                         size_bytes: int | None, file_sha256: str | None, request_id: str | None,
                         quarantine_path: str | None) -> None:
        """Log a refused submission (any reason, with or without a usable request id)."""
        with self.engine.begin() as conn:
            conn.execute(rejections.insert().values(
                at=utcnow(), source_name=source_name, size_bytes=size_bytes, file_sha256=file_sha256,
                request_id=request_id, problems_json=_json(problems), quarantine_path=quarantine_path, actor=actor))

    def transition(self, request_id: str, to_state: RequestState, *, actor: str, detail: dict | None = None,
                   expected_from: str | None = None) -> LedgerEntry:
        """Move a request to ``to_state`` (checked against the state machine), atomically."""
        if to_state not in STATES:
            raise UsageError(f"unknown state {to_state!r}; use one of {list(STATES)}")
        with self.engine.begin() as conn:
            row = self._locked_row(conn, request_id)
            if row is None:
                raise UnknownRequest(f"no request {request_id!r} in the ledger; check the id with `asu status`")
            current = row["state"]
            if expected_from is not None and current != expected_from:
                raise StateConflict(f"request {request_id!r} is {current}, not {expected_from}")
            if to_state not in ALLOWED[current]:
                raise UsageError(f"request {request_id!r}: transition {current} -> {to_state} is not allowed; "
                                 f"from {current} it can go to {sorted(ALLOWED[current]) or 'nothing (final)'}")
            now = utcnow()
            done = conn.execute(requests.update().where(requests.c.request_id == request_id,
                                                        requests.c.state == current)
                                .values(state=to_state, updated_at=now))
            if done.rowcount != 1:
                raise StateConflict(f"request {request_id!r} changed state concurrently; re-read it and retry")
            self._log(conn, request_id, current, to_state, actor=actor, at=now, detail=detail)
        return self.get(request_id)

    def claim_next(self, *, actor: str) -> LedgerEntry | None:
        """Atomically move the next queued request (urgent first, then received order) to ``running`` and return
        it; ``None`` when the queue is empty. Two concurrent callers never get the same request."""
        query = (sa.select(requests.c.request_id).where(requests.c.state == "queued")
                 .order_by(requests.c.urgent.desc(), requests.c.seq.asc()).limit(1)
                 .with_for_update(skip_locked=True))
        for _ in range(100):
            with self.engine.begin() as conn:
                request_id = conn.execute(query).scalar()
                if request_id is None:
                    return None
                now = utcnow()
                done = conn.execute(requests.update().where(requests.c.request_id == request_id,
                                                            requests.c.state == "queued")
                                    .values(state="running", claimed_by=actor, updated_at=now))
                if done.rowcount == 1:
                    self._log(conn, request_id, "queued", "running", actor=actor, at=now)
                    return self.get(request_id, conn=conn)
        raise StateConflict("could not claim a queued request after 100 attempts; the ledger is very busy")

    next_queued = claim_next  # the name issue 6 builds on

    def release_orphans(self, *, actor: str, alive: Callable[[str], bool | None]) -> list[str]:
        """Return to the queue every request a worker holds (``running``, ``evaluated``, ``approved``) whose claiming
        worker is gone (``alive(claimed_by)`` is False: a process killed with SIGKILL or by the OOM killer never ran
        its cleanup, possibly between registering the model and recording it); ``None`` from ``alive`` means unknown
        (a worker on another host) and leaves the request alone. Returns the released ids."""
        released = []
        for entry in self.list_requests(list(IN_PROGRESS)):
            if entry.claimed_by is not None and alive(entry.claimed_by) is False:
                try:
                    self.transition(entry.request_id, "queued", actor=actor, expected_from=entry.state,
                                    detail={"released": "the worker that claimed it is gone",
                                            "claimed_by": entry.claimed_by,
                                            "retry": "the round resumes from its checkpoint"})
                except StateConflict:
                    continue  # another worker released or finished it meanwhile
                released.append(entry.request_id)
        return released

    def escalate(self, request_id: str, *, actor: str) -> bool:
        """Mark a not-yet-running request urgent; returns whether anything changed."""
        with self.engine.begin() as conn:
            now = utcnow()
            done = conn.execute(requests.update().where(requests.c.request_id == request_id,
                                                        requests.c.state.in_(ESCALATABLE),
                                                        requests.c.urgent.is_(False))
                                .values(urgent=True, updated_at=now))
            if done.rowcount != 1:
                return False
            state = conn.execute(sa.select(requests.c.state).where(requests.c.request_id == request_id)).scalar()
            self._log(conn, request_id, state, state, actor=actor, at=now, event="escalated")
        return True

    def purge_content(self, retention: timedelta | None = None, *, actor: str,
                      now: datetime | None = None) -> list[str]:
        """Drop the raw content of completed requests (states in ``COMPLETED``) last updated before
        ``now - retention``; hashes and history stay. Returns the purged request ids."""
        retention = retention_from_env() if retention is None else retention
        now = now or utcnow()
        with self.engine.begin() as conn:
            ids = conn.execute(sa.select(requests.c.request_id, requests.c.state).where(
                requests.c.state.in_(COMPLETED), requests.c.content_json.is_not(None),
                requests.c.updated_at < now - retention)).all()
            for request_id, state in ids:
                conn.execute(requests.update().where(requests.c.request_id == request_id)
                             .values(content_json=None, content_purged_at=now))
                self._log(conn, request_id, state, state, actor=actor, at=now, event="content_purged",
                          detail={"retention_days": retention.total_seconds() / 86400})
        logger.info("purged the content of %d request(s)", len(ids))
        return [request_id for request_id, _ in ids]
