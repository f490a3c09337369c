"""`asu submit` and `asu status`: exit codes, JSON answers, errors without tracebacks, the default ledger."""

from __future__ import annotations

import json

import pytest
from intake_helpers import SECRET, header, jsonl, qa

from cli.main import main


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """A work dir from the environment (the CLI's default ledger and quarantine live there)."""
    monkeypatch.setenv("ASU_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.delenv("ASU_LEDGER_URL", raising=False)
    return tmp_path


def test_submit_then_status(cli_env, capsys):
    good = cli_env / "req.jsonl"
    good.write_text(jsonl(header(), qa(1), qa(2), qa(3)))
    assert main(["submit", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("req-1: queued\n") and "content SHA-256" in out and "validation report:" in out
    assert (cli_env / "work" / "asu-ledger.db").is_file()

    assert main(["submit", str(good), "--urgent", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["request_id"] == "req-1" and answer["state"] == "queued" and answer["urgent"]
    assert answer["created"] is False and answer["escalated"] is True

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "requests by state: queued 1" in out and "1. req-1" in out and "urgent" in out

    assert main(["status", "req-1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("req-1: queued (urgent), kind qa, 3 record(s)")
    assert "received" in out and "validated" in out and "[escalated]" in out and SECRET not in out

    assert main(["status", "req-1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [t["to_state"] for t in shown["history"]] == ["received", "validated", "queued", "queued"]


def test_refused_request_exits_1_with_the_problems_and_no_traceback(cli_env, capsys):
    bad = cli_env / "bad.jsonl"
    bad.write_text(jsonl(header(kind="video"), qa(1)))
    assert main(["submit", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert "error: bad.jsonl: request refused" in captured.err and "bad.jsonl:1: field 'kind'" in captured.err
    assert "quarantine" in captured.err and SECRET not in captured.err

    assert main(["submit", str(bad), "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["state"] == "rejected" and answer["problems"][0]["field"] == "kind"

    assert main(["status", "--json"]) == 0
    overview = json.loads(capsys.readouterr().out)
    assert overview["counts"] == {"rejected": 1} and len(overview["recent_rejections"]) == 2


def test_usage_errors_exit_2_without_traceback(cli_env, capsys):
    assert main(["status", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no request 'nope' in the ledger" in err and "Traceback" not in err
    assert main(["submit", str(cli_env / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    for url, message, code in [("postgresql+nodriver://h/db", "names an unknown database or driver", 2),
                               ("not a url", "is not a database URL", 2),
                               # unreachable: an infrastructure failure (asu.errors.InfrastructureError), not bad input
                               ("postgresql://nobody:secret@127.0.0.1:1/db", "cannot be opened", 4)]:
        assert main(["status", "--ledger", url]) == code
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and "secret" not in err


def test_ledger_option_and_retain_file(cli_env, capsys):
    retain = cli_env / "retain.jsonl"
    retain.write_text(json.dumps({"question": qa(2)["question"], "answer": "kept"}) + "\n")
    req = cli_env / "req.jsonl"
    req.write_text(jsonl(header(), qa(1), qa(2)))
    url = f"sqlite:///{cli_env / 'elsewhere.db'}"
    assert main(["submit", str(req), "--ledger", url, "--retain", str(retain)]) == 1
    assert "conflicts with the retain set" in capsys.readouterr().err
    assert (cli_env / "elsewhere.db").is_file() and not (cli_env / "work" / "asu-ledger.db").exists()
    retain.write_text('{"question": 1}\n')
    assert main(["submit", str(req), "--retain", str(retain)]) == 2
    assert "retain.jsonl:1: a retain item must be an object" in capsys.readouterr().err
