"""Read-only views of ledger rows (frozen dataclasses; no content, only ids, states, hashes and times)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelines.ledger.schema import RequestState


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class LedgerEntry:
    """One request's current state. ``seq``: received order; ``has_content``: raw content still stored."""

    seq: int
    request_id: str
    state: RequestState
    content_sha256: str
    urgent: bool
    kind: str | None
    record_count: int
    source_name: str | None
    created_at: datetime
    updated_at: datetime
    has_content: bool
    content_purged_at: datetime | None
    validation_split: dict | None
    claimed_by: str | None

    @classmethod
    def from_row(cls, row) -> LedgerEntry:
        return cls(
            seq=row["seq"], request_id=row["request_id"], state=row["state"], content_sha256=row["content_sha256"],
            urgent=bool(row["urgent"]), kind=row["kind"], record_count=row["record_count"],
            source_name=row["source_name"], created_at=row["created_at"], updated_at=row["updated_at"],
            has_content=row["content_json"] is not None, content_purged_at=row["content_purged_at"],
            validation_split=_load(row["validation_split_json"]), claimed_by=row["claimed_by"],
        )

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        for key in ("created_at", "updated_at", "content_purged_at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


@dataclass(frozen=True)
class Transition:
    """One audit-trail row: a state change (``event="transition"``) or an event (``escalated``,
    ``content_purged``, with ``from_state == to_state``), when (UTC) and by whom."""

    request_id: str
    event: str
    from_state: RequestState | None
    to_state: RequestState
    at: datetime
    actor: str
    detail: dict | None

    @classmethod
    def from_row(cls, row) -> Transition:
        return cls(request_id=row["request_id"], event=row["event"], from_state=row["from_state"],
                   to_state=row["to_state"], at=row["at"], actor=row["actor"], detail=_load(row["detail_json"]))

    def to_dict(self) -> dict:
        return {**self.__dict__, "at": self.at.isoformat()}


@dataclass(frozen=True)
class Rejection:
    """A refused submission: where it came from, why (problems: file, lines, field, message, fix) and where
    its original bytes are kept."""

    id: int
    at: datetime
    source_name: str | None
    size_bytes: int | None
    file_sha256: str | None
    request_id: str | None
    problems: list[dict]
    quarantine_path: str | None
    actor: str

    @classmethod
    def from_row(cls, row) -> Rejection:
        return cls(id=row["id"], at=row["at"], source_name=row["source_name"], size_bytes=row["size_bytes"],
                   file_sha256=row["file_sha256"], request_id=row["request_id"],
                   problems=_load(row["problems_json"]) or [], quarantine_path=row["quarantine_path"],
                   actor=row["actor"])

    def to_dict(self) -> dict:
        return {**self.__dict__, "at": self.at.isoformat()}


@dataclass(frozen=True)
class Acceptance:
    """Outcome of ``Ledger.accept``: the entry, and whether this call created it (``False``: duplicate)."""

    entry: LedgerEntry
    created: bool
