"""Validation figures of a model on a QA set, and the two objectives of the temperature search.

Per item, from one prompt pass (``asu.evaluation.answers_and_nlls``): the greedy answer, its ROUGE-L recall
against the reference, its normalised token entropy (``asu.metrics.formulas.token_entropy`` on the re-tokenised
answer), its share of repeated word 3-grams and whether it is fluent (``asu.fluency``: the surface checks, and the
likelihood under the original model when a ``FluencyJudge`` is given), and the teacher-forced answer probability
exp(-mean answer NLL). The set figures
are means over items (0-1 scale).

Objectives, in the spirit of the closer-look metrics the ASU paper reports (method.md §8), restricted to what
needs no external model (no NLI, no sentence embeddings, no perturbed answers):

- **forget score** (FS, ``forget_score``; forget items, higher = more forgotten) = harmonic mean of
  (1 - fact recall, 1 - probability, token entropy). Fact recall (``asu.search.tokens.fact_recall``) is the share
  of the reference answer's own content words (those the question does not already contain) that the greedy
  answer states: ROUGE-L recall rewards an answer for echoing the question ("The capital of France is Lyon" has
  ROUGE-L recall 0.83 against "... is Paris"), so a model that states wrong facts fluently kept a high ROUGE-L
  and the search saw no effect. Items whose reference adds no word to the question use ROUGE-L recall. Entropy is
  in FS, as in the paper, so that an answer that "forgets" by looping or going empty does not score well;
- **retain score** (RS, ``retain_score``; retain items, higher = better kept) = harmonic mean of
  (ROUGE-L recall, probability);
- **combined score** (``combined_score``) = harmonic mean of (forget score, retain score relative to the model
  the round starts from, fluent share): what the search ranks settings by.

Vocabulary: these are the search's own figures. The gate, the ledger, MLflow's request runs and the evidence
report use ``forget_efficacy`` = 1 - fact recall of the greedy forget answers (``pipelines.round.steps``) and
``retain_rouge``; the ASU paper's suite reports its own ``FE``/``MU`` (``asu.metrics.asu_paper``). No name is
shared between them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from asu.data import QAItem
from asu.errors import UsageError
from asu.evaluation import answers_and_nlls, fluency_verdicts, repetition_rate, rouge_l_recall
from asu.metrics.formulas import harmonic_mean, token_entropy
from asu.search.tokens import fact_recall


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
    refusal_share: float = 0.0
    fact_recall: float | None = None  # None: not measured (no questions given); FS then uses ROUGE-L recall

    @property
    def efficacy(self) -> float:
        """1 - fact recall (1 - ROUGE-L recall when fact recall was not measured): the share of the answers' facts
        gone, the figure the pipeline's gate reads as ``forget_efficacy``."""
        recall = self.rouge_l_recall if self.fact_recall is None else self.fact_recall
        return max(0.0, 1.0 - recall)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def forget_score(figures: SetFigures) -> float:
    """hmean(1 - fact recall, 1 - probability, token entropy) of a forget set; 0 = nothing forgotten."""
    return harmonic_mean([figures.efficacy, max(0.0, 1.0 - figures.probability), figures.token_entropy])


def retain_score(figures: SetFigures) -> float:
    """hmean(ROUGE-L recall, probability) of a retain set; 1 = answers and likelihoods fully kept."""
    return harmonic_mean([figures.rouge_l_recall, figures.probability])


def combined_score(efficacy: float, relative_utility: float, fluent_share: float) -> float:
    """hmean(forget score, relative utility capped at 1, fluent share): one 0-1 figure to rank settings by.

    The harmonic mean is 0 when any part is 0, so no setting buys forgetting with broken language or lost
    utility. The benchmarks (``bench/realmodel.py``) select every method's settings with the same figure.
    """
    return harmonic_mean([max(0.0, efficacy), min(1.0, max(0.0, relative_utility)), max(0.0, fluent_share)])


def answer_entropies(tokenizer, answers: Sequence[str]) -> list[float]:
    """Normalised unigram token entropy of each decoded answer, re-tokenised without special tokens."""
    return [token_entropy(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]


@dataclass(frozen=True)
class ItemFigures:
    """Per-item figures of a model on a QA set (lists of equal length, same units as :class:`SetFigures`)."""

    rouge_l_recall: list[float]
    nll: list[float]
    token_entropy: list[float]
    repetition: list[float]
    fluent: list[bool]
    refusal: list[bool] = field(default_factory=list)  # empty: not judged (counted as no refusal)
    fact_recall: list[float] = field(default_factory=list)  # empty: not measured (no questions given)
    answers: list[str] = field(default_factory=list)  # the greedy answers themselves (samples, audits)

    def mean(self, rows: Sequence[int] | None = None) -> SetFigures:
        """:class:`SetFigures` over ``rows`` (default: every item)."""
        rows = range(len(self.nll)) if rows is None else rows
        n = len(rows)

        def avg(values) -> float:
            return sum(values[i] for i in rows) / n

        return SetFigures(
            items=n, rouge_l_recall=avg(self.rouge_l_recall), probability=sum(math.exp(-self.nll[i]) for i in rows) / n,
            nll=avg(self.nll), token_entropy=avg(self.token_entropy), repetition=avg(self.repetition),
            fluent_share=avg(self.fluent), refusal_share=avg(self.refusal) if self.refusal else 0.0,
            fact_recall=avg(self.fact_recall) if self.fact_recall else None,
        )


def generation_item_figures(tokenizer, answers: Sequence[str], references: Sequence[str], *,
                            questions: Sequence[str] | None = None, judge=None,
                            formats: Sequence[str] | None = None) -> dict[str, list]:
    """Per greedy answer: ROUGE-L recall, token entropy, 3-gram repetition and fluency (``asu.fluency``).

    ``judge``: a ``FluencyJudge`` built on the original model (with ``questions``, the prompts, and ``formats``,
    their prompt formats when not the judge's); without it the fluency verdict rests on the surface checks alone.
    """
    # A passage's continuation is judged against its true continuation (human text), a QA answer as always.
    human = None if formats is None else [r if f == "completion" else None
                                          for r, f in zip(references, formats, strict=True)]
    verdicts = fluency_verdicts(answers, questions, judge, formats, human)
    rouge = rouge_l_recall(answers, references)
    out = {
        "rouge_l_recall": rouge,
        "token_entropy": answer_entropies(tokenizer, answers),
        "repetition": [repetition_rate(a) for a in answers],
        "fluent": [v.fluent for v in verdicts],
        "refusal": [v.refusal for v in verdicts],
    }
    if questions is not None:
        facts = [fact_recall(a, r, q) for a, r, q in zip(answers, references, questions, strict=True)]
        out["fact_recall"] = [r if math.isnan(f) else f for f, r in zip(facts, rouge, strict=True)]
    return out


def generation_figures(tokenizer, answers: Sequence[str], references: Sequence[str], **kwargs) -> dict[str, float]:
    """Means over greedy answers: ROUGE-L recall, token entropy, 3-gram repetition, fluent and refusal shares."""
    per_item = generation_item_figures(tokenizer, answers, references, **kwargs)
    means = {k: sum(v) / len(answers) for k, v in per_item.items()}  # fact_recall too, when measured
    means["fluent_share"] = means.pop("fluent")
    means["refusal_share"] = means.pop("refusal")
    return means


def score_items(
    model,
    tokenizer,
    sets: dict[str, Sequence[QAItem]],
    *,
    prompt_format: str = "chat_template",
    max_new_tokens: int = 200,
    max_length: int = 500,
    batch_size: int = 64,
    judge=None,
) -> dict[str, ItemFigures]:
    """:class:`ItemFigures` of several QA sets: one prompt pass per question, its answer NLL and greedy answer.

    A set may hold passages (``{"text"}``): each is scored as its continuation probe (``asu.passages.scored_items``:
    a prefix continued as raw text, the true continuation as the reference answer).
    Runs under any active smoothing context (the figures are then those of the smoothed model). ``judge``: the
    ``FluencyJudge`` of the original model (see :func:`generation_item_figures`).
    """
    from asu.data import item_format
    from asu.passages import scored_items

    names = [name for name, items in sets.items() for _ in items]
    items = [item for name, group in sets.items() for item in scored_items(tokenizer, group, name)]
    empty = [name for name, group in sets.items() if not group]
    if empty:
        raise UsageError(f"score_sets needs at least one QA item per set; empty: {empty}")
    answers, nlls = answers_and_nlls(model, tokenizer, items, prompt_format=prompt_format,
                                     max_new_tokens=max_new_tokens, max_length=max_length, batch_size=batch_size)
    out = {}
    for name in sets:
        rows = [i for i, n in enumerate(names) if n == name]
        per_item = generation_item_figures(tokenizer, [answers[i] for i in rows], [items[i]["answer"] for i in rows],
                                           questions=[items[i]["question"] for i in rows], judge=judge,
                                           formats=[item_format(items[i], prompt_format) for i in rows])
        out[name] = ItemFigures(nll=[nlls[i] for i in rows], answers=[answers[i] for i in rows], **per_item)
    return out


def score_sets(model, tokenizer, sets: dict[str, Sequence[QAItem]], **kwargs) -> dict[str, SetFigures]:
    """:class:`SetFigures` of several QA sets (keyword arguments as :func:`score_items`)."""
    return {name: figures.mean() for name, figures in score_items(model, tokenizer, sets, **kwargs).items()}


def score_set(model, tokenizer, items: Sequence[QAItem], **kwargs) -> SetFigures:
    """:class:`SetFigures` of one QA set (keyword arguments as :func:`score_sets`)."""
    return score_sets(model, tokenizer, {"items": items}, **kwargs)["items"]


__all__ = [
    "SetFigures",
    "ItemFigures",
    "answer_entropies",
    "combined_score",
    "forget_score",
    "generation_figures",
    "generation_item_figures",
    "retain_score",
    "score_items",
    "score_set",
    "score_sets",
]
