"""Named round configurations.

- ``tofu_paper``: the ASU paper's TOFU recipe for Llama-2-7B (method.md §5): ``ASUConfig()`` defaults.
- ``embedded``: the recipe for the small embedded model (``asu.embedded``). The method is unchanged
  (ASU_GD, lambda 0.1, all layers smoothed, precomputed teacher); the optimisation settings are scaled to a
  model of a few million parameters trained from scratch on CPU. See ``EMBEDDED_NOTES``.
"""

from __future__ import annotations

from asu.config import ASUConfig

EMBEDDED_NOTES = (
    "Same method and tau/lambda as the paper (ASU_GD, tau 2.3, lambda 0.1, all layers, precomputed teacher). "
    "A 7B model fine-tuned on TOFU moves with lr 1e-5 in 5 epochs; a few-million-parameter model trained from "
    "scratch needs lr 5e-4 and 10 epochs (50 steps of 8 pairs for 2 authors) for the same effect. At lr 1e-3 the "
    "round forgets as much but a few forget answers fall into repetition loops."
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
}


def get_recipe(name: str) -> ASUConfig:
    """The recipe called ``name``; unknown names raise ``KeyError`` listing the recipes."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
