"""Batched model passes that every evaluation metric reads from.

Two kinds of pass, both batched and sorted by length (so a batch holds rows of similar length and padding costs
little), results returned in the caller's order:

- ``token_stats``: one teacher-forced forward per batch. For each labelled token it keeps the log-probability of
  the label, the mean and standard deviation of log p under the model's own next-token distribution (Min-K%++)
  and whether the argmax equals the label (extraction strength, exact memorisation). Everything a probability,
  truth-ratio, MIA or memorisation metric needs comes from this one pass.
- ``generate``: greedy generation with left padding and the KV cache.

Sequences are either QA pairs (prompt in the chosen ``prompt_format``, labels on answer + EOS) or raw texts (labels
on every token after the first, as MIA on text chunks uses them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from asu.data import Encoded, PromptFormat, collate, encode_qa, left_pad, prompt_ids
from asu.losses import IGNORE_INDEX

logger = logging.getLogger(__name__)


class EvaluationDataError(ValueError):
    """Evaluation data the model's tokenizer cannot score (names the set and the fix)."""


@dataclass(frozen=True)
class TokenStats:
    """Per-token figures of one sequence over its T labelled tokens (arrays of shape [T], nats).

    ``logprobs``: log p(label_t); ``mu``/``sigma``: mean and standard deviation of log p(v) for v ~ p_t;
    ``hits``: argmax_t == label_t. For QA sequences the last token is EOS.
    """

    logprobs: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    hits: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray

    @property
    def avg_loss(self) -> float:
        """Length-normalised NLL (nats/token)."""
        return float(-self.logprobs.mean())


def _check_encodable(tokenizer, ids: list[int], what: str) -> None:
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk != tokenizer.eos_token_id and unk in ids:
        raise EvaluationDataError(
            f"{what}: the tokenizer maps part of the text to its unknown token ({tokenizer.unk_token!r}), so its "
            "probability cannot be scored; use a tokenizer that covers the data's characters (byte-level BPE) or "
            "clean the text"
        )


def encode_pairs(
    tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    prompt_format: PromptFormat,
    max_length: int,
    source: str = "evaluation set",
) -> list[Encoded]:
    """Prompt + answer + EOS with labels on the answer and EOS, one per (question, answer) pair."""
    encoded = []
    for row, (question, answer) in enumerate(zip(questions, answers, strict=True)):
        if not answer.strip():
            raise EvaluationDataError(f"{source}, item {row}: empty answer; every answer must have text")
        e = encode_qa(tokenizer, {"question": question, "answer": answer}, max_length, prompt_format)
        _check_encodable(tokenizer, e.input_ids, f"{source}, item {row}")
        encoded.append(e)
    return encoded


def encode_texts(tokenizer, texts: Sequence[str], *, max_length: int, source: str = "text set") -> list[Encoded]:
    """Raw texts (BOS when the tokenizer adds one), labels on every token, truncated to ``max_length``."""
    encoded = []
    for row, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
        if len(ids) < 2:
            raise EvaluationDataError(f"{source}, item {row}: fewer than two tokens; MIA needs real text")
        _check_encodable(tokenizer, ids, f"{source}, item {row}")
        encoded.append(Encoded(list(ids), list(ids)))
    return encoded


def _length_order(lengths: Sequence[int]) -> list[int]:
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


_CHUNK_ELEMENTS = 1 << 24  # positions x vocabulary entries per statistics chunk (64 MB in float32)


def _position_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(log p(target), mu, sigma, argmax) of each row of ``logits`` [n, V]."""
    logp_all = F.log_softmax(logits.float(), dim=-1)
    probs = logp_all.exp()
    mu = (probs * logp_all).sum(-1)
    sigma = ((probs * logp_all.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
    return logp_all.gather(1, targets[:, None])[:, 0], mu, sigma, logp_all.argmax(-1)


@torch.no_grad()
def token_stats(model, encoded: Sequence[Encoded], *, pad_id: int, batch_size: int = 32) -> list[TokenStats]:
    """Teacher-forced statistics of each encoded sequence (see ``TokenStats``), in input order."""
    model.eval()
    out: list[TokenStats | None] = [None] * len(encoded)
    order = _length_order([len(e.input_ids) for e in encoded])
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = {k: v.to(model.device) for k, v in collate([encoded[i] for i in rows], pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        selected, targets = logits[:, :-1][mask], labels[mask]  # [N, V], [N]: labelled positions only
        del logits
        # Full-vocabulary statistics in chunks of positions: a few [chunk, V] float32 buffers, not [N, V] ones.
        chunk = max(1, _CHUNK_ELEMENTS // selected.shape[-1])
        starts = range(0, len(targets), chunk)
        parts = [_position_stats(selected[i : i + chunk], targets[i : i + chunk]) for i in starts]
        logp, mu, sigma, pred = (torch.cat(column) for column in zip(*parts, strict=True))
        counts = mask.sum(1).tolist()
        pieces = [t.cpu().numpy() for t in (logp, mu, sigma, pred, targets)]
        offset = 0
        for row, n in zip(rows, counts, strict=True):
            lp, m, s, p, t = (x[offset : offset + n] for x in pieces)
            out[row] = TokenStats(logprobs=lp, mu=m, sigma=s, hits=p == t, predictions=p, labels=t)
            offset += n
    return out  # type: ignore[return-value]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 32,
) -> list[list[int]]:
    """Greedy continuation token ids of each prompt (ids), cut after EOS; left padding, KV cache, input order."""
    model.eval()
    out: list[list[int] | None] = [None] * len(prompts)
    order = _length_order([len(p) for p in prompts])
    pad = tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids, attention_mask = left_pad([prompts[i] for i in rows], pad)
        width = input_ids.shape[1]
        generated = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )[:, width:].tolist()
        for r, i in enumerate(rows):
            ids = generated[r]
            if tokenizer.eos_token_id in ids:
                ids = ids[: ids.index(tokenizer.eos_token_id)]
            out[i] = ids
    return out  # type: ignore[return-value]


def question_prompts(tokenizer, questions: Sequence[str], prompt_format: PromptFormat) -> list[list[int]]:
    """Prompt ids of each question in ``prompt_format`` (what ``generate`` continues)."""
    return [prompt_ids(tokenizer, q, prompt_format) for q in questions]


def decode(tokenizer, sequences: Sequence[list[int]]) -> list[str]:
    """Decoded, stripped text of each id sequence."""
    return [t.strip() for t in tokenizer.batch_decode(list(sequences), skip_special_tokens=True)]


__all__ = [
    "EvaluationDataError",
    "TokenStats",
    "decode",
    "encode_pairs",
    "encode_texts",
    "generate",
    "question_prompts",
    "token_stats",
]
