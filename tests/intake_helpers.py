"""Shared helpers of the intake tests (imported by conftest and the test modules)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.intake.submit import IntakeRejected, submit_request
from pipelines.ledger.store import Ledger
from pipelines.request import ForgetRequest, Record

# Planted in every bad file's content: it must never show up in errors, reasons, reports or the ledger's logs.
SECRET = "Zyx-SECRET-content"
PG_URL = os.environ.get("ASU_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def header(**over) -> dict:
    return {"request_id": "req-1", "subject": "Jane Doe", "kind": "qa", **over}


def qa(i: int, **over) -> dict:
    return {"record_id": f"r{i}", "question": f"Question {i} about Jane Doe {SECRET}?",
            "answer": f"Answer {i} {SECRET}.", **over}


def jsonl(head: dict, *rows: dict) -> str:
    return "\n".join(json.dumps(x) for x in (head, *rows)) + "\n"


def other_request() -> ForgetRequest:
    return ForgetRequest(request_id="other-1", subject="Someone else", kind="qa",
                         records=(Record("o1", question="Who is someone else?", answer="Nobody."),
                                  Record("o2", question="Where do they live?", answer="Nowhere.")))


@dataclass
class IntakeEnv:
    work: Path
    ledger: Ledger
    files: Path

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.files / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    def submit(self, path: Path, **kwargs):
        return submit_request(path, ledger=self.ledger, work_dir=self.work, **kwargs)

    def snapshot(self) -> dict:
        return {e.request_id: (e.state, e.content_sha256, e.urgent, len(self.ledger.history(e.request_id)))
                for e in self.ledger.list_requests()}

    def refused(self, path: Path, **kwargs) -> IntakeRejected:
        """Submit a bad file; check quarantine, the refusal log, untouched other requests and no leaked content."""
        before, refusals = self.snapshot(), len(self.ledger.rejections(limit=None))
        with pytest.raises(IntakeRejected) as info:
            self.submit(path, **kwargs)
        err = info.value
        assert err.problems and all(p.file == path.name and p.message and p.fix for p in err.problems)
        assert str(err).startswith(f"{path.name}: request refused") and SECRET not in str(err)
        assert err.quarantine_path.parent == self.work / "quarantine"
        if path.stat().st_size < 2**20:
            assert err.quarantine_path.read_bytes() == path.read_bytes()
        reasons = Path(f"{err.quarantine_path}.reasons.json").read_text()
        assert SECRET not in reasons and json.loads(reasons)["problems"] == [p.to_dict() for p in err.problems]
        logged = self.ledger.rejections(limit=None)
        assert len(logged) == refusals + 1 and logged[0].quarantine_path == str(err.quarantine_path)
        assert logged[0].problems == [p.to_dict() for p in err.problems]
        assert SECRET not in json.dumps(logged[0].problems)
        after = self.snapshot()
        assert {k: v for k, v in after.items() if k != err.request_id} == \
               {k: v for k, v in before.items() if k != err.request_id}
        if err.request_id is None:
            assert after == before
        return err


def problem(err: IntakeRejected, field: str | None):
    found = [p for p in err.problems if p.field == field]
    assert found, f"no problem on field {field!r} in: {[str(p) for p in err.problems]}"
    return found[0]
