"""Rounds: ``asu run`` (the queue, through the continual flow), ``asu urgent`` (one request at once),
``asu unlearn`` (one round on your own model and files, ``--auto``: settings searched first) and ``asu search``.

Exit codes: 0 every round registered (or a setting chosen), 1 a round failed its gate, 3 the search chose no
setting (``asu.errors.NoSettingFound``: nothing was changed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from asu.errors import NoSettingFound
from cli.common import (
    model_path,
    out,
    parse_overrides,
    recipe_name,
    round_config,
    with_config,
    with_json,
    with_work_dir,
)


def _rounds_answer(results: list[dict], as_json: bool) -> int:
    from pipelines.round.record import format_rounds

    out(json.dumps(results) if as_json else format_rounds([r["table"] for r in results]))
    return 0 if all(r["status"] == "registered" for r in results) else 1


def cmd_run(args) -> int:
    from flows.continual import continual_unlearning
    from pipelines.workspace import using_work_dir

    with using_work_dir(args.work_dir):
        return _rounds_answer(continual_unlearning(args.settings, args.ledger, args.max), args.json)


def cmd_urgent(args) -> int:
    from flows.continual import urgent_removal
    from pipelines.workspace import using_work_dir

    with using_work_dir(args.work_dir):
        result = urgent_removal(request_file=args.file, settings=args.settings, ledger_url=args.ledger)
    return _rounds_answer([result], args.json)


def cmd_unlearn(args) -> int:
    from asu.qa_file import load_round_items
    from asu.trainer import run_round

    config = round_config(args)
    if args.auto:
        return _unlearn_auto(args, config)
    forget, retain = load_round_items(args.forget, "forget"), load_round_items(args.retain, "retain")
    result = run_round(model_path(args.model, progress=True), forget, retain, config, args.out)
    if os.environ.get("RANK", "0") == "0":  # under `accelerate launch`, report once
        out(json.dumps({"model_dir": str(result.model_dir), "metrics": result.metrics}, indent=2))
    return 0


def _unlearn_auto(args, config) -> int:
    """``asu unlearn --auto``: search, then the final round at the chosen settings; exit 3 when none was chosen."""
    from pipelines.console import show_progress
    from pipelines.round.unlearn import auto_unlearn_from_files, format_auto
    from pipelines.temperature_search import SearchConfig

    search = SearchConfig.from_dict(parse_overrides(args.search, "--search"))
    model_dir = model_path(args.model, progress=not args.json)
    if not args.json:  # progress: one line per scanned tau and per trial (the search logs them at INFO)
        show_progress("asu.search", "pipelines.temperature_search", "pipelines.round.unlearn")
    search_dir = Path(args.search_dir) if args.search_dir else Path(args.out).with_name(Path(args.out).name + ".search")
    result = auto_unlearn_from_files(model_dir, args.forget, args.retain, args.out, config, search, search_dir,
                                     args.forget_validation)
    out(json.dumps(result) if args.json else format_auto(result))
    return 0 if result["status"] == "chosen" else NoSettingFound.exit_code


def cmd_search(args) -> int:
    from pipelines.temperature_search import search_from_files

    outcome = search_from_files(
        model_path(args.model, progress=not args.json), args.forget, args.retain, args.out, recipe_name(args),
        parse_overrides(args.set), parse_overrides(args.search, "--search"), args.forget_validation,
    )
    out(json.dumps(outcome.to_dict()) if args.json else outcome.format_table())
    return 0 if outcome.status == "chosen" else NoSettingFound.exit_code


SEARCH_HELP = "override a SearchConfig field, e.g. tau_grid=[2,2.5,3] or fluent_share_floor=0.9"


def register(sub) -> None:
    run = with_json(with_work_dir(sub.add_parser("run", help="process the queued requests now (continual flow)")))
    run.add_argument("--settings", required=True, help="pipeline settings YAML (see configs/pipeline.yaml)")
    run.add_argument("--max", type=int, help="process at most N requests")
    run.add_argument("--ledger", help="ledger URL (default: $ASU_LEDGER_URL or the work dir's SQLite)")
    run.set_defaults(func=cmd_run)

    urgent = with_json(with_work_dir(sub.add_parser("urgent", help="submit a request as urgent and process it now")))
    urgent.add_argument("file", help="the request file (JSONL, JSON or CSV)")
    urgent.add_argument("--settings", required=True, help="pipeline settings YAML (see configs/pipeline.yaml)")
    urgent.add_argument("--ledger", help="ledger URL (default: $ASU_LEDGER_URL or the work dir's SQLite)")
    urgent.set_defaults(func=cmd_urgent)

    unlearn = with_config(sub.add_parser("unlearn", help="run one round on your own model and QA files"))
    unlearn.add_argument("--model", required=True, help="model name (smollm2-135m, default, tiny) or local HF folder")
    unlearn.add_argument("--forget", required=True, help="JSON/JSONL file of {question, answer} items and/or "
                         "{text} passages to forget (a passage is learnt on every token, in chunks)")
    unlearn.add_argument("--retain", required=True, help="JSON/JSONL file of {question, answer} and/or {text} to keep")
    unlearn.add_argument("--out", required=True, help="output folder of the unlearned model")
    unlearn.add_argument("--auto", action="store_true", help="choose tau, learning rate (and lambda) on a validation "
                         "split first, then run the round at the chosen settings; exit 3 and save nothing when the "
                         "search finds no setting (no_effect / no_safe_setting)")
    unlearn.add_argument("--search", action="append", metavar="KEY=VALUE", help="--auto: " + SEARCH_HELP)
    unlearn.add_argument("--forget-validation", help="--auto: the request's validation items (default: split off)")
    unlearn.add_argument("--search-dir", help="--auto: where search.json, search.png and trials go "
                         "(default: <out>.search next to --out)")
    with_json(unlearn, "--auto: print the result as one JSON object (the last line)")
    unlearn.set_defaults(func=cmd_unlearn)

    search = with_json(with_config(sub.add_parser("search", help="choose the round's settings on a validation "
                                                  "split (tau, learning rate, lambda)")))
    search.add_argument("--model", required=True, help="model name (smollm2-135m, default, tiny) or local HF folder")
    search.add_argument("--forget", required=True, help="JSON/JSONL of {question, answer[, subject]} to forget")
    search.add_argument("--retain", required=True, help="JSON/JSONL file of {question, answer} to keep")
    search.add_argument("--forget-validation", help="the request's validation items (default: split off --forget)")
    search.add_argument("--search", action="append", metavar="KEY=VALUE", help=SEARCH_HELP)
    search.add_argument("--out", default="runs/search", help="where search.json, search.png and trials go")
    search.set_defaults(func=cmd_search)
