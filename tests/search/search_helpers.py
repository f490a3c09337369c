"""Small configs shared by the temperature-search tests (tiny embedded model, tiny forget set of 20 items)."""

from __future__ import annotations

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
