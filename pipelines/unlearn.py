"""Pipeline step: one unlearning round from files (plain function; the Prefect flow wraps it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from asu.config import ASUConfig
from asu.data import load_qa_file
from asu.recipes import get_recipe
from asu.trainer import run_round

logger = logging.getLogger(__name__)


def unlearn_from_files(
    model_dir: str,
    forget_file: str,
    retain_file: str,
    output_dir: str,
    recipe: str = "embedded",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one round; returns JSON-friendly references (output folder) and the round's metrics."""
    config = ASUConfig.from_dict({**get_recipe(recipe).to_dict(), **(overrides or {})})
    forget, retain = load_qa_file(forget_file), load_qa_file(retain_file)
    result = run_round(model_dir, forget, retain, config, Path(output_dir), progress=False)
    logger.info("round done: %s", result.model_dir)
    return {"model_dir": str(result.model_dir), "metrics": result.metrics, "config": config.to_dict()}
