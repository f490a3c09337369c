"""The dependency direction is enforced: asu is a plain library (no orchestration, tracking or GX imports)."""

import subprocess
import sys

FORBIDDEN = ("prefect", "mlflow", "great_expectations", "pipelines", "flows", "data_contracts")


def test_importing_asu_pulls_no_orchestration_or_tracking():
    code = (
        "import sys, asu, asu.trainer, asu.teacher, asu.attention, asu.evaluation, asu.embedded, asu.recipes\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if any(k == m or k.startswith(m + '.') for k in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
