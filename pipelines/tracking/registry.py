"""Model registry: every model is a version of one registered model; aliases ``candidate`` and ``champion``.

A version's files are a safetensors Hugging Face folder (config, weights, tokenizer, and for a round's output
the ``round.json`` that ``asu.trainer.run_round`` writes last), stored as run artifacts and registered with
``MlflowClient.create_model_version`` (../shared/notes/stack.md §5). Version tags record the requests, the
parent version, tau, the gate results and the folder's SHA-256; promotions and rollbacks are recorded as tags
on the versions involved and as events (``asu.event.<UTC time>``) on the registered model.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from asu.errors import UsageError
from pipelines.tracking.runs import Tracker, check_id, code_version, safe_param_value, sha256_dir

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "asu-unlearned"
CANDIDATE, CHAMPION = "candidate", "champion"
COMPLETION_MARKER = "round.json"
TAG = "asu."


class RegistryError(UsageError):
    """A registry operation that cannot be done as asked (unknown version, nothing to roll back to, ...)."""


class PartialModelError(RegistryError):
    """The model folder is incomplete (missing weights, config or the round's completion marker)."""


@dataclass(frozen=True)
class VersionInfo:
    """One registered version: ``version`` (string), its aliases, tags and artifact source."""

    version: str
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""
    run_id: str | None = None
    created_ms: int = 0

    @property
    def request_ids(self) -> tuple[str, ...]:
        return tuple(r for r in self.tags.get(f"{TAG}request_ids", "").split(",") if r)

    @property
    def gate_passed(self) -> bool | None:
        """True/False from the gate tag; None for versions registered without a gate (a base model)."""
        value = self.tags.get(f"{TAG}gate_passed")
        return None if value is None else value == "true"

    @property
    def parent_version(self) -> str | None:
        value = self.tags.get(f"{TAG}parent_version", "none")
        return None if value == "none" else value


class Champion(NamedTuple):
    """The champion's version and a local folder ``transformers`` can ``from_pretrained``."""

    version: str
    path: Path


def check_model_folder(model_dir: str | Path, *, require_marker: bool = True) -> Path:
    """Return ``model_dir`` if it is a complete safetensors HF folder; raise ``PartialModelError`` otherwise.

    Complete: ``config.json``, ``model.safetensors`` (or an index whose shards all exist), and with
    ``require_marker`` a ``round.json`` that parses and is not older than the weights (the trainer writes it last).
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise PartialModelError(f"model folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise PartialModelError(f"{folder} has no config.json; save the model with save_pretrained")
    weights = [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise PartialModelError(f"{index} is not a safetensors index (no weight_map); the save did not finish") \
                from err
        weights = [folder / shard for shard in sorted(shards)]
    missing = [w.name for w in weights if not w.is_file()]
    if missing:
        raise PartialModelError(f"{folder} lacks weights {', '.join(missing)} (safetensors); the save did not finish")
    if require_marker:
        marker = folder / COMPLETION_MARKER
        fix = "the round did not finish (asu.trainer writes it last): rerun or resume the round, never register it"
        if not marker.is_file():
            raise PartialModelError(f"{folder} has no {COMPLETION_MARKER}; {fix}")
        try:
            payload = json.loads(marker.read_text())
        except json.JSONDecodeError as err:
            raise PartialModelError(f"{marker} is not valid JSON (line {err.lineno}); {fix}") from err
        if not isinstance(payload, dict) or not {"config", "metrics"} <= set(payload):
            raise PartialModelError(f"{marker} lacks the config/metrics keys the trainer writes; {fix}")
        if any(w.stat().st_mtime > marker.stat().st_mtime for w in weights):
            raise PartialModelError(f"{folder}: weights are newer than {COMPLETION_MARKER}; {fix}")
    return folder


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _gate_tags(gate_results: Any) -> dict[str, str]:
    payload = gate_results.to_dict() if hasattr(gate_results, "to_dict") else dict(gate_results)
    if not isinstance(payload.get("passed"), bool):
        raise UsageError("gate_results needs a boolean 'passed' (pass a pipelines.round.gate.GateResult or its "
                         "to_dict())")
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    if len(text) > 90_000:  # MLflow's model-version tag limit is 100,000 characters
        text = json.dumps({"passed": payload["passed"], "truncated": True})
    return {f"{TAG}gate_passed": str(payload["passed"]).lower(), f"{TAG}gate": text}


class ModelRegistry:
    """The registered model ``name`` in the tracker's registry.

    Args:
        tracker: MLflow access (URI, work dir, retries); default ``Tracker()`` (SQLite under the work dir).
        name: registered model name.
    """

    def __init__(self, tracker: Tracker | None = None, name: str = DEFAULT_MODEL_NAME) -> None:
        self.tracker = tracker or Tracker()
        self.name = check_id(name, "registered model name")
        self._ensured = False

    @property
    def _client(self):
        return self.tracker.client

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        def ensure() -> None:
            try:
                self._client.create_registered_model(self.name, description="ASU unlearned models (asu pipeline)")
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

        if not self._ensured:
            self.tracker.call("creating the registered model", ensure)
            self._ensured = True

    def register_candidate(
        self,
        model_dir: str | Path,
        *,
        request_ids: Sequence[str],
        parent_version: str | int | None,
        gate_results: Any,
        tau: float,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> VersionInfo:
        """Register a round's output folder as a new version and point ``candidate`` at it.

        Args:
            model_dir: the round's output (refused unless complete, see ``check_model_folder``).
            request_ids: the forget requests this round processed (ids, never content).
            parent_version: the version the round started from (None: the base model was not registered).
            gate_results: a ``pipelines.round.gate.GateResult`` or its ``to_dict()``.
            tau: the attention temperature the round used.
            run_id: the MLflow run to store the files in (the request's parent run); default a new run.
            tags: extra version tags (token values: ids, numbers, hashes).
        """
        folder = check_model_folder(model_dir)
        if not request_ids:
            raise UsageError("register_candidate needs at least one request id")
        version_tags = {
            f"{TAG}kind": "candidate",
            f"{TAG}request_ids": ",".join(check_id(r) for r in request_ids),
            f"{TAG}parent_version": "none" if parent_version is None else str(parent_version),
            f"{TAG}tau": repr(float(tau)),
            **_gate_tags(gate_results),
            **{k: safe_param_value(k, v) for k, v in (tags or {}).items()},
        }
        weights = sha256_dir(folder, files=sorted(folder.glob("*.safetensors")))
        version_tags[f"{TAG}weights_sha256"] = weights
        info = self._registered_already(weights, request_ids) or self._register(folder, version_tags, run_id)
        self._set_alias(CANDIDATE, info.version)
        logger.info("registered %s version %s as %s", self.name, info.version, CANDIDATE)
        return self.get(info.version)

    def register_base(self, model_dir: str | Path, *, run_id: str | None = None) -> VersionInfo:
        """Register a complete model that did not come from a round (the starting model; no gate, no marker)."""
        folder = check_model_folder(model_dir, require_marker=False)
        return self._register(folder, {f"{TAG}kind": "base", f"{TAG}parent_version": "none"}, run_id)

    def _registered_already(self, weights: str, request_ids: Sequence[str]) -> VersionInfo | None:
        """The candidate version of these weights (``asu.weights_sha256``: the safetensors files only; the folder
        digest also covers ``round.json``, which records a resume) for these requests, when one exists: a worker
        killed after MLflow created the version but before the ledger recorded it reruns the request (seeded: the
        same weights), and must not register the same model twice."""
        for info in self.history():
            if (info.tags.get(f"{TAG}kind") == "candidate" and info.tags.get(f"{TAG}weights_sha256") == weights
                    and info.request_ids == tuple(request_ids)):
                logger.warning("version %s of %s already holds this model for requests %s (registered before an "
                               "interruption); reusing it", info.version, self.name, ",".join(request_ids))
                return info
        return None

    def _register(self, folder: Path, tags: dict[str, str], run_id: str | None) -> VersionInfo:
        self._ensure_model()
        digest = sha256_dir(folder)
        tags = {**tags, f"{TAG}model_sha256": digest, f"{TAG}code_version": code_version()}
        artifact_path = f"models/{digest[:16]}"  # content-addressed: a second upload never alters a version's files
        if run_id is None:
            with self.tracker.run(f"register-{digest[:12]}", {"asu.run_kind": "register"}) as run:
                run.log_dir(folder, artifact_path)
                run_id, artifact_uri = run.run_id, run.artifact_uri
        else:
            artifact_uri = self.tracker.call("reading the run", lambda: self._client.get_run(run_id).info.artifact_uri)
            self.tracker.call("uploading the model", lambda: self._client.log_artifacts(run_id, str(folder),
                                                                                       artifact_path))
        mv = self.tracker.call("creating the model version", lambda: self._client.create_model_version(
            self.name, source=f"{artifact_uri}/{artifact_path}", run_id=run_id, tags=tags))
        return self.get(str(mv.version))

    def get(self, version: str | int) -> VersionInfo:
        """One version's info; ``RegistryError`` naming the known versions when it does not exist."""
        from mlflow.exceptions import MlflowException

        version = _version(version)
        try:
            mv = self.tracker.call(f"reading version {version}",
                                   lambda: self._client.get_model_version(self.name, version))
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            known = [v.version for v in self.history()]
            raise RegistryError(f"model {self.name!r} has no version {version}; known versions: "
                                f"{', '.join(known) or 'none'} (see history())") from err
        aliases = self.aliases()
        return _info(mv, aliases)

    def _model(self):
        """The registered model entity, or None before the first registration."""
        from mlflow.exceptions import MlflowException

        try:
            return self.tracker.call("reading the registered model", lambda: self._client.get_registered_model(
                self.name))
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def aliases(self) -> dict[str, str]:
        """``{alias: version}`` of the registered model (empty before the first registration)."""
        model = self._model()
        return {} if model is None else {alias: str(v) for alias, v in (model.aliases or {}).items()}

    def history(self) -> list[VersionInfo]:
        """Every version, oldest first, with its aliases and tags."""
        found = self.tracker.call("listing versions", lambda: self._client.search_model_versions(
            f"name = '{self.name}'"))
        aliases = self.aliases() if found else {}
        return sorted((_info(mv, aliases) for mv in found), key=lambda i: int(i.version))

    def events(self) -> list[dict[str, str]]:
        """Promotions and rollbacks, oldest first: ``{"action", "version", "previous", "reason", "at"}``."""
        model = self._model()
        tags = {} if model is None else model.tags
        return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(f"{TAG}event.")]

    def promote(self, version: str | int, reason: str = "", *, force: bool = False) -> VersionInfo:
        """Point ``champion`` at ``version`` (its tags record the previous champion and ``reason``).

        A version whose gate failed is refused unless ``force``. Promoting the current champion changes nothing.
        """
        info = self.get(version)
        if info.gate_passed is False and not force:
            raise RegistryError(f"version {info.version} failed its gate; promote it anyway with force=True "
                                "(asu promote --force) only after reviewing its evidence report")
        previous = self.aliases().get(CHAMPION)
        if previous == info.version:
            logger.info("version %s is already %s", info.version, CHAMPION)
            return info
        at = _now()
        self._set_tags(info.version, {"previous_champion": previous or "none", "promoted_at": at,
                                      "promotion_reason": _reason(reason or "promoted")})
        self._set_alias(CHAMPION, info.version)
        if self.aliases().get(CANDIDATE) == info.version:
            self.tracker.call("clearing the candidate alias",
                              lambda: self._client.delete_registered_model_alias(self.name, CANDIDATE))
        self._event("promote", info.version, previous, reason or "promoted", at)
        logger.info("promoted %s version %s to %s (previous: %s)", self.name, info.version, CHAMPION, previous)
        return self.get(info.version)

    def rollback(self, reason: str) -> VersionInfo:
        """Move ``champion`` back to the version it replaced; record ``reason`` on the demoted version."""
        if not reason or not reason.strip():
            raise UsageError("rollback needs a reason (asu rollback --reason TEXT); it is kept in the registry")
        current = self.aliases().get(CHAMPION)
        if current is None:
            raise RegistryError(f"model {self.name!r} has no {CHAMPION}; nothing to roll back")
        previous = self.get(current).tags.get(f"{TAG}previous_champion", "none")
        if previous == "none":
            raise RegistryError(f"version {current} has no previous {CHAMPION} to roll back to; "
                                "choose one by hand: asu promote VERSION")
        target = self.get(previous)
        at = _now()
        self._set_tags(current, {"rolled_back": "true", "rolled_back_at": at, "rollback_reason": _reason(reason)})
        self._set_alias(CHAMPION, target.version)
        self._event("rollback", target.version, current, reason, at)
        logger.info("rolled %s %s back from version %s to %s", self.name, CHAMPION, current, target.version)
        return self.get(target.version)

    def champion(self) -> Champion | None:
        """``(version, local folder)`` of the champion, or None when no version has been promoted yet."""
        version = self.aliases().get(CHAMPION)
        return None if version is None else Champion(version, self.local_path(version))

    def local_path(self, version: str | int) -> Path:
        """A local copy of ``version``'s folder, ``<work>/models/<name>/v<version>-<sha256[:12]>`` (downloaded once).

        The download is checked against the version's ``asu.model_sha256`` tag before it is put in place.
        """
        info = self.get(version)
        digest = info.tags.get(f"{TAG}model_sha256", "unhashed")[:12]  # a recreated registry reuses version numbers
        target = self.tracker.work_dir / "models" / self.name / f"v{info.version}-{digest}"
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".v{info.version}-", dir=target.parent))
        try:
            local = self._download(info, staging)
            try:
                local.rename(target)
            except OSError:
                if not target.is_dir():  # a concurrent download that finished first is fine
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _download(self, info: VersionInfo, dst: Path) -> Path:
        """Download ``info``'s files under ``dst``; returns the folder holding them, checked against its hash."""
        from mlflow.artifacts import download_artifacts

        # Resolve the source through our own client: a ``models:/`` URI would use MLflow's global registry URI.
        source = self.tracker.call("resolving the download URI", lambda: self._client.get_model_version_download_uri(
            self.name, info.version))
        local = Path(self.tracker.call(f"downloading version {info.version}", lambda: download_artifacts(
            artifact_uri=source, dst_path=str(dst), tracking_uri=self.tracker.uri)))
        expected = info.tags.get(f"{TAG}model_sha256")
        if expected and sha256_dir(local) != expected:
            raise RegistryError(f"version {info.version}: downloaded files do not match asu.model_sha256; "
                                f"the artifact store at {info.source} was altered")
        return local

    def _set_alias(self, alias: str, version: str) -> None:
        self.tracker.call(f"setting alias {alias}",
                          lambda: self._client.set_registered_model_alias(self.name, alias, version))

    def _set_tags(self, version: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.tracker.call("tagging a version",
                              lambda k=key, v=value: self._client.set_model_version_tag(self.name, version,
                                                                                         f"{TAG}{k}", v))

    def _event(self, action: str, version: str, previous: str | None, reason: str, at: str) -> None:
        key = f"{TAG}event.{at.replace(':', '').replace('-', '')}"
        value = json.dumps({"action": action, "version": version, "previous": previous or "none",
                            "reason": _reason(reason), "at": at})
        self.tracker.call("recording an event",
                          lambda: self._client.set_registered_model_tag(self.name, key, value))


def _version(version: str | int) -> str:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise RegistryError(f"model version must be a positive integer, got {str(version)[:20]!r}")
    return str(int(text))


def _reason(reason: str) -> str:
    """An operator's reason kept on one line, at most 500 characters."""
    return " ".join(reason.split())[:500]


def _info(mv: Any, aliases: Mapping[str, str]) -> VersionInfo:
    version = str(mv.version)
    return VersionInfo(
        version=version,
        aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
        tags=dict(mv.tags or {}),
        source=mv.source or "",
        run_id=mv.run_id,
        created_ms=int(mv.creation_timestamp or 0),
    )
