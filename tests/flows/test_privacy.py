"""Privacy: after the whole demo (the tiny variant, about 40 s), no file the product wrote holds a forget question
or answer, outside the ledger's content store and the submitted inputs (MLflow's database and artifacts, reports,
rounds, stores, Prefect's database); after the retention purge, the ledger holds none either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path


def _forget_strings(inputs: Path) -> set[str]:
    out = set()
    for path in inputs.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("role", "forget") == "forget" and "question" in row:
                out |= {row["question"], row["answer"]}
    return {s for s in out if len(s) >= 12}  # long enough not to occur by chance


def _hits(root: Path, strings: set[str], skip=lambda p: False) -> dict[str, int]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not skip(path):
            data = path.read_bytes()
            n = sum(s.encode("utf-8") in data for s in strings)
            if n:
                found[str(path.relative_to(root))] = n
    return found


def test_the_demo_leaves_no_forget_content_outside_the_ledger(tiny_model_dir, tmp_path):
    env = {**os.environ, "ASU_CACHE_DIR": str(tiny_model_dir.parent.parent), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("ASU_LEDGER_URL", None)
    done = subprocess.run([sys.executable, "-m", "cli.main", "demo", "--variant", "tiny", "--root", str(tmp_path / "d"),
                           "--json"], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    work = Path(json.loads(done.stdout.strip().splitlines()[-1])["work_dir"])
    strings = _forget_strings(work / "inputs")
    assert len(strings) > 20
    ledger_files = ("asu-ledger.db", "asu-ledger.db-wal", "asu-ledger.db-shm")
    outside = _hits(work, strings, skip=lambda p: "inputs" in p.parts or p.name in ledger_files)
    assert outside == {}, outside  # MLflow database and artifacts, reports, rounds, stores, checkpoints
    assert _hits(tmp_path / "prefect", strings) == {}  # Prefect's database: task inputs and results

    from pipelines.intake.submit import purge_expired
    from pipelines.ledger.store import Ledger, default_ledger_url

    with Ledger(default_ledger_url(work)) as ledger:
        assert _hits(work, strings, skip=lambda p: p.name not in ledger_files)  # the content store holds it
        purged, _ = purge_expired(ledger, work_dir=work, retention=timedelta(0))
        assert purged  # every completed request
    assert _hits(work, strings, skip=lambda p: p.name not in ledger_files) == {}
