"""Tables and state machine of the request ledger (SQLAlchemy Core; SQLite and PostgreSQL).

States::

    received -> validated | rejected
    validated -> queued
    queued -> running (claimed by a flow) | superseded
    running -> evaluated | queued (released after an interrupted run)
    evaluated -> approved | gate_failed
    approved -> registered
    gate_failed -> queued (retried) | registered (its version promoted by hand: ``asu promote --force``)
    registered -> superseded (the champion moved to a version without its round: ``asu promote``)
                | rolled_back (its version was rolled back: ``asu rollback``)
    superseded | rolled_back -> registered (its version promoted again by hand)
    rejected -> received (the same request id submitted again after a fix)

Tables (prefix ``asu_``): ``requests`` (one row per request id: state, content hash, the content itself while
retained), ``transitions`` (audit trail: every state change and event with time and actor), ``record_hashes``
(SHA-256 of every accepted record: content and normalised key), ``rejections`` (every refused submission,
including files that never yielded a request id).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, get_args

import sqlalchemy as sa

from asu.errors import UsageError

RequestState = Literal[
    "received", "validated", "rejected", "queued", "running", "evaluated", "approved", "gate_failed",
    "registered", "superseded", "rolled_back",
]
STATES: tuple[RequestState, ...] = get_args(RequestState)
ALLOWED: dict[RequestState, frozenset[RequestState]] = {
    "received": frozenset({"validated", "rejected"}),
    "validated": frozenset({"queued"}),
    "rejected": frozenset({"received"}),
    "queued": frozenset({"running", "superseded"}),
    # -> rejected: the round found the request itself unprocessable (a passage too short to measure, ...): it is
    # refused with the reason rather than retried forever; fixed, it can be submitted again.
    "running": frozenset({"evaluated", "queued", "rejected"}),
    # -> queued: the worker died between measuring and registering (``Ledger.release_orphans``); the rerun resumes
    # from the finished round and the registry reuses a version it already created for the same weights.
    "evaluated": frozenset({"approved", "gate_failed", "queued"}),
    "approved": frozenset({"registered", "queued"}),
    "gate_failed": frozenset({"queued", "registered"}),
    "registered": frozenset({"superseded", "rolled_back"}),
    "superseded": frozenset({"registered"}),
    "rolled_back": frozenset({"registered"}),
}
# States after which the raw content is no longer needed; the retention purge applies to these.
COMPLETED = frozenset({"registered", "superseded", "rolled_back", "rejected", "gate_failed"})
# States a worker holds a request in (``claimed_by``) until it records the outcome; orphaned when the worker dies.
IN_PROGRESS = ("running", "evaluated", "approved")
# Accepted requests whose urgency can still be raised.
ESCALATABLE = frozenset({"received", "validated", "queued"})


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise UsageError("ledger timestamps must be timezone-aware (use datetime.now(UTC))")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

requests = sa.Table(
    "asu_requests", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # received order
    sa.Column("request_id", sa.String(128), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("urgent", sa.Boolean, nullable=False, default=False),
    sa.Column("kind", sa.String(8)),
    sa.Column("record_count", sa.Integer, nullable=False, default=0),
    sa.Column("source_name", sa.String(255)),
    sa.Column("submitted_received_at", sa.String(40)),  # the request's own received_at, as submitted
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("content_json", sa.Text),  # the request content (sensitive); NULL once purged or when rejected
    sa.Column("content_purged_at", UTCDateTime),
    sa.Column("validation_split_json", sa.Text),
    sa.Column("claimed_by", sa.String(200)),
)

transitions = sa.Table(
    "asu_transitions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), sa.ForeignKey("asu_requests.request_id"), nullable=False, index=True),
    sa.Column("event", sa.String(20), nullable=False),  # transition | escalated | content_purged
    sa.Column("from_state", sa.String(16)),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("detail_json", sa.Text),  # ids, hashes, line numbers, report paths; never content
)

record_hashes = sa.Table(
    "asu_record_hashes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), sa.ForeignKey("asu_requests.request_id"), nullable=False),
    sa.Column("record_id", sa.String(128), nullable=False),
    sa.Column("role", sa.String(12), nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("key_sha256", sa.String(64), nullable=False, index=True),
    sa.UniqueConstraint("request_id", "record_id", name="uq_asu_record_hashes_request_record"),
)

rejections = sa.Table(
    "asu_rejections", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("source_name", sa.String(255)),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("file_sha256", sa.String(64)),
    sa.Column("request_id", sa.String(128)),  # only when the file named a well-formed request id
    sa.Column("problems_json", sa.Text, nullable=False),
    sa.Column("quarantine_path", sa.Text),
    sa.Column("actor", sa.String(200), nullable=False),
)
