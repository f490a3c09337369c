"""``asu demo`` (the whole product: three requests through intake, Prefect, the gate and the registry) and
``asu demo-round`` (one ASU round on the embedded model, before/after table)."""

from __future__ import annotations

import json
from pathlib import Path

from cli.common import out, round_config, with_config, with_json


def cmd_demo(args) -> int:
    from flows.demo import run_product_demo
    from pipelines.demo.product import format_summary

    summary = run_product_demo(args.root, variant=args.variant, model=args.model)
    out(json.dumps(summary) if args.json else format_summary(summary))  # --json: the summary is the last line
    return 0


def cmd_demo_round(args) -> int:
    from pipelines.demo.one_round import format_demo, run_demo

    config = round_config(args)
    result = run_demo(Path(args.out), variant=args.variant, config=config, progress=not args.json)
    if args.json:
        sets = {name: {"before": result.before[name].summary(), "after": result.after[name].summary()}
                for name in result.before}
        out(json.dumps({"sets": sets, "round": result.round.metrics, "model_dir": str(result.round.model_dir)}))
    else:
        out(format_demo(result, config))
    return 0


def register(sub) -> None:
    demo = with_json(sub.add_parser("demo", help="the whole product on the embedded model (3 requests, Prefect, "
                                    "MLflow)"), "print the summary as one JSON line (the last line)")
    demo.add_argument("--variant", default="default", choices=["default", "tiny"])
    demo.add_argument("--model", default=None, metavar="NAME|DIR",
                      help="run on a real pretrained model (e.g. smollm2-135m) instead of the embedded one: three "
                           "parts of the 'paris' scenario, settings chosen by the search")
    demo.add_argument("--root", default="runs/demo", help="each demo gets a new timestamped work dir here")
    demo.set_defaults(func=cmd_demo)

    demo_round = with_json(with_config(sub.add_parser("demo-round", help="one ASU round on the embedded model")))
    demo_round.add_argument("--variant", default="default", choices=["default", "tiny"])
    demo_round.add_argument("--out", default="runs/demo-round", help="where the unlearned model is written")
    demo_round.set_defaults(func=cmd_demo_round)
