"""The TOFU suite, as the reference framework (open-unlearning, commit d3d7cf9) computes it.

Passes (all batched, one ``asu.metrics.passes.score_prompts`` call, each question's prompt run once):
- teacher forcing of every answer variant (original, paraphrased, perturbed) of every set, and of the holdout
  answers (MIA non-members);
- greedy answers to the questions of the forget, retain, Real Authors and World Facts sets.

Conventions (metrics.md §2-3): probabilities are length-normalised, exp(-mean answer-token NLL) over answer + EOS;
the truth ratio uses the paraphrased answer as "correct" on forget and retain, the original answer on Real Authors
and World Facts; ROUGE is ROUGE-L *recall* with the Porter stemmer; extraction strength and exact memorisation drop
the final EOS target; MIA scores are taken on the answer tokens of the forget and holdout items, AUC with
forget = 0 and holdout = 1. Forget quality and privleak need a reference (the retain model's result on the same
sets): ``apply_reference`` adds them, and without one they are listed under ``not_computed``, never defaulted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from asu.data import PromptFormat
from asu.errors import UsageError
from asu.hashing import sha256_text
from asu.metrics import formulas as f
from asu.metrics.mia import ATTACKS, PRIVLEAK_ATTACK, mia_aucs
from asu.metrics.passes import TokenStats, decode, encode_pairs, question_prompts, score_prompts
from asu.metrics.results import SuiteResult
from asu.metrics.tofu_data import SET_NAMES, EvalDataError, TofuSets

logger = logging.getLogger(__name__)

QA_SETS = ("forget", "retain", "real_authors", "world_facts")
PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}
#: The 9 numbers whose harmonic mean is TOFU's model utility (configs/eval/tofu_metrics/model_utility.yaml).
MODEL_UTILITY_KEYS = (
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
)  # fmt: skip


@dataclass(frozen=True)
class EvalSettings:
    """Knobs of an evaluation; every one of them is part of the result's cache key.

    ``max_new_tokens``: greedy tokens per answer (TOFU: 200). ``max_length``: tokens of prompt + answer in the
    teacher-forced passes. ``batch_size``: sequences per teacher-forced batch (and prompts per prompt pass).
    ``generation_batch_size``: questions decoded together (larger pays off: ended rows leave the batch).
    ``mia_k``: the k of Min-K% and Min-K%++. ``limit``: first N items of every set (None = all).
    ``keep_generations``: store generated text per item; off for sensitive forget requests (hashes kept).
    """

    prompt_format: PromptFormat = "chat_template"
    max_new_tokens: int = 200
    max_length: int = 512
    batch_size: int = 32
    generation_batch_size: int = 64
    mia_k: float = 0.4
    limit: int | None = None
    keep_generations: bool = True

    def __post_init__(self) -> None:
        if self.prompt_format not in ("chat_template", "plain"):
            raise UsageError(f"prompt_format must be 'chat_template' or 'plain', got {self.prompt_format!r}")
        if min(self.max_new_tokens, self.max_length, self.batch_size, self.generation_batch_size) < 1:
            raise UsageError("max_new_tokens, max_length, batch_size and generation_batch_size must be >= 1")
        if not 0 < self.mia_k <= 1:
            raise UsageError(f"mia_k is a fraction of tokens in (0, 1], got {self.mia_k}")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"limit must be >= 1 or None (every item), got {self.limit}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SetScores:
    """Raw per-item figures of one QA set: average losses of each answer variant and the greedy generation."""

    answer_loss: list[float]
    paraphrased_loss: list[float] | None
    perturbed_loss: list[list[float]]
    answer_stats: list[TokenStats]
    generations: list[str]
    generation_ids: list[list[int]]


def _encode_set(tokenizer, name: str, items: list[dict], settings: EvalSettings):
    """Every answer variant of ``items`` encoded behind its question, and its owner (item index, variant).

    Variant -1 is the original answer, -2 the paraphrased one, k >= 0 the k-th perturbed one.
    """
    questions, answers, owners = [], [], []
    for i, item in enumerate(items):
        variants = [(-1, item["answer"])]
        if "paraphrased_answer" in item:
            variants.append((-2, item["paraphrased_answer"]))
        variants += list(enumerate(item["perturbed_answer"]))
        for variant, answer in variants:
            questions.append(item["question"])
            answers.append(answer)
            owners.append((i, variant))
    encoded = encode_pairs(
        tokenizer, questions, answers, prompt_format=settings.prompt_format, max_length=settings.max_length,
        source=f"TOFU {name} set",
    )
    return encoded, owners


def _set_scores(items: list[dict], owners, stats: list[TokenStats], generations: list[list[int]],
                texts: list[str]) -> SetScores:
    """The raw per-item figures of one QA set from its teacher-forced statistics and greedy answers."""
    answer_loss = [math.nan] * len(items)
    answer_stats: list[TokenStats | None] = [None] * len(items)
    paraphrased = [math.nan] * len(items) if "paraphrased_answer" in items[0] else None
    perturbed: list[list[float]] = [[] for _ in items]
    for (i, variant), st in zip(owners, stats, strict=True):
        if variant == -1:
            answer_loss[i], answer_stats[i] = st.avg_loss, st
        elif variant == -2:
            paraphrased[i] = st.avg_loss  # type: ignore[index]
        else:
            perturbed[i].append(st.avg_loss)
    return SetScores(answer_loss, paraphrased, perturbed, answer_stats, texts, generations)  # type: ignore[arg-type]


@dataclass
class TofuScores:
    """Raw figures of every TOFU set (what both the TOFU and the ASU-paper suites are computed from)."""

    sets: dict[str, SetScores]
    holdout_stats: list[TokenStats]


def score_tofu(model, tokenizer, sets: TofuSets, settings: EvalSettings) -> TofuScores:
    """Run the batched passes of the TOFU evaluation on ``sets`` (already limited).

    One ``score_prompts`` call: every answer variant of every QA set and the holdout answers teacher-forced, the
    QA questions answered greedily, each question's prompt run once for all of it.
    """
    encoded, spans = [], {}
    for name in QA_SETS:
        enc, owners = _encode_set(tokenizer, name, getattr(sets, name), settings)
        spans[name] = (len(encoded), owners)
        encoded += enc
    holdout = encode_pairs(
        tokenizer, [h["question"] for h in sets.holdout], [h["answer"] for h in sets.holdout],
        prompt_format=settings.prompt_format, max_length=settings.max_length, source="TOFU holdout set",
    )
    questions = [item["question"] for name in QA_SETS for item in getattr(sets, name)]
    logger.info("TOFU: %d teacher-forced answers, greedy answers to %d questions (max %d new tokens)",
                len(encoded) + len(holdout), len(questions), settings.max_new_tokens)
    stats, ids = score_prompts(
        model, encoded + holdout, question_prompts(tokenizer, questions, settings.prompt_format),
        pad_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size, generation_batch_size=settings.generation_batch_size,
    )
    texts = decode(tokenizer, ids)
    scores, first = {}, 0
    for name in QA_SETS:
        items = getattr(sets, name)
        start, owners = spans[name]
        scores[name] = _set_scores(items, owners, stats[start : start + len(owners)], ids[first : first + len(items)],
                                   texts[first : first + len(items)])
        first += len(items)
    return TofuScores(scores, stats[len(encoded) :])


def rouge_recalls(generations: list[str], references: list[str]) -> list[dict[str, float]]:
    """ROUGE-1 and ROUGE-L recall of each generation (rouge-score, Porter stemmer), as the TOFU suite stores them."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    out = []
    for gen, ref in zip(generations, references, strict=True):
        s = scorer.score(ref, gen)
        out.append({"rouge1_recall": s["rouge1"].recall, "rougeL_recall": s["rougeL"].recall})
    return out


def _text_record(text: str, keep: bool) -> dict:
    return {"generation": text} if keep else {"generation_sha256": sha256_text(text)}


def _mean(values) -> float:
    return float(np.mean(values))


def tofu_result(scores: TofuScores, sets: TofuSets, settings: EvalSettings, suite: str = "tofu") -> SuiteResult:
    """The TOFU figures (OU metric names) from the raw passes; reference-dependent ones are left not computed."""
    result = SuiteResult(suite=suite)
    agg, per = result.aggregates, result.per_item
    for name in QA_SETS:
        s, items, p = scores.sets[name], getattr(sets, name), PREFIX[name]
        probs = [f.probability(v) for v in s.answer_loss]
        rouge = rouge_recalls(s.generations, [it["answer"] for it in items])
        per[f"{p}_Q_A_ROUGE"] = [
            {**r, **_text_record(g, settings.keep_generations)} for r, g in zip(rouge, s.generations, strict=True)
        ]
        agg[f"{p}_Q_A_ROUGE"] = _mean([r["rougeL_recall"] for r in rouge])
        per[f"{p}_token_entropy"] = [f.token_entropy(ids) for ids in s.generation_ids]
        agg[f"{p}_token_entropy"] = _mean(per[f"{p}_token_entropy"])
        per[f"{p}_Q_A_PERT_Prob"] = [_mean([f.probability(v) for v in pert]) for pert in s.perturbed_loss]
        agg[f"{p}_Q_A_PERT_Prob"] = _mean(per[f"{p}_Q_A_PERT_Prob"])
        if s.paraphrased_loss is not None:  # forget and retain: correct = paraphrased answer
            correct = s.paraphrased_loss
            per[f"{p}_Q_A_PARA_Prob"] = [f.probability(v) for v in correct]
            agg[f"{p}_Q_A_PARA_Prob"] = _mean(per[f"{p}_Q_A_PARA_Prob"])
            per[f"{p}_Q_A_Prob"] = probs
            agg[f"{p}_Q_A_Prob"] = _mean(probs)
        else:  # Real Authors / World Facts: correct = original answer, probability normalised over the options
            correct = s.answer_loss
            pairs = zip(s.answer_loss, s.perturbed_loss, strict=True)
            per[f"{p}_Q_A_Prob_normalised"] = [f.normalised_option_probability(a, pert) for a, pert in pairs]
            agg[f"{p}_Q_A_Prob_normalised"] = _mean(per[f"{p}_Q_A_Prob_normalised"])
            per[f"{p}_Q_A_Prob"] = probs
            agg[f"{p}_Q_A_Prob"] = _mean(probs)
        ratios = [f.truth_ratio(c, pert) for c, pert in zip(correct, s.perturbed_loss, strict=True)]
        if name == "forget":
            per["forget_truth_ratio"] = ratios
            agg["forget_truth_ratio"] = f.aggregate_truth_ratios(ratios, "closer_to_1_better")
        else:
            per[f"{p}_Truth_Ratio"] = ratios
            agg[f"{p}_Truth_Ratio"] = f.aggregate_truth_ratios(ratios, "true_better")
    forget = scores.sets["forget"]
    # ES and EM drop the final EOS target (metrics.md §2).
    targets = [(s.predictions[:-1].tolist(), s.labels[:-1].tolist()) for s in forget.answer_stats]
    per["extraction_strength"] = [f.extraction_strength(pred, lab) for pred, lab in targets]
    per["exact_memorization"] = [f.exact_memorization(pred, lab) for pred, lab in targets]
    agg["extraction_strength"] = _mean(per["extraction_strength"])
    agg["exact_memorization"] = _mean(per["exact_memorization"])
    per["forget_repetition"] = [f.repetition_rate(g) for g in forget.generations]
    agg["forget_repetition"] = _mean(per["forget_repetition"])
    aucs, mia_scores = mia_aucs(
        forget.answer_stats, [it["answer"] for it in sets.forget],
        scores.holdout_stats, [it["answer"] for it in sets.holdout], k=settings.mia_k,
    )
    for attack in ATTACKS:
        agg[f"mia_{attack}"] = aucs[attack]
        per[f"mia_{attack}"] = {"forget": mia_scores["forget"][attack], "holdout": mia_scores["holdout"][attack]}
    agg["model_utility"] = f.harmonic_mean([agg[k] for k in MODEL_UTILITY_KEYS])
    result.not_computed.update(
        forget_quality="no reference result given: pass the retain model's TOFU result (`--reference FILE`)",
        privleak="no reference result given: pass the retain model's TOFU result (`--reference FILE`)",
    )
    result.info.update(
        sets=sets.name,
        digests=sets.digests(),
        item_counts={n: len(getattr(sets, n)) for n in SET_NAMES},
        settings=settings.to_dict(),
    )
    return result


def apply_fluency(result: SuiteResult, scores: TofuScores, questions: list[str], judge=None) -> SuiteResult:
    """Add the fluency component: ``forget_fluent_share`` and ``forget_refusal_share`` of the greedy forget answers,
    judged by ``asu.fluency`` with the likelihood under the original model (``judge``, a ``FluencyJudge``).

    Without a judge the component is listed as not computed: a model's likelihood of its own greedy answers is
    high by construction, so only the model before unlearning can judge them.
    """
    if judge is None:
        result.not_computed["forget_fluency"] = (
            "no fluency model given: pass the model before unlearning (`--fluency-model NAME|DIR`)")
        return result
    from asu.fluency import FluencySummary

    verdicts = judge.judge(questions, scores.sets["forget"].generations)
    summary = FluencySummary.of(verdicts)
    result.per_item["forget_fluent"] = [v.fluent for v in verdicts]
    result.per_item["forget_refusal"] = [v.refusal for v in verdicts]
    result.aggregates["forget_fluent_share"] = summary.fluent_share
    result.aggregates["forget_refusal_share"] = summary.refusal_share
    result.not_computed.pop("forget_fluency", None)
    return result


def apply_reference(result: SuiteResult, reference: SuiteResult, source: str = "reference result") -> SuiteResult:
    """Add forget quality (KS test of per-item forget truth ratios) and privleak (Min-K% AUC) against ``reference``.

    ``reference`` must be a TOFU or ASU-paper result of the same forget and holdout items (the retain model's);
    anything else is an error naming ``source`` and the fix.
    """
    if reference.suite not in ("tofu", "asu-paper"):
        raise EvalDataError(
            f"{source}: a {reference.suite!r} result cannot serve as TOFU reference; pass the retain model's "
            "`asu eval --suite tofu` result"
        )
    for name in ("forget", "holdout"):
        mine, theirs = result.info["digests"][name], reference.info.get("digests", {}).get(name)
        if mine != theirs:
            mine_n = result.info["item_counts"][name]
            theirs_n = reference.info.get("item_counts", {}).get(name)
            raise EvalDataError(
                f"{source}: its {name} set differs from this evaluation's (digest {theirs} with {theirs_n} items vs "
                f"{mine} with {mine_n} items, sets {reference.info.get('sets')!r} vs {result.info['sets']!r}); "
                "evaluate the retain model on the same split and limit"
            )
    ref_tr = reference.per_item.get("forget_truth_ratio")
    if not ref_tr:
        raise EvalDataError(f"{source}: no per-item forget_truth_ratio; re-run `asu eval --suite tofu` on the model")
    result.aggregates["forget_quality"] = f.forget_quality(result.per_item["forget_truth_ratio"], ref_tr)
    result.not_computed.pop("forget_quality", None)
    ref_auc = reference.aggregates[f"mia_{PRIVLEAK_ATTACK}"]
    if ref_auc >= 1.0:  # (1 - AUC_ret) = 0 divides privleak by zero: say so rather than invent a number
        result.not_computed["privleak"] = (
            f"{source}: the reference model's Min-K% AUC is 1 (its forget items look fully memorised), which leaves "
            "privleak undefined; use a reference model that never saw the forget set"
        )
    else:
        result.aggregates["privleak"] = f.privleak(result.aggregates[f"mia_{PRIVLEAK_ATTACK}"], ref_auc)
        result.not_computed.pop("privleak", None)
    result.info["reference"] = {"source": str(source), "sets": reference.info.get("sets")}
    return result


def evaluate_tofu(
    model,
    tokenizer,
    sets: TofuSets,
    settings: EvalSettings | None = None,
    *,
    reference: SuiteResult | str | Path | None = None,
) -> SuiteResult:
    """The full TOFU suite on ``sets``; forget quality and privleak when ``reference`` (result or file) is given."""
    settings = settings or EvalSettings()
    sets = sets.limited(settings.limit)
    result = tofu_result(score_tofu(model, tokenizer, sets, settings), sets, settings)
    if reference is not None:
        source = reference if not isinstance(reference, SuiteResult) else "reference result"
        ref = reference if isinstance(reference, SuiteResult) else SuiteResult.load(reference)
        apply_reference(result, ref, str(source))
    return result


__all__ = [
    "MODEL_UTILITY_KEYS",
    "EvalSettings",
    "TofuScores",
    "apply_fluency",
    "apply_reference",
    "evaluate_tofu",
    "rouge_recalls",
    "score_tofu",
    "tofu_result",
]
