"""Prefect flows of the continual-unlearning pipeline. Each task wraps one plain function of ``pipelines``.

- ``process_request``: one claimed request, from the current champion to a registered (and maybe promoted)
  candidate with its evidence report;
- ``continual_unlearning``: drains the queue (urgent first), one ``process_request`` per request, each starting
  from the model the previous one promoted; a gate failure marks that request and the rest continue;
- ``urgent_removal``: submits (optionally) and processes one request at once, ahead of the queue.

GPU steps (search, round) hold the global concurrency slot ``gpu`` (strict), so rounds never overlap on one
device even across workers. Retries are for I/O only (ledger, MLflow); a crashed request goes back to the queue
and its round resumes from its last checkpoint on the next attempt; a request the round finds unprocessable as it
stands (a passage too short to measure, too few items to validate on) is refused in the ledger with the reason,
and the queue goes on.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from asu.errors import UsageError
from pipelines import round as rounds
from pipelines.ledger.store import Ledger, LedgerUnavailable, default_ledger_url
from pipelines.round import RoundSteps, steps
from pipelines.round.record import refused_outcome
from pipelines.round.steps import RequestNotProcessable
from pipelines.settings import PipelineSettings
from pipelines.tracking.runs import TrackingUnavailable, is_transient
from pipelines.workspace import work_dir

logger = logging.getLogger(__name__)
GPU_SLOT = "gpu"


def _io_only(task, task_run, state) -> bool:
    """Retry condition: only transient I/O failures (database, MLflow) are worth another attempt."""
    try:
        state.result()
    except Exception as err:  # noqa: BLE001 - inspecting the failure, not handling it
        return is_transient(err) or isinstance(err, TrackingUnavailable | LedgerUnavailable | OSError)
    return False


io_task = task(cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=_io_only)
compute_task = task(cache_policy=NONE)

load_request = io_task(steps.load_request)
ensure_champion = io_task(steps.ensure_champion)
choose_temperature = compute_task(steps.choose_temperature)
unlearn = compute_task(steps.unlearn)
measure = compute_task(steps.measure)
earlier_requests = io_task(steps.earlier_requests)
write_evidence = io_task(steps.write_evidence)


def ensure_gpu_slot(limit: int = 1) -> None:
    """Create the global concurrency limit ``gpu`` when the Prefect API has none (strict slots need it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(GPU_SLOT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_SLOT, limit=limit))
            except ObjectAlreadyExists:
                pass  # another flow created it first


def _holder_file() -> Path:
    return work_dir() / "gpu-slot.holder"


def reclaim_orphaned_gpu_slot(ledger: Ledger, limit: int = 1) -> bool:
    """Free the ``gpu`` slot when its holder is gone; returns whether it did.

    A worker killed with SIGKILL never releases its slot, and its lease is not always expired (the ephemeral API
    runs no lease service), so every later round would wait forever. The holder writes its worker id
    (:func:`worker_id`) to ``<work dir>/gpu-slot.holder`` while it holds the slot; the slot is reclaimed only when
    that worker is known to be gone (:func:`worker_alive` is False: this host, process not running) and no request
    is running. The limit is recreated, so the dead holder's lease cannot free a slot twice later.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    holder = _holder_file()
    if not holder.is_file() or worker_alive(holder.read_text().strip()) is not False:
        return False
    if ledger.list_requests(["running"]):
        return False
    holder.unlink(missing_ok=True)
    with get_client(sync_client=True) as client:
        if client.read_global_concurrency_limit_by_name(GPU_SLOT).active_slots <= 0:
            return False
        client.delete_global_concurrency_limit_by_name(GPU_SLOT)
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_SLOT, limit=limit))
    return True


@contextmanager
def gpu_slot(holder: str):
    """Hold the ``gpu`` slot; each holding is appended to ``<work dir>/gpu-slot.jsonl`` (start, end, holder)."""
    import json
    import time

    from prefect.concurrency.sync import concurrency

    with concurrency(GPU_SLOT, occupy=1, strict=True):
        start = time.time()
        held = _holder_file()
        held.parent.mkdir(parents=True, exist_ok=True)
        held.write_text(worker_id("gpu-slot"))
        try:
            yield
        finally:
            held.unlink(missing_ok=True)
            path = work_dir() / "gpu-slot.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(json.dumps({"holder": holder, "start": start, "end": time.time()}) + "\n")


def worker_id(flow_name: str) -> str:
    """``flow:<name>@<host>:<pid>``: who claimed a request, precise enough to tell later whether it still runs."""
    import os
    import socket

    return f"flow:{flow_name}@{socket.gethostname()}:{os.getpid()}"


def worker_alive(claimed_by: str) -> bool | None:
    """Whether the worker named by :func:`worker_id` still runs: False when it was on this host and its process
    is gone, None (unknown) for another host or an older actor name."""
    import os
    import socket

    where = claimed_by.rpartition("@")[2]
    host, _, pid = where.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _settings(settings: dict[str, Any] | str | None) -> PipelineSettings:
    if isinstance(settings, str):
        return PipelineSettings.from_yaml(settings)
    return PipelineSettings.from_dict(settings or {})


@flow(name="process-request")
def process_request(request_id: str, settings: dict[str, Any] | str | None = None,
                    ledger_url: str | None = None, actor: str = "flow:process-request") -> dict[str, Any]:
    """Unlearn one request that is already ``running`` (claimed); returns its record as JSON (ids and numbers).

    The steps and their order are ``pipelines.round.process_request``'s; here each step is a task, and the whole
    round holds the ``gpu`` slot: rounds never overlap on the device, and each request starts from the model the
    previous one promoted (the continual chain never branches).
    """
    config = _settings(settings)
    ensure_gpu_slot()
    steps = RoundSteps(load_request=load_request, ensure_champion=ensure_champion,
                       choose_settings=choose_temperature, unlearn=unlearn, measure=measure,
                       earlier_requests=earlier_requests, write_evidence=write_evidence)
    with Ledger(ledger_url or default_ledger_url()) as ledger, gpu_slot(request_id):
        try:
            record = rounds.process_request(request_id, config, ledger, actor=actor, steps=steps,
                                            log=get_run_logger())
        except RequestNotProcessable as err:  # refused in the ledger with the reason; the queue goes on
            get_run_logger().warning("request %s refused: %s", request_id, err)
            return refused_outcome(request_id, str(err))
    return record.to_dict()


@flow(name="continual-unlearning")
def continual_unlearning(settings: dict[str, Any] | str | None = None, ledger_url: str | None = None,
                         max_requests: int | None = None) -> list[dict[str, Any]]:
    """Process queued requests one after another (urgent first) until the queue is empty or ``max_requests``."""
    ensure_gpu_slot()
    ledger = Ledger(ledger_url or default_ledger_url())
    outcomes: list[dict[str, Any]] = []
    try:
        for request_id in ledger.release_orphans(actor=worker_id("continual-unlearning"), alive=worker_alive):
            logger.warning("request %s: the worker that claimed it is gone; back in the queue", request_id)
        if reclaim_orphaned_gpu_slot(ledger):
            logger.warning("the gpu slot was held by a worker that is gone; freed")
        while max_requests is None or len(outcomes) < max_requests:
            entry = ledger.claim_next(actor=worker_id("continual-unlearning"))
            if entry is None:
                break
            outcomes.append(process_request(entry.request_id, settings, ledger_url))
    finally:
        ledger.close()
    return outcomes


@flow(name="urgent-removal")
def urgent_removal(request_file: str | None = None, request_id: str | None = None,
                   settings: dict[str, Any] | str | None = None, ledger_url: str | None = None) -> dict[str, Any]:
    """Submit ``request_file`` as urgent (or take the queued ``request_id``) and process it now."""
    from pipelines.intake.submit import submit_request

    if (request_file is None) == (request_id is None):
        raise UsageError("urgent_removal needs exactly one of request_file or request_id")
    ensure_gpu_slot()
    ledger = Ledger(ledger_url or default_ledger_url())
    try:
        if request_file is not None:
            config = _settings(settings)
            retain = steps.retain_items(config)
            request_id = submit_request(request_file, urgent=True, ledger=ledger, retain=retain).request_id
        ledger.transition(request_id, "running", actor=worker_id("urgent-removal"), expected_from="queued")
    finally:
        ledger.close()
    return process_request(request_id, settings, ledger_url, actor=worker_id("urgent-removal"))


__all__ = ["continual_unlearning", "ensure_gpu_slot", "process_request", "urgent_removal"]
