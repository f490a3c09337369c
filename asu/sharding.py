"""Sharded rounds: accelerate's FSDP (version 2, torch's ``fully_shard``) for models that do not fit one device.

A round runs sharded when it is started by ``accelerate launch --config_file configs/accelerate-fsdp.yaml``
(``distributed_type: FSDP``): accelerate sets ``ACCELERATE_USE_FSDP`` and the ``FSDP_*`` settings in the
environment, and :func:`make_accelerator` builds the plugin from them. What changes in ``asu.trainer`` then:

- the precomputed teacher is computed after the model is sharded, by each process for the forget (and retain)
  items of its own batches (:func:`local_item_ids`), never for the whole set on one device;
- crash-resume checkpoints hold the sharded model and optimizer (``accelerator.save_state``);
- the final model is gathered into one full state dict on the main process and saved as usual.

accelerate 1.15 drops the FSDP plugin when the processes run on CPU (``accelerate/state.py``: FSDP is only set for
the multi-GPU kinds) and falls back to DDP. :func:`make_accelerator` sets it back, so the same sharded code path
runs on CPU processes (gloo) and is tested there; on GPUs accelerate's own path is used unchanged.
"""

from __future__ import annotations

import logging
import os

import torch

from asu.config import ASUConfig
from asu.errors import UsageError

logger = logging.getLogger(__name__)


def fsdp_requested() -> bool:
    """True when the process was started by ``accelerate launch`` with an FSDP config."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_sharded_config(config: ASUConfig, separate_teacher: bool = False) -> None:
    """Refuse the round settings that cannot run sharded, naming the fix (before any model loads).

    ``separate_teacher``: the round was given a teacher model of its own (``teacher_source='original'``).
    """
    if separate_teacher:
        raise UsageError("a separate teacher model (teacher_source='original') is not supported under FSDP yet: "
                         "run the round with teacher_source='previous', or without FSDP")
    if config.finetune == "lora":
        raise UsageError("finetune='lora' under FSDP is not supported (the adapter merge needs the full weights on "
                         "one device): run LoRA rounds on one GPU (see `asu plan`), or finetune='full' under FSDP")
    if config.objective.uses_layer_activations:
        raise UsageError(f"method={config.method!r} under FSDP is not supported: the layers above rmu_layer get no "
                         "gradient, and torch 2.13's FSDP2 backward crashed on that (measured on CPU processes); run "
                         "RMU rounds without FSDP (LoRA on one GPU, see `asu plan`)")
    if config.teacher != "precomputed":
        raise UsageError(f"teacher={config.teacher!r} under FSDP would hold an unsharded teacher on every GPU: use "
                         "teacher='precomputed' (computed per process from the sharded model)")


def make_accelerator(**kwargs):
    """The round's ``Accelerator``; under an FSDP launch with FSDP version 2, also on CPU processes."""
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.utils import DistributedType

    if not fsdp_requested():
        return Accelerator(**kwargs)
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* settings accelerate launch exported
    if plugin.fsdp_version != 2:
        raise UsageError(f"fsdp_version={plugin.fsdp_version} in the accelerate config: asu rounds run FSDP version "
                         "2 (torch's fully_shard); set fsdp_version: 2 (configs/accelerate-fsdp.yaml)")
    accelerator = Accelerator(fsdp_plugin=plugin, **kwargs)
    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        from accelerate.state import PartialState

        # Both states: AcceleratorState copies PartialState's fields whenever it is re-created.
        PartialState().distributed_type = DistributedType.FSDP
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
        logger.info("FSDP on %d CPU processes (accelerate falls back to DDP on CPU; set back to FSDP)",
                    accelerator.num_processes)
    return accelerator


def is_sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def local_item_ids(loader) -> tuple[list[int], list[int]]:
    """(forget ids, retain ids) of the items in this process's batches of a prepared loader (one pass, no model)."""
    forget, retain = set(), set()
    for forget_batch, retain_batch in loader:
        forget.update(forget_batch["item_ids"].tolist())
        if retain_batch is not None:
            retain.update(retain_batch["item_ids"].tolist())
    return sorted(forget), sorted(retain)


def max_over_processes(accelerator, n: int) -> int:
    """The largest ``n`` any process holds (every process must call this, with its own ``n``)."""
    return int(accelerator.gather(torch.tensor([n], device=accelerator.device)).max())


__all__ = ["check_sharded_config", "fsdp_requested", "is_sharded", "local_item_ids", "make_accelerator",
           "max_over_processes"]
