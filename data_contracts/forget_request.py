"""Great Expectations suites of a forget request, defined in code.

Two frames are validated (their columns are listed in ``data_contracts.schema``):
- the **header** frame, one row: ``request_id``, ``subject``, ``kind``, ``urgency``, ``requester``,
  ``received_at``, ``notes``, ``line``;
- the **records** frame, one row per forget record, validation item and paraphrase: ``record_id``, ``role``,
  ``question``, ``answer``, ``text``, ``paraphrase_of``, ``line``, ``content_sha256``, ``key_sha256``.

Every expectation carries ``meta = {"field", "message", "fix"}``: the runner turns a failure into an error that
names the field, the offending lines and what to change, without quoting content. ``severity="warning"`` marks
checks that are reported but do not reject the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from data_contracts.limits import RequestLimits
from data_contracts.schema import (
    CONTENT_FIELDS,
    CONTROL_PATTERN,
    ID_PATTERN,
    ISO_TIMESTAMP_PATTERN,
    KINDS,
    LINE_CONTROL_PATTERN,
    REPLACEMENT_CHAR,
    ROLES,
    URGENCIES,
)

if TYPE_CHECKING:
    import great_expectations as gx

PARAPHRASE = 'role=="paraphrase"'
NOT_PARAPHRASE = 'role!="paraphrase"'
FORGET = 'role=="forget"'
PASSAGE_ROW, QA_ROW = "text.notnull()", "text.isnull()"
KNOWLEDGE, NOT_KNOWLEDGE = 'role=="knowledge"', 'role!="knowledge"'


def _e(cls, field: str, message: str, fix: str, *, severity: str = "critical", **kwargs):
    """One expectation with the meta the runner needs (row conditions use the pandas parser)."""
    if "row_condition" in kwargs:
        kwargs["condition_parser"] = "pandas"
    return cls(meta={"field": field, "message": message, "fix": fix}, severity=severity, **kwargs)


def _text_checks(column: str, max_chars: int, *, required: bool, single_line: bool, what: str,
                 required_where: str | None = None) -> list:
    """Presence (on the rows of ``required_where`` when given), type, length, control characters and UTF-8
    validity of one text column."""
    import great_expectations.expectations as gxe

    out = []
    if required:
        where = {"row_condition": required_where} if required_where else {}
        out.append(_e(gxe.ExpectColumnValuesToNotBeNull, column, "is missing", f"add the {what}", column=column,
                      **where))
    out += [
        _e(gxe.ExpectColumnValuesToBeOfType, column, "must be a string", f"write the {what} as a quoted string",
           column=column, type_="str"),
        _e(gxe.ExpectColumnValueLengthsToBeBetween, column, f"must be 1 to {max_chars} characters long",
           f"shorten the {what} (or split it into several records) and do not leave it empty",
           column=column, min_value=1, max_value=max_chars),
        _e(gxe.ExpectColumnValuesToNotMatchRegex, column, "is only whitespace or invisible characters",
           f"write the {what} (spaces, line breaks and zero-width characters say nothing)", column=column,
           regex=r"^[\s\u200b-\u200d\u2060\ufeff]*$"),
        _e(gxe.ExpectColumnValuesToNotMatchRegex, column,
           "contains bidirectional override characters (the text would display differently from what it says)",
           f"remove the U+202A-U+202E / U+2066-U+2069 characters from the {what}", column=column,
           regex=r"[\u202a-\u202e\u2066-\u2069]"),
        _e(gxe.ExpectColumnValuesToNotMatchRegex, column, "contains control characters",
           f"remove control characters from the {what}" + (" (it must be one line)" if single_line else ""),
           column=column, regex=LINE_CONTROL_PATTERN if single_line else CONTROL_PATTERN),
        _e(gxe.ExpectColumnValuesToNotMatchRegex, column,
           "is not valid UTF-8 text (U+FFFD replacement character or unpaired surrogate escape)",
           f"re-export the {what} from its source as UTF-8", column=column, regex=REPLACEMENT_CHAR),
    ]
    return out


def _id_checks(column: str, limits: RequestLimits, *, what: str, unique: bool) -> list:
    import great_expectations.expectations as gxe

    out = [
        _e(gxe.ExpectColumnValuesToNotBeNull, column, "is missing", f"give every {what} an id", column=column),
        _e(gxe.ExpectColumnValuesToBeOfType, column, "must be a string", f"write the {what} id as a quoted string",
           column=column, type_="str"),
        _e(gxe.ExpectColumnValueLengthsToBeBetween, column, f"must be 1 to {limits.max_id_chars} characters long",
           f"use a shorter {what} id", column=column, min_value=1, max_value=limits.max_id_chars),
        _e(gxe.ExpectColumnValuesToMatchRegex, column,
           "may hold only letters, digits, '.', '_' and '-' and must start with a letter or digit "
           "(no path separators, spaces or control characters)",
           f"rename the {what} id, e.g. 'req-2026-0001'", column=column, regex=ID_PATTERN),
    ]
    if unique:
        out.append(_e(gxe.ExpectColumnValuesToBeUnique, column, "is not unique (the same id is used twice)",
                      f"give each {what} its own id", column=column))
    return out


def header_suite(limits: RequestLimits) -> gx.ExpectationSuite:
    """Expectations on the request's one-row header frame."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    ex = _id_checks("request_id", limits, what="request", unique=False)
    ex += _text_checks("subject", limits.max_subject_chars, required=True, single_line=True,
                       what="subject (the person, work or topic to forget)")
    ex += [
        _e(gxe.ExpectColumnValuesToNotBeNull, "kind", "is missing", f"set kind to one of {list(KINDS)}",
           column="kind"),
        _e(gxe.ExpectColumnValuesToBeInSet, "kind", f"must be one of {list(KINDS)}",
           "use 'qa' for question/answer records, 'text' for passages or 'mixed' for both", column="kind",
           value_set=list(KINDS)),
        _e(gxe.ExpectColumnValuesToBeInSet, "urgency", f"must be one of {list(URGENCIES)}",
           "use 'normal' or 'urgent', or leave urgency out", column="urgency", value_set=list(URGENCIES)),
        _e(gxe.ExpectColumnValuesToBeOfType, "received_at", "must be a string", "write it as an ISO 8601 string",
           column="received_at", type_="str"),
        _e(gxe.ExpectColumnValuesToMatchRegex, "received_at", "is not an ISO 8601 timestamp",
           "write it like 2026-03-01T12:00:00Z, or leave it out", column="received_at",
           regex=ISO_TIMESTAMP_PATTERN),
    ]
    ex += _text_checks("requester", limits.max_requester_chars, required=False, single_line=True, what="requester")
    ex += _text_checks("notes", limits.max_notes_chars, required=False, single_line=False, what="notes")
    return gx.ExpectationSuite(name="forget_request_header", expectations=ex)


def records_suite(kind: str | None, limits: RequestLimits) -> gx.ExpectationSuite:
    """Expectations on the records frame of a request of ``kind`` (``None`` when the header's kind is invalid:
    then only kind-independent checks run, and every content column may be null).

    Cross-set checks read the frame's lookup columns (``data_contracts.schema.DERIVED_COLUMNS``): a forget
    record found in the retain set is an error (conflict); one found among earlier requests' records a warning.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    ex = [
        _e(gxe.ExpectTableRowCountToBeBetween, "records", f"the request must hold 1 to {limits.max_records} records",
           f"split the request into requests of at most {limits.max_records} records", min_value=1,
           max_value=limits.max_records),
        _e(gxe.ExpectColumnValuesToBeInSet, "role", f"must be one of {list(ROLES)}",
           "use 'forget' (the default), 'validation', 'paraphrase' or 'knowledge'", column="role",
           value_set=list(ROLES)),
        _e(gxe.ExpectColumnDistinctValuesToContainSet, "role", "the request holds no forget record",
           "add at least one record to forget", column="role", value_set=["forget"]),
    ]
    ex += _id_checks("record_id", limits, what="record", unique=True)
    ex.append(_e(gxe.ExpectColumnValuesToBeUnique, "records", "duplicate record (same content as another record)",
                 "remove the repeated record", column="content_sha256"))
    max_chars = {"question": limits.max_question_chars, "answer": limits.max_answer_chars,
                 "text": limits.max_text_chars}
    for column, chars in max_chars.items():
        if kind is None or column in CONTENT_FIELDS[kind]:
            # knowledge questions are question-answer records in every kind of request
            ex += _text_checks(column, chars, required=kind in ("qa", "text"), single_line=False, what=column,
                               required_where=NOT_KNOWLEDGE if column == "text" else None)
        elif column == "text":
            ex.append(_e(gxe.ExpectColumnValuesToBeNull, column, f"is not used by kind {kind!r} requests",
                         f"remove {column!r}, or change the request's kind", column=column))
        else:  # a text request's question-answer columns hold its knowledge questions only
            ex += _text_checks(column, chars, required=False, single_line=False, what=column)
            ex.append(_e(gxe.ExpectColumnValuesToBeNull, column, f"is not used by kind {kind!r} requests (only by "
                         "its knowledge questions)", f"remove {column!r}, set role to 'knowledge', or change the "
                         "request's kind", column=column, row_condition=NOT_KNOWLEDGE))
    for column in ("question", "answer"):
        ex.append(_e(gxe.ExpectColumnValuesToNotBeNull, column, "is missing on a knowledge question",
                     "give each knowledge record a question and its answer", column=column, row_condition=KNOWLEDGE))
    ex.append(_e(gxe.ExpectColumnValuesToBeNull, "text", "is set on a knowledge question",
                 "a knowledge record is a question and its answer; remove 'text'", column="text",
                 row_condition=KNOWLEDGE))
    if kind == "mixed":  # each record is a question-answer pair or a passage, never both
        for column in ("question", "answer"):
            ex += [
                _e(gxe.ExpectColumnValuesToNotBeNull, column, "is missing on a record without text",
                   "give a question and an answer, or put the passage in 'text'", column=column, row_condition=QA_ROW),
                _e(gxe.ExpectColumnValuesToBeNull, column, "is set on a passage record (one that has text)",
                   f"remove {column!r} from the passage, or make it a separate question-answer record",
                   column=column, row_condition=PASSAGE_ROW),
            ]
    ex += [
        _e(gxe.ExpectColumnValuesToNotBeNull, "paraphrase_of", "is missing on a paraphrase",
           "set paraphrase_of to the record_id of the forget record it rephrases", column="paraphrase_of",
           row_condition=PARAPHRASE),
        _e(gxe.ExpectColumnValuesToBeNull, "paraphrase_of", "is only allowed on paraphrases",
           "remove paraphrase_of, or set role to 'paraphrase'", column="paraphrase_of", row_condition=NOT_PARAPHRASE),
        _e(gxe.ExpectColumnValuesToBeInSet, "paraphrase_of", "does not name a forget record of this request",
           "point paraphrase_of at the record_id of one of the request's forget records",
           column="paraphrase_target_found", value_set=[True], row_condition=PARAPHRASE),
        _e(gxe.ExpectColumnValuesToBeInSet, "records", "conflicts with the retain set (the same question or "
           "passage is also a record the model must keep)",
           "remove the record from the forget request, or remove it from the retain set", column="in_retain_set",
           value_set=[False]),
        _e(gxe.ExpectColumnValuesToBeInSet, "records", "was already forgotten by an earlier request",
           "nothing to do unless this is unintended; the record will be forgotten again", column="forgotten_before",
           value_set=[False], row_condition=FORGET, severity="warning"),
    ]
    return gx.ExpectationSuite(name="forget_request_records", expectations=ex)
