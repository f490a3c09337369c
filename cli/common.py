"""What every command group shares: ``key=value`` overrides, the recipe and round config, model names, options.

``--work-dir`` means one thing on every command: the pipeline's work dir (ledger, MLflow store, rounds, reports;
default ``$ASU_WORK_DIR`` or ``./asu-work``, resolved by ``pipelines.workspace``). Where a command writes
somewhere else it says so with its own option (``--out``, ``--root``, ``--search-dir``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from asu.errors import UsageError


def out(text: str) -> None:
    """A command's answer on stdout (the console shows answers; logs go to stderr)."""
    sys.stdout.write(text + "\n")


def parse_overrides(pairs: list[str] | None, flag: str = "--set") -> dict:
    """``key=value`` strings -> dict, values parsed as JSON when they parse (numbers, lists, null)."""
    parsed = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects key=value, got {pair!r}; e.g. {flag} tau=2.0")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def recipe_name(args) -> str:
    from asu.recipes import recipe_for_model

    return recipe_for_model(getattr(args, "model", "default")) if args.recipe == "auto" else args.recipe


def round_config(args):
    """The ``ASUConfig`` of ``--recipe`` with ``--set`` overrides (validated, strict keys)."""
    from asu.config import ASUConfig
    from asu.recipes import get_recipe

    return ASUConfig.from_dict({**get_recipe(recipe_name(args)).to_dict(), **parse_overrides(args.set)})


def model_path(model: str, progress: bool) -> Path:
    """A model name (``default``, ``tiny``, ``smollm2-135m``: prepared on first use) or a local folder."""
    from asu.models import resolve_model

    return resolve_model(model, progress=progress)


def with_config(parser):
    parser.add_argument("--recipe", default="auto", help="named config from asu.recipes (embedded, pretrained, "
                        "tofu_paper); auto: embedded for the embedded models, pretrained for any other model")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. tau=2.0")
    return parser


def with_work_dir(parser):
    parser.add_argument("--work-dir", help="pipeline work dir (default: $ASU_WORK_DIR or ./asu-work): ledger, "
                        "MLflow store (unless $MLFLOW_TRACKING_URI), rounds and reports")
    return parser


def with_json(parser, what: str = "print one JSON object (the last line)"):
    parser.add_argument("--json", action="store_true", help=what)
    return parser
