"""Read-only queries of the request ledger (a mixin of ``Ledger``; needs ``self.engine``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from asu.errors import NotFoundError
from pipelines.ledger.records import LedgerEntry, Rejection, Transition
from pipelines.ledger.schema import record_hashes, rejections, requests, transitions

if TYPE_CHECKING:
    from pipelines.request import ForgetRequest


class UnknownRequest(NotFoundError):
    """No request with that id in the ledger."""


class ContentPurged(NotFoundError):
    """The request's raw content was purged by the retention policy; hashes and history remain."""


class LedgerReads:
    """Queries: one request, lists, the queue, history, refusals, hashes, stored content."""

    engine: sa.Engine

    def find(self, request_id: str, *, conn=None) -> LedgerEntry | None:
        query = sa.select(requests).where(requests.c.request_id == request_id)
        if conn is not None:
            row = conn.execute(query).mappings().first()
        else:
            with self.engine.connect() as own:
                row = own.execute(query).mappings().first()
        return None if row is None else LedgerEntry.from_row(row)

    def get(self, request_id: str, *, conn=None) -> LedgerEntry:
        entry = self.find(request_id, conn=conn)
        if entry is None:
            raise UnknownRequest(f"no request {request_id!r} in the ledger; check the id with `asu status`")
        return entry

    def list_requests(self, states: Iterable[str] | None = None, *, limit: int | None = None) -> list[LedgerEntry]:
        """Requests in received order, optionally only those in ``states``."""
        query = sa.select(requests).order_by(requests.c.seq)
        if states is not None:
            query = query.where(requests.c.state.in_(list(states)))
        with self.engine.connect() as conn:
            return [LedgerEntry.from_row(r) for r in conn.execute(query.limit(limit)).mappings()]

    def queue(self) -> list[LedgerEntry]:
        """Running requests, then queued ones in the order ``claim_next`` takes them."""
        entries = self.list_requests(("running", "queued"))
        return sorted(entries, key=lambda e: (e.state != "running", not e.urgent, e.seq))

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(requests.c.state, sa.func.count()).group_by(requests.c.state)).all()
        return {state: int(n) for state, n in rows}

    def history(self, request_id: str) -> list[Transition]:
        query = sa.select(transitions).where(transitions.c.request_id == request_id).order_by(transitions.c.id)
        with self.engine.connect() as conn:
            return [Transition.from_row(r) for r in conn.execute(query).mappings()]

    def rejections(self, *, limit: int | None = 50) -> list[Rejection]:
        query = sa.select(rejections).order_by(rejections.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [Rejection.from_row(r) for r in conn.execute(query).mappings()]

    def latest_report(self, request_id: str) -> dict | None:
        """Paths of the request's latest validation report (``report_json``, ``report_html``), for flows to
        attach to their run; ``None`` when it has none (e.g. only refused before its id could be read)."""
        for t in reversed(self.history(request_id)):
            if t.detail and t.detail.get("report_json"):
                return {"report_json": t.detail["report_json"], "report_html": t.detail.get("report_html")}
        return None

    def latest_outcome(self, request_id: str) -> dict | None:
        """The request's latest round outcome (``RoundRecord.ledger_outcome``: search status, settings, model
        version, gate, headline figures before and after), as its last round stored it; None before any round."""
        for t in reversed(self.history(request_id)):
            if t.detail and isinstance(t.detail.get("outcome"), dict):
                return t.detail["outcome"]
        return None

    def record_hashes(self, request_id: str) -> list[dict]:
        query = sa.select(record_hashes.c.record_id, record_hashes.c.role, record_hashes.c.content_sha256,
                          record_hashes.c.key_sha256).where(record_hashes.c.request_id == request_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query.order_by(record_hashes.c.id)).mappings()]

    def forgotten_keys(self, *, exclude_request_id: str | None = None) -> frozenset[str]:
        """Keys (``key_sha256``) of the forget records of every accepted request (any state but rejected)."""
        query = (sa.select(record_hashes.c.key_sha256).join(requests, requests.c.request_id ==
                                                            record_hashes.c.request_id)
                 .where(record_hashes.c.role == "forget", requests.c.state != "rejected"))
        if exclude_request_id is not None:
            query = query.where(record_hashes.c.request_id != exclude_request_id)
        with self.engine.connect() as conn:
            return frozenset(conn.execute(query).scalars())

    def load_request(self, request_id: str) -> ForgetRequest:
        """The stored request content as a ``ForgetRequest``; ``ContentPurged`` after the retention purge."""
        from pipelines.request import ForgetRequest

        with self.engine.connect() as conn:
            row = conn.execute(sa.select(requests.c.content_json, requests.c.content_purged_at, requests.c.state)
                               .where(requests.c.request_id == request_id)).first()
        if row is None:
            raise UnknownRequest(f"no request {request_id!r} in the ledger; check the id with `asu status`")
        if row.content_json is None:
            when = f"purged on {row.content_purged_at:%Y-%m-%d}" if row.content_purged_at else f"not kept ({row.state})"
            raise ContentPurged(f"the content of request {request_id!r} was {when}; only hashes and history remain")
        return ForgetRequest.from_dict(json.loads(row.content_json))
