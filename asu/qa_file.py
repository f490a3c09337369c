"""The one reader of question-answer files (JSON array or JSON Lines): torch-free, so the intake stays light.

A row is an object; ``load_qa_file`` keeps ``{"question", "answer"}`` pairs (both non-empty strings), and
``read_rows`` gives every row with its line number for readers that want other fields (``subject``, ``text``).
JSON Lines are split at ``\\n`` only: ``str.splitlines`` would also split at U+2028 and friends, which are legal
inside JSON strings. Errors name the file, the line and the field, and say what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from asu.errors import InputFileMissing, UsageError

QAItem = dict[str, str]


def read_rows(path: str | Path, what: str = "QA file", *, error: type[UsageError] = UsageError,
              missing: str | None = None, json_array: bool = True) -> list[tuple[int, Any]]:
    """``(line number, parsed row)`` of every non-blank line (JSON Lines) or array element (JSON; numbered 1..n).

    ``error``: the ``UsageError`` subclass to raise for bad content (the caller's domain error); ``missing``: the
    message when the file does not exist; ``json_array=False``: JSON Lines only (a line starting with ``[`` is
    then a line like any other).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileMissing(missing or f"{what} {path} does not exist; pass a JSON or JSON Lines file of "
                               "question/answer items")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    if json_array and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise error(f"{path}:{err.lineno}: invalid JSON ({err.msg}); fix that line") from None
        except RecursionError:
            raise error(f"{path}: arrays or objects nested too deep to read; give every field a plain value") from None
        return list(enumerate(rows, start=1))
    out = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                out.append((lineno, json.loads(line)))
            except json.JSONDecodeError as err:
                raise error(f"{path}:{lineno}: invalid JSON ({err.msg}); one JSON object per line: fix or remove "
                            "that line") from None
            except RecursionError:
                raise error(f"{path}:{lineno}: arrays or objects nested too deep to read; give every field a plain "
                            "value") from None
    return out


def load_qa_file(path: str | Path) -> list[QAItem]:
    """The ``{"question", "answer"}`` items of a QA file (other fields dropped); at least one item."""
    items = []
    for lineno, row in read_rows(path):
        for key in ("question", "answer"):
            if not isinstance(row, dict) or not isinstance(row.get(key), str) or not row[key].strip():
                raise UsageError(f"{path}:{lineno}: field {key!r} must be a non-empty string")
        items.append({"question": row["question"], "answer": row["answer"]})
    if not items:
        raise UsageError(f"{path} holds no QA items; an unlearning round needs at least one")
    return items


def load_round_items(path: str | Path, what: str = "forget") -> list[dict[str, str]]:
    """The items of a round's forget or retain file: ``{"question", "answer"}`` rows (QA) and ``{"text"}`` rows
    (passages, ``asu.passages``), mixed freely; other fields are dropped. At least one item."""
    items = []
    for lineno, row in read_rows(path, f"{what} file"):
        if isinstance(row, dict) and "text" in row and "question" not in row:
            if not isinstance(row["text"], str) or not row["text"].strip():
                raise UsageError(f"{path}:{lineno}: field 'text' must be a non-empty string (a passage)")
            items.append({"text": row["text"]})
            continue
        for key in ("question", "answer"):
            if not isinstance(row, dict) or not isinstance(row.get(key), str) or not row[key].strip():
                raise UsageError(f"{path}:{lineno}: field {key!r} must be a non-empty string (or give the row a "
                                 "'text' passage instead)")
        items.append({"question": row["question"], "answer": row["answer"]})
    if not items:
        raise UsageError(f"{path} holds no items; an unlearning round needs at least one")
    return items


def load_retain_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a retain set: each an object with a ``question`` (and ``answer``) or a ``text`` string."""
    rows = read_rows(path, "retain file")
    for lineno, row in rows:
        if not isinstance(row, dict) or not any(isinstance(row.get(k), str) for k in ("question", "answer", "text")):
            raise UsageError(f"{Path(path).name}:{lineno}: a retain item must be an object with a 'question' (and "
                             "'answer') or a 'text' string; fix that line")
    return [row for _, row in rows]


def field_values(path: str | Path, name: str) -> list[Any] | None:
    """The optional field ``name`` of each row (None when no row has it), e.g. ``subject`` to stratify a split."""
    values = [row.get(name) if isinstance(row, dict) else None for _, row in read_rows(path)]
    return values if any(v is not None for v in values) else None


__all__ = ["QAItem", "field_values", "load_qa_file", "load_retain_rows", "load_round_items", "read_rows"]
