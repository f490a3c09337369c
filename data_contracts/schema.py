"""Field names and allowed values of the forget-request format (the single source for parser, model and suites)."""

from __future__ import annotations

from typing import Literal, get_args

RequestKind = Literal["qa", "text", "mixed"]
Urgency = Literal["normal", "urgent"]
RecordRole = Literal["forget", "validation", "paraphrase", "knowledge"]

KINDS: tuple[str, ...] = get_args(RequestKind)
URGENCIES: tuple[str, ...] = get_args(Urgency)
ROLES: tuple[str, ...] = get_args(RecordRole)

HEADER_FIELDS = ("request_id", "subject", "kind", "urgency", "requester", "received_at", "notes")
REQUIRED_HEADER_FIELDS = ("request_id", "subject", "kind")
RECORD_FIELDS = ("record_id", "role", "question", "answer", "text", "paraphrase_of")
#: ``mixed``: each record is either a question-answer pair or a passage (never both; ``records_suite``).
CONTENT_FIELDS = {"qa": ("question", "answer"), "text": ("text",), "mixed": ("question", "answer", "text")}
# Columns the intake adds to the records frame: source line; SHA-256 of the record's content (duplicates) and of its
# normalised key (question for qa, text for text; per record for mixed); and the cross-set lookups, done against
# hash sets because those sets grow without bound (every earlier request) and GX copies an expectation's value set
# on every access: ``in_retain_set`` (key found in the retain set), ``forgotten_before`` (key found among the forget
# records of earlier requests), ``paraphrase_target_found`` (paraphrase_of names a forget record; None when it is
# empty).
DERIVED_COLUMNS = ("line", "content_sha256", "key_sha256", "in_retain_set", "forgotten_before",
                   "paraphrase_target_found")

# Ids become file and folder names and database keys: letters, digits, '.', '_', '-', starting with a letter or
# digit (so no '/', '\\', '..' prefix, spaces or control characters).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
ISO_TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
# Control characters other than tab, newline and carriage return; U+FFFD marks text that was not valid UTF-8
# when it was produced (and unpaired UTF-16 surrogate escapes, which the intake replaces by it).
CONTROL_PATTERN = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
LINE_CONTROL_PATTERN = r"[\x00-\x1f\x7f]"
REPLACEMENT_CHAR = "\ufffd"
