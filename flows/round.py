"""Prefect flow: one manual unlearning round from files. The continual flows build on the same steps."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from pipelines.round.unlearn import unlearn_from_files

# Holds a model while it runs: never cache on its inputs.
unlearn = task(unlearn_from_files, name="unlearn", cache_policy=NONE)


@flow(name="unlearning-round")
def unlearning_round(
    model_dir: str,
    forget_file: str,
    retain_file: str,
    output_dir: str,
    recipe: str = "embedded",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Unlearn ``forget_file`` from the model in ``model_dir``, keeping ``retain_file``; writes ``output_dir``."""
    return unlearn(model_dir, forget_file, retain_file, output_dir, recipe, overrides)
