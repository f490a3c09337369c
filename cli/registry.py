"""``asu promote``, ``asu rollback`` and ``asu report``: the champion alias and a request's evidence.

Promotion and rollback move the registry alias and the ledger state of the requests involved together
(``pipelines.tracking.promotion``).
"""

from __future__ import annotations

import json

from cli.common import out, with_json, with_work_dir


def cmd_promote(args) -> int:
    from pipelines.tracking.promotion import promote

    result = promote(args.version, args.reason, force=args.force, work=args.work_dir, model_name=args.model_name,
                     ledger_url=args.ledger)
    out(result.describe())
    return 0


def cmd_rollback(args) -> int:
    from pipelines.tracking.promotion import rollback

    result = rollback(args.reason, work=args.work_dir, model_name=args.model_name, ledger_url=args.ledger)
    out(result.describe())
    return 0


def cmd_report(args) -> int:
    from pipelines.round.report import load_report

    data, markdown = load_report(args.request_id, args.work_dir)
    out(json.dumps(data) if args.json else markdown.rstrip("\n"))
    return 0


def register(sub) -> None:
    promote = with_work_dir(sub.add_parser("promote", help="point the champion alias at a registered model version"))
    promote.add_argument("version", help="model version number (see the MLflow UI or the evidence reports)")
    promote.add_argument("--reason", default="promoted by hand (asu promote)", help="kept in the registry")
    promote.add_argument("--force", action="store_true", help="promote even though the version failed its gate")
    promote.add_argument("--model-name", help="registered model (default: asu-unlearned)")
    promote.add_argument("--ledger", help="ledger URL (default: $ASU_LEDGER_URL or the work dir's SQLite)")
    promote.set_defaults(func=cmd_promote)

    rollback = with_work_dir(sub.add_parser("rollback", help="move the champion back to the previous champion"))
    rollback.add_argument("--reason", required=True, help="why the champion is rolled back (kept in the registry)")
    rollback.add_argument("--model-name", help="registered model (default: asu-unlearned)")
    rollback.add_argument("--ledger", help="ledger URL (default: $ASU_LEDGER_URL or the work dir's SQLite)")
    rollback.set_defaults(func=cmd_rollback)

    report = with_json(with_work_dir(sub.add_parser("report", help="print a request's evidence report (Markdown)")),
                       "print the report's JSON instead")
    report.add_argument("request_id")
    report.set_defaults(func=cmd_report)
