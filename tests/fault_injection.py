"""Failure points for crash tests, installed in a child process before it runs the product (``asu run``).

``pause_after_model_version(marker)``: once MLflow has created a *candidate* model version, touch ``marker`` and
sleep, so that the test can kill the process between the registry's write and the ledger's.
"""

from __future__ import annotations

import time
from pathlib import Path


def pause_after_model_version(marker: str, seconds: float = 600.0) -> None:
    from mlflow.tracking import MlflowClient

    original = MlflowClient.create_model_version

    def create_then_pause(self, *args, **kwargs):
        version = original(self, *args, **kwargs)
        if (kwargs.get("tags") or {}).get("asu.kind") == "candidate":
            Path(marker).write_text(str(version.version))
            time.sleep(seconds)
        return version

    MlflowClient.create_model_version = create_then_pause
