"""Automatic attention-temperature search on a validation split (issue 5); see ``search.py``."""

from pipelines.temperature_search.config import SearchConfig
from pipelines.temperature_search.outcome import SearchOutcome
from pipelines.temperature_search.plot import plot_search
from pipelines.temperature_search.search import run_search, search_from_files
from pipelines.temperature_search.split import ValidationSplit, round_items, split_validation

__all__ = [
    "SearchConfig",
    "SearchOutcome",
    "ValidationSplit",
    "plot_search",
    "round_items",
    "run_search",
    "search_from_files",
    "split_validation",
]
