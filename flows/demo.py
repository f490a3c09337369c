"""`asu demo`: the whole product end to end on one machine, on the embedded model or a real pretrained one.

A table of contents; the parts live in ``pipelines.demo.product``: prepare the work dir, model and requests ->
submit them through the intake -> the ``continual_unlearning`` flow (Prefect's ephemeral API) -> the summary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipelines.demo import product
from pipelines.workspace import using_work_dir


def run_product_demo(root: str | Path = "runs/demo", *, variant: str = "default", model: str | None = None,
                     authors: tuple[int, ...] | None = None, settings_overrides: dict | None = None) -> dict[str, Any]:
    """Run the demo in a new work dir under ``root``; returns the summary (rounds, champion, samples, locations)."""
    from flows.continual import continual_unlearning

    started = time.perf_counter()
    run = product.prepare(root, variant=variant, model=model, authors=authors, settings_overrides=settings_overrides)
    with using_work_dir(run.work):  # ledger, MLflow store, rounds and reports all live there
        submitted = product.submit_all(run)
        results = continual_unlearning(run.settings)
        return product.summarise(run, submitted, results, time.perf_counter() - started)


__all__ = ["run_product_demo"]
