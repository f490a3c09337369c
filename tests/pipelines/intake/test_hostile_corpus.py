"""A corpus of hostile request files, tried as a new user would: every one is refused cleanly (a problem naming
the file, a fix, exit non-zero without a traceback), its original bytes are quarantined, the refusal is logged
and the ledger's other requests are untouched (``IntakeEnv.refused`` checks those for each file)."""

from __future__ import annotations

import codecs
import json

import pytest
from intake_helpers import SECRET, header, jsonl, qa

from data_contracts.limits import RequestLimits

HEAD = json.dumps(header())
GOOD = json.dumps(qa(1))
DEEP = "[" * 100_000 + "]" * 100_000


def _doc(**over) -> str:
    return json.dumps({**header(), "records": [qa(1), qa(2)], **over})


def _csv(*rows: str) -> str:
    return "\n".join(["request_id,subject,kind,record_id,question,answer", *rows]) + "\n"


CSV_ROW = f"req-1,Jane Doe,qa,r1,Question 1 {SECRET}?,Answer 1 {SECRET}."

CORPUS: dict[str, str | bytes] = {
    # encodings and bytes
    "empty.jsonl": b"",
    "blank.jsonl": " \n\t\n",
    "binary.jsonl": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
    "utf16.jsonl": codecs.BOM_UTF16_LE + jsonl(header(), qa(1)).encode("utf-16-le"),
    "latin1.jsonl": (HEAD + "\n" + json.dumps(qa(1, answer="caf\u00e9 " + SECRET), ensure_ascii=False)
                     + "\n").encode("latin-1"),
    "nul.jsonl": jsonl(header(), qa(1)).replace("Answer 1", "Answer\x001"),
    # structure
    "truncated.jsonl": jsonl(header(), qa(1)) + GOOD[:25],
    "truncated.json": _doc()[:-40],
    "header_only.jsonl": HEAD + "\n",
    "array_top.json": json.dumps([header(), qa(1)]),
    "array_line.jsonl": HEAD + "\n" + json.dumps([qa(1)]) + "\n",
    "deep.jsonl": HEAD + "\n" + '{"record_id": "r1", "question": ' + DEEP + ', "answer": "a"}\n',
    "deep.json": _doc()[:-2] + ', {"record_id": "r3", "question": ' + DEEP + "}]}",
    "trailing_garbage.json": _doc() + " {}",
    "comments.json": "// a comment\n" + _doc(),
    "nan.jsonl": HEAD + "\n" + GOOD[:-1] + ', "answer": NaN}\n',
    "infinity.json": _doc()[:-1] + ', "notes": Infinity}',
    "duplicate_keys.jsonl": HEAD + "\n" + '{"record_id": "r1", "question": "Q one?", "question": "Q two?", '
                                          '"answer": "A."}\n',
    "duplicate_keys.json": '{"request_id": "req-1", "request_id": "req-2", "subject": "Jane", "kind": "qa", '
                           '"records": [' + GOOD + "]}",
    "cr_split.jsonl": HEAD + "\n" + GOOD[:30] + "\r" + GOOD[30:] + "\n",
    # fields
    "no_request_id.jsonl": jsonl({"subject": "Jane", "kind": "qa"}, qa(1)),
    "path_traversal_id.jsonl": jsonl(header(request_id="../../etc/passwd"), qa(1)),
    "homoglyph_id.jsonl": jsonl(header(request_id="req-\u0430"), qa(1)),  # Cyrillic a
    "unknown_kind.jsonl": jsonl(header(kind="image"), qa(1)),
    "unknown_role.jsonl": jsonl(header(), qa(1, role="teacher")),
    "bad_urgency.jsonl": jsonl(header(urgency="yesterday"), qa(1)),
    "missing_question.jsonl": jsonl(header(), {"record_id": "r1", "answer": f"A {SECRET}"}),
    "number_answer.jsonl": jsonl(header(), qa(1, answer=42)),
    "null_answer.jsonl": jsonl(header(), qa(1, answer=None)),
    "duplicate_record_ids.jsonl": jsonl(header(), qa(1), qa(2, record_id="r1")),
    "dangling_paraphrase.jsonl": jsonl(header(), qa(1), qa(2, role="paraphrase", paraphrase_of="r9")),
    "text_kind_with_qa.jsonl": jsonl(header(kind="text"), qa(1)),
    "unknown_field.jsonl": jsonl(header(), qa(1, password=SECRET)),
    "whitespace_answer.jsonl": jsonl(header(), qa(1, answer=" \n\t ")),
    "zero_width_answer.jsonl": jsonl(header(), qa(1, answer="\u200b\u200c\u200d")),
    "bidi_override.jsonl": jsonl(header(), qa(1, question=f"Who is \u202e{SECRET}?")),
    "control_char.jsonl": jsonl(header(), qa(1, answer=f"bell \x07 {SECRET}")),
    "surrogate.jsonl": HEAD + "\n" + GOOD[:-1] + ', "notes": "\\ud800"}\n',
    "replacement_char.jsonl": jsonl(header(), qa(1, answer=f"broken \ufffd {SECRET}")),
    "huge_question.jsonl": jsonl(header(), qa(1, question="Q" * 3_000)),
    # CSV
    "unbalanced.csv": _csv(CSV_ROW[:-1] + ',"unclosed'),
    "header_only.csv": _csv(),
    "extra_columns.csv": _csv(CSV_ROW + ",surplus"),
    "nul.csv": _csv(CSV_ROW.replace("Answer", "Ans\x00wer")),
    "formula.csv": _csv(f'req-1,Jane Doe,qa,r1,"=HYPERLINK(""http://x"",""{SECRET}"")",Answer.'),
    "formula_at.csv": _csv(f"req-1,Jane Doe,qa,r1,Question {SECRET}?,@SUM(A1:A9)"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_hostile_file_is_refused_cleanly(env, name, capsys):
    from cli.main import main

    path = env.write(name, CORPUS[name])
    env.refused(path)
    code = main(["submit", str(path), "--work-dir", str(env.work), "--ledger", env.ledger.engine.url.render_as_string(
        hide_password=False)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and "internal error" not in err and SECRET not in err, err


def test_the_corpus_has_forty_files_or_more():
    assert len(CORPUS) >= 40


def test_too_large_and_too_many_records_are_refused_before_parsing(env):
    small = RequestLimits(max_file_bytes=2_000, max_records=3)
    env.refused(env.write("big.jsonl", jsonl(header(), *[qa(i, answer="x" * 300) for i in range(10)])), limits=small)
    env.refused(env.write("many.jsonl", jsonl(header(), *[qa(i) for i in range(5)])),
                limits=RequestLimits(max_records=3))


def test_csv_numbers_with_a_sign_are_not_taken_for_formulas(env):
    rows = [f"req-1,Jane Doe,qa,r1,How cold was it {SECRET}?,-5 degrees",
            f"req-1,Jane Doe,qa,r2,What is her number {SECRET}?,+1 555 0100"]
    sub = env.submit(env.write("signed.csv", _csv(*rows)))
    assert sub.state == "queued" and sub.record_count == 2
