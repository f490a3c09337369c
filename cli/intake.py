"""``asu submit`` and ``asu status``: the forget-request front door on the command line.

Exit codes: 0 accepted (or shown), 1 request refused (the problems are printed: file, line, field, fix),
2 bad usage or an unknown request id (one line on stderr, no traceback; from ``cli.main.main``).
The ledger is ``--ledger URL``, else ``$ASU_LEDGER_URL``, else ``sqlite:///<work dir>/asu-ledger.db``; the
work dir ``--work-dir``, else ``$ASU_WORK_DIR``, else ``./asu-work``.
"""

from __future__ import annotations

import json
import sys

from cli.common import out, with_json, with_work_dir


def _ledger(args):
    from pipelines.ledger.store import Ledger, default_ledger_url

    return Ledger(args.ledger or default_ledger_url(args.work_dir))


def cmd_submit(args) -> int:
    from asu.qa_file import load_retain_rows
    from pipelines.intake.submit import IntakeRejected, submit_request

    retain = load_retain_rows(args.retain) if args.retain else None
    with _ledger(args) as ledger:
        try:
            sub = submit_request(args.file, urgent=args.urgent, ledger=ledger, retain=retain, work_dir=args.work_dir)
        except IntakeRejected as err:
            if args.json:
                out(json.dumps(err.to_dict()))
            else:
                sys.stderr.write(f"error: {err}\n")
            return 1
    if args.json:
        out(json.dumps(sub.to_dict()))
        return 0
    note = "" if sub.created else (" (already submitted with the same content; now urgent)" if sub.escalated else
                                   " (already submitted with the same content; nothing changed)")
    out(f"{sub.request_id}: {sub.state}{' (urgent)' if sub.urgent else ''}{note}")
    out(f"  content SHA-256 {sub.content_sha256}, {sub.record_count} record(s)")
    for warning in sub.warnings:
        out(f"  warning: {warning}")
    if sub.report_html:
        out(f"  validation report: {sub.report_html}")
    return 0


def _fmt_time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _show_request(ledger, request_id: str, as_json: bool) -> None:
    entry, history = ledger.get(request_id), ledger.history(request_id)
    if as_json:
        out(json.dumps({"request": entry.to_dict(), "history": [t.to_dict() for t in history]}, default=str))
        return
    out(f"{entry.request_id}: {entry.state}{' (urgent)' if entry.urgent else ''}, kind {entry.kind}, "
         f"{entry.record_count} record(s), content SHA-256 {entry.content_sha256[:16]}...")
    if not entry.has_content:
        why = f"purged {_fmt_time(entry.content_purged_at)}" if entry.content_purged_at else entry.state
        out(f"  raw content not stored ({why}); hashes and history remain")
    out(f"  {'time (UTC)':19}  {'from':11}  {'to':11}  actor")
    for t in history:
        label = t.to_state if t.event == "transition" else f"[{t.event}]"
        out(f"  {_fmt_time(t.at):19}  {t.from_state or '-':11}  {label:11}  {t.actor}")


def _show_overview(ledger, as_json: bool) -> None:
    counts, queue, refused = ledger.counts(), ledger.queue(), ledger.rejections(limit=5)
    if as_json:
        out(json.dumps({"counts": counts, "queue": [e.to_dict() for e in queue],
                         "recent_rejections": [r.to_dict() for r in refused]}, default=str))
        return
    out("requests by state: " + (", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "none"))
    out(f"queue ({len(queue)}; running first, then the order they will be taken):")
    for pos, e in enumerate(queue, start=1):
        out(f"  {pos:3}. {e.request_id:30} {e.state:8} {'urgent' if e.urgent else 'normal':6} "
             f"received {_fmt_time(e.created_at)}")
    if refused:
        out("recent refused submissions:")
        for r in refused:
            out(f"  {_fmt_time(r.at)}  {r.source_name}  request_id {r.request_id or '-'}  "
                 f"{len(r.problems)} problem(s)  quarantine {r.quarantine_path}")


def cmd_status(args) -> int:
    with _ledger(args) as ledger:
        if args.request_id:
            _show_request(ledger, args.request_id, args.json)
        else:
            _show_overview(ledger, args.json)
    return 0


def register(sub) -> None:

    def with_store(p):
        p.add_argument("--ledger", help="ledger URL (default: $ASU_LEDGER_URL or sqlite in the work dir)")
        return with_json(with_work_dir(p))

    submit = with_store(sub.add_parser("submit", help="submit a forget request file (.jsonl, .json, .csv)"))
    submit.add_argument("file", help="the request file")
    submit.add_argument("--urgent", action="store_true", help="process before normal requests")
    submit.add_argument("--retain", help="JSON/JSONL QA file of the retain set (records found there conflict)")
    submit.set_defaults(func=cmd_submit)

    status = with_store(sub.add_parser("status", help="the request queue, or one request's history"))
    status.add_argument("request_id", nargs="?", help="show this request and its state history")
    status.set_defaults(func=cmd_status)
