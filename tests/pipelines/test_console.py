"""The logging policy: a quiet console shows warnings and step lines only; -v shows everything."""

from __future__ import annotations

import io
import logging

from pipelines.console import configure_logging, progress


def _emit() -> None:
    logging.getLogger("transformers.modeling_utils").info("Loading weights")
    logging.getLogger("prefect.flow_runs").info("Finished in state Completed()")
    logging.getLogger("pipelines.round.process").info("internal detail")
    progress().info("request r1: searching the settings")
    logging.getLogger("some_library").warning("store is slow")


def test_quiet_console_shows_step_lines_and_warnings_only():
    stream = io.StringIO()
    configure_logging(verbose=False, stream=stream)
    _emit()
    assert stream.getvalue().splitlines() == ["request r1: searching the settings", "warning: store is slow"]
    # the project's loggers still produce INFO records (for the Prefect UI's handler)
    assert logging.getLogger("pipelines.round.process").isEnabledFor(logging.INFO)


def test_verbose_console_shows_everything_once():
    stream = io.StringIO()
    configure_logging(verbose=False, stream=io.StringIO())
    configure_logging(verbose=True, stream=stream)  # replaces the earlier handler: no line twice
    _emit()
    text = stream.getvalue()
    for line in ("INFO prefect.flow_runs: Finished", "INFO pipelines.round.process: internal detail",
                 "INFO pipelines.progress: request r1", "WARNING some_library: store is slow"):
        assert text.count(line) == 1  # transformers may print "Loading weights" on its own handler instead
    assert logging.getLogger("transformers").isEnabledFor(logging.INFO)
    configure_logging(verbose=False, stream=stream)
    assert not logging.getLogger("transformers").isEnabledFor(logging.INFO)


def test_a_command_can_show_a_library_loggers_progress_lines():
    from pipelines.console import show_progress

    stream = io.StringIO()
    configure_logging(verbose=False, stream=stream)
    logging.getLogger("asu.search.scan").info("hidden before")
    show_progress("asu.search")
    logging.getLogger("asu.search.scan").info("tau 2.0 scanned")
    logging.getLogger("asu.searching").info("a different logger stays hidden")
    assert stream.getvalue().splitlines() == ["tau 2.0 scanned"]
