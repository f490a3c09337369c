"""The metric-logger protocol the library reports through, and its no-op default.

The library never imports a tracker: orchestration code passes an object with these methods (the MLflow
implementation lives in ``pipelines``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class MetricLogger(Protocol):
    """Receives parameters once and metrics as they are produced."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def close(self) -> None: ...


class NullLogger:
    """A logger that drops everything (the default)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class ListLogger:
    """Keeps what it receives in memory (tests, demos)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int | None, dict[str, float]]] = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def close(self) -> None:
        pass
