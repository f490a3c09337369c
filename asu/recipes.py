"""Named round configurations.

- ``tofu_paper``: the ASU paper's TOFU recipe for Llama-2-7B (method.md §5): ``ASUConfig()`` defaults.
- ``embedded``: the recipe for the small embedded model (``asu.embedded``). The method is unchanged
  (ASU_GD, lambda 0.1, all layers smoothed, precomputed teacher); the optimisation settings are scaled to a
  model of a few million parameters trained from scratch on CPU. See ``EMBEDDED_NOTES``.
"""

from __future__ import annotations

from asu.config import ASUConfig

EMBEDDED_NOTES = (
    "A 7B model fine-tuned on TOFU moves with lr 1e-5 in 5 epochs; a few-million-parameter model trained from "
    "scratch needs a larger learning rate for the same effect. tau is lower than the paper's 2.3 because a "
    "4-layer model's attention is less redundant: 2.3 makes its teacher incoherent (method.md, 'measured on a "
    "small real model')."
)

RECIPES: dict[str, ASUConfig] = {
    "tofu_paper": ASUConfig(),
    "embedded": ASUConfig(
        method="asu_gd",
        tau=2.3,
        forget_weight=0.1,
        learning_rate=1e-3,
        epochs=5,
        batch_size=8,
        grad_accum_steps=1,
        max_length=256,
        seed=1001,
    ),
}


def get_recipe(name: str) -> ASUConfig:
    """The recipe called ``name``; unknown names raise ``KeyError`` listing the recipes."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
