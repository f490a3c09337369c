"""Size limits of a forget request: one frozen dataclass shared by the file reader and the contracts."""

from __future__ import annotations

from dataclasses import dataclass, fields

from asu.errors import UsageError

MIB = 2**20


@dataclass(frozen=True)
class RequestLimits:
    """Upper bounds a request must respect; lengths are in characters (code points), sizes in bytes.

    Parameters:
        max_file_bytes: largest request file accepted; checked with ``stat`` before the file is opened.
        max_records: most rows (forget records + validation items + paraphrases) in one request.
        max_id_chars: longest ``request_id`` / ``record_id``.
        max_subject_chars, max_requester_chars, max_notes_chars: request-level text fields.
        max_question_chars, max_answer_chars, max_text_chars: record fields (``qa`` and ``text`` kinds).
    """

    max_file_bytes: int = 64 * MIB
    max_records: int = 50_000
    max_id_chars: int = 128
    max_subject_chars: int = 500
    max_requester_chars: int = 200
    max_notes_chars: int = 5_000
    max_question_chars: int = 2_000
    max_answer_chars: int = 10_000
    max_text_chars: int = 50_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"RequestLimits.{f.name}={value!r} is invalid; use a positive integer")
