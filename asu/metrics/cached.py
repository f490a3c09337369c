"""Forward passes that reuse a KV cache: greedy decoding that drops finished rows, and teacher forcing of many
continuations of one prompt.

**Greedy decoding** (``greedy_from``, ``greedy_continuations``). ``model.generate`` keeps every row of a batch
until the longest one ends: a row that has emitted EOS keeps running the model on pad tokens. Evaluation batches
mix answers that end after a dozen tokens with answers that never end (an unlearned or never-learned fact rambles
up to ``max_new_tokens``), so most of those decode steps are wasted. Here, once a quarter of the batch has ended,
the rows still running are selected out of the input, the attention mask, the positions and the KV cache
(``Cache.batch_select_indices``), so the batch shrinks to about the rows that still decode. That also makes large
batches pay off: the long tail no longer drags every finished row along. The result is token for token what
``model.generate(do_sample=False)`` returns (up to float rounding of a different batch composition): the same left
padding, the same positions (cumulative sum of the attention mask, as transformers derives them), the same KV
cache.

**Shared-prompt teacher forcing** (``run_prompts``, ``continuation_logits``). TOFU scores up to seven answers
per question (original, paraphrased, five perturbed), each behind the same prompt. The prompts are run once,
left-padded, into a KV cache; for each batch of continuations (sorted by length, so padding costs little) the
cache rows of their prompts are picked (repeated where a prompt has several) and the continuations run behind
them, right-padded. The logits equal those of the full sequences (up to float rounding), while the prompt tokens cost
one pass per question instead of one per answer.

``tests/metrics/test_cached.py`` checks both against the plain transformers calls on several model families.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from asu.data import left_pad


def accepts(model, name: str) -> bool:
    """Whether ``model.forward`` takes the keyword ``name`` (``logits_to_keep`` is not universal)."""
    return name in inspect.signature(model.forward).parameters


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows, as transformers derives them (cumulative mask - 1, pads at 0)."""
    return (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


#: Rows are dropped from the batch once this share of it has ended: dropping copies the KV cache, so doing it
#: at every single EOS costs more than the few steps the ended rows run on.
_COMPACT_SHARE = 0.25


@dataclass(frozen=True)
class PromptPass:
    """Prompts run once into a KV cache: what their continuations are scored behind.

    ``cache`` holds Q left-padded rows; ``mask`` and ``positions`` are [Q, P]; ``last_logits`` [Q, V] are the
    logits at each prompt's last token (they predict every continuation's first token).
    """

    cache: DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor
    last_logits: torch.Tensor


def _cache_rows(cache: DynamicCache, index: torch.Tensor) -> DynamicCache:
    """A cache of the rows ``index`` (repeats allowed); ``cache`` itself is left as it is, for later batches."""
    view = copy.copy(cache)
    view.layers = [copy.copy(layer) for layer in cache.layers]
    view.batch_select_indices(index)  # replaces each copied layer's tensors, never the shared ones
    return view


def _one_pass(model, prompts: Sequence[list[int]], pad_id: int) -> PromptPass:
    ids, mask = left_pad(list(prompts), pad_id)
    ids, mask = ids.to(model.device), mask.to(model.device)
    positions = _positions(mask)
    cache = DynamicCache(config=model.config)
    extra = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    last = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                 **extra).logits[:, -1]
    return PromptPass(cache, mask, positions, last)


def _left_pad_to(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``t`` with zeros prepended along ``dim`` up to ``width`` (a masked-out, left-padded column is zero)."""
    shape = list(t.shape)
    shape[dim] = width - t.shape[dim]
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _merge(model, passes: Sequence[PromptPass]) -> PromptPass:
    """One pass of all rows of ``passes`` (full-attention caches only), left-padded to the widest."""
    width = max(p.mask.shape[1] for p in passes)
    merged = DynamicCache(config=model.config)
    for layer in range(len(passes[0].cache.layers)):
        keys = torch.cat([_left_pad_to(p.cache.layers[layer].keys, width, 2) for p in passes])
        values = torch.cat([_left_pad_to(p.cache.layers[layer].values, width, 2) for p in passes])
        merged.update(keys, values, layer)
    return PromptPass(
        merged, torch.cat([_left_pad_to(p.mask, width, 1) for p in passes]),
        torch.cat([_left_pad_to(p.positions, width, 1) for p in passes]), torch.cat([p.last_logits for p in passes]),
    )


@torch.no_grad()
def run_prompts(model, prompts: Sequence[list[int]], *, pad_id: int, batch_size: int | None = None) -> PromptPass:
    """A left-padded pass over Q prompt id lists (each at least one token), rows in the order given.

    With ``batch_size``, the prompts run that many at a time and the caches are joined (left-padded to the
    longest prompt), so a long prompt does not pad all the others; give them sorted by length. Models whose
    cache is not plain full attention (sliding-window layers) run as one batch instead.
    """
    if batch_size is None or len(prompts) <= batch_size:
        return _one_pass(model, prompts, pad_id)
    passes = [_one_pass(model, prompts[i : i + batch_size], pad_id) for i in range(0, len(prompts), batch_size)]
    if not all(type(layer) is DynamicLayer for p in passes for layer in p.cache.layers):
        return _one_pass(model, prompts, pad_id)
    return _merge(model, passes)


@torch.no_grad()
def continuation_logits(
    model, prompts: PromptPass, rows: Sequence[tuple[int, list[int]]], *, pad_id: int
) -> list[torch.Tensor]:
    """Teacher-forced logits of continuations behind prompts already run (``run_prompts``).

    Args:
        prompts: the prompt pass the continuations follow.
        rows: N pairs (prompt row, continuation ids of C >= 1 tokens); a continuation needs its prompt's last
            logits plus C - 1 cached steps, so its last token is never fed.
        pad_id: padding token id (masked out).

    Returns:
        For each row, logits [C, V] (model dtype), where row t predicts continuation token t.
    """
    device = model.device
    width = max(len(cont) for _, cont in rows) - 1
    if width < 1:
        return [prompts.last_logits[p][None] for p, _ in rows]
    index = torch.tensor([p for p, _ in rows], device=device)
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    cont_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (_, cont) in enumerate(rows):
        inputs[r, : len(cont) - 1] = torch.tensor(cont[:-1], dtype=torch.long)
        cont_mask[r, : len(cont) - 1] = 1
    full_mask = torch.cat([prompts.mask[index], cont_mask.to(device)], dim=1)
    positions = prompts.positions[index, -1:] + 1 + torch.arange(width, device=device)
    logits = model(input_ids=inputs.to(device), attention_mask=full_mask, position_ids=positions,
                   past_key_values=_cache_rows(prompts.cache, index), use_cache=True).logits  # [N, width, V]
    return [torch.cat([prompts.last_logits[p][None], logits[r, : len(cont) - 1]]) for r, (p, cont) in enumerate(rows)]


@torch.no_grad()
def greedy_from(
    model, prompts: PromptPass, rows: Sequence[int], *, max_new_tokens: int, eos_token_id: int
) -> list[list[int]]:
    """Greedy continuation of the prompt rows ``rows`` of a prompt pass, without EOS (the pass is left as it is).

    Args:
        prompts: prompts already run (``run_prompts``).
        rows: which of its rows to continue, decoded as one batch.
        max_new_tokens: decode steps at most; a row that has not emitted EOS by then is cut there.
        eos_token_id: the token that ends a row (not included in its continuation).

    Returns:
        One list of token ids per entry of ``rows``, in that order.
    """
    index = torch.tensor(list(rows), device=prompts.mask.device)
    cache, attention_mask, logits = _cache_rows(prompts.cache, index), prompts.mask[index], prompts.last_logits[index]
    position = prompts.positions[index, -1:] + 1  # [b, 1]: the next token's position in each row
    out: list[list[int]] = [[] for _ in rows]
    alive = list(range(len(rows)))  # position in ``rows`` of each row still in the batch
    ended = [False] * len(rows)
    for step in range(max_new_tokens):
        tokens = logits.argmax(-1)  # [b]
        running = 0
        for row, token in zip(alive, tokens.tolist(), strict=True):
            if ended[row]:
                continue
            if token == eos_token_id:
                ended[row] = True
            else:
                out[row].append(token)
                running += 1
        if step == max_new_tokens - 1 or running == 0:
            break
        if len(alive) - running >= _COMPACT_SHARE * len(alive):  # drop the ended rows from the batch
            keep = torch.tensor([i for i, row in enumerate(alive) if not ended[row]], device=tokens.device)
            cache.batch_select_indices(keep)
            alive = [alive[i] for i in keep.tolist()]
            tokens, attention_mask, position = tokens[keep], attention_mask[keep], position[keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(alive), 1))], dim=1)
        logits = model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=position,
                       past_key_values=cache, use_cache=True).logits[:, -1]
        position = position + 1
    return out


def greedy_continuations(
    model, prompts: Sequence[list[int]], *, pad_id: int, max_new_tokens: int, eos_token_id: int
) -> list[list[int]]:
    """Greedy continuation of each prompt id list, without its EOS (the prompts run as one left-padded batch)."""
    return greedy_from(model, run_prompts(model, prompts, pad_id=pad_id), range(len(prompts)),
                       max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)


__all__ = ["PromptPass", "accepts", "continuation_logits", "greedy_continuations", "greedy_from", "run_prompts"]
