"""The loss of one training step: the objective's forget term and retain term on a paired batch."""

from __future__ import annotations

import torch

from asu.config import ASUConfig
from asu.losses import (
    activation_mse,
    distillation_loss,
    nll_loss,
    npo_loss,
    rmu_steering_vector,
    sequence_log_likelihood,
    simnpo_loss,
)
from asu.teacher import Batch, Teacher, layer_hidden_states, retain_positions


def _logits(model, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def forget_term(model, batch: Batch, teacher: Teacher, config: ASUConfig) -> torch.Tensor:
    """The objective's forget term on a forget batch (for ``idk`` the batch holds refusal answers)."""
    kind = config.objective.forget
    if kind == "rmu":
        hidden = layer_hidden_states(model, batch, config.rmu_layer)
        target = rmu_steering_vector(hidden.shape[-1], config.rmu_steering_coeff, config.seed)
        return activation_mse(hidden, batch["labels"], target)
    logits = _logits(model, batch)
    if kind == "asu":
        return distillation_loss(logits, batch["labels"], teacher.forget_targets(batch))
    if kind == "ga":
        return -nll_loss(logits, batch["labels"])
    if kind == "npo":
        student = sequence_log_likelihood(logits, batch["labels"])
        return npo_loss(student, teacher.forget_reference_loglik(batch).to(student.device), config.npo_beta)
    if kind == "simnpo":
        return simnpo_loss(logits, batch["labels"], config.simnpo_beta, config.simnpo_gamma)
    return nll_loss(logits, batch["labels"])  # idk


def retain_term(model, batch: Batch, teacher: Teacher, config: ASUConfig) -> torch.Tensor:
    """The objective's retain term on a retain batch: NLL, KL(original at tau = 1 || student) or RMU's MSE to
    the original model's ``rmu_layer`` activations."""
    if config.objective.retain == "activation":
        hidden = layer_hidden_states(model, batch, config.rmu_layer)
        return activation_mse(hidden, batch["labels"], teacher.retain_activations(batch))
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
