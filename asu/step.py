"""The loss of one training step: the objective's forget term and retain term on a paired batch."""

from __future__ import annotations

import torch

from asu.config import ASUConfig
from asu.losses import distillation_loss, nll_loss, npo_loss, sequence_log_likelihood
from asu.teacher import Batch, Teacher, retain_positions


def _logits(model, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def forget_term(model, batch: Batch, teacher: Teacher, config: ASUConfig) -> torch.Tensor:
    """The objective's forget term on a forget batch (for ``idk`` the batch holds refusal answers)."""
    kind = config.objective.forget
    logits = _logits(model, batch)
    if kind == "asu":
        return distillation_loss(logits, batch["labels"], teacher.forget_targets(batch))
    if kind == "ga":
        return -nll_loss(logits, batch["labels"])
    if kind == "npo":
        student = sequence_log_likelihood(logits, batch["labels"])
        return npo_loss(student, teacher.forget_reference_loglik(batch).to(student.device), config.npo_beta)
    return nll_loss(logits, batch["labels"])  # idk


def retain_term(model, batch: Batch, teacher: Teacher, config: ASUConfig) -> torch.Tensor:
    """The objective's retain term on a retain batch: NLL, or KL(original at tau = 1 || student)."""
    logits = _logits(model, batch)
    if config.objective.retain == "kl":
        return distillation_loss(logits, retain_positions(batch, config), teacher.retain_targets(batch))
    return nll_loss(logits, batch["labels"])


def objective_loss(
    model, forget: Batch, retain: Batch | None, teacher: Teacher, config: ASUConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """``forget_weight * forget_term + retain_weight * retain_term`` and the parts as floats (for logging)."""
    f_term = forget_term(model, forget, teacher, config)
    loss = config.forget_weight * f_term
    parts = {"forget_loss": f_term.item()}
    if config.objective.retain != "none" and retain is not None:
        r_term = retain_term(model, retain, teacher, config)
        loss = loss + config.retain_weight * r_term
        parts["retain_loss"] = r_term.item()
    parts["loss"] = loss.item()
    return loss, parts
