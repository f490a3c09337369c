"""Moving the champion by hand (``asu promote``, ``asu rollback``): the registry alias and the ledger together.

The ledger is the truth about a request, so when the champion moves, every request whose round the champion
no longer contains changes state with it:

- the champion's *lineage* is its version and every ``parent_version`` before it; a request is in the champion
  when the version its round produced (``asu.request_ids`` tag) is in that lineage;
- ``rollback``: requests of the versions the champion left -> ``rolled_back``;
- ``promote``: registered requests outside the new lineage -> ``superseded``; requests inside it that were not
  ``registered`` (a forced promotion of a version that failed its gate, or a version promoted again) ->
  ``registered``.

Each transition's detail names the versions and the reason, so ``asu status REQUEST_ID`` tells the story.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.ledger.schema import RequestState
from pipelines.ledger.store import Ledger, default_ledger_url
from pipelines.tracking.registry import DEFAULT_MODEL_NAME, ModelRegistry, VersionInfo
from pipelines.tracking.runs import Tracker

logger = logging.getLogger(__name__)
ACTOR = "asu-promotion"


@dataclass
class ChampionMove:
    """What a promotion or rollback did: the versions, and the requests whose ledger state moved."""

    action: str
    model_name: str
    version: str
    previous: str | None
    moved: dict[str, RequestState] = field(default_factory=dict)  # request id -> new state

    def describe(self) -> str:
        """What a person reads after ``asu promote`` / ``asu rollback``."""
        head = (f"{self.model_name} champion rolled back to version {self.version}" if self.action == "rollback"
                else f"{self.model_name} version {self.version} is the champion")
        lines = [f"{head} (previous champion: {self.previous or 'none'})"]
        lines += [f"  request {rid}: {state}" for rid, state in sorted(self.moved.items())]
        return "\n".join(lines)


def lineage(registry: ModelRegistry, version: str) -> list[VersionInfo]:
    """``version`` and its ancestors (``parent_version`` tags), newest first."""
    chain, seen = [], set()
    current: str | None = version
    while current is not None and current not in seen:
        seen.add(current)
        info = registry.get(current)
        chain.append(info)
        current = info.parent_version
    return chain


def sync_ledger(registry: ModelRegistry, ledger: Ledger, *, action: str, reason: str) -> dict[str, RequestState]:
    """Move every request's ledger state to agree with the current champion's lineage; returns what moved."""
    champion = registry.aliases().get("champion")
    inside = {rid: info.version for info in (lineage(registry, champion) if champion else [])
              for rid in info.request_ids}
    moved: dict[str, RequestState] = {}
    for entry in ledger.list_requests(["registered", "superseded", "rolled_back", "gate_failed"]):
        rid, state = entry.request_id, entry.state
        if rid in inside and state != "registered":
            target: RequestState | None = "registered"
        elif rid not in inside and state == "registered":
            target = "rolled_back" if action == "rollback" else "superseded"
        else:
            target = None
        if target is None:
            continue
        ledger.transition(rid, target, actor=ACTOR, detail={"champion": champion, "action": action,
                                                            "model_version": inside.get(rid), "reason": reason})
        moved[rid] = target
    return moved


def _registry(work: str | Path | None, model_name: str | None) -> ModelRegistry:
    return ModelRegistry(Tracker(work=work), name=model_name or DEFAULT_MODEL_NAME)


def _sync(registry: ModelRegistry, work: str | Path | None, ledger_url: str | None, **kw) -> dict[str, RequestState]:
    with Ledger(ledger_url or default_ledger_url(work)) as ledger:
        return sync_ledger(registry, ledger, **kw)


def promote(version: str, reason: str, *, force: bool = False, work: str | Path | None = None,
            model_name: str | None = None, ledger_url: str | None = None) -> ChampionMove:
    """Point the champion at ``version`` and move the ledger states of the requests it gains or loses."""
    registry = _registry(work, model_name)
    previous = registry.aliases().get("champion")
    info = registry.promote(version, reason, force=force)
    moved = _sync(registry, work, ledger_url, action="promote", reason=reason)
    return ChampionMove("promote", registry.name, info.version, previous, moved)


def rollback(reason: str, *, work: str | Path | None = None, model_name: str | None = None,
             ledger_url: str | None = None) -> ChampionMove:
    """Move the champion back to the version it replaced; the requests it loses become ``rolled_back``."""
    registry = _registry(work, model_name)
    previous = registry.aliases().get("champion")
    info = registry.rollback(reason)
    moved = _sync(registry, work, ledger_url, action="rollback", reason=reason)
    return ChampionMove("rollback", registry.name, info.version, previous, moved)


__all__ = ["ChampionMove", "lineage", "promote", "rollback", "sync_ledger"]
