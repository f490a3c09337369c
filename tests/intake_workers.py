"""Process entry points of the concurrency tests (importable by spawned and forkserver children)."""

from __future__ import annotations

import random

from pipelines.ledger.store import Ledger
from pipelines.request import ForgetRequest, Record


def make_request(rid: str) -> ForgetRequest:
    return ForgetRequest(request_id=rid, subject=f"subject {rid}", kind="qa",
                         records=(Record("r0", question=f"{rid} Q0?", answer="A0."),
                                  Record("r1", question=f"{rid} Q1?", answer="A1.")))


def accept_then_claim(url: str, worker: int, shared: list[str], own: list[str], barrier, results) -> None:
    """Accept the shared and own requests in a worker-specific order, then claim until the queue is empty."""
    ledger = Ledger(url)
    ids = shared + own
    random.Random(worker).shuffle(ids)
    barrier.wait()
    accepted = [(rid, ledger.accept(make_request(rid), actor=f"w{worker}").created) for rid in ids]
    barrier.wait()
    claimed = []
    while (entry := ledger.claim_next(actor=f"w{worker}")) is not None:
        claimed.append(entry.request_id)
    ledger.close()
    results.put((worker, accepted, claimed))


def submit_files(url: str, work: str, worker: int, paths: list[str], barrier, results) -> None:
    """``submit_request`` each file into the shared ledger; report (file, request id, state, created)."""
    from pipelines.intake.submit import submit_request

    ledger = Ledger(url)
    barrier.wait()
    out = []
    for path in paths:
        sub = submit_request(path, ledger=ledger, work_dir=work, actor=f"w{worker}")
        out.append((path, sub.request_id, sub.state, sub.created))
    ledger.close()
    results.put((worker, out))


def drain(url: str, worker: int, barrier, results) -> None:
    """Claim until the queue is empty; each claimed request is processed (evaluated, approved, registered) with
    random delays between the steps, as a worker running rounds would. Reports the requests this worker finished."""
    import time

    ledger = Ledger(url)
    rng = random.Random(1000 + worker)
    barrier.wait()
    done = []
    while (entry := ledger.claim_next(actor=f"w{worker}")) is not None:
        for state in ("evaluated", "approved", "registered"):
            time.sleep(rng.uniform(0.0, 0.02))
            ledger.transition(entry.request_id, state, actor=f"w{worker}", expected_from=None)
        done.append(entry.request_id)
        time.sleep(rng.uniform(0.0, 0.01))
    ledger.close()
    results.put((worker, done))
