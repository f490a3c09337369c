"""Where the targets of a round come from: the smoothed forget teacher and the tau = 1 references.

Three kinds (``ASUConfig.teacher``):
- ``precomputed`` (default): the teacher is the *original* model and the forget set is fixed, so its
  distributions are computed once, from the model itself before its first update. No second copy of the
  weights and no teacher forward during training. Exact full-vocabulary distributions are kept when they fit
  ``teacher_memory_budget_mb``; otherwise the top-k tokens plus a tail bucket (see ``asu.losses.TokenDistributions``).
  The retain-KL reference (tau = 1), NPO's reference log-likelihoods and RMU's retain activations are precomputed
  the same way, for the retain items the round's fixed pairing schedule will use.
- ``frozen_copy``: a frozen deep copy of the model evaluated at every step (the official implementation).
- ``adapter_disabled``: with LoRA, the base model is the model with its adapter disabled.

Every teacher answers four questions about a batch (same batch layout as ``asu.data.collate``):
``forget_targets`` (smoothed, at the labelled positions), ``retain_targets`` (tau = 1, at the retain-KL positions),
``forget_reference_loglik`` (tau = 1, [B] sequence log-likelihoods) and ``retain_activations`` (RMU: the original
model's ``rmu_layer`` output at the labelled positions, [N, H] fp32).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from asu.attention import smoothed_attention
from asu.config import ASUConfig
from asu.data import Encoded, collate, sequence_labels
from asu.errors import UsageError
from asu.losses import (
    IGNORE_INDEX,
    TokenDistributions,
    compress_topk,
    select_positions,
    sequence_log_likelihood,
)

logger = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]


class Teacher(Protocol):
    def forget_targets(self, batch: Batch) -> TokenDistributions: ...
    def retain_targets(self, batch: Batch) -> TokenDistributions: ...
    def forget_reference_loglik(self, batch: Batch) -> torch.Tensor: ...
    def retain_activations(self, batch: Batch) -> torch.Tensor: ...
    def extra_bytes(self) -> int: ...


def retain_positions(batch: Batch, config: ASUConfig) -> torch.Tensor:
    """Labels selecting the retain-KL positions: answer tokens (+EOS) or every non-padding token."""
    return batch["labels"] if config.retain_kl_positions == "answer" else sequence_labels(batch)


def check_rmu_layer(model: torch.nn.Module, config: ASUConfig) -> None:
    """Raise ``ValueError`` when ``config.rmu_layer`` is not a decoder layer of ``model``."""
    n = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    if isinstance(n, int) and config.rmu_layer >= n:
        raise UsageError(
            f"rmu_layer={config.rmu_layer} is out of range: the model has {n} decoder layers "
            f"(valid 0..{n - 1}); set rmu_layer to one of them"
        )


def layer_hidden_states(forward: Callable[..., object], batch: Batch, layer: int) -> torch.Tensor:
    """Output of 0-based decoder ``layer``: [B, T, H] (``hidden_states[layer + 1]``; [0] is the embeddings).

    For the last layer transformers returns the output after the final norm.
    """
    out = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    num_layers = len(out.hidden_states) - 1
    if layer >= num_layers:
        raise UsageError(f"rmu_layer={layer} is out of range: the model has {num_layers} decoder layers")
    return out.hidden_states[layer + 1]


def stop_token_ids(tokenizer) -> list[int]:
    """Ids a fact position must not be taught: the special tokens (EOS, chat turn markers) and every token that
    decodes to whitespace only (line breaks). Used by ``forget_positions='facts'``."""
    ids = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    ids |= {i for i, text in enumerate(texts) if not text.strip()}
    return sorted(ids)


class LiveTeacher:
    """Targets computed at every call by ``forward`` (a frozen copy, or the model with its adapter disabled).

    ``excluded``: token ids whose probability is removed from the forget targets (renormalised over the rest;
    ``forget_positions='facts'``, see :func:`stop_token_ids`); None = the teacher's distribution as it is.
    """

    def __init__(self, forward: Callable[..., object], config: ASUConfig, held_bytes: int = 0,
                 excluded: list[int] | None = None):
        self.forward, self.config, self.held_bytes = forward, config, held_bytes
        self.excluded = excluded

    @torch.no_grad()
    def _logits(self, batch: Batch, tau: float) -> torch.Tensor:
        smoothing = smoothed_attention(tau, self.config.layers) if tau != 1.0 else contextlib.nullcontext()
        with smoothing:
            return self.forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def _distributions(self, batch: Batch, labels: torch.Tensor, tau: float,
                       excluded: list[int] | None = None) -> TokenDistributions:
        flat, _, _ = select_positions(self._logits(batch, tau), labels)
        flat = flat.float()
        if excluded:
            # A large finite logit, not -inf: exp underflows to exactly 0 and KL's p * (log p - log q) stays 0, not nan.
            flat[:, torch.tensor([i for i in excluded if i < flat.shape[-1]], device=flat.device)] = -1e4
        return TokenDistributions(logprobs=F.log_softmax(flat, dim=-1))

    def forget_targets(self, batch: Batch) -> TokenDistributions:
        return self._distributions(batch, batch["labels"], self.config.tau, self.excluded)

    def retain_targets(self, batch: Batch) -> TokenDistributions:
        return self._distributions(batch, retain_positions(batch, self.config), 1.0)

    def forget_reference_loglik(self, batch: Batch) -> torch.Tensor:
        return sequence_log_likelihood(self._logits(batch, 1.0).float(), batch["labels"])

    @torch.no_grad()
    def retain_activations(self, batch: Batch) -> torch.Tensor:
        """``rmu_layer`` output at the labelled positions (row-major, no shift): [N, H] fp32."""
        hidden = layer_hidden_states(self.forward, batch, self.config.rmu_layer)
        return hidden[batch["labels"] != IGNORE_INDEX].float()

    def extra_bytes(self) -> int:
        return self.held_bytes


def frozen_copy_teacher(model: torch.nn.Module, config: ASUConfig, excluded: list[int] | None = None) -> LiveTeacher:
    """A frozen, eval-mode deep copy of ``model`` (doubles the weight memory)."""
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    held = sum(p.numel() * p.element_size() for p in frozen.parameters())
    return LiveTeacher(frozen, config, held, excluded)


def adapter_disabled_teacher(model: torch.nn.Module, config: ASUConfig,
                             excluded: list[int] | None = None) -> LiveTeacher:
    """The base model of a peft ``PeftModel``: the live model with its LoRA adapter disabled."""
    if not hasattr(model, "disable_adapter"):
        raise UsageError("teacher='adapter_disabled' needs a peft model; set finetune='lora'")

    def forward(**inputs):
        with model.disable_adapter():
            return model(**inputs)

    return LiveTeacher(forward, config, excluded=excluded)


class PrecomputedTeacher:
    """Targets computed once per item before training and looked up by ``batch['item_ids']``."""

    def __init__(
        self,
        forget: dict[int, TokenDistributions],
        retain: dict[int, TokenDistributions],
        forget_loglik: torch.Tensor | None,
        retain_acts: dict[int, torch.Tensor] | None = None,
    ):
        self.forget, self.retain, self.forget_loglik = forget, retain, forget_loglik
        self.retain_acts = retain_acts or {}

    def forget_targets(self, batch: Batch) -> TokenDistributions:
        return TokenDistributions.cat([self.forget[i] for i in batch["item_ids"].tolist()])

    def retain_targets(self, batch: Batch) -> TokenDistributions:
        return TokenDistributions.cat([self.retain[i] for i in batch["item_ids"].tolist()])

    def forget_reference_loglik(self, batch: Batch) -> torch.Tensor:
        return self.forget_loglik[batch["item_ids"].to(self.forget_loglik.device)]

    def retain_activations(self, batch: Batch) -> torch.Tensor:
        return torch.cat([self.retain_acts[i] for i in batch["item_ids"].tolist()])

    def extra_bytes(self) -> int:
        stored = [*self.forget.values(), *self.retain.values()]
        loglik = 0 if self.forget_loglik is None else self.forget_loglik.numel() * 4
        acts = sum(a.numel() * a.element_size() for a in self.retain_acts.values())
        return sum(d.nbytes() for d in stored) + loglik + acts

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        model,
        config: ASUConfig,
        forget: list[Encoded],
        retain: dict[int, Encoded],
        pad_id: int,
        batch_size: int = 8,
        excluded: list[int] | None = None,
        *,
        forget_ids: Sequence[int] | None = None,
        agree: Callable[[int], int] | None = None,
    ) -> PrecomputedTeacher:
        """Run ``model`` (before any update, in eval mode) over the forget items and the used retain items, once.

        Only what the objective needs is computed: smoothed forget targets (ASU), tau = 1 retain targets
        (retain KL), tau = 1 forget log-likelihoods (NPO) and ``rmu_layer`` retain activations (RMU).

        Sharded rounds (FSDP) compute per process: ``forget_ids`` are the forget items this process's batches hold
        (default: all) and ``retain`` only its retain items; ``agree(n)`` returns the largest ``n`` over the
        processes, and each pads its items to that count (repeating its first), because every process must run
        the same number of forward passes through a sharded model (default: no padding).
        """
        live, objective = LiveTeacher(model, config, excluded=excluded), config.objective
        agree = agree or (lambda n: n)
        f_ids = sorted(set(range(len(forget)) if forget_ids is None else forget_ids))
        r_ids = sorted(retain)

        def padded(ids: list[int], fallback: int) -> list[int]:
            return ids + [ids[0] if ids else fallback] * (agree(len(ids)) - len(ids))

        was_training = model.training
        model.eval()
        try:
            forget_store, retain_store, loglik, acts = {}, {}, None, {}
            forget_items = [forget[i] for i in padded(f_ids, 0)]
            retain_order = padded(r_ids, next(iter(retain), 0))
            if objective.needs_teacher:
                parts = _per_item(model, live.forget_targets, forget_items, pad_id, batch_size, config, False)
                forget_store = dict(zip(f_ids, parts[: len(f_ids)], strict=True))
            if objective.needs_retain_reference:
                parts = _per_item(model, live.retain_targets, [retain[i] for i in retain_order], pad_id, batch_size,
                                  config, True)
                retain_store = dict(zip(r_ids, parts[: len(r_ids)], strict=True))
            if objective.needs_forget_reference:
                batches = (_batch(forget_items[s : s + batch_size], pad_id, model)
                           for s in range(0, len(forget_items), batch_size))
                mine = torch.cat([live.forget_reference_loglik(b) for b in batches])[: len(f_ids)]
                loglik = torch.full((len(forget),), float("nan"), device=mine.device)
                loglik[torch.tensor(f_ids, device=mine.device)] = mine
            if objective.needs_retain_activations:
                acts = _per_item_activations(model, live, retain, retain_order, pad_id, batch_size)
        finally:
            model.train(was_training)
        teacher = cls(forget_store, retain_store, loglik, acts)
        logger.info("precomputed teacher targets: %.1f MB", teacher.extra_bytes() / 2**20)
        return teacher


def _fits_budget(num_tokens: int, vocab: int, config: ASUConfig) -> bool:
    """True when exact fp32 distributions for ``num_tokens`` positions fit the configured budget."""
    need_mb = num_tokens * vocab * 4 / 2**20
    exact = need_mb <= config.teacher_memory_budget_mb
    if not exact:
        logger.info(
            "exact targets need %.0f MB > teacher_memory_budget_mb=%.0f: keeping top-%d + tail",
            need_mb,
            config.teacher_memory_budget_mb,
            config.teacher_top_k,
        )
    return exact


def _batch(items: list[Encoded], pad_id: int, model) -> Batch:
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in collate(items, pad_id).items()}


def _num_positions(item: Encoded, config: ASUConfig, retain_side: bool) -> int:
    """How many target positions an item contributes (after the one-token shift)."""
    if retain_side and config.retain_kl_positions == "sequence":
        return len(item.input_ids) - 1
    return item.num_answer_tokens


def _per_item(
    model,
    targets: Callable[[Batch], TokenDistributions],
    items: list[Encoded],
    pad_id: int,
    batch_size: int,
    config: ASUConfig,
    retain_side: bool,
) -> list[TokenDistributions]:
    """Targets for each item (in order), computed batch by batch; exact if they fit the budget, else top-k."""
    counts = [_num_positions(e, config, retain_side) for e in items]
    exact = _fits_budget(sum(counts), model.get_output_embeddings().weight.shape[0], config)
    out: list[TokenDistributions] = []
    for start in range(0, len(items), batch_size):
        dist = targets(_batch(items[start : start + batch_size], pad_id, model))
        for chunk in torch.split(dist.logprobs, counts[start : start + batch_size]):
            out.append(
                TokenDistributions(logprobs=chunk.clone()) if exact else compress_topk(chunk, config.teacher_top_k)
            )
    return out


def _per_item_activations(
    model, live: LiveTeacher, items: dict[int, Encoded], ids: list[int], pad_id: int, batch_size: int
) -> dict[int, torch.Tensor]:
    """Retain index -> [n_i, H] fp32 ``rmu_layer`` activations at the item's n_i labelled tokens, for ``ids`` (in
    order; a repeated id, the padding of a sharded round, is computed again and stored once)."""
    counts = [sum(t != IGNORE_INDEX for t in items[i].labels) for i in ids]
    out: dict[int, torch.Tensor] = {}
    for start in range(0, len(ids), batch_size):
        chunk_ids = ids[start : start + batch_size]
        acts = live.retain_activations(_batch([items[i] for i in chunk_ids], pad_id, model))
        parts = torch.split(acts, counts[start : start + batch_size])
        out |= {i: part.clone() for i, part in zip(chunk_ids, parts, strict=True)}
    return out
