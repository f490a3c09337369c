"""Reading a forget-request file: size limit, text checks, and the three formats (JSON Lines, JSON, CSV).

Everything here is about the *shape* of the file; the rules on values (types, lengths, ids, allowed values)
are the data contracts' job. Each problem names the file, the line, the field and the fix, never content.

- The size is checked with ``stat`` before the file is opened (a 200 MB file is never read).
- Bytes: NUL bytes or mostly control characters mean binary data; then strict UTF-8 decoding (the error names
  line and column); a UTF-8 byte-order mark is dropped; empty and whitespace-only files are rejected.
- JSON Lines (``.jsonl``/``.ndjson``): the first non-blank line is the request header object, each later line
  one record object; blank lines are skipped.
- JSON (``.json``): one object with the header fields and lists ``records``, ``validation``, ``paraphrases``,
  ``knowledge``; a record's line is the line where its object starts.
- CSV (``.csv``): a header row naming the columns; the request fields (``request_id``, ``subject``, ``kind``,
  ...) on every row or only on the first (later rows may leave them empty), then the record columns.
"""

from __future__ import annotations

import bisect
import csv
import difflib
import io
import json
import re
from dataclasses import dataclass
from json import decoder as json_decoder
from json import scanner as json_scanner
from pathlib import Path
from typing import Any, Literal

from asu.errors import InputFileMissing, UsageError
from data_contracts.limits import RequestLimits
from data_contracts.schema import CONTENT_FIELDS, HEADER_FIELDS, RECORD_FIELDS

Format = Literal["jsonl", "json", "csv"]
SUFFIXES: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
LISTS = {"records": "forget", "validation": "validation", "paraphrases": "paraphrase", "knowledge": "knowledge"}
MAX_PROBLEMS = 20
FORMAT_HELP = "see the 'Forget requests' section of README.md for the format"


@dataclass(frozen=True)
class Problem:
    """What is wrong, where (file, lines, field) and what to change. Never quotes submitted content."""

    file: str
    lines: tuple[int, ...]
    field: str | None
    message: str
    fix: str
    code: str

    def __str__(self) -> str:
        where = self.file
        if len(self.lines) == 1:
            where += f":{self.lines[0]}"
        elif self.lines:
            shown = ", ".join(map(str, self.lines[:10])) + (f" and {len(self.lines) - 10} more" if len(self.lines) > 10
                                                             else "")
            where += f": lines {shown}"
        field = f" field {self.field!r}:" if self.field else ""
        return f"{where}:{field} {self.message}; fix: {self.fix}"

    def to_dict(self) -> dict:
        return {"file": self.file, "lines": list(self.lines), "field": self.field, "message": self.message,
                "fix": self.fix, "code": self.code}


class IntakeError(UsageError):
    """The file could not be read as a request; ``problems`` lists every problem found (up to 20)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class RawRow:
    """One record as parsed: its start ``line`` and its fields (any JSON values; CSV gives strings)."""

    line: int
    fields: dict[str, Any]


@dataclass(frozen=True)
class RawRequest:
    """A parsed request file before the contracts: header fields, their line, and the rows."""

    source: str
    format: Format
    header: dict[str, Any]
    header_line: int
    rows: tuple[RawRow, ...]


def _problem(file: str, line: int | None, field: str | None, message: str, fix: str, code: str) -> Problem:
    return Problem(file, (line,) if line else (), field, message, fix, code)


_KEY_BEFORE = re.compile(r'"([^"\\]{1,40})"\s*:')


KNOWN_FIELDS = frozenset(HEADER_FIELDS + RECORD_FIELDS + tuple(LISTS))


def _field_near(text: str, pos: int) -> str | None:
    """The last known field name before ``pos`` (the field being written where the JSON broke), if any; only
    known names are returned, so quoted text inside values never ends up in an error message."""
    keys = [k for k in _KEY_BEFORE.findall(text, 0, pos) if k in KNOWN_FIELDS]
    return keys[-1] if keys else None


def _field_with_bad_bytes(data: bytes, line: int, fmt: Format | None) -> str | None:
    """Which field of ``line`` holds the undecodable bytes (decoded with U+FFFD replacements), if it parses."""
    lines = data.split(b"\n")
    text = lines[line - 1].decode("utf-8", "replace")
    try:
        if fmt == "csv":
            header = next(csv.reader([lines[0].decode("utf-8", "replace")]))
            cells = next(csv.reader([text]))
            found = next((h.strip() for h, c in zip(header, cells, strict=False) if "\ufffd" in c), None)
        else:
            found = next((k for k, v in json.loads(text).items() if isinstance(v, str) and "\ufffd" in v), None)
        return found if found in KNOWN_FIELDS else None
    except (ValueError, StopIteration, AttributeError, csv.Error):
        return None


def detect_format(path: Path) -> Format:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise IntakeError([_problem(path.name, None, None, f"unknown file type {path.suffix or '(no suffix)'!r}",
                                    "name the file *.jsonl, *.json or *.csv after its format", "file_type")])
    return fmt


def check_size(path: Path, limits: RequestLimits) -> int:
    """The file's size in bytes; raises ``IntakeError`` above the limit (without opening the file)."""
    if not path.is_file():
        raise InputFileMissing(f"request file {path} does not exist; pass the path of a .jsonl, .json or .csv file")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise IntakeError([_problem(
            path.name, None, None, f"the file is {size:,} bytes, over the limit of {limits.max_file_bytes:,} bytes",
            "split the request into several smaller requests", "file_too_large")])
    return size


def decode(name: str, data: bytes, fmt: Format | None = None) -> str:
    """Bytes -> text: rejects empty, binary, non-UTF-8 and whitespace-only files (``fmt`` helps name the field
    that holds invalid bytes)."""
    if not data:
        raise IntakeError([_problem(name, 1, None, "the file is empty (0 bytes)",
                                    f"submit a file holding a request; {FORMAT_HELP}", "empty")])
    head = data[:4096]
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 13))
    if b"\x00" in data or controls > len(head) // 10:
        offset = data.find(b"\x00") if b"\x00" in data else 0
        raise IntakeError([_problem(name, data.count(b"\n", 0, offset) + 1, None,
                                    f"binary data (NUL or control bytes, first near byte offset {offset}), not text",
                                    "submit a UTF-8 JSON Lines, JSON or CSV text file", "binary")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise IntakeError([_problem(name, line, _field_with_bad_bytes(data, line, fmt),
                                    f"invalid UTF-8 (byte 0x{data[err.start]:02x} at byte column {column})",
                                    "save the file as UTF-8 (re-export it, or convert it with iconv)",
                                    "invalid_utf8")]) from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise IntakeError([_problem(name, 1, None, "the file holds only whitespace",
                                    f"submit a file holding a request; {FORMAT_HELP}", "whitespace")])
    return text


def _unknown(name: str, line: int, keys, allowed: tuple[str, ...], where: str) -> list[Problem]:
    out = []
    for key in keys:
        if key not in allowed:
            label = str(key)[:40]
            guess = difflib.get_close_matches(label, allowed, n=1)
            hint = f"did you mean {guess[0]!r}? " if guess else ""
            out.append(_problem(name, line, label, f"is not a {where} field",
                                f"{hint}remove it or use one of {list(allowed)}", "unknown_field"))
    return out


def _header_problems(name: str, line: int, obj: dict, extra: tuple[str, ...] = ()) -> list[Problem]:
    content = [k for k in obj if k in RECORD_FIELDS and k not in HEADER_FIELDS]
    if content and "request_id" not in obj:
        return [_problem(name, line, content[0], "looks like a record, but this line must be the request header",
                         'start the file with a header line such as {"request_id": "req-1", "subject": "...", '
                         '"kind": "qa"}; records follow on the next lines', "missing_header")]
    return _unknown(name, line, obj, HEADER_FIELDS + extra, "request header")


def _type_name(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def parse_jsonl(name: str, text: str, limits: RequestLimits) -> tuple[dict, int, list[RawRow]]:
    lines = text.splitlines()
    if len(lines) > limits.max_records + 1 and sum(1 for ln in lines if ln.strip()) > limits.max_records + 1:
        raise IntakeError([_problem(name, None, None, f"more than {limits.max_records} records",
                                    f"split the request into requests of at most {limits.max_records} records",
                                    "too_many_records")])
    problems: list[Problem] = []
    header, header_line, rows = None, 0, []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_unique_keys)
        except _DuplicateKey as dup:
            problems.append(_duplicate(name, number, dup.key))
            continue
        except json.JSONDecodeError as err:
            problems.append(_problem(name, number, _field_near(line, err.pos),
                                     f"malformed JSON ({err.msg} at column {err.colno})",
                                     "fix the JSON on that line (one complete object per line)", "malformed_json"))
            continue
        except RecursionError:
            problems.append(_too_deep(name, number, line))
            continue
        if not isinstance(obj, dict):
            problems.append(_problem(name, number, None, f"holds {_type_name(obj)}, not a JSON object",
                                     "write one JSON object {...} per line", "not_object"))
        elif header is None:
            header, header_line = obj, number
            problems += _header_problems(name, number, obj)
        else:
            problems += _unknown(name, number, obj, RECORD_FIELDS, "record")
            rows.append(RawRow(number, obj))
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        raise IntakeError(problems)
    return header or {}, header_line, rows


class _DuplicateKey(ValueError):
    def __init__(self, key: str, line: int | None = None) -> None:
        super().__init__(key)
        self.key, self.line = key, line


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a key given twice in one object (``json`` would keep the last silently,
    so what a reviewer reads and what the pipeline unlearns could differ)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _duplicate(name: str, line: int | None, key: str) -> Problem:
    return _problem(name, line, key, "is given twice in one object (which one counts would be a guess)",
                    "keep one value for the field", "duplicate_key")


#: A key whose value opens eight or more arrays/objects in a row: where a too-deep value starts.
_DEEP = re.compile(r'"([^"\\]{1,64})"\s*:(?:\s*[\[{]){8}')


def _too_deep(name: str, line: int | None, text: str) -> Problem:
    """A value nested deeper than Python's JSON parser can follow (it recurses once per level)."""
    found = _DEEP.search(text)
    if line is None:  # a whole-file JSON document: the line where the deep nesting starts
        line = text.count("\n", 0, found.start()) + 1 if found else None
    return _problem(name, line, found.group(1) if found else None,
                    "nested arrays or objects too deep to read (hundreds of levels)",
                    "give the field a plain string value; a request never needs nested arrays", "too_deep")


class _Located(dict):
    """A decoded JSON object that remembers the line where it starts."""

    line = 0


def _locating_loads(text: str) -> Any:
    """``json.loads`` whose objects are ``_Located`` dicts carrying their start line (pure-Python scanner)."""
    newlines = [i for i, ch in enumerate(text) if ch == "\n"]
    dec = json.JSONDecoder()

    def parse_object(s_and_end, strict, scan_once, object_hook, object_pairs_hook, *args, **kwargs):
        pairs, end = json_decoder.JSONObject(s_and_end, strict, scan_once, object_hook, list, *args, **kwargs)
        located = _Located()
        for key, value in pairs:
            if key in located:
                raise _DuplicateKey(key, bisect.bisect_left(newlines, s_and_end[1] - 1) + 1)
            located[key] = value
        located.line = bisect.bisect_left(newlines, s_and_end[1] - 1) + 1
        return located, end

    dec.parse_object = parse_object
    dec.scan_once = json_scanner.py_make_scanner(dec)
    return dec.decode(text)


def parse_json(name: str, text: str, limits: RequestLimits) -> tuple[dict, int, list[RawRow]]:
    try:
        obj = _locating_loads(text)
    except json.JSONDecodeError as err:
        raise IntakeError([_problem(name, err.lineno, _field_near(text, err.pos),
                                    f"malformed JSON ({err.msg} at column {err.colno})",
                                    "fix the JSON at that line", "malformed_json")]) from None
    except RecursionError:
        raise IntakeError([_too_deep(name, None, text)]) from None
    except _DuplicateKey as dup:
        raise IntakeError([_duplicate(name, dup.line, dup.key)]) from None
    if not isinstance(obj, dict):
        raise IntakeError([_problem(name, 1, None, f"the file holds {_type_name(obj)}, not a JSON object",
                                    'write one object {"request_id": ..., "records": [...]}', "not_object")])
    problems = _header_problems(name, obj.line, obj, tuple(LISTS))
    header = {k: v for k, v in obj.items() if k not in LISTS}
    rows: list[RawRow] = []
    for key, role in LISTS.items():
        items = obj.get(key, [])
        if not isinstance(items, list):
            problems.append(_problem(name, obj.line, key, f"must be a JSON array, not {_type_name(items)}",
                                     f"write {key} as [{{...}}, ...]", "wrong_type"))
            continue
        for item in items:
            line = getattr(item, "line", obj.line)
            if not isinstance(item, dict):
                problems.append(_problem(name, line, key, f"holds {_type_name(item)}, not a JSON object",
                                         f"write each entry of {key} as an object", "not_object"))
                continue
            problems += _unknown(name, line, item, RECORD_FIELDS, "record")
            if item.get("role", role) != role:
                problems.append(_problem(name, line, "role", f"contradicts the list {key!r} (role {role!r})",
                                         f"remove 'role' from entries of {key!r}", "role_mismatch"))
            rows.append(RawRow(line, {**dict(item), "role": role}))
    if problems:
        raise IntakeError(problems[:MAX_PROBLEMS])
    return header, obj.line, rows


#: A CSV cell a spreadsheet would evaluate (OWASP "CSV injection"): =, @, or + / - not starting a number.
_FORMULA = re.compile(r"^\s*(?:[=@]|[+-](?![\d.\s]))")


def parse_csv(name: str, text: str, limits: RequestLimits) -> tuple[dict, int, list[RawRow]]:
    csv.field_size_limit(max(csv.field_size_limit(), limits.max_file_bytes))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip() for c in next(reader)]
        allowed = HEADER_FIELDS + RECORD_FIELDS
        missing = [c for c in ("request_id", "subject", "kind", "record_id") if c not in columns]
        if not any(all(c in columns for c in fields) for fields in CONTENT_FIELDS.values()):
            missing.append("question,answer (qa) or text (text)")
        problems = _unknown(name, 1, columns, allowed, "CSV")
        problems += [_problem(name, 1, c, "required column is missing from the CSV header",
                              f"the header must name {['request_id', 'subject', 'kind', 'record_id']} plus the "
                              "content columns (question,answer or text)", "wrong_header") for c in missing]
        if len(set(columns)) != len(columns):
            problems.append(_problem(name, 1, None, "the CSV header names a column twice",
                                     "name each column once", "wrong_header"))
        if problems:
            raise IntakeError(problems[:MAX_PROBLEMS])
        header: dict[str, Any] = {}
        first_line = 0
        rows: list[RawRow] = []
        previous = reader.line_num
        for cells in reader:
            line, previous = previous + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(columns):
                problems.append(_problem(name, line, None, f"has {len(cells)} cells, the header has {len(columns)}",
                                         "quote cells that contain commas and give every row all columns",
                                         "wrong_cell_count"))
                continue
            values = {c: v for c, v in zip(columns, cells, strict=True) if v != ""}
            problems += [_problem(name, line, c, "starts like a spreadsheet formula (=, +, - or @): opened in a "
                                  "spreadsheet, the request file would run it", "start the value with a letter, a "
                                  "digit or a quote mark, or submit JSON Lines", "csv_formula")
                         for c, v in values.items() if _FORMULA.match(v)]
            if not first_line:
                first_line, header = line, {f: values[f] for f in HEADER_FIELDS if f in values}
            for field in HEADER_FIELDS:
                if field in values and header.get(field) != values[field]:
                    problems.append(_problem(name, line, field, "differs from the first row's value",
                                             "give request fields the same value on every row, or leave them "
                                             "empty after the first row", "inconsistent_header"))
            rows.append(RawRow(line, {f: values[f] for f in RECORD_FIELDS if f in values}))
    except csv.Error as err:
        raise IntakeError([_problem(name, reader.line_num, None, f"malformed CSV ({err})",
                                    "fix the quoting on that line", "malformed_csv")]) from None
    if problems:
        raise IntakeError(problems[:MAX_PROBLEMS])
    return header, first_line or 1, rows


PARSERS = {"jsonl": parse_jsonl, "json": parse_json, "csv": parse_csv}


def read_request_file(path: str | Path, limits: RequestLimits, data: bytes | None = None) -> RawRequest:
    """Check size, read, decode and parse one request file. ``data``: its bytes if already read."""
    path = Path(path)
    fmt = detect_format(path)
    if data is None:
        check_size(path, limits)
        data = path.read_bytes()
    text = decode(path.name, data, fmt)
    header, header_line, rows = PARSERS[fmt](path.name, text, limits)
    return RawRequest(source=path.name, format=fmt, header=header, header_line=header_line, rows=tuple(rows))
