"""Forget-request intake: read a request file, check its data contracts, record it in the ledger.

``submit_request(path, urgent=False, ledger=None, retain=None)`` (and ``asu submit FILE [--urgent]``) parses,
validates and records one request and returns a ``Submission`` (request id, state, content hash); a bad file
raises ``IntakeRejected`` listing every problem with file, line, field and fix, after keeping the original
bytes in quarantine and logging the refusal in the ledger. Other requests are never touched.

Format (details in README "Forget requests"): JSON Lines (header line, then one record per line), JSON (one
object with ``records`` / ``validation`` / ``paraphrases`` lists) or CSV (request columns + record columns).
Header fields: ``request_id``, ``subject``, ``kind`` (``qa`` | ``text`` | ``mixed``) required; ``urgency``
(``normal`` | ``urgent``), ``requester``, ``received_at`` (ISO 8601), ``notes`` optional. Record fields:
``record_id`` (default ``<role>-<n>``), ``role`` (``forget`` default | ``validation`` | ``paraphrase``),
``question`` + ``answer`` (qa), ``text`` (text), either of the two per record (mixed), ``paraphrase_of``
(paraphrases). Without validation items, a seeded share of the forget records is split off as validation items
(seed, fraction and ids are stored with the request).

Locations: the work dir is ``$ASU_WORK_DIR`` or ``./asu-work``; the ledger ``$ASU_LEDGER_URL`` or
``sqlite:///<work dir>/asu-ledger.db``; quarantined files go to ``<work dir>/quarantine/``; validation reports
(JSON summary + GX HTML) to ``<work dir>/reports/<request_id>/<UTC time>/``.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from asu.errors import Refused
from asu.hashing import sha256_bytes
from data_contracts.errors import ContractResult, FailedExpectation
from data_contracts.limits import RequestLimits
from data_contracts.schema import DERIVED_COLUMNS, HEADER_FIELDS, ID_PATTERN, KINDS, RECORD_FIELDS, ROLES
from pipelines.intake.formats import IntakeError, Problem, RawRequest, check_size, detect_format, read_request_file
from pipelines.intake.quarantine import purge_quarantine, quarantine
from pipelines.ledger.schema import utcnow
from pipelines.ledger.store import Ledger, RequestConflict, default_ledger_url, resolve_work_dir, retention_from_env
from pipelines.request import (
    ForgetRequest,
    Record,
    record_content_hash,
    record_key,
    request_content_hash,
    retain_keys,
    split_validation,
    without_surrogates,
)

logger = logging.getLogger(__name__)


class IntakeRejected(Refused):
    """A submitted file was refused. ``problems``: every problem (file, lines, field, message, fix);
    ``quarantine_path``: where its original bytes are kept; ``request_id``: when the file named a valid one."""

    def __init__(self, source: str, problems: Iterable[Problem], *, quarantine_path: Path | None,
                 request_id: str | None = None, report_html: Path | None = None) -> None:
        self.source, self.problems = source, tuple(problems)
        self.quarantine_path, self.request_id, self.report_html = quarantine_path, request_id, report_html
        lines = [f"{source}: request refused ({len(self.problems)} problem(s)):", *(f"  {p}" for p in self.problems)]
        if quarantine_path:
            lines.append(f"  the original file is kept in quarantine: {quarantine_path}")
        super().__init__("\n".join(lines))

    def to_dict(self) -> dict:
        return {"source": self.source, "request_id": self.request_id, "state": "rejected",
                "problems": [p.to_dict() for p in self.problems],
                "quarantine_path": str(self.quarantine_path) if self.quarantine_path else None,
                "report_html": str(self.report_html) if self.report_html else None}


@dataclass(frozen=True)
class Submission:
    """Outcome of an accepted submission. ``created=False``: the same content was already in the ledger;
    ``escalated``: this submission raised that request's urgency."""

    request_id: str
    state: str
    content_sha256: str
    created: bool
    urgent: bool
    record_count: int
    warnings: tuple[Problem, ...] = ()
    report_json: Path | None = None
    report_html: Path | None = None
    validation_split: dict | None = None
    escalated: bool = False

    def to_dict(self) -> dict:
        return {"request_id": self.request_id, "state": self.state, "content_sha256": self.content_sha256,
                "created": self.created, "urgent": self.urgent, "escalated": self.escalated,
                "record_count": self.record_count,
                "warnings": [w.to_dict() for w in self.warnings],
                "report_json": str(self.report_json) if self.report_json else None,
                "report_html": str(self.report_html) if self.report_html else None,
                "validation_split": self.validation_split}


def purge_expired(ledger: Ledger, *, work_dir: str | Path | None = None, retention: timedelta | None = None,
                  actor: str | None = None, now: datetime | None = None) -> tuple[list[str], list[Path]]:
    """Apply the retention (default ``$ASU_RETENTION_DAYS``, 30 days): drop the raw content of completed requests
    from the ledger and delete quarantined files older than it. Returns (purged request ids, removed files)."""
    retention = retention_from_env() if retention is None else retention
    purged = ledger.purge_content(retention, actor=actor or default_actor(), now=now)
    removed = purge_quarantine(resolve_work_dir(work_dir) / "quarantine", retention, now=now)
    return purged, removed


def default_actor() -> str:
    """Who makes ledger transitions from this process: ``$ASU_ACTOR`` or ``intake:<user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return os.environ.get("ASU_ACTOR") or f"intake:{user}"


def normalised_rows(raw: RawRequest) -> list[tuple[int, dict[str, Any]]]:
    """``(line, fields)`` per row with ``role`` defaulted to ``forget`` and missing ids set to ``<role>-<n>``."""
    counters: dict[str, int] = {}
    out = []
    for row in raw.rows:
        fields = {k: v for k, v in row.fields.items() if v is not None and v != ""}
        role = fields.setdefault("role", "forget")
        counters[str(role)] = counters.get(str(role), 0) + 1
        fields.setdefault("record_id", f"{role}-{counters[str(role)]}")
        out.append((row.line, fields))
    return out


def _frame_value(value: Any) -> Any:
    return without_surrogates(value) if isinstance(value, str) else value


def build_frames(raw: RawRequest, rows: list[tuple[int, dict]], kind: str | None, *,
                 retain: frozenset[str] = frozenset(), forgotten: frozenset[str] = frozenset()):
    """The header frame (one row) and the records frame the suites validate (columns: ``data_contracts.schema``).

    ``retain`` / ``forgotten``: SHA-256 keys of the retain set and of earlier requests' forget records.
    """
    import pandas as pd

    header = {f: _frame_value(raw.header.get(f)) for f in HEADER_FIELDS}
    header["line"] = raw.header_line
    forget_ids = {f["record_id"] for _, f in rows if f.get("role") == "forget" and isinstance(f["record_id"], str)}
    columns: dict[str, list] = {c: [] for c in RECORD_FIELDS + DERIVED_COLUMNS}
    for line, fields in rows:
        for name in RECORD_FIELDS:
            columns[name].append(_frame_value(fields.get(name)))
        key = record_key(kind, fields)
        target = fields.get("paraphrase_of")
        columns["line"].append(line)
        columns["content_sha256"].append(record_content_hash(fields))
        columns["key_sha256"].append(key)
        columns["in_retain_set"].append(key in retain)
        columns["forgotten_before"].append(key in forgotten)
        columns["paraphrase_target_found"].append(None if target is None else
                                                  isinstance(target, str) and target in forget_ids)
    return pd.DataFrame([header], dtype=object), pd.DataFrame(columns, dtype=object)


def check_contracts(raw: RawRequest, *, limits: RequestLimits, retain: frozenset[str] = frozenset(),
                    forgotten: frozenset[str] = frozenset(), report_dir: Path | None = None) -> ContractResult:
    """Run the header and records suites (``retain``/``forgotten``: SHA-256 keys); never raises on bad data."""
    from data_contracts import header_suite, records_suite, validate_frames

    rows = normalised_rows(raw)
    kind = raw.header.get("kind") if raw.header.get("kind") in KINDS else None
    header_df, records_df = build_frames(raw, rows, kind, retain=retain, forgotten=forgotten)
    frames = {"header": (header_df, header_suite(limits)), "records": (records_df, records_suite(kind, limits))}
    return validate_frames(frames, source=raw.source, report_dir=report_dir, raise_on_error=False)


def to_request(raw: RawRequest, *, urgent: bool = False, validation_fraction: float = 0.1,
               seed: int = 0) -> ForgetRequest:
    """The typed request of a file that passed its contracts (validation items split off when absent)."""
    records = [Record.from_dict(fields, line=line) for line, fields in normalised_rows(raw)]
    by_role = {role: tuple(r for r in records if r.role == role) for role in ROLES}
    header = {k: raw.header[k] for k in HEADER_FIELDS if raw.header.get(k) not in (None, "")}
    if urgent:
        header["urgency"] = "urgent"
    split = None if by_role["validation"] else split_validation(by_role["forget"], fraction=validation_fraction,
                                                                seed=seed)
    return ForgetRequest(**header, records=by_role["forget"], validation=by_role["validation"],
                         paraphrases=by_role["paraphrase"], knowledge=by_role["knowledge"],
                         validation_split=split if split and split.record_ids else None)


def _as_problem(failure: FailedExpectation) -> Problem:
    return Problem(failure.source, failure.lines, failure.field, failure.message, failure.fix, failure.expectation)


def _valid_id(value: Any, limits: RequestLimits) -> str | None:
    ok = isinstance(value, str) and len(value) <= limits.max_id_chars and re.match(ID_PATTERN, value)
    return value if ok else None


class _Intake:
    """One submission's context (paths, ledger, actor), so each step stays small."""

    def __init__(self, path: Path, ledger: Ledger, work: Path, actor: str, limits: RequestLimits) -> None:
        self.path, self.ledger, self.work, self.actor, self.limits = path, ledger, work, actor, limits
        self.received_at = utcnow()
        self.data: bytes | None = None
        self.size: int | None = None

    def refuse(self, problems: list[Problem], *, request_id: str | None = None, content_sha256: str | None = None,
               result: ContractResult | None = None, mark_rejected: bool = False) -> IntakeRejected:
        """Quarantine the original bytes, log the refusal (and, with ``mark_rejected``, the request's move to
        ``rejected``), build the error."""
        dicts = [p.to_dict() for p in problems]
        qpath = quarantine(self.path, self.work / "quarantine", dicts, data=self.data)
        if mark_rejected and request_id and content_sha256:
            detail = {"problems": dicts, "quarantine": str(qpath),
                      "report_json": str(result.report_json) if result and result.report_json else None,
                      "report_html": str(result.report_html) if result and result.report_html else None}
            self.ledger.reject(request_id, content_sha256, actor=self.actor, detail=detail,
                               source_name=self.path.name, received_at=self.received_at)
        file_sha = sha256_bytes(self.data) if self.data is not None else None
        self.ledger.record_rejection(actor=self.actor, problems=dicts, source_name=self.path.name,
                                     size_bytes=self.size, file_sha256=file_sha, request_id=request_id,
                                     quarantine_path=str(qpath))
        logger.info("refused %s: %d problem(s); quarantined as %s", self.path.name, len(problems), qpath.name)
        return IntakeRejected(self.path.name, problems, quarantine_path=qpath, request_id=request_id,
                              report_html=result.report_html if result else None)

    def read(self) -> RawRequest:
        try:
            detect_format(self.path)
            self.size = check_size(self.path, self.limits)
            self.data = self.path.read_bytes()
            return read_request_file(self.path, self.limits, data=self.data)
        except IntakeError as err:
            raise self.refuse(list(err.problems)) from None

    def conflict(self, request_id: str, content_sha256: str, message: str, line: int) -> IntakeRejected:
        problem = Problem(self.path.name, (line,), "request_id", message,
                          "give this request a new request_id, or resubmit the original content unchanged",
                          "request_id_conflict")
        return self.refuse([problem], request_id=request_id, content_sha256=content_sha256)


def _duplicate(entry, urgent: bool, ledger: Ledger, actor: str) -> Submission:
    escalated = urgent and not entry.urgent and ledger.escalate(entry.request_id, actor=actor)
    if escalated:
        entry = ledger.get(entry.request_id)
    return Submission(entry.request_id, entry.state, entry.content_sha256, created=False, urgent=entry.urgent,
                      record_count=entry.record_count, validation_split=entry.validation_split,
                      escalated=escalated)


def submit_request(
    path: str | Path,
    *,
    urgent: bool = False,
    ledger: Ledger | None = None,
    retain: Iterable[Mapping[str, Any]] | None = None,
    work_dir: str | Path | None = None,
    limits: RequestLimits | None = None,
    actor: str | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> Submission:
    """Parse, validate and record one request file; see the module docstring.

    ``retain``: QA dicts of the retain set (forget records that also appear there are a conflict).
    ``ledger``: an open ``Ledger`` (default: ``default_ledger_url(work dir)``, opened and closed here).
    Raises ``IntakeRejected`` (a ``ValueError``) for a bad file, ``FileNotFoundError`` for a missing one.
    """
    work = resolve_work_dir(work_dir).resolve()
    own = ledger is None
    ledger = ledger or Ledger(default_ledger_url(work))
    try:
        step = _Intake(Path(path), ledger, work, actor or default_actor(), limits or RequestLimits())
        raw = step.read()
        rows = [fields for _, fields in normalised_rows(raw)]
        content_sha256 = request_content_hash(raw.header, rows)
        request_id = _valid_id(raw.header.get("request_id"), step.limits)
        existing = ledger.find(request_id) if request_id else None
        if existing is not None and existing.state != "rejected":
            if existing.content_sha256 == content_sha256:
                return _duplicate(existing, urgent, ledger, step.actor)
            raise step.conflict(request_id, content_sha256, f"request_id {request_id!r} is already used by a "
                                f"request with other content (state {existing.state})", raw.header_line)
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        result = check_contracts(
            raw, limits=step.limits, retain=retain_keys(retain or ()),
            forgotten=ledger.forgotten_keys(exclude_request_id=request_id),
            report_dir=step.work / "reports" / (request_id or "_unidentified") / stamp)
        if not result.success:
            raise step.refuse([_as_problem(f) for f in result.errors], request_id=request_id,
                              content_sha256=content_sha256, result=result, mark_rejected=True)
        request = to_request(raw, urgent=urgent, validation_fraction=validation_fraction, seed=seed)
        detail = {"report_json": str(result.report_json), "report_html": str(result.report_html),
                  "statistics": result.statistics, "warnings": [w.to_dict() for w in result.warnings]}
        try:
            accepted = ledger.accept(request, actor=step.actor, urgent=urgent, source_name=step.path.name,
                                     received_at=step.received_at, detail=detail)
        except RequestConflict as err:
            raise step.conflict(request.request_id, content_sha256, str(err).split(";")[0], raw.header_line) from None
        entry = accepted.entry
        return Submission(entry.request_id, entry.state, entry.content_sha256, created=accepted.created,
                          urgent=entry.urgent, record_count=entry.record_count,
                          warnings=tuple(_as_problem(w) for w in result.warnings), report_json=result.report_json,
                          report_html=result.report_html, validation_split=entry.validation_split)
    finally:
        if own:
            ledger.close()
