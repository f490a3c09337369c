"""asu.qa_file, the one QA-file reader: JSON Lines split at \\n only, clear errors for hostile files."""

from __future__ import annotations

import json

import pytest

from asu.errors import UsageError
from asu.qa_file import load_qa_file, load_round_items


def test_a_line_separator_inside_a_string_is_not_a_new_row(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "Who\u2028is X?", "answer": "A\u2029B"}, ensure_ascii=False) + "\n")
    assert load_qa_file(path) == [{"question": "Who\u2028is X?", "answer": "A\u2029B"}]


DEEP = "[" * 50_000 + "]" * 50_000


@pytest.mark.parametrize(("content", "message"), [
    ('{"question": ' + DEEP + ', "answer": "a"}\n', r"qa.jsonl:1: arrays or objects nested too deep"),
    (DEEP, r"qa.jsonl: arrays or objects nested too deep"),
    (b'{"question": "caf\xe9", "answer": "a"}\n', "not UTF-8 text"),
    ('{"question": "q", "answer": "a"}\n{"text": "   "}\n', r"qa.jsonl:2: field 'text' must be a non-empty string"),
])
def test_hostile_files_get_a_usage_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "qa.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UsageError, match=message):
        load_round_items(path)
