"""Every bad input of issue 4 is refused with an error naming file, line and field and saying what to change;
its original bytes stay in quarantine, the refusal is logged, and the ledger's other requests are untouched
(``IntakeEnv.refused`` checks those for every test)."""

from __future__ import annotations

import json
import os
import tracemalloc

from intake_helpers import SECRET, header, jsonl, problem, qa


def test_malformed_json_names_line_and_field(env):
    text = jsonl(header(), qa(1)) + '{"record_id": "r2", "question": "Who ' + SECRET + '?" "answer": "x"}\n'
    err = env.refused(env.write("bad.jsonl", text))
    p = problem(err, "question")
    assert p.lines == (3,) and "malformed JSON" in p.message and "column" in p.message and "fix the JSON" in p.fix
    assert "bad.jsonl:3: field 'question'" in str(err)


def test_malformed_json_document_names_line(env):
    text = ('{\n  "request_id": "req-1",\n  "subject": "Jane",\n  "kind": "qa",\n  "records": [\n'
            '    {"record_id": "r1", "question": "Q", "answer": "A"},,\n  ]\n}\n')
    p = problem(env.refused(env.write("bad.json", text)), "answer")
    assert p.lines == (6,) and "malformed JSON" in p.message


def test_wrong_type_names_line_and_field(env):
    err = env.refused(env.write("types.jsonl", jsonl(header(), qa(1), qa(2, question=42), qa(3, answer=["a"]))))
    assert problem(err, "question").lines == (3,) and problem(err, "answer").lines == (4,)
    assert problem(err, "question").message == "must be a string"
    assert "quoted string" in problem(err, "question").fix
    assert len(err.problems) == 2  # the wrong-typed values are not reported again by the length checks
    assert err.request_id == "req-1" and env.ledger.get("req-1").state == "rejected"
    assert not env.ledger.get("req-1").has_content


def test_missing_fields_name_line_and_field(env):
    head = header()
    del head["subject"]
    record = qa(2)
    del record["answer"]
    err = env.refused(env.write("missing.jsonl", jsonl(head, qa(1), record)))
    assert problem(err, "subject").lines == (1,) and problem(err, "subject").message == "is missing"
    assert problem(err, "answer").lines == (3,) and "add the answer" in problem(err, "answer").fix


def test_empty_file(env):
    p = problem(env.refused(env.write("empty.jsonl", b"")), None)
    assert p.lines == (1,) and "empty" in p.message and "submit a file holding a request" in p.fix


def test_whitespace_only_file(env):
    p = problem(env.refused(env.write("blank.csv", " \n\t\n  \r\n")), None)
    assert p.lines == (1,) and "only whitespace" in p.message


def test_invalid_utf8_names_line_and_field(env):
    data = jsonl(header(), qa(1)).encode() + b'{"record_id": "r2", "question": "caf\xe9 ' + SECRET.encode() + \
        b'", "answer": "A"}\n'
    p = problem(env.refused(env.write("latin1.jsonl", data)), "question")
    assert p.lines == (3,) and "invalid UTF-8 (byte 0xe9" in p.message and "UTF-8" in p.fix


def test_invalid_utf8_in_csv_names_the_column(env):
    data = b"request_id,subject,kind,record_id,question,answer\nreq-1,Jane,qa,r1,Q1,A1\nreq-1,Jane,qa,r2,Q2,\xff\xfe\n"
    p = problem(env.refused(env.write("bad.csv", data)), "answer")
    assert p.lines == (3,)


def test_unpaired_surrogate_escape_is_not_valid_utf8(env):
    text = jsonl(header(), qa(1)) + '{"record_id": "r2", "question": "Q\\ud800", "answer": "A"}\n'
    p = problem(env.refused(env.write("surrogate.jsonl", text)), "question")
    assert p.lines == (3,) and "not valid UTF-8" in p.message


def test_binary_data(env):
    data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
    p = problem(env.refused(env.write("image.jsonl", data)), None)
    assert p.lines == (3,) and "binary data" in p.message and "UTF-8 JSON Lines, JSON or CSV text file" in p.fix


def test_200_mb_file_is_refused_by_size_without_being_read(env):
    path = env.files / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(jsonl(header(), qa(1)).encode())
        f.truncate(200 * 2**20)  # sparse: 200 MB on paper, a few bytes on disk
    tracemalloc.start()
    err = env.refused(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    p = problem(err, None)
    assert p.code == "file_too_large" and "209,715,200 bytes" in p.message and "split the request" in p.fix
    assert peak < 8 * 2**20, f"refusing a 200 MB file allocated {peak / 2**20:.1f} MiB"
    kept = err.quarantine_path
    assert kept.stat().st_size == 200 * 2**20 and kept.read_bytes()[:60] == path.read_bytes()[:60]
    assert os.stat(kept).st_blocks * 512 < 2**20  # the copy stayed sparse
    assert env.ledger.rejections()[0].file_sha256 is None  # never hashed, never read


def test_csv_with_the_wrong_header(env):
    text = "request_id,subject,kind,recordid,question,answer\nreq-1,Jane,qa,r1,Q,A\n"
    err = env.refused(env.write("wrong.csv", text))
    unknown = problem(err, "recordid")
    assert unknown.lines == (1,) and unknown.message == "is not a CSV field"
    assert "did you mean 'record_id'" in unknown.fix
    missing = problem(err, "record_id")
    assert missing.lines == (1,) and "required column is missing" in missing.message


def test_absurdly_long_record(env):
    err = env.refused(env.write("long.jsonl", jsonl(header(), qa(1), qa(2, answer="x" * 1_000_000))))
    p = problem(err, "answer")
    assert p.lines == (3,) and "1 to 10000 characters" in p.message and "shorten the answer" in p.fix


def test_duplicate_record_ids(env):
    err = env.refused(env.write("dups.jsonl", jsonl(header(), qa(1), qa(2), qa(3, record_id="r1"))))
    p = problem(err, "record_id")
    assert p.lines == (2, 4) and "not unique" in p.message and "its own id" in p.fix


def test_duplicate_records_with_other_ids(env):
    err = env.refused(env.write("same.jsonl", jsonl(header(), qa(1), qa(2), {**qa(1), "record_id": "r9"})))
    p = problem(err, "records")
    assert p.lines == (2, 4) and "duplicate record" in p.message


def test_request_id_reused_with_other_content(env):
    first = env.submit(env.write("first.jsonl", jsonl(header(), qa(1), qa(2))))
    before = env.ledger.history("req-1")
    err = env.refused(env.write("second.jsonl", jsonl(header(), qa(1), qa(3))))
    p = problem(err, "request_id")
    assert p.lines == (1,) and "already used by a request with other content" in p.message
    assert "new request_id" in p.fix
    entry = env.ledger.get("req-1")
    assert entry.state == "queued" and entry.content_sha256 == first.content_sha256
    assert env.ledger.history("req-1") == before and env.ledger.rejections()[0].request_id == "req-1"


def test_unknown_kind(env):
    err = env.refused(env.write("kind.jsonl", jsonl(header(kind="video"), qa(1))))
    p = problem(err, "kind")
    assert p.lines == (1,) and p.message == "must be one of ['qa', 'text', 'mixed']"


def test_path_like_request_id(env):
    err = env.refused(env.write("path.jsonl", jsonl(header(request_id="../../etc/passwd"), qa(1))))
    p = problem(err, "request_id")
    assert p.lines == (1,) and "no path separators" in p.message and "rename the request id" in p.fix
    assert err.request_id is None and env.ledger.find("../../etc/passwd") is None
    reports = env.work / "reports"
    assert [d.name for d in reports.iterdir()] == ["_unidentified"]  # nothing named after the id
    assert not (env.work.parent / "etc").exists()


def test_control_character_request_id(env):
    err = env.refused(env.write("ctrl.jsonl", jsonl(header(request_id="req\u0007-1\n"), qa(1))))
    assert problem(err, "request_id").lines == (1,) and err.request_id is None


def test_other_requests_are_unaffected_by_a_burst_of_bad_files(env):
    good = env.submit(env.write("good.jsonl", jsonl(header(request_id="good-1"), qa(1), qa(2))))
    for name, content in [("a.jsonl", b""), ("b.jsonl", b"\x00\x01"), ("c.jsonl", "{nope\n")]:
        env.refused(env.write(name, content))
    entry = env.ledger.get("good-1")
    assert entry.state == "queued" and entry.content_sha256 == good.content_sha256 and entry.has_content
    assert [r.source_name for r in env.ledger.rejections()] == ["c.jsonl", "b.jsonl", "a.jsonl"]


def test_unknown_field_and_non_object_line(env):
    text = jsonl(header(), qa(1), {"record_id": "r2", "quesiton": "Q?", "answer": "A"}) + '["not", "an", "object"]\n'
    err = env.refused(env.write("typo.jsonl", text))
    typo = problem(err, "quesiton")
    assert typo.lines == (3,) and "did you mean 'question'" in typo.fix
    assert problem(err, None).lines == (4,) and "not a JSON object" in problem(err, None).message


def test_records_before_the_header(env):
    p = problem(env.refused(env.write("noheader.jsonl", jsonl(qa(1), qa(2)))), "record_id")
    assert p.lines == (1,) and "must be the request header" in p.message


def test_unknown_file_type(env):
    p = problem(env.refused(env.write("request.txt", jsonl(header(), qa(1)))), None)
    assert "unknown file type '.txt'" in p.message and "*.jsonl, *.json or *.csv" in p.fix


def test_paraphrase_of_an_unknown_record(env):
    para = qa(2, role="paraphrase", paraphrase_of="r7")
    p = problem(env.refused(env.write("para.jsonl", jsonl(header(), qa(1), para))), "paraphrase_of")
    assert p.lines == (3,) and "does not name a forget record" in p.message


def test_conflict_with_the_retain_set(env):
    retain = [{"question": qa(2)["question"].upper() + "  ", "answer": "kept"}, {"question": "x", "answer": "y"}]
    err = env.refused(env.write("conflict.jsonl", jsonl(header(), qa(1), qa(2))), retain=retain)
    p = problem(err, "records")
    assert p.lines == (3,) and "conflicts with the retain set" in p.message
    assert "remove the record from the forget request" in p.fix


def test_json_rows_carry_their_own_line(env):
    doc = {**header(), "records": [qa(1), qa(2, question=7)]}
    text = json.dumps(doc, indent=2)
    second = [n for n, ln in enumerate(text.splitlines(), 1) if ln == "    {"][1]  # where qa(2) starts
    assert problem(env.refused(env.write("types.json", text)), "question").lines == (second,)


def test_values_nested_too_deep_are_refused_not_a_recursion_error(env):
    """A question that is 100,000 nested arrays: Python's JSON parser would recurse past its limit."""
    deep = "[" * 100_000 + "]" * 100_000
    text = jsonl(header(), qa(1)) + '{"record_id": "r2", "question": ' + deep + ', "answer": "a"}\n'
    p = problem(env.refused(env.write("deep.jsonl", text)), "question")
    assert p.lines == (3,) and "too deep" in p.message and "plain string" in p.fix
    document = json.dumps({**header(), "records": [qa(1)]})[:-2] + ', {"record_id": "r2", "question": ' + deep + '}]}'
    p = problem(env.refused(env.write("deep.json", document)), "question")
    assert "too deep" in p.message


def test_whitespace_only_values_are_refused(env):
    err = env.refused(env.write("ws.jsonl", jsonl(header(subject=" \t "), qa(1, answer="   "), qa(2, question="\n"))))
    assert problem(err, "answer").lines == (2,)
    assert problem(err, "answer").message == problem(err, "subject").message == \
        "is only whitespace or invisible characters"
    assert "is only whitespace" in problem(err, "question").message or "control" in problem(err, "question").message
