"""Batched model passes that every evaluation metric reads from.

Two kinds of pass, both batched and sorted by length (so a batch holds rows of similar length and padding costs
little), results returned in the caller's order:

- ``token_stats``: one teacher-forced forward per batch, each prompt run once for all its answers. For each
  labelled token it keeps the log-probability of the label, the mean and standard deviation of log p under the
  model's own next-token distribution (Min-K%++) and whether the argmax equals the label (extraction strength,
  exact memorisation). Everything a probability, truth-ratio, MIA or memorisation metric needs comes from this
  one pass.
- ``generate``: greedy generation with left padding and the KV cache, finished rows dropped from the batch.
- ``score_prompts``: both at once, each prompt run once for its answers and its greedy continuation.

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

from asu.data import Encoded, PromptFormat, encode_qa, prompt_ids
from asu.errors import UsageError
from asu.losses import IGNORE_INDEX
from asu.metrics.cached import continuation_logits, greedy_from, run_prompts

logger = logging.getLogger(__name__)


class EvaluationDataError(UsageError):
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
    prompt_format: PromptFormat | Sequence[PromptFormat],
    max_length: int,
    source: str = "evaluation set",
) -> list[Encoded]:
    """Prompt + answer + EOS with labels on the answer and EOS, one per (question, answer) pair (``prompt_format``:
    one for all, or one per pair)."""
    encoded = []
    formats = per_item_formats(prompt_format, len(questions))
    for row, (question, answer) in enumerate(zip(questions, answers, strict=True)):
        if not answer.strip():
            raise EvaluationDataError(f"{source}, item {row}: empty answer; every answer must have text")
        e = encode_qa(tokenizer, {"question": question, "answer": answer}, max_length, formats[row])
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


_CHUNK_ELEMENTS = 1 << 24  # positions x vocabulary entries per statistics chunk (64 MB in float32)
#: Prompts whose KV cache is held at once, in batches: their continuations are then sorted by length across all
#: of them, so a batch pads little (a chunk of one batch of prompts would pad a quarter of its tokens).
_PROMPTS_PER_PASS = 8


def _position_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(log p(target), mu, sigma, argmax) of each row of ``logits`` [n, V]."""
    logp_all = F.log_softmax(logits.float(), dim=-1)
    probs = logp_all.exp()
    mu = (probs * logp_all).sum(-1)
    sigma = ((probs * logp_all.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
    return logp_all.gather(1, targets[:, None])[:, 0], mu, sigma, logp_all.argmax(-1)


def _split_prompt(e: Encoded, index: int) -> tuple[tuple[int, ...], list[int]]:
    """(prompt ids, labelled continuation ids) of an encoded sequence: labels are ignored on a prefix only.

    The prompt is everything before the first labelled position after the first token (the first token is never
    predicted), so a raw text's prompt is its first token.
    """
    labels, ids = e.labels, e.input_ids
    start = next((t for t in range(1, len(labels)) if labels[t] != IGNORE_INDEX), len(labels))
    if labels[start:] != ids[start:]:
        raise UsageError(
            f"encoded sequence {index}: labels must be ignored on a prompt prefix and equal the input ids after it "
            "(as encode_pairs / encode_texts build them)"
        )
    return tuple(ids[:start]), ids[start:]


def _stats(logits: list[torch.Tensor], targets: list[list[int]]) -> list[TokenStats]:
    """``TokenStats`` of each row from its logits [C, V] and its C target ids."""
    selected = torch.cat(logits)  # [N, V]: labelled positions only
    flat = torch.tensor([t for row in targets for t in row], device=selected.device)
    # Full-vocabulary statistics in chunks of positions: a few [chunk, V] float32 buffers, not [N, V] ones.
    chunk = max(1, _CHUNK_ELEMENTS // selected.shape[-1])
    parts = [_position_stats(selected[i : i + chunk], flat[i : i + chunk]) for i in range(0, len(flat), chunk)]
    logp, mu, sigma, pred = (torch.cat(column) for column in zip(*parts, strict=True))
    pieces = [t.cpu().numpy() for t in (logp, mu, sigma, pred, flat)]
    out, offset = [], 0
    for row in targets:
        lp, m, s, p, t = (x[offset : offset + len(row)] for x in pieces)
        out.append(TokenStats(logprobs=lp, mu=m, sigma=s, hits=p == t, predictions=p, labels=t))
        offset += len(row)
    return out


@torch.no_grad()
def score_prompts(
    model,
    encoded: Sequence[Encoded],
    decode: Sequence[list[int]],
    *,
    pad_id: int,
    eos_token_id: int,
    max_new_tokens: int,
    batch_size: int = 32,
    generation_batch_size: int = 64,
) -> tuple[list[TokenStats], list[list[int]]]:
    """Teacher-forced statistics of ``encoded`` and greedy continuations of the prompts ``decode``, in input order.

    Every distinct prompt runs once for both (TOFU's answer variants of one question and its greedy answer share
    it): prompts run ``batch_size`` at a time (sorted by length) into one KV cache of up to ``8 x batch_size``
    prompts; then all their continuations are scored in batches of ``batch_size`` sorted by length, and the
    prompts in ``decode`` are continued greedily ``generation_batch_size`` at a time, ended rows leaving the batch
    (``asu.metrics.cached``). Continuations are token ids without EOS.
    """
    model.eval()
    stats: list[TokenStats | None] = [None] * len(encoded)
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for row, e in enumerate(encoded):
        prompt, cont = _split_prompt(e, row)
        if cont:
            groups.setdefault(prompt, []).append((row, cont))
        else:  # nothing labelled (a prompt that filled max_length)
            empty = np.zeros(0)
            stats[row] = TokenStats(empty, empty, empty, empty.astype(bool), empty.astype(int), empty.astype(int))
    wanted: dict[tuple[int, ...], list[int]] = {}
    for row, prompt in enumerate(decode):
        wanted.setdefault(tuple(prompt), []).append(row)
    continuations: list[list[int] | None] = [None] * len(decode)
    prompts = sorted(set(groups) | set(wanted), key=len)
    chunk_size = _PROMPTS_PER_PASS * batch_size
    for start in range(0, len(prompts), chunk_size):
        chunk = prompts[start : start + chunk_size]
        prompt_pass = run_prompts(model, [list(p) for p in chunk], pad_id=pad_id, batch_size=batch_size)
        rows = sorted(((i, row, cont) for i, p in enumerate(chunk) for row, cont in groups.get(p, ())),
                      key=lambda r: -len(r[2]))
        for b in range(0, len(rows), batch_size):
            batch = rows[b : b + batch_size]
            logits = continuation_logits(model, prompt_pass, [(i, cont) for i, _, cont in batch], pad_id=pad_id)
            for (_, row, _), s in zip(batch, _stats(logits, [cont for _, _, cont in batch]), strict=True):
                stats[row] = s
        todo = [i for i, p in enumerate(chunk) if p in wanted]
        for b in range(0, len(todo), generation_batch_size):
            batch = todo[b : b + generation_batch_size]
            ids = greedy_from(model, prompt_pass, batch, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)
            for i, cont in zip(batch, ids, strict=True):
                for row in wanted[chunk[i]]:
                    continuations[row] = list(cont)
    return stats, continuations  # type: ignore[return-value]


def token_stats(model, encoded: Sequence[Encoded], *, pad_id: int, batch_size: int = 32) -> list[TokenStats]:
    """Teacher-forced statistics of each encoded sequence (see ``TokenStats``), in input order."""
    return score_prompts(model, encoded, [], pad_id=pad_id, eos_token_id=-1, max_new_tokens=1,
                         batch_size=batch_size)[0]


def generate(
    model,
    tokenizer,
    prompts: Sequence[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
) -> list[list[int]]:
    """Greedy continuation token ids of each prompt (ids), without EOS; left padding, KV cache, input order.

    Rows that have ended leave the batch (``asu.metrics.cached.greedy_from``), so a batch costs about what its
    rows decode, not ``batch_size`` x its longest row.
    """
    return score_prompts(model, [], prompts, pad_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         max_new_tokens=max_new_tokens, generation_batch_size=batch_size)[1]


def per_item_formats(prompt_format: PromptFormat | Sequence[PromptFormat], count: int) -> list[PromptFormat]:
    """``prompt_format`` for each of ``count`` items: one format for all, or one per item (checked)."""
    if isinstance(prompt_format, str):
        return [prompt_format] * count
    formats = list(prompt_format)
    if len(formats) != count:
        raise UsageError(f"{len(formats)} prompt formats for {count} items; give one format or one per item")
    return formats


def question_prompts(tokenizer, questions: Sequence[str],
                     prompt_format: PromptFormat | Sequence[PromptFormat]) -> list[list[int]]:
    """Prompt ids of each question in ``prompt_format`` (one for all, or one per question): what ``generate``
    continues."""
    formats = per_item_formats(prompt_format, len(questions))
    return [prompt_ids(tokenizer, q, f) for q, f in zip(questions, formats, strict=True)]


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
    "score_prompts",
    "token_stats",
]
