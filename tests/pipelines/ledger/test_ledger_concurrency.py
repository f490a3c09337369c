"""Several processes at once: nothing lost, nothing duplicated, no request claimed twice (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import intake_workers
from intake_helpers import header, jsonl, qa

from pipelines.ledger.store import Ledger

WORKERS = 4


def _run(ctx, target, args_per_worker, timeout: float = 120) -> list:
    barrier, results = ctx.Barrier(len(args_per_worker)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in args_per_worker]
    for p in procs:
        p.start()
    out = [results.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return sorted(out)


def _preloaded_context():
    """Children that start with Great Expectations already imported (~3 s saved per child): fork when this process
    runs no other thread (forking a threaded process can deadlock the child), else a preloaded forkserver."""
    import great_expectations  # noqa: F401

    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["great_expectations", "pipelines.intake.submit", "intake_workers"])
    return ctx


def test_parallel_accepts_and_claims_lose_and_duplicate_nothing(ledger_url):
    Ledger(ledger_url).close()  # tables exist before the race starts
    shared = [f"shared-{i}" for i in range(8)]
    own = {w: [f"own-{w}-{i}" for i in range(4)] for w in range(WORKERS)}
    ctx = multiprocessing.get_context("spawn")
    results = _run(ctx, intake_workers.accept_then_claim, [(ledger_url, w, shared, own[w]) for w in range(WORKERS)])

    created = Counter(rid for _, accepted, _ in results for rid, was_created in accepted if was_created)
    everything = shared + [rid for ids in own.values() for rid in ids]
    assert created == Counter(everything)  # every request created exactly once, by one process
    claimed = [rid for _, _, taken in results for rid in taken]
    assert sorted(claimed) == sorted(everything)  # every request claimed exactly once
    with Ledger(ledger_url) as ledger:
        entries = ledger.list_requests()
        assert sorted(e.request_id for e in entries) == sorted(everything)
        assert {e.state for e in entries} == {"running"}
        by_worker = {rid: f"w{w}" for w, _, taken in results for rid in taken}
        for entry in entries:
            history = ledger.history(entry.request_id)
            assert [t.to_state for t in history] == ["received", "validated", "queued", "running"]
            assert entry.claimed_by == by_worker[entry.request_id] == history[-1].actor
            assert len(ledger.record_hashes(entry.request_id)) == 2


def test_parallel_submissions_of_the_same_files(tmp_path):
    """End to end: two processes submit the same two files and one file each, at the same time."""
    files = tmp_path / "files"
    files.mkdir()
    same = [files / "a.jsonl", files / "b.csv"]
    same[0].write_text(jsonl(header(request_id="same-a"), qa(1), qa(2)))
    same[1].write_text("request_id,subject,kind,record_id,question,answer\nsame-b,Jane,qa,r1,Q1,A1\n"
                       "same-b,Jane,qa,r2,Q2,A2\n")
    own = []
    for w in range(2):
        own.append(files / f"own-{w}.jsonl")
        own[-1].write_text(jsonl(header(request_id=f"own-{w}"), qa(10 + w), qa(20 + w)))
    url, work = f"sqlite:///{tmp_path / 'ledger.db'}", str(tmp_path / "work")
    Ledger(url).close()
    results = _run(_preloaded_context(), intake_workers.submit_files,
                   [(url, work, w, [str(p) for p in (*same, own[w])]) for w in range(2)], timeout=300)

    outcomes = [o for _, subs in results for o in subs]
    assert all(state == "queued" for _, _, state, _ in outcomes)
    created = Counter(rid for _, rid, _, was_created in outcomes if was_created)
    assert created == Counter(["same-a", "same-b", "own-0", "own-1"])
    with Ledger(url) as ledger:
        assert sorted(e.request_id for e in ledger.list_requests()) == ["own-0", "own-1", "same-a", "same-b"]
        assert all(len(ledger.history(rid)) == 3 for rid in ("same-a", "same-b"))
        assert ledger.rejections() == []


def test_two_worker_processes_drain_one_ledger_and_process_every_request_once(ledger_url):
    """Two processes claim and process (evaluated -> approved -> registered, random delays) 40 queued requests."""
    with Ledger(ledger_url) as ledger:
        ids = [f"req-{i:02d}" for i in range(40)]
        for rid in ids:
            ledger.accept(intake_workers.make_request(rid), actor="submitter")
    results = _run(multiprocessing.get_context("spawn"), intake_workers.drain, [(ledger_url, w) for w in range(2)],
                   timeout=300)
    finished = [rid for _, done in results for rid in done]
    assert sorted(finished) == ids  # every request processed, none twice
    assert all(done for _, done in results)  # both workers took part
    with Ledger(ledger_url) as ledger:
        for rid in ids:
            history = [t.to_state for t in ledger.history(rid)]
            assert history == ["received", "validated", "queued", "running", "evaluated", "approved", "registered"]
            assert ledger.get(rid).state == "registered"
