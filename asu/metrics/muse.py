"""The MUSE-News suite (Shi et al. 2024, arXiv:2407.06460) as the reference framework scores it.

- **VerbMem** (``forget_verbmem_ROUGE``): greedy 128-token continuation of a forget-passage prefix, ROUGE-L F1 against
  the true continuation ``gt`` (whole ``gt``, as open-unlearning; MUSE's repo first cuts ``gt`` to 128 tokens).
- **KnowMem** (``forget_knowmem_ROUGE``, ``retain_knowmem_ROUGE``): MUSE's few-shot prompt (``knowmem_prompt``),
  greedy 32 tokens, cut at a blank line / "Question" (``cut_knowmem_answer``), ROUGE-L F1 against the answer.
- **PrivLeak** (``privleak``, %): Min-K% (k = 0.4) AUC of forget vs holdout text chunks (``mia_min_k``; forget = 0,
  holdout = 1) relative to the retrained model's AUC: ((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref) x 100. The reference
  AUC comes from the retrained model's MUSE result or an explicit number; without one privleak is listed under
  ``not_computed``, never defaulted. MUSE's own AUC table uses flipped labels: AUC here = 1 - AUC there.

ROUGE is rouge-score's F1 with the Porter stemmer (open-unlearning); MUSE's repo uses no stemmer (``stemmer=False``).
Sequences are fitted into ``max_length`` tokens (default: the model's position limit, at most 2048 as
open-unlearning): prompts are cut from the left (a leading BOS is kept) so that prompt + new tokens fit; privleak
chunks are cut from the right. The result's ``info`` counts the prompts that were cut.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from asu.errors import UsageError
from asu.metrics.datasets_muse import MUSE_FILES, MuseData, load_muse_news
from asu.metrics.formulas import privleak as privleak_formula
from asu.metrics.mia import ATTACKS, PRIVLEAK_ATTACK, mia_aucs
from asu.metrics.passes import EvaluationDataError, encode_texts, generate, token_stats
from asu.metrics.results import SuiteResult

logger = logging.getLogger(__name__)

SUITE = "muse"
VERBMEM_MAX_NEW_TOKENS = 128
KNOWMEM_MAX_NEW_TOKENS = 32
KNOWMEM_STOPS = ("\n\n", "\nQuestion", "Question:")
MIN_K = 0.4
MAX_LENGTH_CAP = 2048  # open-unlearning's max_length for the MUSE sets
_PRIVLEAK_SETS = ("privleak_forget", "privleak_holdout")


def rouge_l_f1(predictions: Sequence[str], references: Sequence[str], *, stemmer: bool = True) -> list[float]:
    """ROUGE-L F1 (rouge-score) of each prediction against its reference; Porter stemming unless ``stemmer=False``."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemmer)
    return [
        float(scorer.score(ref, pred)["rougeL"].fmeasure) for pred, ref in zip(predictions, references, strict=True)
    ]


def knowmem_prompt(icl: Sequence[dict], question: str) -> str:
    """MUSE's few-shot prompt: ``Question: q\\nAnswer: a\\n\\n`` per example, then ``Question: q\\nAnswer: ``."""
    shots = "".join(f"Question: {ex['question']}\nAnswer: {ex['answer']}\n\n" for ex in icl)
    return shots + f"Question: {question}\nAnswer: "


def cut_knowmem_answer(text: str) -> str:
    """The generation up to the first blank line, "\\nQuestion" or "Question:" (MUSE's stop strings), stripped."""
    for stop in KNOWMEM_STOPS:
        text = text.split(stop)[0]
    return text.strip()


def model_context_length(model) -> int | None:
    """The model's position limit from its config (``max_position_embeddings``, ``n_positions``), or None."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_max_length(model, max_length: int | None, cap: int | None = MAX_LENGTH_CAP) -> int:
    """``max_length`` checked against the model's position limit, or that limit (at most ``cap``) when None."""
    limit = model_context_length(model)
    if max_length is None:
        if limit is None:
            raise UsageError("the model config names no position limit (max_position_embeddings); pass max_length")
        return min(limit, cap) if cap else limit
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise UsageError(f"max_length must be an integer >= 2 (tokens), got {max_length!r}")
    if limit is not None and max_length > limit:
        raise UsageError(f"max_length={max_length} exceeds the model's {limit} positions; pass at most {limit}")
    return max_length


def fit_left(ids: list[int], budget: int, bos_id: int | None) -> tuple[list[int], bool]:
    """``ids`` cut from the left to ``budget`` tokens (a leading BOS stays first); returns (ids, whether cut)."""
    if len(ids) <= budget:
        return ids, False
    keep = 1 if bos_id is not None and ids and ids[0] == bos_id else 0
    return ids[:keep] + ids[len(ids) - (budget - keep) :], True


def _continue(model, tokenizer, prompts: list[str], max_new_tokens: int, max_length: int, batch_size: int):
    """Greedy continuations (decoded, special tokens dropped, not stripped) and how many prompts were cut."""
    budget = max_length - max_new_tokens
    if budget < 1:
        raise UsageError(f"max_length={max_length} leaves no room for a prompt before {max_new_tokens} new tokens")
    fitted = [
        fit_left(tokenizer(p, add_special_tokens=True)["input_ids"], budget, tokenizer.bos_token_id) for p in prompts
    ]
    ids = generate(model, tokenizer, [f[0] for f in fitted], max_new_tokens=max_new_tokens, batch_size=batch_size)
    texts = [tokenizer.decode(seq, skip_special_tokens=True) for seq in ids]
    return texts, sum(cut for _, cut in fitted)


def _scored(scores: list[float], generations: list[str]) -> list[dict]:
    return [{"rougeL_f1": s, "generation": g} for s, g in zip(scores, generations, strict=True)]


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def reference_auc(reference: SuiteResult | float | str | Path, data: MuseData) -> tuple[float, dict]:
    """The reference (retrained) model's Min-K% AUC and a record of where it came from.

    ``reference``: a MUSE ``SuiteResult`` (or the path of its JSON file) on the same privleak items, or the AUC
    itself in this module's convention (forget = 0, holdout = 1), in [0, 1).
    """
    if isinstance(reference, bool):
        raise TypeError("reference must be a MUSE result, its file, or an AUC number, not a bool")
    if isinstance(reference, int | float):
        auc = float(reference)
        if math.isnan(auc) or not 0.0 <= auc < 1.0:
            raise UsageError(f"reference AUC must be in [0, 1) (forget = 0, holdout = 1 labels), got {reference!r}")
        return auc, {"source": "explicit AUC", "auc": auc}
    source = "reference result"
    if isinstance(reference, str | Path):
        source, reference = str(reference), SuiteResult.load(reference)
    if not isinstance(reference, SuiteResult):
        raise TypeError(f"reference must be a SuiteResult, a result file or an AUC, got {type(reference).__name__}")
    if reference.suite != SUITE:
        raise EvaluationDataError(
            f"{source}: a {reference.suite!r} result cannot serve as the MUSE privleak reference; pass the retrained "
            "model's MUSE result (evaluate_muse / `asu eval --suite muse`) or its Min-K% AUC"
        )
    counts, files = reference.info.get("item_counts", {}), reference.info.get("data_files", {})
    for name in _PRIVLEAK_SETS:
        rel = MUSE_FILES[name]
        if counts.get(name) != data.item_counts[name] or files.get(rel) != data.files[rel]:
            raise EvaluationDataError(
                f"{source}: its {rel} set differs from this evaluation's ({counts.get(name)} items, sha256 "
                f"{str(files.get(rel))[:12]} vs {data.item_counts[name]} items, sha256 {data.files[rel][:12]}); "
                "evaluate the retrained model on the same MUSE files with the same limit"
            )
    if reference.info.get("mia_k", MIN_K) != MIN_K or f"mia_{PRIVLEAK_ATTACK}" not in reference.aggregates:
        raise EvaluationDataError(f"{source}: no Min-K% (k = {MIN_K}) AUC 'mia_min_k'; re-run the MUSE suite on it")
    auc = float(reference.aggregates[f"mia_{PRIVLEAK_ATTACK}"])
    return auc, {"source": source, "auc": auc, "model": reference.info.get("model")}


def _privleak_aucs(model, tokenizer, data: MuseData, max_length: int, batch_size: int):
    stats, texts = {}, {}
    for name in _PRIVLEAK_SETS:
        encoded = encode_texts(tokenizer, data.sets[name], max_length=max_length, source=MUSE_FILES[name])
        stats[name] = token_stats(model, encoded, pad_id=tokenizer.pad_token_id, batch_size=batch_size)
        # ZLib normalises by the compressed size of the text actually scored (chunks are cut to max_length).
        texts[name] = [tokenizer.decode(e.input_ids, skip_special_tokens=True) for e in encoded]
    return mia_aucs(
        stats["privleak_forget"],
        texts["privleak_forget"],
        stats["privleak_holdout"],
        texts["privleak_holdout"],
        k=MIN_K,
    )


def _verbmem(model, tokenizer, data: MuseData, per: dict, max_length: int, batch_size: int, stemmer: bool) -> int:
    """Per-item VerbMem into ``per``; returns how many prompts were cut."""
    verb = data.sets["verbmem_forget"]
    prompts = [d["prompt"] for d in verb]
    gens, cut = _continue(model, tokenizer, prompts, VERBMEM_MAX_NEW_TOKENS, max_length, batch_size)
    gens = [g.strip() for g in gens]
    per["forget_verbmem_ROUGE"] = _scored(rouge_l_f1(gens, [d["gt"] for d in verb], stemmer=stemmer), gens)
    return cut


def _knowmem(model, tokenizer, data: MuseData, per: dict, max_length: int, batch_size: int, stemmer: bool) -> int:
    """Per-item KnowMem of the forget and retain QA into ``per`` (one generation pass); returns prompts cut."""
    qa = {s: data.sets[f"knowmem_{s}"] for s in ("forget", "retain")}
    prompts = [knowmem_prompt(data.sets[f"knowmem_{s}_icl"], d["question"]) for s in qa for d in qa[s]]
    answers, cut = _continue(model, tokenizer, prompts, KNOWMEM_MAX_NEW_TOKENS, max_length, batch_size)
    answers = [cut_knowmem_answer(a) for a in answers]
    n_forget = len(qa["forget"])
    for s, gen in (("forget", answers[:n_forget]), ("retain", answers[n_forget:])):
        per[f"{s}_knowmem_ROUGE"] = _scored(rouge_l_f1(gen, [d["answer"] for d in qa[s]], stemmer=stemmer), gen)
    return cut


def evaluate_muse(
    model,
    tokenizer,
    *,
    data_dir: str | Path | None = None,
    reference: SuiteResult | float | str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    stemmer: bool = True,
) -> SuiteResult:
    """VerbMem, KnowMem (forget, retain), MIA AUCs and PrivLeak of ``model`` on the MUSE-News files.

    ``data_dir``: a folder in the MUSE-News layout (default: the vendored copy). ``reference``: see
    ``reference_auc``; None lists privleak under ``not_computed``. ``limit``: first N items of every evaluated set
    (in-context examples stay whole). ``max_length``: token budget per sequence (see the module docstring).
    Aggregates are 0-1 except ``privleak`` (%); ``per_item`` keeps every score, generations included.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    data = load_muse_news(data_dir, limit)
    ref = reference_auc(reference, data) if reference is not None else None  # fail before any model pass
    max_length = resolve_max_length(model, max_length)
    result = SuiteResult(suite=SUITE)
    agg, per = result.aggregates, result.per_item

    cut = {
        "verbmem": _verbmem(model, tokenizer, data, per, max_length, batch_size, stemmer),
        "knowmem": _knowmem(model, tokenizer, data, per, max_length, batch_size, stemmer),
    }
    for key in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE"):
        agg[key] = _mean([r["rougeL_f1"] for r in per[key]])

    aucs, scores = _privleak_aucs(model, tokenizer, data, max_length, batch_size)
    for attack in ATTACKS:
        agg[f"mia_{attack}"] = aucs[attack]
        per[f"mia_{attack}"] = {"forget": scores["forget"][attack], "holdout": scores["holdout"][attack]}
    if ref is None:
        result.not_computed["privleak"] = (
            "no reference given: pass the retrained model's MUSE result (file) or its Min-K% AUC as reference"
        )
    else:
        agg["privleak"] = privleak_formula(aucs[PRIVLEAK_ATTACK], ref[0])
        result.info["reference"] = ref[1]

    result.info.update(
        data_folder=data.folder,
        data_files=data.files,
        data_sha256=data.digest,
        item_counts=data.item_counts,
        limit=limit,
        max_length=max_length,
        mia_k=MIN_K,
        rouge=f"rougeL F1, stemmer={stemmer}",
        max_new_tokens={"verbmem": VERBMEM_MAX_NEW_TOKENS, "knowmem": KNOWMEM_MAX_NEW_TOKENS},
        truncated_prompts=cut,
        model=getattr(model, "name_or_path", None) or None,
    )
    logger.info(
        "MUSE: %s items, %d verbmem and %d knowmem prompts cut to fit max_length=%d",
        data.item_counts,
        cut["verbmem"],
        cut["knowmem"],
        max_length,
    )
    return result


def apply_muse_reference(result: SuiteResult, reference: SuiteResult | float | str | Path) -> SuiteResult:
    """Add privleak to a stored MUSE ``result`` against ``reference`` (see ``reference_auc``), in place."""
    data = load_muse_news(result.info.get("data_folder"), result.info.get("limit"))
    auc, record = reference_auc(reference, data)
    result.aggregates["privleak"] = privleak_formula(result.aggregates[f"mia_{PRIVLEAK_ATTACK}"], auc)
    result.not_computed.pop("privleak", None)
    result.info["reference"] = record
    return result


__all__ = [
    "KNOWMEM_MAX_NEW_TOKENS",
    "KNOWMEM_STOPS",
    "apply_muse_reference",
    "VERBMEM_MAX_NEW_TOKENS",
    "cut_knowmem_answer",
    "evaluate_muse",
    "fit_left",
    "knowmem_prompt",
    "model_context_length",
    "reference_auc",
    "resolve_max_length",
    "rouge_l_f1",
]
