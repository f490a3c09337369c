"""The one logging policy of the ``asu`` command and the Prefect flows: what a person sees, and what the UI gets.

Console (stderr), default: warnings and errors from anyone, plus the step lines of :data:`PROGRESS` ("what it
is doing": one line per step of a round, each long step's progress); third-party progress bars (model loads and
saves, MLflow artifact downloads, dataset maps) and their INFO chatter (Prefect's run lines, MLflow, GX, alembic)
are off. ``verbose``: INFO from everyone, with time and logger name, and the bars back on.

The Prefect UI: the project's own loggers (``asu``, ``pipelines``, ``data_contracts``) log at INFO and are
attached to Prefect's API handler (``PREFECT_LOGGING_EXTRA_LOGGERS``), so a flow run's page shows its steps
whatever the console shows. Call :func:`configure_logging` before Prefect is imported (the ``asu`` command does;
deployments set the same variables in ``prefect.yaml``).
"""

from __future__ import annotations

import logging
import os
import sys

#: The step lines a person watching a long run wants on the console even when it is quiet.
PROGRESS = "pipelines.progress"
#: The project's loggers: INFO, on the Prefect UI.
PROJECT_LOGGERS = ("asu", "pipelines", "data_contracts")
#: Third-party loggers whose INFO lines are chatter on a console.
CHATTY = ("prefect", "mlflow", "great_expectations", "alembic", "httpx", "urllib3", "transformers", "datasets",
          "accelerate", "matplotlib", "filelock")

QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" / "Writing model shards" bars
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # "Downloading artifacts" bars
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # MLflow's own handler ("Updating database tables", ...)
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
}
PREFECT_ENV = {"PREFECT_LOGGING_EXTRA_LOGGERS": ",".join(PROJECT_LOGGERS),
               "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}  # outside a flow run: the console only


#: Prefect's run loggers repeat a failure up to four times ("Task run failed", "Finished in state Failed", ...);
#: the exception itself reaches the caller, which reports it once.
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


#: Loggers whose INFO lines a quiet console shows (with their children): :data:`PROGRESS`, plus what a command
#: adds with :func:`show_progress` (e.g. the search's one line per scanned tau for ``asu unlearn --auto``).
_SHOWN: set[str] = {PROGRESS}


def _shown(name: str) -> bool:
    return any(name == shown or name.startswith(shown + ".") for shown in _SHOWN)


def show_progress(*names: str) -> None:
    """Also show the INFO lines of the loggers ``names`` (and their children) on a quiet console."""
    _SHOWN.update(names)


class _Policy(logging.Filter):
    """Quiet console: warnings and up from anyone (but Prefect's run lines), INFO only from the shown loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in RUN_LOGGERS:
            return False
        return record.levelno >= logging.WARNING or _shown(record.name)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno < logging.WARNING and _shown(record.name):
            return text
        return f"{record.levelname.lower()}: {text}"


def configure_logging(verbose: bool = False, stream=None) -> logging.Handler:
    """Install the policy on the root logger (replacing an earlier call's handler); returns the console handler."""
    for key, value in PREFECT_ENV.items():
        os.environ.setdefault(key, value)
    if not verbose:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
    _SHOWN.clear()
    _SHOWN.add(PROGRESS)  # a command adds its own with show_progress, after this call
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_asu_console", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._asu_console = True  # type: ignore[attr-defined]
    if verbose:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    else:
        handler.addFilter(_Policy())
        handler.setFormatter(_Format())
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    _third_party_bars(enabled=verbose)
    return handler


def _third_party_bars(enabled: bool) -> None:
    """Libraries already imported read their switches now, not from the environment."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    if "datasets" in sys.modules:
        import datasets

        (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()


def progress() -> logging.Logger:
    """The logger of step lines (shown on a quiet console)."""
    return logging.getLogger(PROGRESS)


__all__ = ["PROGRESS", "PROJECT_LOGGERS", "configure_logging", "progress", "show_progress"]
