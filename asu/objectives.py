"""Registry of unlearning objectives: ASU and the baselines, run by one trainer on identical data.

An objective names a forget term and a retain term; the total loss of a step is
``forget_weight * forget_term + retain_weight * retain_term`` (the paper's ``lambda * L_F + L_R``).

| name     | forget term                                  | retain term                       |
|----------|----------------------------------------------|-----------------------------------|
| asu_gd   | KL(smoothed teacher || student) on answers   | NLL on retain answers             |
| asu_kl   | KL(smoothed teacher || student) on answers   | KL(original at tau=1 || student)  |
| ga       | gradient ascent: -NLL on forget answers      | none                              |
| gd       | -NLL on forget answers                       | NLL on retain answers             |
| npo      | NPO against the original model (beta)        | NLL on retain answers             |
| idk      | NLL of a TOFU refusal string as the answer   | NLL on retain answers             |
| simnpo   | reference-free length-normalised NPO (beta)  | NLL on retain answers             |
| rmu      | RMU: layer activations -> c * random vector  | MSE to original layer activations |

``simnpo`` and ``rmu`` follow open-unlearning's definitions (``asu.losses.simnpo_loss``, ``asu.losses.activation_mse``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from asu.errors import NotFoundError, UsageError

ForgetTerm = Literal["asu", "ga", "npo", "idk", "simnpo", "rmu"]
RetainTerm = Literal["nll", "kl", "activation", "none"]


@dataclass(frozen=True)
class Objective:
    """One registered objective.

    Attributes:
        name: registry key, used in configs and reports.
        forget: which forget term (see the module table).
        retain: which retain term.
        description: one line for reports and ``--help``.
    """

    name: str
    forget: ForgetTerm
    retain: RetainTerm
    description: str

    @property
    def needs_teacher(self) -> bool:
        """True when the forget term distils toward the temperature-smoothed teacher."""
        return self.forget == "asu"

    @property
    def needs_forget_reference(self) -> bool:
        """True when the forget term compares with the original model's sequence log-probabilities (NPO)."""
        return self.forget == "npo"

    @property
    def needs_retain_reference(self) -> bool:
        """True when the retain term is a KL to the original model at tau = 1."""
        return self.retain == "kl"

    @property
    def needs_retain_activations(self) -> bool:
        """True when the retain term matches the original model's layer activations (RMU)."""
        return self.retain == "activation"

    @property
    def uses_layer_activations(self) -> bool:
        """True when a term reads a decoder layer's hidden states (``ASUConfig.rmu_layer``)."""
        return self.forget == "rmu" or self.retain == "activation"


_REGISTRY: dict[str, Objective] = {}


def register_objective(objective: Objective) -> Objective:
    """Add ``objective`` to the registry; a second objective under the same name is an error."""
    if objective.name in _REGISTRY:
        raise UsageError(f"objective {objective.name!r} is already registered; pick another name")
    _REGISTRY[objective.name] = objective
    return objective


def get_objective(name: str) -> Objective:
    """Return the objective called ``name``; unknown names raise ``KeyError`` with suggestions."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise NotFoundError(
            f"unknown objective {name!r}.{hint} Set `method` to one of: {', '.join(available_objectives())}"
        ) from None


def available_objectives() -> list[str]:
    """Registered objective names, sorted."""
    return sorted(_REGISTRY)


for _objective in (
    Objective("asu_gd", "asu", "nll", "ASU: distil toward the attention-smoothed model; retain NLL"),
    Objective("asu_kl", "asu", "kl", "ASU: distil toward the attention-smoothed model; retain KL to original"),
    Objective("ga", "ga", "none", "gradient ascent on the forget answers"),
    Objective("gd", "ga", "nll", "gradient ascent on forget + NLL on retain (gradient difference)"),
    Objective("npo", "npo", "nll", "negative preference optimisation against the original model + retain NLL"),
    Objective("idk", "idk", "nll", "fine-tune toward TOFU refusal strings on forget questions + retain NLL"),
    Objective("simnpo", "simnpo", "nll", "SimNPO: reference-free, length-normalised NPO + retain NLL"),
    Objective("rmu", "rmu", "activation", "RMU: steer forget activations to a random vector; keep retain activations"),
):
    register_objective(_objective)
