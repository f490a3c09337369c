"""Quick before/after figures of a round: greedy answers, ROUGE-L recall, answer probability, repetition.

These are the TOFU conventions (ROUGE-L *recall* of the greedy answer with stemming, up to 200 new tokens;
probability = exp(-mean answer-token NLL)). The full evaluation suite (truth ratio, forget quality, MU/FE,
MUSE, WMDP) builds on the same batched passes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from asu.data import QAItem, collate, encode_qa, item_format
from asu.errors import UsageError
from asu.losses import IGNORE_INDEX, sequence_log_likelihood
from asu.metrics.formulas import repetition_rate
from asu.metrics.passes import decode, encode_pairs, generate, question_prompts, score_prompts

logger = logging.getLogger(__name__)


def generate_answers(
    model,
    tokenizer,
    questions: Sequence[str],
    *,
    prompt_format: str | Sequence[str] = "chat_template",
    max_new_tokens: int = 200,
    batch_size: int = 32,
) -> list[str]:
    """Greedy answers (``prompt_format``: one for all, or one per question), batched with left padding and the KV
    cache (``asu.metrics.passes.generate``), decoded."""
    prompts = question_prompts(tokenizer, list(questions), prompt_format)
    return decode(tokenizer, generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size))


@torch.no_grad()
def answer_nll(
    model,
    tokenizer,
    items: Sequence[QAItem],
    *,
    prompt_format: str = "chat_template",
    max_length: int = 500,
    batch_size: int = 32,
) -> list[float]:
    """Mean answer-token NLL (nats/token, answer + EOS) of each item under teacher forcing."""
    model.eval()
    values: list[float] = []
    for start in range(0, len(items), batch_size):
        chunk = [encode_qa(tokenizer, it, max_length, prompt_format) for it in items[start : start + batch_size]]
        batch = {k: v.to(model.device) for k, v in collate(chunk, tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # One pass for the whole batch: summed log-likelihood over each row's answer tokens / their count.
        counts = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(1).clamp(min=1)
        values += (-sequence_log_likelihood(logits, batch["labels"]) / counts).tolist()
    return values


def answers_and_nlls(
    model,
    tokenizer,
    items: Sequence[QAItem],
    *,
    prompt_format: str = "chat_template",
    max_new_tokens: int = 200,
    max_length: int = 500,
    batch_size: int = 64,
) -> tuple[list[str], list[float]]:
    """Greedy answers (decoded) and mean answer-token NLLs (nats/token) of ``items``, from one prompt pass each.

    ``generate_answers`` and ``answer_nll`` give the same figures (up to float rounding) but run every prompt twice.
    An item's own ``prompt_format`` (a passage's continuation probe) wins over ``prompt_format``.
    """
    questions = [it["question"] for it in items]
    formats = [item_format(it, prompt_format) for it in items]
    encoded = encode_pairs(tokenizer, questions, [it["answer"] for it in items], prompt_format=formats,
                           max_length=max_length, source="QA set")
    stats, ids = score_prompts(
        model, encoded, question_prompts(tokenizer, questions, formats), pad_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, max_new_tokens=max_new_tokens, generation_batch_size=batch_size,
    )
    return decode(tokenizer, ids), [st.avg_loss for st in stats]


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L recall of each prediction against its reference (rouge-score, Porter stemming)."""
    from rouge_score import rouge_scorer  # imported here: only evaluation needs it

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, pred)["rougeL"].recall for pred, ref in zip(predictions, references, strict=True)]


def fluency_verdicts(answers: Sequence[str], questions: Sequence[str] | None = None, judge=None,
                     formats: Sequence[str] | None = None, references: Sequence[str | None] | None = None) -> list:
    """``asu.fluency`` verdicts of ``answers``: the full measure with a ``FluencyJudge`` of the original model (and
    the ``questions``; ``formats``: each question's prompt format, default the judge's; ``references``: a passage's
    true continuation per row, see ``FluencyJudge.judge``), else the surface checks alone (no likelihood; ``score``
    None)."""
    from asu.fluency import FluencyVerdict, is_refusal, surface_failures

    if judge is not None:
        if questions is None:
            raise UsageError("a FluencyJudge scores answers given their questions: pass questions=")
        return judge.judge(list(questions), list(answers), formats=formats, references=references)
    out = []
    for answer in answers:
        failed = tuple(surface_failures(answer))
        out.append(FluencyVerdict(not failed, None, is_refusal(answer), failed))
    return out


@dataclass(frozen=True)
class QAScores:
    """Mean figures over a QA set plus the per-item generations (for samples and audits)."""

    rouge_l_recall: float
    probability: float
    fluent_share: float
    answers: list[str]
    per_item_rouge: list[float]
    refusal_share: float = 0.0
    fact_recall: float = float("nan")  # mean asu.search.tokens.fact_recall (ROUGE-L recall where it is undefined)

    def summary(self) -> dict[str, float]:
        return {
            "rouge_l_recall": self.rouge_l_recall,
            "probability": self.probability,
            "fluent_share": self.fluent_share,
            "refusal_share": self.refusal_share,
            "fact_recall": self.fact_recall,
        }


def score_qa(
    model,
    tokenizer,
    items: Sequence[QAItem],
    *,
    prompt_format: str = "chat_template",
    max_new_tokens: int = 200,
    batch_size: int = 32,
    judge=None,
) -> QAScores:
    """Greedy-answer ROUGE-L recall and fact recall, mean answer probability exp(-NLL), fluent and refusal shares
    over ``items``. Fact recall (``asu.search.tokens.fact_recall``): the share of the reference's facts (its content
    words that the question lacks) that the answer states; an item whose reference adds none counts its ROUGE-L.

    ``judge``: a ``asu.fluency.FluencyJudge`` of the original model (without it: surface checks only).
    """
    from asu.search.scores import score_items  # the one per-item scorer (one prompt pass per question)

    per_item = score_items(model, tokenizer, {"items": items}, prompt_format=prompt_format,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge)["items"]
    means = per_item.mean()
    return QAScores(
        rouge_l_recall=means.rouge_l_recall,
        probability=means.probability,
        fluent_share=means.fluent_share,
        answers=per_item.answers,
        per_item_rouge=per_item.rouge_l_recall,
        refusal_share=means.refusal_share,
        fact_recall=means.fact_recall,
    )


__all__ = [
    "QAScores",
    "answer_nll",
    "answers_and_nlls",
    "fluency_verdicts",
    "generate_answers",
    "repetition_rate",
    "rouge_l_recall",
    "score_qa",
]
