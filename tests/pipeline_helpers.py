"""Settings shared by the tests that run the continual pipeline on the tiny model."""

from __future__ import annotations

import json

TEST_SEARCH = {"tau_grid": [2.0, 3.0], "stage2_candidates": 1, "trial_epochs": 1, "retain_validation_size": 8,
               "max_new_tokens": 48, "lr_multipliers": [1.0], "trial_length": "same_epochs", "min_forget_gain": 0.0,
               "fluent_share_floor": 0.6}
# The flow's mechanics are under test, not the search: one strength, short trials, any effect counts, and a low
# fluency floor (the tiny model has no language of its own: one of its five validation answers judged unlikely
# would otherwise decide whether a round runs).


def write_gate(path, **values) -> str:
    """A gate YAML that passes everything unless ``values`` tighten a check; returns its path."""
    base = {"forget_efficacy_min": 0.0, "utility_drop_max": 1.0, "fluency_min": 0.0, "resurgence_max": 1.0,
            "mia_auc_band": [0.0, 1.0], "disabled": []}
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in {**base, **values}.items()))
    return str(path)
