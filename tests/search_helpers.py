"""Small configs shared by the temperature-search tests (tiny embedded model, tiny forget set of 20 items)."""

from __future__ import annotations

import json

from asu.config import ASUConfig
from pipelines.temperature_search import SearchConfig

#: A round on the tiny model that moves facts in a couple of epochs.
TINY_ROUND = ASUConfig(tau=3.0, learning_rate=1e-3, epochs=2, batch_size=4, grad_accum_steps=1, max_length=256)
#: Two taus, three strength levels around the round's lr, small validation sets (tiny forget set: 20 items).
TINY_SEARCH = SearchConfig(
    tau_grid=(2.0, 4.0),
    stage2_candidates=2,
    trial_epochs=1,
    retain_validation_size=8,
    min_validation_items=4,
    min_content_nll_rise=0.02,
    lr_multipliers=(0.3, 1.0, 3.0),
)


def overrides(config, flag: str, keys: list[str]) -> list[str]:
    """``config``'s fields ``keys`` as CLI ``flag key=value`` pairs."""
    values = config.to_dict()
    return [arg for key in keys for arg in (flag, f"{key}={json.dumps(values[key])}")]


#: The tiny round and search as `asu search` / `asu unlearn --auto` arguments.
ROUND_ARGS = ["--recipe", "embedded", *overrides(TINY_ROUND, "--set", ["tau", "learning_rate", "epochs", "batch_size",
                                                                       "grad_accum_steps", "max_length", "seed"])]
SEARCH_ARGS = overrides(TINY_SEARCH, "--search", ["tau_grid", "stage2_candidates", "trial_epochs",
                                                  "retain_validation_size", "min_validation_items",
                                                  "min_content_nll_rise", "lr_multipliers"])
