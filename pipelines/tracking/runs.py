"""MLflow tracking: where the store lives, one parent run per request with child runs, safe params, retries.

This module and ``pipelines.tracking.registry`` are the only places that talk to MLflow. Everything goes through an
explicit ``MlflowClient`` (no global active-run state), so flows running in threads never share a run.

Store: ``sqlite:///<work dir>/mlflow.db`` by default, artifacts under ``<work dir>/mlartifacts``; the work dir
is ``./asu-work`` or ``$ASU_WORK_DIR``; ``$MLFLOW_TRACKING_URI`` or an explicit ``uri`` selects another store
(e.g. an ``http://`` server backed by PostgreSQL for a team).

Forget-request content never reaches MLflow: params are a whitelist of scalar knobs (values must be short
tokens, never sentences), metric names are checked segment by segment, strings are never logged as metrics.
"""

from __future__ import annotations

import functools
import logging
import numbers
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from asu.errors import InfrastructureError, InputFileMissing, UsageError
from asu.hashing import sha256_dir, sha256_file, sha256_json  # noqa: F401 - re-exported
from pipelines.workspace import work_dir

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_EXPERIMENT = "asu-unlearning"
REQUEST_TAG = "asu.request_id"
KIND_TAG = "asu.run_kind"

# Params named in the issue, the round's own counters, and (added below) every ASUConfig field.
_BASE_PARAMS = {"method", "tau", "lambda", "lr", "steps", "seeds", "code_version", "model_hash", "data_hash",
                "num_forget", "num_retain_used", "parent_version", "model_version", "teacher_source", "search_outcome"}
_TOKEN = re.compile(r"^[A-Za-z0-9_.,:+\-/@=]{1,100}$")  # a knob value: no whitespace, at most 100 characters
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SEGMENT_BAD = re.compile(r"[^A-Za-z0-9_\-.:]")


@functools.cache
def allowed_params() -> frozenset[str]:
    """Param names ``log_params`` accepts: the issue's list, round counters and the ASUConfig fields.

    Keys ending in ``_hash`` are accepted too when their value is a SHA-256 hex digest.
    """
    from asu.config import ASUConfig

    return frozenset(_BASE_PARAMS | {f.name for f in fields(ASUConfig)})


class TrackingUnavailable(InfrastructureError):
    """MLflow (or its database) did not answer after the configured retries."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for transient MLflow failures: ``attempts`` tries, sleeping ``delay_s``, then x ``backoff``."""

    attempts: int = 3
    delay_s: float = 0.5
    backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise UsageError(f"RetryPolicy.attempts={self.attempts} is invalid; use 1 or more")
        if self.delay_s < 0 or self.backoff < 1:
            raise UsageError("RetryPolicy needs delay_s >= 0 and backoff >= 1")


def is_transient(err: BaseException) -> bool:
    """True for failures worth retrying: I/O and connection errors, a locked/unreachable database."""
    if isinstance(err, OSError):  # includes ConnectionError, TimeoutError and requests' errors
        return True
    try:
        import sqlalchemy.exc
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - both ship with mlflow
        return False
    if isinstance(err, sqlalchemy.exc.OperationalError):
        return True
    if isinstance(err, MlflowException):
        if err.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"):
            return True
        # The REST client wraps a refused connection as an INTERNAL_ERROR "API request to ... failed".
        return err.error_code == "INTERNAL_ERROR" and "API request to" in str(err)
    return False


def with_retries(fn: Callable[[], T], *, what: str, uri: str, policy: RetryPolicy = RetryPolicy()) -> T:
    """Call ``fn``; retry transient failures with backoff; then raise ``TrackingUnavailable`` naming the URI.

    Non-transient errors (bad input, unknown version) propagate at once, unchanged.
    """
    delay = policy.delay_s
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as err:
            if not is_transient(err):
                raise
            if attempt == policy.attempts:
                raise TrackingUnavailable(
                    f"MLflow at {redact_uri(uri)} failed {policy.attempts} times while {what}: "
                    f"{type(err).__name__}: {redact_uri(str(err))[:300]}. Check that the tracking server is running "
                    "and reachable (or, for sqlite, that the database file and its folder exist and are writable and "
                    "not locked), or point MLFLOW_TRACKING_URI / ASU_WORK_DIR elsewhere; the step can be retried."
                ) from err
            logger.warning("MLflow %s failed (attempt %d/%d, retrying in %.1f s): %s",
                           what, attempt, policy.attempts, delay, type(err).__name__)
            time.sleep(delay)
            delay *= policy.backoff
    raise AssertionError("unreachable")  # pragma: no cover


def redact_uri(uri: str) -> str:
    """The URI without a password (``postgresql://user:secret@host`` -> ``postgresql://user:***@host``)."""
    return re.sub(r"(//[^:/@]+:)[^@/]+@", r"\1***@", uri)


def tracking_uri(uri: str | None = None, work: str | Path | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<work dir>/mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{work_dir(work) / 'mlflow.db'}"


def check_id(value: str, what: str = "request id") -> str:
    """Return ``value`` if it is a plain identifier (letters, digits, ``_.:-``, at most 128), else raise."""
    if not isinstance(value, str) or not _ID.match(value):
        raise UsageError(f"{what} must be 1-128 characters of letters, digits and _.:- (an id, never content); "
                         f"got a {type(value).__name__} of length {len(str(value))}")
    return value


def safe_param_value(key: str, value: Any) -> str:
    """MLflow param value for an allowed key: numbers, booleans, None, short tokens, or lists of those."""
    if isinstance(value, (list, tuple)):
        return ",".join(safe_param_value(key, v) for v in value) if value else "[]"
    if value is None or isinstance(value, (bool, numbers.Real)):
        return str(value)
    if isinstance(value, str) and _TOKEN.match(value):
        return value
    raise UsageError(f"param {key!r}: value refused (a {type(value).__name__} of length {len(str(value))}); params "
                     "take numbers or short tokens without spaces, never text - log an id or a SHA-256 hash instead")


def check_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Validate params against the whitelist; returns the string values MLflow will store."""
    out = {}
    allowed = allowed_params()
    for key, value in params.items():
        if key.endswith("_hash"):
            if not (isinstance(value, str) and _HEX64.match(value)):
                raise UsageError(f"param {key!r} must be a SHA-256 hex digest (64 lowercase hex characters)")
        elif key not in allowed:
            raise UsageError(f"param {key!r} is not allowed; allowed: {', '.join(sorted(allowed))} or *_hash. "
                             "Content (questions, answers, names) never goes into params: hash it")
        out[key] = safe_param_value(key, value)
    return out


def _segment(path: str, key: Any) -> str:
    key = str(key)
    if not key or len(key) > 64 or any(c.isspace() for c in key) or key in (".", ".."):
        raise UsageError(f"metric key under {path or '<top>'!r} is refused: a name segment must be 1-64 characters "
                         "without spaces (it looks like content, not a metric name); key figures by id")
    return _SEGMENT_BAD.sub("_", key)


def flatten_metrics(values: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, float]:
    """Nested evaluation dict -> ``{"forget/rouge_l_recall": 0.4, ...}`` of floats.

    Numbers, booleans (as 0/1) and 0-d arrays/tensors are kept; strings, ``None`` and lists (per-item data, generations)
    are skipped, never logged. Characters MLflow refuses become ``_``; spaces or long segments raise.
    """
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{sep}{_segment(prefix, key)}" if prefix else _segment(prefix, key)
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name, sep))
        elif isinstance(value, (bool, numbers.Real)):
            out[name] = float(value)
        elif getattr(value, "shape", None) == () and isinstance(item := value.item(), (bool, numbers.Real)):
            out[name] = float(item)  # numpy scalars (np.bool_ included) and 0-d tensors
        else:
            logger.debug("metric %s skipped: a %s is not a scalar figure", name, type(value).__name__)
    if len(set(out)) != len(out) or any(len(k) > 250 for k in out):  # pragma: no cover - defensive
        raise UsageError(f"metric names under {prefix!r} collide or exceed 250 characters")
    return out


@functools.cache
def code_version() -> str:
    """``git describe --tags --always --dirty`` of this checkout, else ``asu-pipeline==<version>``, else unknown."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / ".git").exists():
        try:
            done = subprocess.run(["git", "-C", str(repo), "describe", "--tags", "--always", "--dirty"],
                                  capture_output=True, text=True, timeout=10, check=True)
            return done.stdout.strip()
        except (OSError, subprocess.SubprocessError) as err:
            logger.debug("git describe failed: %s", err)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"asu-pipeline=={version('asu-pipeline')}"
    except PackageNotFoundError:
        return "unknown"


class Tracker:
    """MLflow access for one tracking URI and experiment, every call retried on transient failures.

    Args:
        uri: tracking (and registry) URI; default from ``tracking_uri()``.
        work: work dir for the default SQLite store and the artifact root ``<work>/mlartifacts``.
        experiment: experiment name; created on first use with its artifacts under the work dir (unless the
            URI is a tracking server, which then chooses where artifacts go).
        retry: the retry policy for transient failures.
    """

    def __init__(self, uri: str | None = None, *, work: str | Path | None = None,
                 experiment: str = DEFAULT_EXPERIMENT, retry: RetryPolicy = RetryPolicy()) -> None:
        self.work_dir = work_dir(work)
        self.uri = tracking_uri(uri, self.work_dir)
        self.artifact_root = self.work_dir / "mlartifacts"
        self.experiment = check_id(experiment, "experiment name")
        self.retry = retry
        self._client = None
        self._experiment_id: str | None = None

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one MLflow operation under the retry policy."""
        return with_retries(fn, what=what, uri=self.uri, policy=self.retry)

    @property
    def client(self):
        """The ``MlflowClient`` (tracking and registry on the same URI)."""
        if self._client is None:
            from mlflow import MlflowClient

            if self.uri.startswith("sqlite:///"):
                Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    def experiment_id(self) -> str:
        """Id of the experiment, created (artifacts under the work dir for non-server URIs) when missing."""
        if self._experiment_id is None:
            self._experiment_id = self.call("getting the experiment", self._get_or_create_experiment)
        return self._experiment_id

    def _get_or_create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        server = self.uri.split(":", 1)[0] in ("http", "https", "databricks")
        location = None if server else (self.artifact_root / self.experiment).as_uri()
        try:
            return self.client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException as err:  # another process created it first
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    @contextmanager
    def request_run(self, request_id: str, *, tags: Mapping[str, str] | None = None) -> Iterator[TrackedRun]:
        """The parent run of one forget request (run name = the request id). Ends FINISHED, or FAILED on error."""
        check_id(request_id)
        with self.run(request_id, {REQUEST_TAG: request_id, KIND_TAG: "request", **(tags or {})}) as run:
            yield run

    @contextmanager
    def child_run(
        self, parent: TrackedRun, name: str, *, tags: Mapping[str, str] | None = None
    ) -> Iterator[TrackedRun]:
        """A run nested under ``parent`` (e.g. one temperature-search candidate)."""
        base = {"mlflow.parentRunId": parent.run_id, KIND_TAG: "child"}
        if parent.request_id:
            base[REQUEST_TAG] = parent.request_id
        with self.run(name, {**base, **(tags or {})}) as run:
            yield run

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str] | None = None) -> Iterator[TrackedRun]:
        """A run named ``name`` with token-valued ``tags``; FINISHED on exit, FAILED on error, KILLED on Ctrl-C."""
        check_id(name, "run name")
        tags = dict(tags or {})
        checked = {k: safe_param_value(k, v) for k, v in tags.items()}
        info = self.call(f"starting run {name}", lambda: self.client.create_run(
            self.experiment_id(), run_name=name, tags=checked).info)
        run = TrackedRun(self, info.run_id, info.artifact_uri, tags.get(REQUEST_TAG))
        status = "FAILED"
        try:
            yield run
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            try:
                self.call(f"ending run {name}", lambda: self.client.set_terminated(info.run_id, status))
            except TrackingUnavailable:
                logger.exception("could not mark run %s %s", info.run_id, status)
                if status == "FINISHED":
                    raise

    def request_runs(self, request_id: str) -> list[str]:
        """Ids of the parent runs recorded for ``request_id``, newest first."""
        query = f"tags.`{REQUEST_TAG}` = '{check_id(request_id)}' and tags.`{KIND_TAG}` = 'request'"
        runs = self.call("searching runs", lambda: self.client.search_runs(
            [self.experiment_id()], query, order_by=["attributes.start_time DESC"]))
        return [r.info.run_id for r in runs]


class TrackedRun:
    """One MLflow run: params (whitelisted), metrics (flattened), the training curve, artifacts, tags."""

    def __init__(self, tracker: Tracker, run_id: str, artifact_uri: str, request_id: str | None = None) -> None:
        self.tracker, self.run_id, self.artifact_uri, self.request_id = tracker, run_id, artifact_uri, request_id

    def log_params(self, params: Mapping[str, Any]) -> dict[str, str]:
        """Log whitelisted scalar params (see ``check_params``); returns what was stored."""
        from mlflow.entities import Param

        checked = check_params(params)
        items = [Param(k, v) for k, v in checked.items()]
        for i in range(0, len(items), 100):
            batch = items[i : i + 100]
            self.tracker.call("logging params", lambda b=batch: self.tracker.client.log_batch(self.run_id, params=b))
        return checked

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int | None = None, prefix: str = "",
                    sep: str = "/") -> dict[str, float]:
        """Log a (nested) dict of figures flattened with ``sep``; returns the flat dict that was logged."""
        flat = flatten_metrics(metrics, prefix, sep)
        self._log_flat([(flat, step)])
        return flat

    def log_curve(self, rows: Sequence[Mapping[str, float]], *, prefix: str = "train", step_key: str = "step") -> int:
        """Log a training curve (one row per optimizer step, as in ``RoundResult.curve``); returns rows logged.

        A row's ``step_key`` value gives its step; rows without it are numbered 1, 2, ...
        """
        batches = []
        for i, row in enumerate(rows, start=1):
            step = int(row.get(step_key, i))
            batches.append((flatten_metrics({k: v for k, v in row.items() if k != step_key}, prefix), step))
        self._log_flat(batches)
        return len(rows)

    def _log_flat(self, batches: Sequence[tuple[Mapping[str, float], int | None]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step or 0)
                 for flat, step in batches for k, v in flat.items()]
        for i in range(0, len(items), 1000):
            batch = items[i : i + 1000]
            self.tracker.call("logging metrics", lambda b=batch: self.tracker.client.log_batch(self.run_id, metrics=b))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags; values must be short tokens like param values (ids, hashes, numbers)."""
        for key, value in tags.items():
            text = safe_param_value(key, value)
            self.tracker.call("setting a tag", lambda k=key, t=text: self.tracker.client.set_tag(self.run_id, k, t))

    def log_json(self, obj: Any, artifact_file: str) -> None:
        """Store ``obj`` as a JSON artifact (e.g. ``eval/after.json``)."""
        self.tracker.call(f"logging {artifact_file}", lambda: self.tracker.client.log_dict(self.run_id, obj,
                                                                                           artifact_file))

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Store a local file (PNG chart, Markdown report, contract report) under ``artifact_path``."""
        if not Path(path).is_file():
            raise InputFileMissing(f"artifact {path} does not exist")
        self.tracker.call(f"logging {Path(path).name}",
                          lambda: self.tracker.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_dir(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Store a local folder's files under ``artifact_path``."""
        if not Path(path).is_dir():
            raise InputFileMissing(f"artifact folder {path} does not exist")
        self.tracker.call(f"logging {Path(path).name}/",
                          lambda: self.tracker.client.log_artifacts(self.run_id, str(path), artifact_path))

    def metric_logger(self, prefix: str = "train") -> MlflowMetricLogger:
        """An ``asu.tracking.MetricLogger`` writing into this run (pass it to ``asu.trainer.run_round``)."""
        return MlflowMetricLogger(self, prefix)


class MlflowMetricLogger:
    """``asu.tracking.MetricLogger`` over a ``TrackedRun``: whitelisted params, metrics under ``prefix``.

    ``close`` does not end the run: the ``Tracker`` context manager that opened it does.
    """

    def __init__(self, run: TrackedRun, prefix: str = "train") -> None:
        self.run, self.prefix = run, prefix

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.log_params(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.run.log_metrics(metrics, step=step, prefix=self.prefix)

    def close(self) -> None:
        pass
