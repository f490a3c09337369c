"""Named round configurations.

- ``tofu_paper``: the ASU paper's TOFU recipe for Llama-2-7B (method.md §5): ``ASUConfig()`` defaults.
- ``embedded``: the recipe for the small embedded model (``asu.embedded``). The method is unchanged
  (ASU_GD, lambda 0.1, all layers smoothed, precomputed teacher); the optimisation settings are scaled to a
  model of a few million parameters trained from scratch on CPU. See ``EMBEDDED_NOTES``.
- ``pretrained``: the starting point for real pretrained models (SmolLM2 and up): the paper's learning rate,
  one optimizer step per micro-batch (a 20-item request gets 25 steps instead of the paper's 5 at accumulation
  4), lambda 1, gamma 3, the forget term on the answers' fact tokens, the middle third of the layers smoothed.
  Meant to be searched: ``asu unlearn --auto`` and the pipeline's search choose tau, the learning rate
  (multiples of this one) and optionally lambda on a validation split. See ``PRETRAINED_NOTES``.

``recipe_for_model`` picks ``embedded`` for the embedded model names and ``pretrained`` for everything else.
"""

from __future__ import annotations

from asu.config import ASUConfig
from asu.errors import NotFoundError

EMBEDDED_NOTES = (
    "Same method and tau/lambda as the paper (ASU_GD, tau 2.3, lambda 0.1, all layers, precomputed teacher). "
    "A 7B model fine-tuned on TOFU moves with lr 1e-5 in 5 epochs; a few-million-parameter model trained from "
    "scratch needs lr 5e-4 and 10 epochs (50 steps of 8 pairs for 2 authors) for the same effect. At lr 1e-3 the "
    "round forgets as much but a few forget answers fall into repetition loops."
)

PRETRAINED_NOTES = (
    "On SmolLM2-135M the paper's recipe (lr 1e-5, 5 epochs at gradient accumulation 4, lambda 0.1) forgets nothing; "
    "lr 1e-4 with lambda 1 at tau 1.5 forgets fluently but little, and tau >= 2 on every answer token breaks the "
    "language (realmodel.md section 3). Distilling at the answers' fact tokens only (stop tokens removed from the "
    "teacher there), with the middle third of the layers smoothed and the retain term weighted 3, forgets far more at "
    "the same fluency (README, 'Choosing what ASU trains on'). No single setting transfers across models and "
    "requests, so this recipe is the bottom rung of the search's strength ladder, not a setting to use unsearched."
)

RECIPES: dict[str, ASUConfig] = {
    "tofu_paper": ASUConfig(),
    "embedded": ASUConfig(
        method="asu_gd",
        tau=2.3,
        forget_weight=0.1,
        learning_rate=5e-4,
        epochs=10,
        batch_size=8,
        grad_accum_steps=1,
        max_length=256,
        seed=1001,
    ),
    "pretrained": ASUConfig(
        method="asu_gd",
        tau=1.5,
        forget_weight=1.0,
        retain_weight=3.0,
        forget_positions="facts",
        layer_span="middle_third",
        learning_rate=1e-5,
        epochs=5,
        batch_size=4,
        grad_accum_steps=1,
        max_length=512,
        seed=1001,
    ),
}

EMBEDDED_NAMES = ("default", "tiny")


def recipe_for_model(model: str) -> str:
    """The recipe a model gets when none is named: ``embedded`` for the embedded models, else ``pretrained``."""
    return "embedded" if model in EMBEDDED_NAMES or str(model).startswith("embedded:") else "pretrained"


def get_recipe(name: str) -> ASUConfig:
    """The recipe called ``name``; unknown names raise ``KeyError`` listing the recipes."""
    if name not in RECIPES:
        raise NotFoundError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
