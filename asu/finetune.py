"""Plain supervised fine-tuning on QA answers: the training loop of the TOFU target/retain builds and of the
relearning attack (``asu.robustness``).

Full-parameter AdamW (decoupled weight decay on matrices only), linear warm-up then linear decay to 0 at the last
step, gradient clipping, answer tokens + EOS in the loss (``asu.losses.nll_loss``: mean per sequence, then over the
batch), length-windowed seeded batches. The model is trained in place, on the device it is on (or ``device``): batches
follow it; on a CUDA device with bfloat16 the forward and backward run under bfloat16 autocast while the weights and
the optimiser state stay float32.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from asu.data import Encoded, collate
from asu.errors import UsageError
from asu.losses import IGNORE_INDEX, nll_loss

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneSchedule:
    """Optimiser settings of one fine-tune.

    learning_rate: AdamW peak learning rate. epochs: passes over the items. batch_size: items per forward/backward
    pass. grad_accum: micro-batches per optimiser step. weight_decay: on matrices only. warmup_epochs: epochs of
    linear warm-up (fractions allowed; rounded to optimiser steps; 0 = none). max_grad_norm: gradient clipping.
    seed: the data order.
    """

    learning_rate: float
    epochs: int
    batch_size: int
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup_epochs: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("learning_rate", math.isfinite(self.learning_rate) and self.learning_rate > 0, "a positive number"),
            ("epochs", isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
            ("grad_accum", isinstance(self.grad_accum, int) and self.grad_accum >= 1, "an integer >= 1"),
            ("weight_decay", self.weight_decay >= 0, "a number >= 0"),
            ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, f"between 0 and epochs ({self.epochs})"),
            ("max_grad_norm", self.max_grad_norm > 0, "a positive number"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise UsageError(f"{name} must be {want}, got {getattr(self, name)!r}")


def epoch_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of micro-batches: seeded shuffle, sorted by length within windows of 4 batches (less padding),
    then the batches shuffled."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = 4 * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def steps_per_epoch(num_items: int, schedule: FinetuneSchedule) -> int:
    """Optimiser steps of one epoch (the last step may hold fewer micro-batches)."""
    return math.ceil(math.ceil(num_items / schedule.batch_size) / schedule.grad_accum)


def make_optimizer(model: PreTrainedModel, schedule: FinetuneSchedule, total_steps: int):
    """AdamW (decay on matrices only) and its schedule: linear warm-up over ``warmup_epochs``, then linear decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": schedule.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=schedule.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    warmup = min(total_steps, round(schedule.warmup_epochs * total_steps / schedule.epochs))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batch_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean answer-token NLL per sequence, then over the batch (``asu.losses.nll_loss``).

    Logits are computed only from the first labelled position on (``logits_to_keep``): the prompts (system prompt
    and question, over half of a TOFU item) never reach the 49k-wide LM head, ~12% less compute on SmolLM2.
    """
    labels = batch["labels"]
    labelled = (labels != IGNORE_INDEX).any(0).nonzero()
    first = int(labelled[0]) if len(labelled) else 1
    keep = labels.shape[1] - (first - 1)  # position first-1 predicts the first labelled token
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
    return nll_loss(logits, labels[:, -keep:])


def _autocast(device: torch.device):
    """bfloat16 autocast on a CUDA device that supports it (float32 weights and optimiser state); else nothing."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def finetune(model: PreTrainedModel, encoded: list[Encoded], schedule: FinetuneSchedule, pad_id: int, *,
             label: str = "fine-tune", progress: bool = False,
             on_epoch: Callable[[int, float], None] | None = None, device: torch.device | None = None) -> list[float]:
    """Fine-tune ``model`` in place on ``encoded``; returns each epoch's mean loss. One log line per epoch.

    ``device``: move the model there first (default: train where it is). ``on_epoch(epoch, loss)`` (1-based epoch)
    is called after each epoch, the model in train mode; an exception it raises stops the fine-tune. The model is
    left in eval mode, on the training device. Seed torch's global RNG around the call for bit-identical runs
    (dropout, if the model has any).
    """
    if not encoded:
        raise UsageError(f"{label}: no items to train on")
    if device is not None:
        model.to(device)
    where = next(model.parameters()).device
    log = logger.info if progress else logger.debug
    total_steps = schedule.epochs * steps_per_epoch(len(encoded), schedule)
    optimizer, scheduler = make_optimizer(model, schedule, total_steps)
    generator = torch.Generator().manual_seed(schedule.seed)
    lengths = [len(e.input_ids) for e in encoded]
    params = [p for p in model.parameters() if p.requires_grad]
    epoch_losses: list[float] = []
    started = time.perf_counter()
    model.train()
    for epoch in range(schedule.epochs):
        batches = epoch_batches(lengths, schedule.batch_size, generator)
        losses = []
        for start in range(0, len(batches), schedule.grad_accum):
            step_batches = batches[start:start + schedule.grad_accum]
            step_items = sum(len(rows) for rows in step_batches)
            for rows in step_batches:
                batch = {k: v.to(where) for k, v in collate([encoded[i] for i in rows], pad_id).items()}
                with _autocast(where):
                    loss = batch_loss(model, batch)
                (loss * (len(rows) / step_items)).backward()
                losses.append((loss.item(), len(rows)))
            torch.nn.utils.clip_grad_norm_(params, schedule.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        epoch_losses.append(sum(v * n for v, n in losses) / sum(n for _, n in losses))
        elapsed = time.perf_counter() - started
        eta = elapsed / (epoch + 1) * (schedule.epochs - epoch - 1)
        log("%s: epoch %d/%d, loss %.4f, elapsed %.0f s, ETA %.0f s", label, epoch + 1, schedule.epochs,
            epoch_losses[-1], elapsed, eta)
        if on_epoch is not None:
            on_epoch(epoch + 1, epoch_losses[-1])
            model.train()
    model.eval()
    return epoch_losses


__all__ = ["FinetuneSchedule", "batch_loss", "epoch_batches", "finetune", "make_optimizer", "steps_per_epoch"]
