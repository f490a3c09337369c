"""``asu submit``, ``asu status`` and ``asu bench validate``: the forget-request front door on the command line.

Exit codes: 0 accepted (or shown), 1 request refused (the problems are printed: file, line, field, fix),
2 bad usage or an unknown request id (one line on stderr, no traceback; from ``flows.cli.main``).
The ledger is ``--ledger URL``, else ``$ASU_LEDGER_URL``, else ``sqlite:///<work dir>/asu-ledger.db``; the
work dir ``--work-dir``, else ``$ASU_WORK_DIR``, else ``./asu-work``.
"""

from __future__ import annotations

import json
import logging
import sys


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _quiet_gx(args) -> None:
    """GX sets one of its loggers to INFO on import; keep its chatter out of the answer unless ``-v``."""
    if not getattr(args, "verbose", False):
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda r: not (r.name.startswith("great_expectations") and r.levelno < logging.WARNING))


def _ledger(args):
    from pipelines.ledger import Ledger, default_ledger_url

    return Ledger(args.ledger or default_ledger_url(args.work_dir))


def cmd_submit(args) -> int:
    from pipelines.intake import IntakeRejected, load_retain_file, submit_request

    _quiet_gx(args)
    retain = load_retain_file(args.retain) if args.retain else None
    with _ledger(args) as ledger:
        try:
            sub = submit_request(args.file, urgent=args.urgent, ledger=ledger, retain=retain, work_dir=args.work_dir)
        except IntakeRejected as err:
            if args.json:
                _out(json.dumps(err.to_dict()))
            else:
                sys.stderr.write(f"error: {err}\n")
            return 1
    if args.json:
        _out(json.dumps(sub.to_dict()))
        return 0
    note = "" if sub.created else (" (already submitted with the same content; now urgent)" if sub.escalated else
                                   " (already submitted with the same content; nothing changed)")
    _out(f"{sub.request_id}: {sub.state}{' (urgent)' if sub.urgent else ''}{note}")
    _out(f"  content SHA-256 {sub.content_sha256}, {sub.record_count} record(s)")
    for warning in sub.warnings:
        _out(f"  warning: {warning}")
    if sub.report_html:
        _out(f"  validation report: {sub.report_html}")
    return 0


def _fmt_time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _show_request(ledger, request_id: str, as_json: bool) -> None:
    entry, history = ledger.get(request_id), ledger.history(request_id)
    if as_json:
        _out(json.dumps({"request": entry.to_dict(), "history": [t.to_dict() for t in history]}, default=str))
        return
    _out(f"{entry.request_id}: {entry.state}{' (urgent)' if entry.urgent else ''}, kind {entry.kind}, "
         f"{entry.record_count} record(s), content SHA-256 {entry.content_sha256[:16]}...")
    if not entry.has_content:
        why = f"purged {_fmt_time(entry.content_purged_at)}" if entry.content_purged_at else entry.state
        _out(f"  raw content not stored ({why}); hashes and history remain")
    _out(f"  {'time (UTC)':19}  {'from':11}  {'to':11}  actor")
    for t in history:
        label = t.to_state if t.event == "transition" else f"[{t.event}]"
        _out(f"  {_fmt_time(t.at):19}  {t.from_state or '-':11}  {label:11}  {t.actor}")


def _show_overview(ledger, as_json: bool) -> None:
    counts, queue, refused = ledger.counts(), ledger.queue(), ledger.rejections(limit=5)
    if as_json:
        _out(json.dumps({"counts": counts, "queue": [e.to_dict() for e in queue],
                         "recent_rejections": [r.to_dict() for r in refused]}, default=str))
        return
    _out("requests by state: " + (", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "none"))
    _out(f"queue ({len(queue)}; running first, then the order they will be taken):")
    for pos, e in enumerate(queue, start=1):
        _out(f"  {pos:3}. {e.request_id:30} {e.state:8} {'urgent' if e.urgent else 'normal':6} "
             f"received {_fmt_time(e.created_at)}")
    if refused:
        _out("recent refused submissions:")
        for r in refused:
            _out(f"  {_fmt_time(r.at)}  {r.source_name}  request_id {r.request_id or '-'}  "
                 f"{len(r.problems)} problem(s)  quarantine {r.quarantine_path}")


def cmd_status(args) -> int:
    with _ledger(args) as ledger:
        if args.request_id:
            _show_request(ledger, args.request_id, args.json)
        else:
            _show_overview(ledger, args.json)
    return 0


def cmd_bench_validate(args) -> int:
    from bench.validate import format_report, run_validate_bench

    _quiet_gx(args)
    result = run_validate_bench(records=args.records, out=args.out)
    _out(json.dumps(result) if args.json else format_report(result))
    return 0


def add_intake_commands(sub, bench) -> None:
    """Register ``submit`` and ``status`` on the top-level subparsers and ``validate`` on ``bench``'s."""

    def with_store(p):
        p.add_argument("--ledger", help="ledger URL (default: $ASU_LEDGER_URL or sqlite in the work dir)")
        p.add_argument("--work-dir", help="work dir for the ledger, quarantine and reports "
                                          "(default: $ASU_WORK_DIR or ./asu-work)")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        return p

    submit = with_store(sub.add_parser("submit", help="submit a forget request file (.jsonl, .json, .csv)"))
    submit.add_argument("file", help="the request file")
    submit.add_argument("--urgent", action="store_true", help="process before normal requests")
    submit.add_argument("--retain", help="JSON/JSONL QA file of the retain set (records found there conflict)")
    submit.set_defaults(func=cmd_submit)

    status = with_store(sub.add_parser("status", help="the request queue, or one request's history"))
    status.add_argument("request_id", nargs="?", help="show this request and its state history")
    status.set_defaults(func=cmd_status)

    validate = bench.add_parser("validate", help="time the validation of a 10,000-record request")
    validate.add_argument("--records", type=int, default=10_000)
    validate.add_argument("--out", help="also write the result JSON here (bench/validate.py writes "
                                        "bench/results/validate.json)")
    validate.add_argument("--json", action="store_true")
    validate.set_defaults(func=cmd_bench_validate)
