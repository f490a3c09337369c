"""One forget request's round: the steps (``steps``), their order (``process_request``) and its record."""

from pipelines.round.process import RoundSteps, process_request
from pipelines.round.record import RoundRecord, RoundStatus

__all__ = ["RoundRecord", "RoundStatus", "RoundSteps", "process_request"]
