"""The typed forget request (frozen dataclasses) and its SHA-256 helpers.

A request holds forget records (``qa``: question/answer pairs; ``text``: passages; ``mixed``: either), optional
validation items (held-out questions about the same subject), optional paraphrases (a rephrasing of one forget
record, linked by ``paraphrase_of``) and optional knowledge questions (question/answer pairs about what the
passages say, never trained on nor searched on: the report's KnowMem). When no validation items are given,
``split_validation`` picks some forget records, seeded; the split (seed, fraction, record ids) is kept on the
request.

Hashes (all hex SHA-256):
- ``record_content_hash``: a record's content (question, answer, text), not its id or role: equal content,
  same hash (duplicate detection).
- ``record_key``: the normalised question (``qa``) or text (``text``): NFKC, case-folded, whitespace
  collapsed; cross-set checks compare keys with the retain set and with earlier requests.
- ``request_content_hash``: the whole submitted request (header without ``urgency``, every record with its
  id and role, in role order). The same content submitted again (in any of the three formats) has the same hash.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asu.errors import UsageError
from asu.hashing import sha256_text as _utf8_sha256
from data_contracts.schema import HEADER_FIELDS, KINDS, ROLES, URGENCIES, RecordRole, RequestKind, Urgency

_WHITESPACE = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")
CONTENT_KEYS = ("question", "answer", "text")


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` encoded as UTF-8 (unpaired surrogates replaced by U+FFFD)."""
    return _utf8_sha256(without_surrogates(text))


def without_surrogates(text: str) -> str:
    """``text`` with unpaired UTF-16 surrogates (from ``\\ud800``-style JSON escapes) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, ASCII escapes) used for hashing."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def normalise_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed and stripped: the form compared across sets."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", without_surrogates(text)).casefold()).strip()


def record_content_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 of a record's content fields (any JSON values; absent, None and empty fields are ignored)."""
    return sha256_text(canonical_json({k: fields[k] for k in CONTENT_KEYS if _present(fields.get(k))}))


def record_key(kind: str | None, fields: Mapping[str, Any]) -> str:
    """SHA-256 of the normalised question (``qa``) or text (``text``; ``mixed``: the text of a passage record, the
    question of a question-answer record); of the content hash for other kinds."""
    if kind in ("text", "mixed"):  # per record: a text request's knowledge questions are keyed by their question
        kind = "text" if isinstance(fields.get("text"), str) else "qa"
    column = {"qa": "question", "text": "text"}.get(kind or "")
    value = fields.get(column) if column else None
    if isinstance(value, str):
        return sha256_text(normalise_text(value))
    return record_content_hash(fields)


def retain_keys(retain: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Keys of a retain set of QA dicts: its normalised questions (match ``qa`` records) and answers (match
    ``text`` records)."""
    keys = set()
    for item in retain:
        for name in ("question", "answer", "text"):
            if isinstance(item.get(name), str):
                keys.add(sha256_text(normalise_text(item[name])))
    return frozenset(keys)


def _present(value: Any) -> bool:
    return value is not None and value != ""


def request_content_hash(header: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of a submitted request as parsed (any JSON values). ``urgency`` is left out (escalating a request
    does not change what is forgotten); rows are taken in role order (forget, validation, paraphrase), each in
    file order, with ``role`` defaulting to ``forget``; absent, None and empty fields are ignored."""
    head = {k: v for k, v in header.items() if k != "urgency" and _present(v)}
    by_role: dict[str, list] = {}
    for row in rows:
        clean = {k: v for k, v in row.items() if k != "line" and _present(v)}
        clean["role"] = clean.get("role", "forget")
        by_role.setdefault(str(clean["role"]), []).append(clean)
    ordered = [r for role in sorted(by_role, key=lambda x: (ROLES.index(x) if x in ROLES else 9, x))
               for r in by_role[role]]
    return sha256_text(canonical_json({"header": head, "rows": ordered}))


@dataclass(frozen=True)
class Record:
    """One row of a request: a forget record, a validation item or a paraphrase (``paraphrase_of`` set).

    ``qa`` kind: ``question`` and ``answer``; ``text`` kind: ``text``; ``mixed``: one or the other. ``line``: where
    it started in the submitted file (0 when rebuilt from storage; not part of equality or hashes).
    """

    record_id: str
    role: RecordRole = "forget"
    question: str | None = None
    answer: str | None = None
    text: str | None = None
    paraphrase_of: str | None = None
    line: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise UsageError(f"Record {self.record_id!r}: role={self.role!r} is invalid; use one of {list(ROLES)}")
        if (self.role == "paraphrase") != (self.paraphrase_of is not None):
            raise UsageError(f"Record {self.record_id!r}: paraphrase_of is set exactly when role is 'paraphrase'")

    @property
    def content_sha256(self) -> str:
        return record_content_hash(self.to_dict())

    def key_sha256(self, kind: RequestKind) -> str:
        return record_key(kind, self.to_dict())

    def to_dict(self) -> dict[str, str]:
        """JSON-friendly form without ``line`` and without absent fields."""
        out = {"record_id": self.record_id, "role": self.role}
        for name in ("question", "answer", "text", "paraphrase_of"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, line: int = 0) -> Record:
        return cls(line=line, **{k: v for k, v in data.items() if k != "line" and _present(v)})


@dataclass(frozen=True)
class ValidationSplit:
    """Validation items split off the forget records: ``record_ids`` chosen by ``random.Random(seed)``."""

    seed: int
    fraction: float
    record_ids: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"seed": self.seed, "fraction": self.fraction, "record_ids": list(self.record_ids)}


def split_validation(records: Sequence[Record], *, fraction: float = 0.1, seed: int = 0) -> ValidationSplit:
    """Choose ``round(fraction * n)`` forget records (at least 1, and at least 1 left to forget; none when
    there is a single record) as validation items, reproducibly from ``seed``. A request mixing passages and
    question-answer records is split per shape, so that the search validates on both."""
    if not 0 < fraction < 1:
        raise UsageError(f"validation fraction={fraction} is invalid; use a value in (0, 1), e.g. 0.1")
    rng = random.Random(seed)
    groups = [[i for i, r in enumerate(records) if (r.text is not None) == passage] for passage in (False, True)]
    chosen = []
    for group in [g for g in groups if g]:
        n = len(group)
        count = 0 if n < 2 else min(n - 1, max(1, round(fraction * n)))
        chosen += [group[i] for i in rng.sample(range(n), count)]
    return ValidationSplit(seed=seed, fraction=fraction, record_ids=tuple(records[i].record_id for i in sorted(chosen)))


@dataclass(frozen=True)
class ForgetRequest:
    """A validated forget request. ``records`` are the forget records as submitted (all roles ``forget``);
    ``validation`` the submitted validation items; ``paraphrases`` the submitted paraphrases; ``knowledge`` the
    submitted knowledge questions (scored only)."""

    request_id: str
    subject: str
    kind: RequestKind
    records: tuple[Record, ...]
    validation: tuple[Record, ...] = ()
    paraphrases: tuple[Record, ...] = ()
    knowledge: tuple[Record, ...] = ()
    urgency: Urgency = "normal"
    requester: str | None = None
    received_at: str | None = None
    notes: str | None = None
    validation_split: ValidationSplit | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"ForgetRequest.kind={self.kind!r} is invalid; use one of {list(KINDS)}")
        if self.urgency not in URGENCIES:
            raise UsageError(f"ForgetRequest.urgency={self.urgency!r} is invalid; use one of {list(URGENCIES)}")
        if not self.records:
            raise UsageError(f"request {self.request_id!r} holds no forget record; add at least one")

    def header(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HEADER_FIELDS if getattr(self, name) is not None}

    def all_records(self) -> tuple[Record, ...]:
        return self.records + self.validation + self.paraphrases + self.knowledge

    @property
    def content_sha256(self) -> str:
        return request_content_hash(self.header(), [r.to_dict() for r in self.all_records()])

    def forget_records(self) -> tuple[Record, ...]:
        """Records to unlearn: the forget records minus those split off as validation items."""
        held_out = set(self.validation_split.record_ids) if self.validation_split else set()
        return tuple(r for r in self.records if r.record_id not in held_out)

    def validation_items(self) -> tuple[Record, ...]:
        """The submitted validation items, else the records of the seeded split."""
        if self.validation:
            return self.validation
        held_out = set(self.validation_split.record_ids) if self.validation_split else set()
        return tuple(r for r in self.records if r.record_id in held_out)

    def to_dict(self) -> dict[str, Any]:
        out = {**self.header(), "records": [r.to_dict() for r in self.records],
               "validation": [r.to_dict() for r in self.validation],
               "paraphrases": [r.to_dict() for r in self.paraphrases]}
        if self.knowledge:
            out["knowledge"] = [r.to_dict() for r in self.knowledge]
        if self.validation_split:
            out["validation_split"] = self.validation_split.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForgetRequest:
        split = data.get("validation_split")
        return cls(
            **{k: data[k] for k in HEADER_FIELDS if data.get(k) is not None},
            records=tuple(Record.from_dict(r) for r in data.get("records", ())),
            validation=tuple(Record.from_dict(r) for r in data.get("validation", ())),
            paraphrases=tuple(Record.from_dict(r) for r in data.get("paraphrases", ())),
            knowledge=tuple(Record.from_dict(r) for r in data.get("knowledge", ())),
            validation_split=ValidationSplit(split["seed"], split["fraction"], tuple(split["record_ids"]))
            if split else None,
        )
