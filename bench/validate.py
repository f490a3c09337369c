"""`python -m bench.validate`: how long validating a large forget request takes (target: 10,000 records < 5 s).

Writes a synthetic ``qa`` request of N records (JSON Lines, ~150-character questions and answers, a paraphrase
and validation item every 50 records), then times in one process:
- ``parse``: size check, read, decode and parse the file;
- ``contracts``: frames, SHA-256 hashes and both GX suites (ephemeral context, ``COMPLETE`` results);
- ``report``: the same plus writing the JSON summary and GX's HTML report;
- ``submit``: ``submit_request`` end to end into a fresh SQLite ledger (parse, contracts, report, ledger
  insert of the request, its history and one hash row per record).
The first contracts run of the process is reported separately (``contracts_first``: GX warm-up, after GX is
imported) and the others are medians of ``repeats`` runs. Import times are measured in fresh subprocesses
(``import_seconds``) and for this process (``import_seconds_this_process``), since they are paid once per process.
``python -m bench.validate`` writes ``bench/results/validate.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "validate.json"
TARGET_SECONDS = 5.0


def write_request(path: Path, records: int) -> Path:
    """A valid JSON Lines request with ``records`` rows (forget records, some paraphrases and validation items)."""
    lines = [json.dumps({"request_id": "bench-1", "subject": "A synthetic author", "kind": "qa",
                         "requester": "bench", "received_at": "2026-01-01T00:00:00Z"})]
    for i in range(records):
        row = {"record_id": f"r{i}", "question": f"What is fact number {i} about the synthetic author's life "
               f"and work, as described in their biography?", "answer": f"Fact {i}: the author wrote book {i} "
               f"in the year {1900 + i % 120}, in a small town, and it was well received by critics."}
        if i % 50 == 1:
            row.update(role="paraphrase", paraphrase_of=f"r{i - 1}", question=f"Paraphrase {i}: " + row["question"])
        elif i % 50 == 2:
            row.update(role="validation", question=f"Held out {i}: " + row["question"])
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return float(done.stdout.strip().splitlines()[-1])


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_validate_bench(records: int = 10_000, repeats: int = 3, out: str | Path | None = None,
                       measure_imports: bool = True) -> dict:
    """Time parsing, contracts, report and submission of a ``records``-row request; see the module docstring.
    ``measure_imports=False`` skips the fresh-process import timings (``import_seconds`` is then empty)."""
    modules = ("great_expectations", "pipelines.intake.submit") if measure_imports else ()
    imports = {m: round(_import_seconds(m), 3) for m in modules}
    start = time.perf_counter()
    import great_expectations  # noqa: F401  (imported lazily by the runner; timed here, not in the first run)

    from data_contracts.limits import RequestLimits
    from pipelines.intake.formats import read_request_file
    from pipelines.intake.submit import check_contracts, submit_request
    from pipelines.ledger.store import Ledger

    in_process_import = time.perf_counter() - start
    limits = RequestLimits()
    with tempfile.TemporaryDirectory(prefix="asu-bench-validate-") as tmp:
        tmp = Path(tmp)
        path = write_request(tmp / "request.jsonl", records)
        raw = read_request_file(path, limits)
        first = _timed(lambda: check_contracts(raw, limits=limits))
        parse = [_timed(lambda: read_request_file(path, limits)) for _ in range(repeats)]
        contracts = [_timed(lambda: check_contracts(raw, limits=limits)) for _ in range(repeats)]
        report = [_timed(lambda i=i: check_contracts(raw, limits=limits, report_dir=tmp / f"report{i}"))
                  for i in range(repeats)]
        submit = []
        for i in range(repeats):
            with Ledger(f"sqlite:///{tmp / f'ledger{i}.db'}") as ledger:
                submit.append(_timed(lambda ledger=ledger, i=i: submit_request(path, ledger=ledger,
                                                                               work_dir=tmp / f"work{i}")))
        size = path.stat().st_size
    med = {name: round(statistics.median(v), 3) for name, v in
           {"parse": parse, "contracts": contracts, "report": report, "submit": submit}.items()}
    result = {
        "records": records, "file_bytes": size, "repeats": repeats, "import_seconds": imports,
        "import_seconds_this_process": round(in_process_import, 3),
        "contracts_first": round(first, 3), "median_seconds": med,
        "validation_seconds": round(med["parse"] + med["report"], 3), "target_seconds": TARGET_SECONDS,
        "meets_target": med["parse"] + med["report"] < TARGET_SECONDS,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2), "python": platform.python_version(),
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def format_report(result: dict) -> str:
    med = result["median_seconds"]
    lines = [
        f"validating a {result['records']:,}-record request ({result['file_bytes']:,} bytes), "
        f"{result['cpus']} CPU(s), load {result['load_average_1min']}:",
        f"  parse                {med['parse']:7.3f} s",
        f"  contracts (GX)       {med['contracts']:7.3f} s   (first run in the process: "
        f"{result['contracts_first']:.3f} s)",
        f"  contracts + report   {med['report']:7.3f} s",
        f"  validation total     {result['validation_seconds']:7.3f} s   (parse + contracts + report; target < "
        f"{result['target_seconds']:.0f} s: {'met' if result['meets_target'] else 'NOT met'})",
        f"  submit end to end    {med['submit']:7.3f} s   (incl. the SQLite ledger)",
        f"  imports: GX + intake in this process {result['import_seconds_this_process']:.2f} s; fresh process: "
        + (", ".join(f"{m} {s:.2f} s" for m, s in result["import_seconds"].items()) or "not measured"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.validate``: time the validation of a large request; writes bench/results/validate.json."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.validate", description=main.__doc__)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--out", default=str(RESULTS), help="where the result JSON goes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run_validate_bench(records=args.records, out=Path(args.out))
    print(json.dumps(report) if args.json else format_report(report) + f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
