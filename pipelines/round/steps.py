"""The steps of processing one forget request, each a plain function (the Prefect flows call them as tasks).

load_request -> ensure_champion -> choose_temperature -> unlearn -> measure (before/after, earlier requests,
benchmarks) -> decide (gate) -> register -> write_evidence. Content stays in the ledger: the steps pass items in
memory, and what they log, tag or report is ids, hashes and numbers.
"""

from __future__ import annotations

import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from asu.config import ASUConfig
from asu.data import QAItem
from asu.errors import InputFileMissing, UsageError
from asu.evaluation import generate_answers, score_qa
from asu.hashing import qa_items_sha256, sha256_json
from asu.metrics.mia import PRIVLEAK_ATTACK, mia_aucs
from asu.metrics.muse import rouge_l_f1
from asu.metrics.passes import encode_pairs, token_stats
from asu.modeling import load_model_and_tokenizer
from asu.passages import (
    check_passage_lengths,
    is_passage,
    passage_mia_auc,
    passage_pieces,
    verbatim_memorisation,
)
from asu.qa_file import load_round_items
from asu.trainer import RoundResult, run_round
from pipelines.evaluate import EvalPlan, evaluate_model
from pipelines.ledger.queries import ContentPurged
from pipelines.ledger.store import Ledger
from pipelines.round.gate import EarlierRecheck, GateFigures, GateResult, GateThresholds, evaluate_gate
from pipelines.round.report import (
    EvidenceReport,
    ModelRef,
    SearchCandidate,
    ValidationSummary,
    write_report,
)
from pipelines.settings import PipelineSettings
from pipelines.temperature_search.outcome import SearchOutcome
from pipelines.temperature_search.search import run_search
from pipelines.temperature_search.split import ValidationSplit, round_items, split_validation
from pipelines.tracking.registry import Champion, ModelRegistry
from pipelines.workspace import work_dir

logger = logging.getLogger(__name__)


class RequestNotProcessable(UsageError):
    """A request this pipeline cannot unlearn as it stands (the message says why and what to do)."""


@dataclass(frozen=True)
class RequestData:
    """A request's items in memory (from the ledger's request store) and its content hash.

    ``forget``: QA items (``qa`` requests) or passages (``text`` requests, ``{"text"}``; cut into pieces by
    :func:`prepare_items`, with ``subjects`` naming each piece's passage for the validation split).
    """

    request_id: str
    content_sha256: str
    forget: list[QAItem]
    validation: list[QAItem] | None
    subjects: list[object] | None = None
    #: the request's knowledge questions (QA about its passages): scored for KnowMem, never trained or searched on
    knowledge: list[QAItem] = field(default_factory=list)

    @property
    def forget_sha256(self) -> str:
        return qa_items_sha256(self.forget)


def _item(record) -> dict[str, str]:
    return {"text": record.text} if record.text is not None else {"question": record.question,
                                                                  "answer": record.answer}


def load_request(ledger: Ledger, request_id: str) -> RequestData:
    """The request's forget records and validation items as round items (QA items or passages)."""
    request = ledger.load_request(request_id)
    if request.kind not in ("qa", "text", "mixed"):
        raise RequestNotProcessable(f"request {request_id!r} is kind {request.kind!r}; the ASU round unlearns "
                                    "question-answer records (kind 'qa'), passages (kind 'text') or both ('mixed')")
    forget = [_item(r) for r in request.forget_records()]
    validation = [_item(r) for r in request.validation_items()] or None
    knowledge = [_item(r) for r in request.knowledge]
    return RequestData(request_id, request.content_sha256, forget, validation, knowledge=knowledge)


def prepare_items(data: RequestData, retain: list[QAItem], model_dir: Path,
                  settings: PipelineSettings) -> tuple[RequestData, list[QAItem]]:
    """A text request's passages checked (too short, all in the retain set: ``UsageError`` before any model pass)
    and cut into the pieces the search splits (``pipelines.temperature_search.split.text_items``); a QA request
    and a QA retain set come back as they were."""
    from dataclasses import replace

    from asu.modeling import load_tokenizer
    from pipelines.temperature_search.split import text_items

    if not any(is_passage(it) for it in (*data.forget, *retain)):
        return data, retain
    tokenizer = load_tokenizer(model_dir, trust_remote_code=settings.round.trust_remote_code)
    try:
        items = text_items(tokenizer, data.forget, retain, settings.search, round_config=settings.round)
        validation = data.validation
        if validation:  # the request's own validation passages, in pieces as well
            check_passage_lengths(tokenizer, validation, "validation")
            validation, _ = passage_pieces(tokenizer, validation, max_tokens=settings.search.passage_piece_tokens)
    except RequestNotProcessable:
        raise
    except UsageError as err:  # the request's passages as they stand cannot be unlearnt and measured
        raise RequestNotProcessable(f"request {data.request_id!r}: {err}") from err
    return replace(data, forget=items.forget, subjects=items.subjects, validation=validation), items.retain


def resolve_base_model(settings: PipelineSettings) -> Path:
    """``embedded:<variant>``, a named model (``smollm2-135m``, prepared on first use) or a model folder."""
    from asu.models import resolve_model

    path = resolve_model(settings.base_model, progress=True)
    if not (path / "config.json").is_file():
        raise InputFileMissing(f"base_model={settings.base_model!r}: no model folder (config.json) there")
    return path


def ensure_champion(registry: ModelRegistry, settings: PipelineSettings) -> Champion:
    """The current champion; on an empty registry the base model is registered and promoted first."""
    champion = registry.champion()
    if champion is None:
        info = registry.register_base(resolve_base_model(settings))
        registry.promote(info.version, "base model: the starting point of the continual pipeline")
        champion = registry.champion()
    return champion


def retain_items(settings: PipelineSettings) -> list[QAItem]:
    """The retain set: QA items, passages (``{"text"}``) or both."""
    return load_round_items(settings.retain_file, "retain")


@dataclass(frozen=True)
class DataSplit:
    """Who sees which items: the search's validation items, and the disjoint items the report scores."""

    forget_report: list[QAItem]
    retain_report: list[QAItem]
    summary: dict[str, Any]
    knowledge: list[QAItem] = field(default_factory=list)  # the request's knowledge questions (KnowMem)


def validation_split(data: RequestData, retain: list[QAItem], settings: PipelineSettings) -> ValidationSplit:
    """The request's seeded validation split, computed once: the search validates on it, the report scores the rest.
    A request too small to split is :class:`RequestNotProcessable` (the message names the minimum and the setting)."""
    try:
        return split_validation(data.forget, retain, settings.search, subjects=data.subjects,
                                forget_validation=data.validation)
    except UsageError as err:
        raise RequestNotProcessable(f"request {data.request_id!r}: {err}") from err


def split_for_report(split: ValidationSplit, settings: PipelineSettings,
                     knowledge: list[QAItem] | None = None) -> DataSplit:
    """Report items disjoint from everything the search validates on (``split``: :func:`validation_split`), and
    the request's ``knowledge`` questions, which nothing trains or searches on."""
    rest = list(split.retain_rest)
    random.Random(settings.search.seed).shuffle(rest)
    return DataSplit(split.forget_test, rest[: settings.report_retain_items], split.summary(), list(knowledge or ()))


def teacher_model(model_dir: Path, settings: PipelineSettings) -> Path | None:
    """The teacher's model folder when it is not ``model_dir`` (``teacher_source='original'``: the base model)."""
    if settings.teacher_source == "previous":
        return None
    base = resolve_base_model(settings)
    return None if Path(base).resolve() == Path(model_dir).resolve() else Path(base)


def search_within_gate(settings: PipelineSettings, gate: GateThresholds) -> PipelineSettings:
    """``settings`` with the search's floors raised to what the gate will ask of the round, so the search never
    chooses a setting the gate is bound to refuse: the retain ROUGE-L floor (the figure the gate's utility drop
    reads; always relative) and the relative retain-score floor to ``1 - utility_drop_max`` (the gate's utility drop
    is relative to the model the round starts from, like the search's relative floors), the fluent share floor to
    ``fluency_min`` and the forget efficacy floor (an effect floor: below it a trial is ineffective) to
    ``forget_efficacy_min``. The search judges on its validation items, the gate on the request's report items, so
    a floor met here makes the gate's pass likely, not certain. Floors already stricter stay; a check the gate
    disables raises nothing; an absolute retain floor (``floor_mode='absolute'``) is the user's own and stays.
    """
    from dataclasses import replace

    search, changes = settings.search, {}
    if "utility_drop" not in gate.disabled:
        changes["retain_rouge_floor"] = max(search.retain_rouge_floor, 1.0 - gate.utility_drop_max)
    if search.floor_mode == "relative" and "utility_drop" not in gate.disabled:
        changes["utility_floor"] = max(search.utility_floor, 1.0 - gate.utility_drop_max)
    if "fluency" not in gate.disabled:
        changes["fluent_share_floor"] = max(search.fluent_share_floor, gate.fluency_min)
    if "forget_efficacy" not in gate.disabled:
        changes["forget_efficacy_floor"] = max(search.forget_efficacy_floor, gate.forget_efficacy_min)
    changes = {k: v for k, v in changes.items() if v != getattr(search, k)}
    if not changes:
        return settings
    logger.info("search floors raised to the gate's: %s", ", ".join(f"{k} {getattr(search, k):g} -> {v:g}"
                                                                     for k, v in changes.items()))
    return replace(settings, search=replace(search, **changes))


def choose_temperature(model_dir: Path, data: RequestData, retain: list[QAItem], settings: PipelineSettings,
                       work_dir: Path, judge=None, split: ValidationSplit | None = None):
    """Run the settings search (``pipelines.temperature_search``: tau, strength, lambda) for this request
    (on ``split`` when given, else on a split it computes the same way)."""
    return run_search(model_dir, data.forget, retain, settings.round, settings.search,
                      work_dir / "search", subjects=data.subjects, forget_validation=data.validation, judge=judge,
                      teacher_model_dir=teacher_model(model_dir, settings), placement=settings.placement, split=split)


def unlearn(model_dir: Path, data: RequestData, split: ValidationSplit, config: ASUConfig, out_dir: Path,
            outcome: SearchOutcome, metric_logger=None, teacher_model_dir: Path | None = None) -> RoundResult:
    """The round ``config`` (the search's chosen settings) from ``model_dir`` into ``out_dir``.

    It trains on what ``auto_unlearn``'s final round trains on (``split.round_items``: every forget item and the
    request's own validation items; the retain items outside the search's retain validation sample, which stays held
    out) and resumes from ``out_dir``'s checkpoint. When the search's trials trained on those same items
    (``trial_items='round'``), the chosen trial's model *is* this round: it is moved to ``out_dir`` instead of
    training it again (an unfinished checkpoint left there by an earlier attempt is dropped; it belongs to a round
    this attempt does not run). ``teacher_model_dir``: see :func:`teacher_model`.
    """
    if outcome.model_dir is not None:
        shutil.rmtree(out_dir, ignore_errors=True)
        return RoundResult.load(outcome.take_model(out_dir))
    forget, retain = round_items(data.forget, split, data.validation)
    return run_round(model_dir, forget, retain, config, out_dir, metric_logger=metric_logger, progress=False,
                     teacher_model_dir=teacher_model_dir)


@dataclass
class Measurement:
    """One model's figures on a request's report items (fractions) plus earlier requests and benchmarks."""

    forget_rouge: float
    forget_probability: float
    fluency: float
    retain_rouge: float
    retain_probability: float
    mia_auc: float | None
    refusal: float = 0.0  # share of forget answers that refuse (asu.fluency), counted as fluent in ``fluency``
    forget_fact_recall: float | None = None  # share of the forget answers' facts still stated (None: not measured)
    earlier: dict[str, float] = field(default_factory=dict)  # request id -> forget efficacy
    benchmarks: dict[str, dict[str, float]] = field(default_factory=dict)
    #: attack -> {fact_recall, baseline_fact_recall, recovery, items, seconds} (``asu.robustness``; the candidate only)
    robustness: dict[str, dict[str, float]] = field(default_factory=dict)
    #: text requests: mean VerbMem (``asu.passages.verbatim_memorisation``) of the reported forget passages and of
    #: the reported retain passages; None where the set holds no passage
    forget_verbmem: float | None = None
    retain_verbmem: float | None = None
    #: mean ROUGE-L F1 of the greedy answers to the request's knowledge questions (MUSE's KnowMem, asked in the
    #: round's prompt format rather than MUSE's few-shot prompt); None when the request gives none
    forget_knowmem: float | None = None
    #: MUSE's privleak of ``mia_auc`` against ``privleak_reference``'s AUC (~0 ideal); None when not configured
    privleak: float | None = None

    @property
    def forget_efficacy(self) -> float:
        """1 - fact recall of the greedy forget answers: a fluent answer that states other facts ("The Eiffel
        Tower is in Rome") has forgotten, though its ROUGE-L against the reference stays high. Falls back to
        1 - ROUGE-L recall for figures recorded without fact recall."""
        recall = self.forget_rouge if self.forget_fact_recall is None else self.forget_fact_recall
        return 1.0 - recall

    def headline(self) -> dict[str, float | None]:
        """The figures the gate reads (what the ledger keeps per round)."""
        return {"forget_efficacy": self.forget_efficacy, "retain_rouge": self.retain_rouge, "fluency": self.fluency,
                "mia_auc": self.mia_auc}

    def figures(self) -> GateFigures:
        return GateFigures(self.forget_efficacy, self.retain_rouge, self.fluency, self.mia_auc,
                           {name: r["recovery"] for name, r in self.robustness.items()},
                           self.forget_verbmem, self.retain_verbmem)

    def to_dict(self) -> dict[str, Any]:
        return {
            "forget_efficacy": self.forget_efficacy, "forget_rouge": self.forget_rouge,
            "forget_fact_recall": self.forget_fact_recall,
            "forget_probability": self.forget_probability, "fluency": self.fluency, "refusal": self.refusal,
            "retain_rouge": self.retain_rouge, "retain_probability": self.retain_probability,
            "mia_auc": self.mia_auc, "earlier": dict(self.earlier), "benchmarks": self.benchmarks,
            "robustness": self.robustness, "forget_verbmem": self.forget_verbmem,
            "retain_verbmem": self.retain_verbmem, "forget_knowmem": self.forget_knowmem,
            "privleak": self.privleak,
        }  # fmt: skip


def fluency_judge(model_dir: Path, settings: PipelineSettings):
    """The ``asu.fluency.FluencyJudge`` of ``model_dir`` (the model a round starts from) or of
    ``settings.fluency_model`` when that names a model; built once per request."""
    from asu.fluency import FluencyJudge
    from asu.models import resolve_model

    if settings.fluency_model != "champion":
        model_dir = resolve_model(settings.fluency_model, progress=False)
    model, tokenizer = load_model_and_tokenizer(model_dir, placement=settings.placement)
    return FluencyJudge(model, tokenizer, prompt_format=settings.round.prompt_format)


def measure(model_dir: Path, split: DataSplit, settings: PipelineSettings, *, holdout: list[QAItem] | None,
            earlier: dict[str, list[QAItem]], benchmarks: bool, judge=None, attacks: bool = False) -> Measurement:
    """Score ``model_dir`` on the report items, the holdout (MIA), earlier requests and the benchmark suites, and
    with ``attacks`` run ``settings.robustness``'s attacks on the report forget items (:func:`attack_figures`).

    The model is loaded once (and not at all when every part is stored). Parts that do not depend on this request
    (retain figures, earlier requests' re-checks, benchmarks) are stored under ``<work dir>/figure-store`` keyed by
    the model's content digest and the items' digest, so the next request's "before" reuses this one's "after".
    Fluency of the forget answers is ``asu.fluency``'s verdict by ``judge`` (see :func:`fluency_judge`: the model
    the round started from; default: a judge built from ``model_dir`` itself).
    """
    from asu.fluency import FluencyJudge
    from asu.metrics.store import cached_figures, model_digest

    fmt, cap = settings.round.prompt_format, settings.max_new_tokens
    store, digest = work_dir() / "figure-store", model_digest(model_dir)
    loaded: list = []

    def model_and_tokenizer():
        if not loaded:
            loaded.extend(load_model_and_tokenizer(model_dir, placement=settings.placement))
        return loaded

    def qa(items: list[QAItem], what: str) -> dict[str, float]:
        key = sha256_json({"model": digest, "items": qa_items_sha256(items), "what": what, "format": fmt, "cap": cap})
        return cached_figures(store, key, lambda: score_qa(*model_and_tokenizer(), items, prompt_format=fmt,
                                                           max_new_tokens=cap).summary())

    model, tokenizer = model_and_tokenizer()
    judge = judge or FluencyJudge(model, tokenizer, prompt_format=fmt)
    forget = score_qa(model, tokenizer, split.forget_report, prompt_format=fmt, max_new_tokens=cap, judge=judge)
    retain = qa(split.retain_report, "retain")
    texts = [it["text"] for it in split.forget_report if is_passage(it)]
    kept = [it["text"] for it in split.retain_report if is_passage(it)]
    auc = membership_auc(model, tokenizer, split.forget_report, holdout or [], settings)
    result = Measurement(forget.rouge_l_recall, forget.probability, forget.fluent_share, retain["rouge_l_recall"],
                         retain["probability"], auc, refusal=forget.refusal_share,
                         forget_fact_recall=forget.fact_recall)
    if texts:
        result.forget_verbmem = verbatim_memorisation(model, tokenizer, texts).mean
    if auc is not None and settings.privleak_reference != "none":
        result.privleak = privleak_against_reference(auc, split.forget_report, holdout or [], settings, store)
    if split.knowledge:
        answers = generate_answers(model, tokenizer, [it["question"] for it in split.knowledge], prompt_format=fmt,
                                   max_new_tokens=cap)
        result.forget_knowmem = fmean(rouge_l_f1(answers, [it["answer"] for it in split.knowledge]))
    if kept:
        key = sha256_json({"model": digest, "items": qa_items_sha256(split.retain_report), "what": "retain_verbmem"})
        result.retain_verbmem = cached_figures(store, key, lambda: {
            "verbmem": verbatim_memorisation(model, tokenizer, kept, what="retain").mean})["verbmem"]
    for request_id, items in earlier.items():
        # an earlier text request is re-checked on the pieces its own round was measured on
        pieces, _ = passage_pieces(tokenizer, items, max_tokens=settings.search.passage_piece_tokens)
        result.earlier[request_id] = 1.0 - qa(pieces, "earlier")["fact_recall"]
    if attacks and settings.robustness.attacks:
        result.robustness = attack_figures(model, tokenizer, split.forget_report, settings)
    if benchmarks:
        from asu.metrics.tofu import EvalSettings

        for suite in settings.benchmarks:
            plan = EvalPlan(suite, settings=EvalSettings(limit=settings.benchmark_limit, keep_generations=False))
            suite_result, _ = evaluate_model(model_dir, plan, loaded=tuple(loaded))
            result.benchmarks[suite] = dict(suite_result.aggregates)
    return result


def membership_auc(model, tokenizer, forget: list[QAItem], holdout: list[QAItem],
                   settings: PipelineSettings) -> float | None:
    """Min-K% membership AUC of the report's ``forget`` items against the ``holdout`` (0.5: indistinguishable, 1:
    every forget item recognised); passages against held-out passages, else QA answers against held-out QA
    answers. None when the holdout holds nothing of the right kind."""
    fmt = settings.round.prompt_format
    texts = [it["text"] for it in forget if is_passage(it)]
    held_texts = [it["text"] for it in holdout if is_passage(it)]
    held_qa = [it for it in holdout if not is_passage(it)]
    if texts and held_texts:  # a text request: its passages against held-out passages of the same kind
        return passage_mia_auc(model, tokenizer, texts, held_texts, max_length=settings.round.max_length)
    if texts:
        logger.info("membership inference not measured: the holdout file holds no passages to set this text "
                    "request's passages against")
        return None
    if not held_qa:
        return None
    enc = {name: encode_pairs(tokenizer, [i["question"] for i in items], [i["answer"] for i in items],
                              prompt_format=fmt, max_length=settings.round.max_length, source=name)
           for name, items in (("forget", forget), ("holdout", held_qa))}
    stats = {k: token_stats(model, v, pad_id=tokenizer.pad_token_id) for k, v in enc.items()}
    aucs, _ = mia_aucs(stats["forget"], [i["answer"] for i in forget], stats["holdout"],
                       [i["answer"] for i in held_qa])
    return aucs[PRIVLEAK_ATTACK]


def privleak_against_reference(auc: float, forget: list[QAItem], holdout: list[QAItem], settings: PipelineSettings,
                               store: Path) -> float | None:
    """MUSE's privleak of ``auc`` against ``settings.privleak_reference``'s AUC on the same items (that model's
    AUC is stored per model digest and items, so it is computed once per request); None, with a warning, when the
    reference's AUC is 1 (it recognises every forget item, so it did see them and privleak is undefined)."""
    from asu.metrics.formulas import privleak
    from asu.metrics.store import cached_figures, model_digest
    from asu.models import resolve_model

    reference = resolve_model(settings.privleak_reference, progress=False)
    key = sha256_json({"model": model_digest(reference), "items": qa_items_sha256(forget),
                       "holdout": qa_items_sha256(holdout), "what": "privleak_reference",
                       "format": settings.round.prompt_format, "max_length": settings.round.max_length})

    def reference_auc() -> dict[str, float | None]:
        model, tokenizer = load_model_and_tokenizer(reference, placement=settings.placement)
        return {"auc": membership_auc(model, tokenizer, forget, holdout, settings)}

    ref_auc = cached_figures(store, key, reference_auc)["auc"]
    if ref_auc is None:
        return None
    if ref_auc >= 1.0:
        logger.warning("privleak not measured: the reference model %s recognises every forget item (AUC 1), so it "
                       "saw them; name a model that never did as privleak_reference", settings.privleak_reference)
        return None
    return privleak(auc, ref_auc)


def attack_figures(model, tokenizer, forget: list[QAItem], settings: PipelineSettings) -> dict[str, dict[str, float]]:
    """``settings.robustness``'s attacks on ``model`` (in the round's prompt format): numbers only, per attack."""
    from dataclasses import replace

    from asu.robustness import attack

    config = replace(settings.robustness, prompt_format=settings.round.prompt_format,
                     max_length=settings.round.max_length)
    report = attack(model, tokenizer, forget, config)
    return {name: {k: v for k, v in result.to_dict().items() if isinstance(v, int | float) and not isinstance(v, bool)}
            for name, result in report.results.items()}


def earlier_requests(ledger: Ledger, exclude: str) -> tuple[dict[str, list[QAItem]], dict[str, float], list[str]]:
    """(items, recorded forget efficacy, notes) of every registered earlier request whose content is kept.

    The recorded figure is the one the ledger stored with the request's round outcome (``RoundRecord.ledger_outcome``),
    not a report file: the ledger is the truth about a request."""
    items, recorded, notes = {}, {}, []
    for entry in ledger.list_requests(["registered"]):
        if entry.request_id == exclude:
            continue
        try:
            items[entry.request_id] = load_request(ledger, entry.request_id).forget
        except ContentPurged:
            notes.append(f"{entry.request_id}: content purged by retention, not re-checked")
            continue
        outcome = ledger.latest_outcome(entry.request_id) or {}
        after = outcome.get("after") or {}
        if not isinstance(after.get("forget_efficacy"), int | float):
            notes.append(f"{entry.request_id}: the ledger holds no round outcome with its forget efficacy, "
                         "not re-checked")
            items.pop(entry.request_id)
            continue
        recorded[entry.request_id] = float(after["forget_efficacy"])
    return items, recorded, notes


def decide(before: Measurement, after: Measurement, recorded: dict[str, float],
           thresholds: GateThresholds) -> tuple[GateResult, list[EarlierRecheck]]:
    """Hold the candidate's figures to the gate; one resurgence check per earlier request."""
    rechecks = [EarlierRecheck(rid, recorded[rid], after.earlier[rid]) for rid in after.earlier if rid in recorded]
    return evaluate_gate(before.figures(), after.figures(), rechecks, thresholds), rechecks


def search_candidates(outcome) -> list[SearchCandidate]:
    """The search evidence as report rows: every stage-2 trial (its numeric figures) and whether it was chosen."""
    rows = []
    for trial in outcome.trials:
        d = trial.to_dict() if hasattr(trial, "to_dict") else dict(vars(trial))
        metrics = {k: v for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        rows.append(SearchCandidate(float(d["tau"]), metrics, chosen=trial is outcome.chosen_trial))
    return rows


def write_evidence(*, record, data: RequestData, validation: dict | None, settings: PipelineSettings,
                   thresholds: GateThresholds, model: ModelRef, code_version: str) -> tuple[Path, Path]:
    """The per-request evidence report (JSON + Markdown) of a ``RoundRecord`` under
    ``<work dir>/reports/<request id>/``."""
    report = EvidenceReport(
        request_id=data.request_id,
        content_hashes={"request": data.content_sha256, "forget_set": data.forget_sha256},
        validation=ValidationSummary.from_result(validation or {"success": True}),
        method=settings.round.method,
        tau=record.tau,
        search=search_candidates(record.search),
        before=record.before.figures(),
        after=record.after.figures(),
        gate=record.gate,
        earlier=record.rechecks,
        model=model,
        code_version=code_version,
        config_digests={"pipeline_settings": settings.digest(),
                        "gate_thresholds": sha256_json(thresholds.to_dict())},
        metrics_before=record.before.to_dict(),
        metrics_after=record.after.to_dict(),
        failed_attempts=record.failed_attempts,
    )
    return write_report(report)


__all__ = [
    "DataSplit",
    "Measurement",
    "RequestData",
    "RequestNotProcessable",
    "attack_figures",
    "choose_temperature",
    "decide",
    "earlier_requests",
    "ensure_champion",
    "fluency_judge",
    "load_request",
    "measure",
    "prepare_items",
    "resolve_base_model",
    "retain_items",
    "split_for_report",
    "teacher_model",
    "unlearn",
    "validation_split",
    "write_evidence",
]
