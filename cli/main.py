"""The ``asu`` command: the parser of every command group, the logging policy, and errors -> exit codes.

Command groups (one module each): ``cli.demo`` (demo, demo-round), ``cli.intake`` (submit, status),
``cli.rounds`` (run, urgent, unlearn, search), ``cli.registry`` (promote, rollback, report), ``cli.evaluate``
(eval, fluency), ``cli.models`` (model prepare | list | finetune-tofu). Benchmarks are developer tools:
``python -m bench.<name>`` (see the README).

Exit codes: 0 done; 1 refused or a gate failed; 2 bad input (one line naming the file, field or option and the
fix); 3 the search chose no setting; 4 a service or device is unavailable; 5 a state conflict;
70 a bug in this project (the traceback with ``-v``). See ``asu.errors``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from asu.errors import BUG_EXIT_CODE, ASUError, DiskFull, InfrastructureError
from cli import demo, evaluate, intake, models, registry, rounds

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    # Prefect's temporary API server gets 20 s to start by default: on 2 busy cores it can take longer, and the
    # command then died with a timeout before doing anything. A setting of the user's own still wins.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}
COMMAND_GROUPS = (demo, intake, rounds, registry, evaluate, models)
logger = logging.getLogger("cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asu", description="Attention Smoothing Unlearning pipeline")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at INFO level with library output and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    from pipelines.console import configure_logging

    configure_logging(verbose=args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: a round in progress resumes from its checkpoint on the next run\n")
        return 130
    except Exception as err:  # noqa: BLE001 - every error becomes one line and an exit code (see _answer)
        if args.verbose:
            logger.exception("%s", type(err).__name__)
        message, code = _answer(err)
        sys.stderr.write(message + "\n")
        return code


def _answer(err: Exception) -> tuple[str, int]:
    """The line a person reads and the exit code, by kind of error (``asu.errors``)."""
    if isinstance(err, ASUError):
        return f"error: {err.message}", err.exit_code
    if DiskFull.matches(err):  # the disk (or a file-size limit) is full
        return (f"error: no space left writing {err.filename or 'a file'} ({err.strerror}); free disk space or "
                "point --work-dir / --out at a larger disk, then run the command again (a round resumes from its "
                "last checkpoint)", InfrastructureError.exit_code)
    if isinstance(err, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        return f"error: {err}", 2  # a path the user named (an option or a settings file): bad input
    return (f"internal error (a bug in asu, not your input): {type(err).__name__}: {err}\n"
            "rerun with -v for the traceback and report it", BUG_EXIT_CODE)


if __name__ == "__main__":
    sys.exit(main())
