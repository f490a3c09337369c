"""Processing one forget request, as one plain function: :func:`process_request` -> :class:`RoundRecord`.

The order of work lives here and only here: load the request, ensure a champion, search the round's settings,
run the round, measure before and after (the current model's figures reused when an earlier step already measured
them: ``steps.measure`` stores them by model and data digest), hold them to the gate, register (and promote), write
the evidence. The Prefect flows (``flows.continual``) call this same function with their task-wrapped steps
(:class:`RoundSteps`), so a request processed from Python or a test gives the record the flow gives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

from asu.qa_file import load_round_items
from pipelines.console import progress
from pipelines.ledger.store import Ledger
from pipelines.round import steps as plain
from pipelines.round.gate import load_thresholds
from pipelines.round.record import RoundRecord
from pipelines.round.report import ModelRef
from pipelines.round.steps import RequestNotProcessable
from pipelines.settings import PipelineSettings
from pipelines.tracking.registry import ModelRegistry
from pipelines.tracking.runs import Tracker, code_version
from pipelines.workspace import work_dir

logger = logging.getLogger(__name__)
#: Gate checks a round fails by damaging the model (not by forgetting too little): a gentler strength may pass them.
DAMAGE_CHECKS = frozenset({"fluency", "utility_drop"})


@dataclass(frozen=True)
class RoundSteps:
    """The step functions a round calls; the flows pass the same functions wrapped as Prefect tasks."""

    load_request: Callable = plain.load_request
    ensure_champion: Callable = plain.ensure_champion
    choose_settings: Callable = plain.choose_temperature
    unlearn: Callable = plain.unlearn
    measure: Callable = plain.measure
    earlier_requests: Callable = plain.earlier_requests
    write_evidence: Callable = plain.write_evidence

    def wrapped(self, wrap: Callable[[Callable], Callable]) -> RoundSteps:
        """Every step passed through ``wrap`` (for example ``prefect.task``)."""
        return RoundSteps(**{f.name: wrap(getattr(self, f.name)) for f in fields(self)})


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = round(time.perf_counter() - start, 2)


def process_request(request_id: str, settings: PipelineSettings, ledger: Ledger, *, tracker: Tracker | None = None,
                    actor: str = "process_request", steps: RoundSteps | None = None,
                    log: logging.Logger | logging.LoggerAdapter | None = None) -> RoundRecord:
    """Unlearn the claimed (``running``) request ``request_id`` from the current champion; returns its record.

    A crash returns the request to the queue (the round resumes from its checkpoint on the next attempt) and
    re-raises; a request the round finds unprocessable as it stands (``RequestNotProcessable``: a passage too short
    to measure, too few items to validate on, ...) is ``rejected`` with the reason instead, so that it does not
    block the queue, and the error is re-raised. Holding the device is the caller's business (the flows hold the
    ``gpu`` slot around this call).
    """
    try:
        return _Round(request_id, settings, ledger, tracker or Tracker(), actor, steps or RoundSteps(),
                      log or logger).run()
    except RequestNotProcessable as err:
        ledger.transition(request_id, "rejected", actor=actor, detail={"error": type(err).__name__,
                                                                        "reason": str(err)[:1000]})
        raise
    except BaseException as err:
        _requeue(ledger, request_id, actor, err)
        raise


class _Round:
    """The state one request's processing shares between its steps (one object per call)."""

    def __init__(self, request_id, settings, ledger, tracker, actor, steps, log) -> None:
        self.request_id, self.settings, self.ledger, self.tracker = request_id, settings, ledger, tracker
        self.actor, self.steps, self.log = actor, steps, log
        self.registry = ModelRegistry(tracker, settings.model_name)
        self.thresholds = load_thresholds(settings.gate_file)
        self.round_dir = work_dir() / "rounds" / request_id

    def run(self) -> RoundRecord:
        s, steps, seconds = self.settings, self.steps, {}
        data = steps.load_request(self.ledger, self.request_id)
        retain = plain.retain_items(s)
        holdout = load_round_items(s.holdout_file, "holdout") if s.holdout_file else None  # QA, passages or both
        champion = steps.ensure_champion(self.registry, s)
        champion_dir = Path(champion.path)
        data, retain = plain.prepare_items(data, retain, champion_dir, s)  # a text request's passages, in pieces
        with self.tracker.request_run(self.request_id, tags={"asu.champion_version": str(champion.version)}) as run:
            # num_forget: what the round trains on (the trainer logs the same figure): forget and validation items
            run.log_params({"method": s.round.method, "code_version": code_version(), "data_hash": data.forget_sha256,
                            "parent_version": champion.version,
                            "num_forget": len(data.forget) + len(data.validation or ()),
                            "teacher_source": s.teacher_source})
            validation = self.ledger.latest_report(self.request_id)
            for path in (validation or {}).values():
                if path and Path(path).is_file():
                    run.log_file(path, "validation")
            judge = plain.fluency_judge(champion_dir, s)  # one judge: search, before and after
            teacher_dir = plain.teacher_model(champion_dir, s)
            say = progress()
            say.info("%s: searching the round's settings (%d forget items, champion version %s)", self.request_id,
                     len(data.forget), champion.version)
            split = plain.validation_split(data, retain, s)  # once: the search's and the report's
            searched = plain.search_within_gate(s, self.thresholds)  # never choose what the gate must refuse
            with _timed(seconds, "search"):
                outcome = steps.choose_settings(champion_dir, data, retain, searched, self.round_dir, judge, split)
            record = RoundRecord(self.request_id, data.forget_sha256, str(champion.version), outcome,
                                 seconds=seconds)
            self._log_search(run, outcome)
            if outcome.status != "chosen":
                return self._nothing_chosen(record, run)
            report_items = plain.split_for_report(split, s, data.knowledge)
            earlier, recorded, notes = steps.earlier_requests(self.ledger, self.request_id)
            for note in notes:
                self.log.info("request %s: %s", self.request_id, note)
            kw = {"holdout": holdout, "earlier": earlier, "benchmarks": True, "judge": judge}
            # The chosen setting first; when its round fails the gate, a gentler strength or the search's runner-up
            # (gate_retry), at most gate_retries times.
            attempt, runner_ups = outcome, outcome.runner_ups()
            for number in range(1, s.gate_retries + 2):
                self._attempt(record, attempt, number, champion_dir, data, split, report_items, kw, teacher_dir,
                              run, say)
                if number == 1:
                    self.ledger.transition(self.request_id, "evaluated", actor=self.actor,
                                           detail={"tau": record.tau})
                record.gate, record.rechecks = plain.decide(record.before, record.after, recorded, self.thresholds)
                attempt = None if record.gate.passed else self._next_setting(attempt, record, runner_ups)
                if attempt is None or number == s.gate_retries + 1:
                    break
                self._keep_failed_attempt(record, number, run, say)
            del judge
            self._register(record, self._model_dir(record.attempt), run)
            paths = steps.write_evidence(record=record, data=data, validation=_validation_summary(validation),
                                         settings=s, thresholds=self.thresholds,
                                         model=ModelRef(s.model_name, record.version,
                                                        ("champion",) if record.promoted else ("candidate",),
                                                        record.champion_version),
                                         code_version=code_version())
            record.report = paths[1]
            for path in paths:
                run.log_file(path, "evidence")
            run.set_tags({"asu.gate": "passed" if record.gate.passed else "failed",
                          "asu.model_version": record.version, "asu.gate_attempts": str(record.attempt)})
            say.info("%s: gate %s; model version %s%s", self.request_id,
                     "passed" if record.gate.passed else "FAILED (" + ", ".join(record.failed_checks) + ")",
                     record.version, " is the champion" if record.promoted else "")
        return record

    def _model_dir(self, attempt: int) -> Path:
        """Where attempt ``attempt`` (1 = the chosen setting, then the gate retries) trains its model."""
        return self.round_dir / ("model" if attempt == 1 else f"model-retry-{attempt - 1}")

    def _attempt(self, record: RoundRecord, outcome, number: int, champion_dir: Path, data, split, report_items,
                 kw: dict, teacher_dir, run, say) -> None:
        """Train ``outcome``'s setting as attempt ``number`` and measure the candidate (the champion once)."""
        s, seconds = self.settings, record.seconds
        round_config = outcome.round_config(s.round)
        record.attempt = number
        record.settings = {"tau": round_config.tau, "learning_rate": round_config.learning_rate,
                           "forget_weight": round_config.forget_weight, "epochs": round_config.epochs,
                           "seed": round_config.seed}
        suffix = "" if number == 1 else f"_retry_{number - 1}"
        if number == 1:
            say.info("%s: chose tau %g, learning rate %.3g, lambda %g in %.0f s; %s", self.request_id,
                     round_config.tau, round_config.learning_rate, round_config.forget_weight, seconds["search"],
                     "training the round" if outcome.model_dir is None else
                     "its trial trained on the round's items is the round")
            run.log_params(record.mlflow_params())
        else:
            say.info("%s: gate retry %d: training %s, tau %g, learning rate %.3g, lambda %g", self.request_id,
                     number - 1, "a gentler strength" if outcome.chosen_trial is None else "the search's runner-up",
                     round_config.tau, round_config.learning_rate, round_config.forget_weight)
        # A retry's round logs its parameters and curve to a child run: the request run's parameters are the first
        # attempt's, and MLflow never lets a parameter change.
        with _timed(seconds, "round" + suffix), (nullcontext(run) if number == 1 else
                                                   self.tracker.child_run(run, f"gate-retry-{number - 1}")) as where:
            result = self.steps.unlearn(champion_dir, data, split, round_config, self._model_dir(number), outcome,
                                        where.metric_logger(), teacher_dir)
        say.info("%s: round done in %.0f s; measuring %s", self.request_id, seconds["round" + suffix],
                 "the champion and the candidate" if record.before is None else "the candidate")
        if record.before is None:
            with _timed(seconds, "measure_before"):
                record.before = self.steps.measure(champion_dir, report_items, s, **kw)
        with _timed(seconds, "measure_after" + suffix):
            record.after = self.steps.measure(result.model_dir, report_items, s, **kw, attacks=True)
        run.log_metrics(record.mlflow_metrics(), step=number - 1)

    def _next_setting(self, tried, record: RoundRecord, runner_ups: list):
        """What to train after ``tried`` failed the gate (``gate_retry``), or None when nothing is left."""
        keys = ("tau", "learning_rate", "forget_weight")
        done = [{k: a["settings"][k] for k in keys} for a in record.failed_attempts] + [tried.setting]
        if self.settings.gate_retry == "gentler_strength" and set(record.failed_checks) <= DAMAGE_CHECKS:
            gentler = tried.gentler(self.settings.search.learning_rates(self.settings.round.learning_rate))
            if gentler is not None and gentler.setting not in done:
                return gentler
        return next((r for r in runner_ups if r.setting not in done), None)

    def _keep_failed_attempt(self, record: RoundRecord, number: int, run, say) -> None:
        """Attempt ``number`` failed the gate and another setting is left: register it as a failed candidate (the
        request stays ``evaluated``; only the last attempt moves it on) and keep its figures in the record."""
        info = self.registry.register_candidate(self._model_dir(number), request_ids=[self.request_id],
                                                parent_version=record.champion_version, gate_results=record.gate,
                                                tau=record.tau, run_id=run.run_id)
        record.failed_attempts.append({"attempt": number, "settings": dict(record.settings or {}),
                                       "model_version": info.version, "failed_checks": record.failed_checks,
                                       "after": record.after.headline()})
        say.info("%s: gate FAILED (%s) at tau %g, learning rate %.3g (candidate version %s); retrying",
                 self.request_id, ", ".join(record.failed_checks), record.tau,
                 record.settings["learning_rate"], info.version)

    def _log_search(self, run, outcome) -> None:
        for trial in outcome.trials:
            name = f"tau-{trial.tau}-lr-{trial.learning_rate:.3g}-lambda-{trial.forget_weight:g}-rung-{trial.rung}"
            with self.tracker.child_run(run, name) as child:
                child.log_params({**trial.setting, "epochs": trial.epochs})
                child.log_metrics({"forget_score": trial.forget_score,
                                   "retain_score": trial.retain_score,
                                   "fluent_share": trial.forget.fluent_share, "combined_score": trial.combined_score})
        run.log_file(self.round_dir / "search" / "search.json", "search")
        if outcome.plot:
            run.log_file(outcome.plot, "search")

    def _nothing_chosen(self, record: RoundRecord, run) -> RoundRecord:
        """The search found no setting (``no_effect`` or ``no_safe_setting``): nothing trained, champion kept."""
        run.log_params(record.mlflow_params())
        self.ledger.transition(self.request_id, "evaluated", actor=self.actor,
                               detail={"search": record.search.status})
        self.ledger.transition(self.request_id, "gate_failed", actor=self.actor,
                               detail={"reason": record.search.status, "outcome": record.ledger_outcome()})
        self.log.warning("request %s: the search chose no setting (%s); nothing trained, champion unchanged",
                         self.request_id, record.search.status)
        return record

    def _register(self, record: RoundRecord, model_dir: Path, run) -> None:
        """Register the candidate (always, tagged with its gate), promote it when it passed and promotion is auto."""
        info = self.registry.register_candidate(model_dir, request_ids=[self.request_id],
                                                parent_version=record.champion_version, gate_results=record.gate,
                                                tau=record.tau, run_id=run.run_id)
        record.version = info.version
        if not record.gate.passed:
            self.ledger.transition(self.request_id, "gate_failed", actor=self.actor,
                                   detail={"failed": record.failed_checks, "model_version": info.version,
                                           "outcome": record.ledger_outcome()})
            return
        self.ledger.transition(self.request_id, "approved", actor=self.actor, detail={"gate": "passed"})
        if self.settings.promotion == "auto":
            self.registry.promote(info.version, f"gate passed for request {self.request_id}")
            record.promoted = True
        self.ledger.transition(self.request_id, "registered", actor=self.actor,
                               detail={"model_version": info.version, "outcome": record.ledger_outcome()})


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
    except Exception as failure:  # noqa: BLE001 - the original error matters more; the ledger may be what failed
        logger.error("could not return request %s to the queue (%s: %s); the next run releases it once its worker "
                     "is gone", request_id, type(failure).__name__, str(failure)[:300])


__all__ = ["RoundSteps", "process_request"]
