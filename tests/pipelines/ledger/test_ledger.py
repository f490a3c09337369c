"""The ledger on SQLite and on PostgreSQL: state machine, claims, idempotency, retention purge, queries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipelines.ledger.schema import utcnow
from pipelines.ledger.store import (
    ContentPurged,
    Ledger,
    RequestConflict,
    StateConflict,
    UnknownRequest,
    default_ledger_url,
)
from pipelines.request import ForgetRequest, Record


def request(rid: str, *, n: int = 2, tag: str = "", urgency: str = "normal") -> ForgetRequest:
    return ForgetRequest(request_id=rid, subject=f"subject of {rid}", kind="qa", urgency=urgency,
                         records=tuple(Record(f"r{i}", question=f"{rid} {tag} Q{i}?", answer=f"A{i}.")
                                       for i in range(n)))


def test_full_lifecycle_with_timestamped_actor_history(ledger_url):
    with Ledger(ledger_url) as ledger:
        acc = ledger.accept(request("a"), actor="intake")
        assert acc.created and acc.entry.state == "queued" and acc.entry.has_content
        claimed = ledger.claim_next(actor="flow-1")
        assert claimed.request_id == "a" and claimed.state == "running" and claimed.claimed_by == "flow-1"
        for state, actor in [("evaluated", "evaluate"), ("approved", "gate"), ("registered", "registry"),
                             ("rolled_back", "operator")]:
            assert ledger.transition("a", state, actor=actor, detail={"run_id": "abc"}).state == state
        history = ledger.history("a")
        assert [t.to_state for t in history] == ["received", "validated", "queued", "running", "evaluated",
                                                 "approved", "registered", "rolled_back"]
        assert [t.actor for t in history[3:]] == ["flow-1", "evaluate", "gate", "registry", "operator"]
        assert all(t.at.tzinfo is not None for t in history)
        assert all(a.at <= b.at for a, b in zip(history, history[1:], strict=False))
        assert history[-1].detail == {"run_id": "abc"}


def test_illegal_transitions_are_refused_with_the_allowed_ones(ledger_url):
    with Ledger(ledger_url) as ledger:
        ledger.accept(request("a"), actor="t")
        with pytest.raises(ValueError, match=r"queued -> approved is not allowed; from queued it can go to "
                                             r"\['running', 'superseded'\]"):
            ledger.transition("a", "approved", actor="t")
        with pytest.raises(ValueError, match="unknown state 'done'"):
            ledger.transition("a", "done", actor="t")
        with pytest.raises(StateConflict, match="is queued, not running"):
            ledger.transition("a", "evaluated", actor="t", expected_from="running")
        with pytest.raises(UnknownRequest, match="no request 'zz'"):
            ledger.transition("zz", "running", actor="t")
        assert ledger.get("a").state == "queued" and len(ledger.history("a")) == 3


def test_claims_take_urgent_first_then_received_order(ledger_url):
    with Ledger(ledger_url) as ledger:
        for rid in ("n1", "n2"):
            ledger.accept(request(rid), actor="t")
        ledger.accept(request("u1", urgency="urgent"), actor="t")
        ledger.accept(request("n3"), actor="t")
        ledger.accept(request("u2"), actor="t", urgent=True)
        assert [e.request_id for e in ledger.queue()] == ["u1", "u2", "n1", "n2", "n3"]
        taken = [ledger.next_queued(actor="f").request_id for _ in range(5)]
        assert taken == ["u1", "u2", "n1", "n2", "n3"]
        assert ledger.claim_next(actor="f") is None
        assert ledger.counts() == {"running": 5}
        ledger.transition("n1", "queued", actor="f", detail={"reason": "interrupted"})  # released again
        assert ledger.claim_next(actor="g").request_id == "n1"


def test_accept_is_idempotent_and_refuses_other_content(ledger_url):
    with Ledger(ledger_url) as ledger:
        first = ledger.accept(request("a"), actor="t")
        again = ledger.accept(request("a"), actor="t")
        assert not again.created and again.entry.seq == first.entry.seq and len(ledger.history("a")) == 3
        with pytest.raises(RequestConflict, match="request_id 'a' is already used by another request"):
            ledger.accept(request("a", tag="changed"), actor="t")
        assert ledger.get("a").content_sha256 == first.entry.content_sha256
        assert ledger.load_request("a") == request("a")


def test_retention_purges_content_of_completed_requests_only(ledger_url):
    with Ledger(ledger_url) as ledger:
        for rid in ("done", "waiting"):
            ledger.accept(request(rid), actor="t")
        ledger.claim_next(actor="f")
        for state in ("evaluated", "approved", "registered"):
            ledger.transition("done", state, actor="f")
        hashes = ledger.record_hashes("done")
        assert ledger.purge_content(timedelta(days=30), actor="retention") == []  # too recent
        later = utcnow() + timedelta(days=31)
        assert ledger.purge_content(timedelta(days=30), actor="retention", now=later) == ["done"]
        entry = ledger.get("done")
        assert not entry.has_content and entry.content_purged_at == later and entry.state == "registered"
        with pytest.raises(ContentPurged, match="only hashes and history remain"):
            ledger.load_request("done")
        assert ledger.record_hashes("done") == hashes and len(ledger.history("done")) == 8
        assert ledger.history("done")[-1].event == "content_purged"
        assert ledger.load_request("waiting") == request("waiting")
        assert ledger.forgotten_keys() == {h["key_sha256"] for h in hashes} | \
            {h["key_sha256"] for h in ledger.record_hashes("waiting")}


def test_rejected_requests_and_refusals_are_listed(ledger_url):
    with Ledger(ledger_url) as ledger:
        entry = ledger.reject("bad", "0" * 64, actor="intake", detail={"problems": [{"field": "kind"}]})
        assert entry.state == "rejected" and not entry.has_content
        assert ledger.forgotten_keys() == frozenset()
        ledger.record_rejection(actor="intake", problems=[{"field": None}], source_name="x.jsonl", size_bytes=3,
                                file_sha256="f" * 64, request_id=None, quarantine_path="/q/x")
        assert [r.source_name for r in ledger.rejections()] == ["x.jsonl"]
        assert [e.request_id for e in ledger.list_requests(["rejected"])] == ["bad"]
        ledger.accept(request("bad"), actor="intake")  # the fixed request takes the id over
        assert [t.to_state for t in ledger.history("bad")] == ["received", "rejected", "received", "validated",
                                                               "queued"]


def test_default_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("ASU_LEDGER_URL", raising=False)
    monkeypatch.setenv("ASU_WORK_DIR", str(tmp_path / "w"))
    assert default_ledger_url() == f"sqlite:///{tmp_path / 'w' / 'asu-ledger.db'}"
    monkeypatch.setenv("ASU_LEDGER_URL", "postgresql://u@h/db")
    assert default_ledger_url() == "postgresql://u@h/db"
    monkeypatch.delenv("ASU_LEDGER_URL")
    monkeypatch.delenv("ASU_WORK_DIR")
    monkeypatch.chdir(tmp_path)
    with Ledger() as ledger:
        assert ledger.url.endswith("/asu-work/asu-ledger.db") and (tmp_path / "asu-work" / "asu-ledger.db").is_file()
