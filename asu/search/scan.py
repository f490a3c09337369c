"""Stage 1 of the temperature search: a teacher-only scan (forward passes and greedy decoding, no training).

For each tau the model is run as the ASU teacher (``asu.attention.smoothed_attention(tau)``) on the forget
validation items and the retain validation items, and the scan records

- how far the teacher moves the forget answers: mean answer NLL, and the NLL of content vs function tokens
  (``asu.search.tokens``; the paper's argument is that content/factual NLL rises much faster with tau);
- how coherent the teacher stays: token entropy, 3-gram repetition and fluent share of its greedy answers to
  the forget questions, and its answer NLL on the retain validation items.

``tau = 1`` is the plain model (the smoothing wrapper passes the stock kernel the identical arguments).
:func:`bracket` then keeps the taus where facts move and the teacher stays coherent: the stage-2 candidates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from asu.attention import enable_smoothing, smoothed_attention, validate_layers
from asu.data import QAItem, answer_text, collate, encode_qa, item_format
from asu.errors import UsageError
from asu.evaluation import generate_answers
from asu.passages import scored_items
from asu.search.scores import SetFigures, generation_figures
from asu.search.tokens import function_token_mask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanRow:
    """Figures of the teacher at one tau. NLLs in nats per answer token (answer tokens + EOS)."""

    tau: float
    forget: SetFigures  # the teacher on the forget validation items (greedy answers + answer NLL)
    content_nll: float  # mean NLL over all content tokens of the forget validation answers
    function_nll: float  # mean NLL over all function tokens of the forget validation answers
    retain_nll: float  # mean answer NLL on the retain validation items

    def to_dict(self) -> dict[str, float]:
        flat = {f"teacher_forget_{k}": v for k, v in self.forget.to_dict().items() if k != "items"}
        return {"tau": self.tau, **flat, "content_nll": self.content_nll, "function_nll": self.function_nll,
                "retain_nll": self.retain_nll}


@torch.no_grad()
def token_nlls(
    model, tokenizer, items: Sequence[QAItem], *, prompt_format: str, max_length: int, batch_size: int
) -> list[tuple[list[float], list[bool]]]:
    """Per item: (NLL of each answer token + EOS under the current attention, function-token flag of each)."""
    model.eval()
    out = []
    for start in range(0, len(items), batch_size):
        chunk = list(items[start : start + batch_size])
        encoded = [encode_qa(tokenizer, it, max_length, prompt_format) for it in chunk]
        batch = {k: v.to(model.device) for k, v in collate(encoded, tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        labels = batch["labels"][:, 1:]
        for row, item in enumerate(chunk):
            keep = (labels[row] != -100).nonzero()[:, 0]
            ids = labels[row, keep]
            nll = (-logp[row, keep, ids]).tolist()
            text = answer_text(item["answer"], item_format(item, prompt_format))
            out.append((nll, function_token_mask(tokenizer, text, ids.tolist())))
    return out


def _pooled(per_item: list[tuple[list[float], list[bool]]], want_function: bool) -> float:
    values = [v for nll, mask in per_item for v, f in zip(nll, mask, strict=True) if f == want_function]
    return sum(values) / len(values) if values else float("nan")


def scan_tau(
    model,
    tokenizer,
    forget: Sequence[QAItem],
    retain: Sequence[QAItem],
    tau: float,
    *,
    layers: tuple[int, ...] | None = None,
    prompt_format: str = "chat_template",
    max_new_tokens: int = 200,
    max_length: int = 500,
    batch_size: int = 32,
    judge=None,
) -> ScanRow:
    """One scan row: the teacher at ``tau`` on ``forget`` and ``retain`` (``model`` must have smoothing enabled;
    passages are scanned through their continuation probes, ``asu.passages.scored_items``).

    ``judge``: the ``asu.fluency.FluencyJudge`` of the model at tau = 1 (its answers are judged after the smoothing
    context ends, so the judge scores at tau = 1).
    """
    forget, retain = scored_items(tokenizer, forget, "forget"), scored_items(tokenizer, retain, "retain")
    formats = [item_format(it, prompt_format) for it in forget]
    kw = {"prompt_format": prompt_format, "max_length": max_length, "batch_size": batch_size}
    with smoothed_attention(tau, layers):
        per_item = token_nlls(model, tokenizer, forget, **kw)
        retain_items = token_nlls(model, tokenizer, retain, **kw)
        answers = generate_answers(model, tokenizer, [it["question"] for it in forget], prompt_format=formats,
                                   max_new_tokens=max_new_tokens, batch_size=batch_size)
    item_nll = [sum(nll) / len(nll) for nll, _ in per_item]
    figures = SetFigures(
        items=len(forget),
        probability=sum(math.exp(-v) for v in item_nll) / len(item_nll),
        nll=sum(item_nll) / len(item_nll),
        **generation_figures(tokenizer, answers, [it["answer"] for it in forget],
                             questions=[it["question"] for it in forget], judge=judge, formats=formats),
    )
    retain_nll = sum(sum(n) / len(n) for n, _ in retain_items) / len(retain_items)
    return ScanRow(tau, figures, _pooled(per_item, False), _pooled(per_item, True), retain_nll)


def scan_temperatures(
    model, tokenizer, forget: Sequence[QAItem], retain: Sequence[QAItem], taus: Sequence[float], **kwargs
) -> list[ScanRow]:
    """:func:`scan_tau` for every tau in ``taus`` (enables smoothing on ``model``; keyword args as scan_tau)."""
    if not forget or not retain:
        raise UsageError("the teacher scan needs at least one forget and one retain validation item")
    enable_smoothing(model)
    validate_layers(model, kwargs.get("layers"))
    rows = []
    for tau in taus:
        rows.append(scan_tau(model, tokenizer, forget, retain, tau, **kwargs))
        logger.info("scan tau=%.3g: %s", tau, {k: round(v, 4) for k, v in rows[-1].to_dict().items()})
    return rows


@dataclass(frozen=True)
class BracketCriteria:
    """When a tau is worth a training trial (stage 2). Rises are relative to the tau = 1 row.

    - facts move: content-token NLL rises by at least ``min_content_nll_rise`` nats;
    - the teacher stays coherent: its greedy forget answers keep a fluent share >= ``min_teacher_fluent_share``
      and a token entropy >= ``min_teacher_entropy_ratio`` x that of the plain model, and its retain NLL rises
      by at most ``max_retain_nll_rise`` nats.
    """

    min_content_nll_rise: float = 0.5
    min_teacher_fluent_share: float = 0.5
    min_teacher_entropy_ratio: float = 0.5
    max_retain_nll_rise: float = 8.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def verdict(row: ScanRow, base: ScanRow, criteria: BracketCriteria, *, coherence: bool = True) -> str | None:
    """None when ``row`` is inside the bracket, else the reason it is not (figures quoted).

    ``coherence=False`` checks only that facts move: for a round that copies the teacher at the answers' fact
    tokens alone (``ASUConfig.forget_positions='facts'``, stop tokens removed), the teacher's own free-running
    answers say nothing about what the student learns; the trials judge the student's fluency.
    """
    rise = row.content_nll - base.content_nll
    if not rise >= criteria.min_content_nll_rise:
        return f"too weak: content-token NLL rises {rise:.3f} nats (< {criteria.min_content_nll_rise})"
    if not coherence:
        return None
    if row.forget.fluent_share < criteria.min_teacher_fluent_share:
        return (f"teacher incoherent: fluent share of its forget answers {row.forget.fluent_share:.2f} "
                f"(< {criteria.min_teacher_fluent_share})")
    floor = criteria.min_teacher_entropy_ratio * base.forget.token_entropy
    if row.forget.token_entropy < floor:
        return f"teacher incoherent: token entropy {row.forget.token_entropy:.3f} (< {floor:.3f})"
    retain_rise = row.retain_nll - base.retain_nll
    if not retain_rise <= criteria.max_retain_nll_rise:
        return f"teacher incoherent: retain NLL rises {retain_rise:.3f} nats (> {criteria.max_retain_nll_rise})"
    return None


def bracket(rows: Sequence[ScanRow], base: ScanRow, criteria: BracketCriteria, *,
            coherence: bool = True) -> dict[float, str | None]:
    """tau -> None (in the bracket) or the reason it is out, for every scanned row (``coherence``: see
    :func:`verdict`)."""
    return {row.tau: verdict(row, base, criteria, coherence=coherence) for row in rows}


def spread(values: Sequence[float], count: int) -> list[float]:
    """``count`` values of the sorted ``values`` spread evenly, both ends included (all when fewer)."""
    values = sorted(values)
    if len(values) <= count:
        return values
    if count == 1:
        return [values[len(values) // 2]]
    picks = sorted({round(i * (len(values) - 1) / (count - 1)) for i in range(count)})
    return [values[i] for i in picks]


__all__ = ["BracketCriteria", "ScanRow", "bracket", "scan_tau", "scan_temperatures", "spread", "token_nlls", "verdict"]
