"""Pipeline step: evaluate a model folder on one suite, reusing a stored result when nothing changed.

Suites: ``tofu`` (the reference framework's TOFU metrics), ``asu-paper`` (MU/FE/Avg of the ASU paper, with every
TOFU figure), ``muse`` (MUSE-News VerbMem/KnowMem/PrivLeak), ``wmdp`` (bio and cyber accuracy). Results are stored
under ``<work dir>/eval-store/<key>.json`` (work dir: ``$ASU_WORK_DIR`` or ``./asu-work``), keyed by model content
hash + data digests + settings (see ``asu.metrics.store``). A reference result (the retain model's, for forget
quality and privleak) is applied after the lookup, so the stored result never depends on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from asu.errors import UsageError
from asu.hashing import sha256_dir
from asu.metrics.asu_paper import PaperModels, paper_result
from asu.metrics.results import SuiteResult
from asu.metrics.store import cached, model_digest, result_key
from asu.metrics.tofu import EvalSettings, apply_fluency, apply_reference, score_tofu, tofu_result
from asu.metrics.tofu_data import TofuSets, standard_sets
from asu.modeling import load_model_and_tokenizer
from pipelines.workspace import work_dir

logger = logging.getLogger(__name__)

Suite = Literal["tofu", "asu-paper", "muse", "wmdp"]
SUITES: tuple[str, ...] = get_args(Suite)


def default_store_dir() -> Path:
    return work_dir() / "eval-store"


@dataclass(frozen=True)
class EvalPlan:
    """What to evaluate: the suite, its data (TOFU sets; MUSE/WMDP use their vendored files) and settings."""

    suite: Suite
    tofu_sets: TofuSets | None = None
    settings: EvalSettings = field(default_factory=EvalSettings)
    paper_models: PaperModels = field(default_factory=PaperModels)
    #: The model before unlearning, whose likelihood judges the forget answers' fluency (TOFU, ASU-paper suites).
    fluency_model: str | Path | None = None

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise UsageError(f"unknown suite {self.suite!r}; choose one of {', '.join(SUITES)}")


def _vendored_digest(name: str) -> dict[str, str]:
    import asu

    root = Path(asu.__file__).parent / "vendor" / name
    return {name: sha256_dir(root)[:16]}


def _judge(plan: EvalPlan, model_dir: Path, model, tokenizer):
    """The ``FluencyJudge`` of ``plan.fluency_model`` (None when not given)."""
    if plan.fluency_model is None:
        return None
    from asu.fluency import FluencyJudge

    same = Path(plan.fluency_model).resolve() == Path(model_dir).resolve()
    judge_model = model if same else load_model_and_tokenizer(plan.fluency_model)[0]
    return FluencyJudge(judge_model, tokenizer, prompt_format=plan.settings.prompt_format)


def _compute(plan: EvalPlan, model_dir: Path, model, tokenizer, sets: TofuSets | None) -> SuiteResult:
    s = plan.settings
    if plan.suite in ("tofu", "asu-paper"):
        scores = score_tofu(model, tokenizer, sets, s)
        result = (tofu_result(scores, sets, s) if plan.suite == "tofu"
                  else paper_result(scores, sets, s, plan.paper_models))
        questions = [it["question"] for it in sets.forget]
        return apply_fluency(result, scores, questions, _judge(plan, model_dir, model, tokenizer))
    if plan.suite == "muse":
        from asu.metrics.muse import evaluate_muse

        return evaluate_muse(model, tokenizer, limit=s.limit, batch_size=s.batch_size)
    from asu.metrics.wmdp import evaluate_wmdp

    return evaluate_wmdp(model, tokenizer, limit=s.limit, batch_size=s.batch_size)


def evaluate_model(
    model_dir: str | Path,
    plan: EvalPlan,
    *,
    reference: str | Path | SuiteResult | None = None,
    store_dir: str | Path | None | Literal["default"] = "default",
    loaded: tuple | None = None,
) -> tuple[SuiteResult, bool]:
    """(result, reused) of ``plan`` on the model in ``model_dir``; ``store_dir=None`` disables the store.

    ``loaded``: ``(model, tokenizer)`` already loaded from ``model_dir`` (not loaded again).
    """
    store = default_store_dir() if store_dir == "default" else store_dir
    sets = None
    if plan.suite in ("tofu", "asu-paper"):
        sets = (plan.tofu_sets or standard_sets()).limited(plan.settings.limit)
        digests = sets.digests()
    else:
        digests = _vendored_digest(plan.suite)
    settings = plan.settings.to_dict() | (plan.paper_models.to_dict() if plan.suite == "asu-paper" else {})
    if plan.fluency_model is not None and sets is not None:
        settings["fluency_model"] = model_digest(plan.fluency_model)
    key = result_key(plan.suite, model_digest(model_dir), digests, settings)

    def compute() -> SuiteResult:
        model, tokenizer = loaded or load_model_and_tokenizer(model_dir)
        result = _compute(plan, Path(model_dir), model, tokenizer, sets)
        result.info["model_dir"] = str(model_dir)
        return result

    result, reused = cached(store, key, compute)
    if reference is not None:
        if plan.suite in ("tofu", "asu-paper"):
            ref = reference if isinstance(reference, SuiteResult) else SuiteResult.load(reference)
            apply_reference(result, ref, str(reference) if not isinstance(reference, SuiteResult) else "reference")
        elif plan.suite == "muse":
            from asu.metrics.muse import apply_muse_reference

            apply_muse_reference(result, reference)
        else:
            raise UsageError("--reference applies to the tofu, asu-paper and muse suites only (WMDP needs none)")
    return result, reused


def format_table(result: SuiteResult) -> str:
    """Aggregates as an aligned two-column table, then what was not computed and why."""
    width = max((len(k) for k in result.aggregates), default=10)
    lines = [f"suite: {result.suite}   ({result.info.get('sets', '')})".rstrip()]
    lines += [f"  {k:<{width}}  {v:10.4f}" for k, v in result.aggregates.items()]
    lines += [f"  {k:<{width}}  not computed: {why}" for k, why in result.not_computed.items()]
    if note := result.info.get("note"):
        lines.append(f"note: {note}")
    return "\n".join(lines)


__all__ = ["SUITES", "EvalPlan", "Suite", "default_store_dir", "evaluate_model", "format_table", "work_dir"]
