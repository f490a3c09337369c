"""Validation figures of a model on a QA set, and the two objectives of the temperature search.

Per item: the greedy answer (``asu.evaluation.generate_answers``), its ROUGE-L recall against the reference,
its normalised token entropy (``asu.metrics.formulas.token_entropy`` on the re-tokenised answer), its share of
repeated word 3-grams and whether it is fluent (non-empty, no loop: ``asu.evaluation.is_fluent``), and the
teacher-forced answer probability exp(-mean answer NLL). The set figures are means over items (0-1 scale).

Objectives, in the spirit of the closer-look metrics the ASU paper reports (method.md §8), restricted to what
needs no external model (no NLI, no sentence embeddings, no perturbed answers):

- **forget efficacy** (FE, forget items, higher = more forgotten) = harmonic mean of
  (1 - ROUGE-L recall, 1 - probability, token entropy). Entropy is in FE, as in the paper, so that an answer
  that "forgets" by looping or going empty does not score well;
- **retain utility** (RU, retain items, higher = better kept) = harmonic mean of (ROUGE-L recall, probability).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from asu.data import QAItem
from asu.evaluation import answer_nll, generate_answers, is_fluent, repetition_rate, rouge_l_recall
from asu.metrics.formulas import harmonic_mean, token_entropy


@dataclass(frozen=True)
class SetFigures:
    """Mean figures of a model on one QA set (all in [0, 1] except ``nll``, in nats per answer token)."""

    items: int
    rouge_l_recall: float
    probability: float
    nll: float
    token_entropy: float
    repetition: float
    fluent_share: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def forget_efficacy(figures: SetFigures) -> float:
    """hmean(1 - ROUGE-L recall, 1 - probability, token entropy) of a forget set; 0 = nothing forgotten."""
    return harmonic_mean(
        [max(0.0, 1.0 - figures.rouge_l_recall), max(0.0, 1.0 - figures.probability), figures.token_entropy]
    )


def retain_utility(figures: SetFigures) -> float:
    """hmean(ROUGE-L recall, probability) of a retain set; 1 = answers and likelihoods fully kept."""
    return harmonic_mean([figures.rouge_l_recall, figures.probability])


def answer_entropies(tokenizer, answers: Sequence[str]) -> list[float]:
    """Normalised unigram token entropy of each decoded answer, re-tokenised without special tokens."""
    return [token_entropy(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]


def generation_figures(tokenizer, answers: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Means over greedy answers: ROUGE-L recall, token entropy, 3-gram repetition and fluent share."""
    n = len(answers)
    return {
        "rouge_l_recall": sum(rouge_l_recall(answers, references)) / n,
        "token_entropy": sum(answer_entropies(tokenizer, answers)) / n,
        "repetition": sum(repetition_rate(a) for a in answers) / n,
        "fluent_share": sum(map(is_fluent, answers)) / n,
    }


def score_sets(
    model,
    tokenizer,
    sets: dict[str, Sequence[QAItem]],
    *,
    prompt_format: str = "chat_template",
    max_new_tokens: int = 200,
    max_length: int = 500,
    batch_size: int = 64,
) -> dict[str, SetFigures]:
    """:class:`SetFigures` of several QA sets, with one batched generation and one NLL pass over all items.

    Runs under any active smoothing context (the figures are then those of the smoothed model).
    """
    names = [name for name, items in sets.items() for _ in items]
    items = [item for group in sets.values() for item in group]
    empty = [name for name, group in sets.items() if not group]
    if empty:
        raise ValueError(f"score_sets needs at least one QA item per set; empty: {empty}")
    answers = generate_answers(
        model, tokenizer, [it["question"] for it in items], prompt_format=prompt_format,
        max_new_tokens=max_new_tokens, batch_size=batch_size,
    )
    nlls = answer_nll(
        model, tokenizer, items, prompt_format=prompt_format, max_length=max_length, batch_size=batch_size
    )
    out = {}
    for name in sets:
        rows = [i for i, n in enumerate(names) if n == name]
        out[name] = SetFigures(
            items=len(rows),
            probability=sum(math.exp(-nlls[i]) for i in rows) / len(rows),
            nll=sum(nlls[i] for i in rows) / len(rows),
            **generation_figures(tokenizer, [answers[i] for i in rows], [items[i]["answer"] for i in rows]),
        )
    return out


def score_set(model, tokenizer, items: Sequence[QAItem], **kwargs) -> SetFigures:
    """:class:`SetFigures` of one QA set (keyword arguments as :func:`score_sets`)."""
    return score_sets(model, tokenizer, {"items": items}, **kwargs)["items"]


__all__ = [
    "SetFigures",
    "answer_entropies",
    "forget_efficacy",
    "generation_figures",
    "retain_utility",
    "score_set",
    "score_sets",
]
