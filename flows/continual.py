"""Prefect flows of the continual-unlearning pipeline. Each task wraps one plain function of ``pipelines``.

- ``process_request``: one claimed request, from the current champion to a registered (and maybe promoted)
  candidate with its evidence report;
- ``continual_unlearning``: drains the queue (urgent first), one ``process_request`` per request, each starting
  from the model the previous one promoted; a gate failure marks that request and the rest continue;
- ``urgent_removal``: submits (optionally) and processes one request at once, ahead of the queue.

GPU steps (search, round) hold the global concurrency slot ``gpu`` (strict), so rounds never overlap on one
device even across workers. Retries are for I/O only (ledger, MLflow); a crashed request goes back to the queue
and its round resumes from its last checkpoint on the next attempt.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from pipelines import process as steps
from pipelines.evaluate import work_dir
from pipelines.gate import load_thresholds
from pipelines.ledger import Ledger, default_ledger_url
from pipelines.registry import ModelRegistry
from pipelines.report import ModelRef
from pipelines.settings import PipelineSettings
from pipelines.tracking import Tracker, TrackingUnavailable, code_version, is_transient

logger = logging.getLogger(__name__)
GPU_SLOT = "gpu"


def _io_only(task, task_run, state) -> bool:
    """Retry condition: only transient I/O failures (database, MLflow) are worth another attempt."""
    try:
        state.result()
    except Exception as err:  # noqa: BLE001 - inspecting the failure, not handling it
        return is_transient(err) or isinstance(err, TrackingUnavailable | OSError)
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


@contextmanager
def gpu_slot(holder: str):
    """Hold the ``gpu`` slot; each holding is appended to ``<work dir>/gpu-slot.jsonl`` (start, end, holder)."""
    import json
    import time

    from prefect.concurrency.sync import concurrency

    with concurrency(GPU_SLOT, occupy=1, strict=True):
        start = time.time()
        try:
            yield
        finally:
            path = work_dir() / "gpu-slot.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(json.dumps({"holder": holder, "start": start, "end": time.time()}) + "\n")


def _settings(settings: dict[str, Any] | str | None) -> PipelineSettings:
    if isinstance(settings, str):
        return PipelineSettings.from_yaml(settings)
    return PipelineSettings.from_dict(settings or {})


@flow(name="process-request")
def process_request(request_id: str, settings: dict[str, Any] | str | None = None,
                    ledger_url: str | None = None, actor: str = "flow:process-request") -> dict[str, Any]:
    """Unlearn one request that is already ``running`` (claimed); returns its outcome (ids and numbers)."""
    config = _settings(settings)
    ledger = Ledger(ledger_url or default_ledger_url())
    try:
        data = load_request(ledger, request_id)
        retain = steps.retain_items(config)
        holdout = steps.load_qa_file(config.holdout_file) if config.holdout_file else None
        # One slot from reading the champion to promoting the candidate: rounds never overlap on the device, and
        # each request starts from the model the previous one promoted (the continual chain never branches).
        with gpu_slot(request_id):
            job = _Job(request_id, config, ledger, Tracker(), data, retain, holdout, actor)
            return job.run()
    except BaseException as err:
        _requeue(ledger, request_id, actor, err)
        raise
    finally:
        ledger.close()


class _Job:
    """One request under the gpu slot: search, round, measurement, gate, registry, evidence (in that order)."""

    def __init__(self, request_id, config, ledger, tracker, data, retain, holdout, actor) -> None:
        self.request_id, self.config, self.ledger, self.tracker = request_id, config, ledger, tracker
        self.data, self.retain, self.holdout, self.actor = data, retain, holdout, actor
        self.registry = ModelRegistry(tracker, config.model_name)
        self.thresholds = load_thresholds(config.gate_file)
        self.round_dir = work_dir() / "rounds" / request_id
        self.log = get_run_logger()

    def run(self) -> dict[str, Any]:
        champion = ensure_champion(self.registry, self.config)
        with self.tracker.request_run(self.request_id, tags={"asu.champion_version": str(champion.version)}) as run:
            run.log_params({"method": self.config.round_config().method, "code_version": code_version(),
                            "data_hash": self.data.forget_sha256, "parent_version": champion.version,
                            "num_forget": len(self.data.forget)})
            report = self.ledger.latest_report(self.request_id)
            for path in (report or {}).values():
                if path and Path(path).is_file():
                    run.log_file(path, "validation")
            judge = steps.fluency_judge(Path(champion.path), self.config)  # one judge: search, before and after
            outcome = choose_temperature(Path(champion.path), self.data, self.retain, self.config, self.round_dir,
                                         judge)
            self._log_search(run, outcome)
            if outcome.status != "chosen":
                return self._nothing_chosen(outcome, champion)
            round_config = outcome.round_config(self.config.round_config())
            tau = round_config.tau
            run.log_params({"tau": tau, "lambda": round_config.forget_weight, "lr": round_config.learning_rate,
                            "seeds": round_config.seed})
            run.log_params({"teacher_source": self.config.teacher_source})
            result = unlearn(Path(champion.path), self.data, self.retain, round_config, self.round_dir / "model",
                             run.metric_logger(), steps.teacher_model(Path(champion.path), self.config))
            split = steps.split_for_report(self.data, self.retain, self.config)
            earlier, recorded, notes = earlier_requests(self.ledger, self.request_id)
            for note in notes:
                self.log.info("request %s: %s", self.request_id, note)
            kw = {"holdout": self.holdout, "earlier": earlier, "benchmarks": True}
            before = measure(Path(champion.path), split, self.config, judge=judge, **kw)
            after = measure(result.model_dir, split, self.config, judge=judge, **kw)
            del judge
            run.log_metrics({"before": before.to_dict(), "after": after.to_dict()})
            self.ledger.transition(self.request_id, "evaluated", actor=self.actor, detail={"tau": tau})
            gate, rechecks = steps.decide(before, after, recorded, self.thresholds)
            version, aliases = self._register(result.model_dir, champion, gate, tau, run)
            paths = write_evidence(
                data=self.data, validation=_validation_summary(report), settings=self.config, tau=tau,
                outcome=outcome, before=before, after=after, gate=gate, rechecks=rechecks,
                model=ModelRef(self.config.model_name, version, tuple(aliases), str(champion.version)),
                code_version=code_version(), thresholds=self.thresholds,
            )
            for path in paths:
                run.log_file(path, "evidence")
            run.set_tags({"asu.gate": "passed" if gate.passed else "failed", "asu.model_version": version})
        return {"request_id": self.request_id, "status": "registered" if gate.passed else "gate_failed",
                "tau": tau, "model_version": version, "parent_version": str(champion.version),
                "promoted": "champion" in aliases, "before": before.to_dict(), "after": after.to_dict(),
                "gate": gate.to_dict(), "report": str(paths[1]), "failed_checks": [c.name for c in gate.failed]}

    def _log_search(self, run, outcome) -> None:
        for trial in outcome.trials:
            name = f"tau-{trial.tau}-lr-{trial.learning_rate:.3g}-lambda-{trial.forget_weight:g}-rung-{trial.rung}"
            with self.tracker.child_run(run, name) as child:
                child.log_params({**trial.setting, "epochs": trial.epochs})
                child.log_metrics({"forget_efficacy": trial.forget_efficacy, "retain_utility": trial.retain_utility,
                                   "fluent_share": trial.forget.fluent_share, "score": trial.score})
        run.log_file(self.round_dir / "search" / "search.json", "search")
        if outcome.plot:
            run.log_file(outcome.plot, "search")

    def _nothing_chosen(self, outcome, champion) -> dict[str, Any]:
        """The search found no setting (``no_effect`` or ``no_safe_setting``): nothing trained, champion kept."""
        self.ledger.transition(self.request_id, "evaluated", actor=self.actor, detail={"search": outcome.status})
        self.ledger.transition(self.request_id, "gate_failed", actor=self.actor,
                               detail={"reason": outcome.status, "reasons": outcome.reasons[:5]})
        self.log.warning("request %s: search outcome %s; champion unchanged", self.request_id, outcome.status)
        return {"request_id": self.request_id, "status": "gate_failed", "tau": None, "reason": outcome.status,
                "parent_version": str(champion.version), "failed_checks": ["temperature_search"]}

    def _register(self, model_dir, champion, gate, tau, run) -> tuple[str, list[str]]:
        """Register the candidate (always, tagged with its gate), promote it when it passed and promotion is auto."""
        info = self.registry.register_candidate(model_dir, request_ids=[self.request_id],
                                                parent_version=champion.version, gate_results=gate, tau=tau,
                                                run_id=run.run_id)
        if not gate.passed:
            self.ledger.transition(self.request_id, "gate_failed", actor=self.actor,
                                   detail={"failed": [c.name for c in gate.failed], "model_version": info.version})
            return info.version, ["candidate"]
        self.ledger.transition(self.request_id, "approved", actor=self.actor, detail={"gate": "passed"})
        self.ledger.transition(self.request_id, "registered", actor=self.actor,
                               detail={"model_version": info.version})
        if self.config.promotion != "auto":
            return info.version, ["candidate"]
        self.registry.promote(info.version, f"gate passed for request {self.request_id}")
        return info.version, ["champion"]


def _validation_summary(report: dict | None) -> dict | None:
    """The contract result JSON the intake wrote (counts and rule names only), if any."""
    import json

    if report and report.get("report_json") and Path(report["report_json"]).is_file():
        return json.loads(Path(report["report_json"]).read_text())
    return None


def _requeue(ledger: Ledger, request_id: str, actor: str, err: BaseException) -> None:
    """A request whose processing crashed goes back to the queue (nothing registered); the error is recorded."""
    try:
        if ledger.get(request_id).state == "running":
            ledger.transition(request_id, "queued", actor=actor,
                              detail={"error": type(err).__name__, "retry": "the round resumes from its checkpoint"})
    except Exception:  # noqa: BLE001 - the original error matters more; the ledger may be the thing that failed
        logger.exception("could not return request %s to the queue", request_id)


@flow(name="continual-unlearning")
def continual_unlearning(settings: dict[str, Any] | str | None = None, ledger_url: str | None = None,
                         max_requests: int | None = None) -> list[dict[str, Any]]:
    """Process queued requests one after another (urgent first) until the queue is empty or ``max_requests``."""
    ensure_gpu_slot()
    ledger = Ledger(ledger_url or default_ledger_url())
    outcomes: list[dict[str, Any]] = []
    try:
        while max_requests is None or len(outcomes) < max_requests:
            entry = ledger.claim_next(actor="flow:continual-unlearning")
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
    from pipelines.intake import submit_request

    if (request_file is None) == (request_id is None):
        raise ValueError("urgent_removal needs exactly one of request_file or request_id")
    ensure_gpu_slot()
    ledger = Ledger(ledger_url or default_ledger_url())
    try:
        if request_file is not None:
            config = _settings(settings)
            retain = steps.retain_items(config)
            request_id = submit_request(request_file, urgent=True, ledger=ledger, retain=retain).request_id
        ledger.transition(request_id, "running", actor="flow:urgent-removal", expected_from="queued")
    finally:
        ledger.close()
    return process_request(request_id, settings, ledger_url, actor="flow:urgent-removal")


__all__ = ["continual_unlearning", "ensure_gpu_slot", "process_request", "urgent_removal"]
