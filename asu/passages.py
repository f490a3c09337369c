"""Passages (``kind: text`` records: a chapter, an article, a leaked document) as training sequences.

A passage item is ``{"text": str}``; a QA item ``{"question", "answer"}``; a round's forget and retain sets may
mix both. For a passage, ASU distils on every token, as the official code does for MUSE: the passage is
tokenised without a prompt and cut into chunks of at most ``max_length`` tokens (a BOS token first when the
tokenizer has one; EOS after the passage's last token), consecutive chunks sharing ``chunk_overlap`` tokens so a
sentence cut at a chunk's end is seen whole in the next one; every token is a label (no prompt mask).

Chunking runs as a batched ``datasets`` map over the passages. Errors name the passage (its 1-based position in
the set) and the knob that fixes it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asu.errors import UsageError


def is_passage(item: Mapping[str, Any]) -> bool:
    """A ``{"text": ...}`` item (a passage), as opposed to a ``{"question", "answer"}`` item."""
    return "text" in item and "question" not in item


def chunk_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets of the chunks of ``length`` tokens: windows of ``size`` tokens, ``overlap`` shared, the last
    window ending at the last token. ``size > overlap >= 0``; an empty sequence has no chunk."""
    if length <= 0:
        return []
    stride = size - overlap
    starts = list(range(0, max(length - overlap, 1), stride))
    return [s for s in starts if s < length]


def chunk_passages(tokenizer, texts: Sequence[str], *, max_length: int, overlap: int, max_chunks: int,
                   what: str = "forget") -> list[list[list[int]]]:
    """The token chunks of each of ``texts`` (one list per passage), each chunk at most ``max_length`` tokens with
    a leading BOS when the tokenizer has one; the last chunk of a passage ends with EOS."""
    import datasets

    bos = tokenizer.bos_token_id
    body = max_length - (1 if bos is not None else 0)
    if body <= overlap:
        raise UsageError(f"max_length={max_length} leaves no room past chunk_overlap={overlap}; raise max_length")
    for number, text in enumerate(texts, start=1):
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"{what} passage {number}: 'text' must be a non-empty string")

    def split(batch: dict[str, list]) -> dict[str, list]:
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        chunks, owners = [], []
        for number, tokens in zip(batch["number"], ids, strict=True):
            tokens = [*tokens, tokenizer.eos_token_id]
            starts = chunk_starts(len(tokens), body, overlap)
            if len(starts) > max_chunks:
                raise UsageError(f"{what} passage {number} tokenises to {len(tokens)} tokens, {len(starts)} chunks of "
                                 f"{max_length}; the limit is max_passage_chunks={max_chunks}: split the passage into "
                                 "several records or raise max_passage_chunks")
            for start in starts:
                chunks.append(([bos] if bos is not None else []) + tokens[start:start + body])
                owners.append(number)
        return {"input_ids": chunks, "number": owners}

    table = datasets.Dataset.from_dict({"text": list(texts), "number": list(range(1, len(texts) + 1))})
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar per request's chunking is chatter on the console
    try:
        mapped = table.map(split, batched=True, remove_columns=["text"], desc=None, load_from_cache_file=False)
    finally:
        if shown:
            with warnings.catch_warnings():  # HF_DATASETS_DISABLE_PROGRESS_BARS=1 makes re-enabling warn
                warnings.simplefilter("ignore", UserWarning)
                datasets.enable_progress_bars()
    per_passage: list[list[list[int]]] = [[] for _ in texts]
    for number, ids in zip(mapped["number"], mapped["input_ids"], strict=True):
        per_passage[number - 1].append(list(ids))
    return per_passage


#: Verbatim memorisation, as MUSE's VerbMem on the request's own passages: the first ``PREFIX_TOKENS`` tokens of a
#: passage as the prompt, a greedy continuation of ``CONTINUATION_TOKENS`` tokens, ROUGE-L F1 against the
#: passage's true next ``CONTINUATION_TOKENS`` tokens. A passage needs at least their sum.
PREFIX_TOKENS, CONTINUATION_TOKENS = 32, 48


def _long_enough(tokenizer, texts: Sequence[str], prefix_tokens: int, continuation_tokens: int,
                 what: str) -> list[list[int]]:
    """The token ids of each of ``texts``; ``UsageError`` naming the first passage shorter than a prefix plus its
    continuation, and that minimum."""
    need = prefix_tokens + continuation_tokens
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    for number, tokens in enumerate(ids, start=1):
        if len(tokens) < need:
            raise UsageError(f"{what} passage {number} has {len(tokens)} tokens; verbatim memorisation needs at "
                             f"least {need} ({prefix_tokens} prefix + {continuation_tokens} continuation): lengthen "
                             "the passage, merge it with the next, or lower the prefix/continuation lengths")
    return ids


def continuation_probes(tokenizer, texts: Sequence[str], *, prefix_tokens: int = PREFIX_TOKENS,
                        continuation_tokens: int = CONTINUATION_TOKENS, what: str = "forget") -> list[dict[str, str]]:
    """One probe per passage, scored like a QA item: ``question`` = its first ``prefix_tokens`` tokens,
    ``answer`` = the next ``continuation_tokens`` (decoded), ``prompt_format`` = ``completion`` (raw text continued,
    no template). The search and the before/after figures score a text request through these: an answer's fact
    recall is then the share of the true continuation's content words the model reproduces (verbatim recall)."""
    need = prefix_tokens + continuation_tokens
    ids = _long_enough(tokenizer, texts, prefix_tokens, continuation_tokens, what)
    probes = []
    for tokens in ids:
        probes.append({"question": tokenizer.decode(tokens[:prefix_tokens], skip_special_tokens=True),
                       "answer": tokenizer.decode(tokens[prefix_tokens:need], skip_special_tokens=True),
                       "prompt_format": "completion"})
    return probes


def scored_items(tokenizer, items: Sequence[Mapping[str, Any]], what: str = "forget") -> list[dict[str, Any]]:
    """``items`` as the scorers see them: each passage replaced by its :func:`continuation_probes` probe, QA
    items as they are (order kept)."""
    rows = [i for i, item in enumerate(items) if is_passage(item)]
    if not rows:
        return list(items)
    probes = dict(zip(rows, continuation_probes(tokenizer, [items[i]["text"] for i in rows], what=what),
                      strict=True))
    return [probes.get(i, item) for i, item in enumerate(items)]


def passage_pieces(tokenizer, items: Sequence[Mapping[str, Any]], *, max_tokens: int,
                   ) -> tuple[list[dict[str, Any]], list[int]]:
    """``items`` with each passage longer than ``max_tokens`` tokens cut into the fewest pieces of near-equal length
    that fit (``{"text"}`` each, decoded at token boundaries), and the 1-based number of the item each row came
    from. A settings search splits a text request at this grain, stratified by passage (the numbers are the
    subjects), so that one long article still has pieces to validate on and pieces left for the report."""
    out, owners = [], []
    for number, item in enumerate(items, start=1):
        if not is_passage(item):
            out.append(dict(item))
            owners.append(number)
            continue
        ids = tokenizer(item["text"], add_special_tokens=False)["input_ids"]
        count = max(1, -(-len(ids) // max_tokens))
        bounds = [round(i * len(ids) / count) for i in range(count + 1)]
        for start, end in zip(bounds, bounds[1:], strict=False):
            out.append({"text": tokenizer.decode(ids[start:end])})
            owners.append(number)
    return out, owners


def check_passage_lengths(tokenizer, items: Sequence[Mapping[str, Any]], what: str = "forget") -> None:
    """Raise ``UsageError`` naming the first passage of ``items`` too short for verbatim memorisation (before any
    model pass: a tokenizer is enough)."""
    scored_items(tokenizer, items, what)


@dataclass(frozen=True)
class VerbatimFigures:
    """Per passage: ROUGE-L F1 of the greedy continuation against the true one (0-1), the continuations, the
    prefixes they continue and the true continuations (decoded)."""

    rouge_l_f1: list[float]
    continuations: list[str]
    prefixes: list[str]
    truths: list[str]

    @property
    def mean(self) -> float:
        return sum(self.rouge_l_f1) / len(self.rouge_l_f1)


def verbatim_memorisation(model, tokenizer, texts: Sequence[str], *, prefix_tokens: int = PREFIX_TOKENS,
                          continuation_tokens: int = CONTINUATION_TOKENS, batch_size: int = 16,
                          what: str = "forget") -> VerbatimFigures:
    """VerbMem of ``texts`` under ``model`` (see :data:`PREFIX_TOKENS`); one greedy decode per passage."""
    from asu.metrics.muse import rouge_l_f1
    from asu.metrics.passes import generate

    need = prefix_tokens + continuation_tokens
    ids = _long_enough(tokenizer, texts, prefix_tokens, continuation_tokens, what)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompts = [bos + tokens[:prefix_tokens] for tokens in ids]
    truths = [tokenizer.decode(tokens[prefix_tokens:need], skip_special_tokens=True) for tokens in ids]
    generated = generate(model, tokenizer, prompts, max_new_tokens=continuation_tokens, batch_size=batch_size)
    continuations = [tokenizer.decode(g, skip_special_tokens=True) for g in generated]
    prefixes = [tokenizer.decode(tokens[:prefix_tokens], skip_special_tokens=True) for tokens in ids]
    return VerbatimFigures(rouge_l_f1(continuations, truths), continuations, prefixes, truths)


@dataclass(frozen=True)
class PassageFigures:
    """What a text request's passages show about a model (fractions in [0, 1]; None: not measured).

    ``verbmem``: mean VerbMem ROUGE-L F1 (:func:`verbatim_memorisation`); ``extraction_strength`` and
    ``exact_memorization``: means over the passages' chunks of the field's teacher-forced figures
    (``asu.metrics.formulas``: ES = 1 - k/T for the smallest k from which every argmax matches; EM = share of
    matching positions; the final EOS target dropped); ``fluent_share``: share of the greedy continuations that
    ``asu.fluency`` finds fluent (with the prefix as the prompt; the full measure with a judge, else the surface
    checks); ``mia_auc``: the Min-K%++ membership AUC of the passages against held-out passages of the same kind
    (0.5: indistinguishable; None without held-out passages).
    """

    verbmem: float
    extraction_strength: float
    exact_memorization: float
    fluent_share: float
    mia_auc: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"verbmem": self.verbmem, "extraction_strength": self.extraction_strength,
                "exact_memorization": self.exact_memorization, "fluent_share": self.fluent_share,
                "mia_auc": self.mia_auc}


def _chunk_stats(model, tokenizer, passages: Sequence[str], what: str, max_length: int, batch_size: int):
    """The passages' non-overlapping chunks and the teacher-forced statistics of each (``token_stats``)."""
    from asu.data import Encoded
    from asu.metrics.passes import token_stats

    chunks = [c for per in chunk_passages(tokenizer, passages, max_length=max_length, overlap=0, max_chunks=10_000,
                                          what=what) for c in per]
    return chunks, token_stats(model, [Encoded(c, c) for c in chunks], pad_id=tokenizer.pad_token_id,
                               batch_size=batch_size)


def _mia_auc(model, tokenizer, members, holdout: Sequence[str], max_length: int, batch_size: int) -> float:
    from asu.metrics.mia import PRIVLEAK_ATTACK, mia_aucs

    chunks, stats = members
    held_chunks, held_stats = _chunk_stats(model, tokenizer, holdout, "holdout", max_length, batch_size)
    decode = tokenizer.decode
    aucs, _ = mia_aucs(stats, [decode(c) for c in chunks], held_stats, [decode(c) for c in held_chunks])
    return aucs[PRIVLEAK_ATTACK]


def passage_mia_auc(model, tokenizer, texts: Sequence[str], holdout: Sequence[str], *, max_length: int = 500,
                    batch_size: int = 16) -> float:
    """Min-K%++ membership AUC of ``texts`` (members) against ``holdout`` passages of the same kind, over their
    non-overlapping chunks of ``max_length`` tokens (0.5: indistinguishable)."""
    members = _chunk_stats(model, tokenizer, texts, "forget", max_length, batch_size)
    return _mia_auc(model, tokenizer, members, holdout, max_length, batch_size)


def passage_figures(model, tokenizer, texts: Sequence[str], *, holdout: Sequence[str] | None = None,
                    max_length: int = 500, prefix_tokens: int = PREFIX_TOKENS,
                    continuation_tokens: int = CONTINUATION_TOKENS, judge=None, what: str = "forget",
                    batch_size: int = 16) -> PassageFigures:
    """:class:`PassageFigures` of ``texts`` under ``model``: one greedy decode per passage (VerbMem, fluency) and
    one teacher-forced pass per chunk (ES, EM, and the MIA statistics with ``holdout``)."""
    from asu.evaluation import fluency_verdicts
    from asu.metrics.formulas import exact_memorization, extraction_strength

    verbatim = verbatim_memorisation(model, tokenizer, texts, prefix_tokens=prefix_tokens,
                                     continuation_tokens=continuation_tokens, batch_size=batch_size, what=what)
    verdicts = fluency_verdicts(verbatim.continuations, verbatim.prefixes, judge,
                                references=verbatim.truths)  # compared with the passage's own text

    chunks, forget_stats = _chunk_stats(model, tokenizer, texts, what, max_length, batch_size)
    es, em = [], []
    for st in forget_stats:
        preds, labels = list(st.predictions), list(st.labels)
        if labels and labels[-1] == tokenizer.eos_token_id:  # a passage's final EOS target is dropped
            preds, labels = preds[:-1], labels[:-1]
        if labels:
            es.append(float(extraction_strength(preds, labels)))
            em.append(float(exact_memorization(preds, labels)))
    auc = None
    if holdout:
        auc = _mia_auc(model, tokenizer, (chunks, forget_stats), holdout, max_length, batch_size)
    return PassageFigures(verbatim.mean, sum(es) / len(es), sum(em) / len(em),
                          sum(v.fluent for v in verdicts) / len(verdicts), auc)


__all__ = ["CONTINUATION_TOKENS", "PREFIX_TOKENS", "PassageFigures", "VerbatimFigures", "check_passage_lengths",
           "chunk_passages", "chunk_starts", "continuation_probes", "is_passage", "passage_figures", "passage_mia_auc",
           "passage_pieces", "scored_items", "verbatim_memorisation"]
