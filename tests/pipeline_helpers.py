"""Settings shared by the tests that run the continual pipeline on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

TEST_SEARCH = {"tau_grid": [2.0, 3.0], "stage2_candidates": 1, "trial_epochs": 1, "retain_validation_size": 8,
               "max_new_tokens": 48, "lr_multipliers": [1.0], "trial_length": "same_epochs", "min_forget_gain": 0.0,
               "fluent_share_floor": 0.6, "trial_items": "validation"}
# The flow's mechanics are under test, not the search: one strength, short trials, any effect counts, a final
# round trained after the search (its checkpoints, crashes and resumes are under test), and a low fluency floor
# (the tiny model has no language of its own: one of its five validation answers judged unlikely would otherwise
# decide whether a round runs).


def write_gate(path, **values) -> str:
    """A gate YAML that passes everything unless ``values`` tighten a check; returns its path."""
    base = {"forget_efficacy_min": 0.0, "utility_drop_max": 1.0, "fluency_min": 0.0, "resurgence_max": 1.0,
            "mia_auc_band": [0.0, 1.0], "disabled": []}
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in {**base, **values}.items()))
    return str(path)


def queued_request_work(root: Path, tiny_model_dir: Path, epochs: int = 80, ledger_url: str | None = None) -> Path:
    """A work dir for ``asu run``: ``settings.yaml`` and one queued request (author 1 of the tiny model), its round
    ``epochs`` long (by default long enough to be interrupted in) with a checkpoint every step; the request in the
    ledger at ``ledger_url`` (default: the work dir's SQLite ledger)."""
    import yaml

    from asu.data import load_qa_file
    from pipelines.demo.data import write_demo_files
    from pipelines.intake.submit import submit_request
    from pipelines.ledger.store import Ledger, default_ledger_url

    files = write_demo_files(root / "inputs", "tiny", (1,), 1)
    settings = {"base_model": str(tiny_model_dir), "retain_file": str(files.retain), "holdout_file": str(files.holdout),
                "recipe": "embedded", "overrides": {"epochs": epochs, "checkpoint_every": 1},
                "search": {**TEST_SEARCH, "tau_grid": [2.0]}, "gate_file": write_gate(root / "gate.yaml"),
                "report_retain_items": 8, "max_new_tokens": 48, "benchmarks": []}
    (root / "settings.yaml").write_text(yaml.safe_dump(settings))
    with Ledger(ledger_url or default_ledger_url(root)) as ledger:
        submit_request(files.requests[0][0], ledger=ledger, retain=load_qa_file(files.retain), actor="test")
    return root
