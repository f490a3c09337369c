"""Which training setting fits the GPUs: a memory estimate from the model's config alone, before any weight loads.

``plan(model_dir, PlanRequest(gpus=N, gpu_memory_gb=G))`` reads ``config.json``, builds the architecture on the
``meta`` device (``accelerate.init_empty_weights``: shapes, no storage) to count parameters, and estimates the
peak memory of one GPU for three settings of a round (``asu.trainer``):

- ``full``: every weight trained on each GPU (one GPU, or DDP over N: each holds a full copy). Float32 master
  weights, float32 gradients and the optimizer states: 4 + 4 + 8 bytes a parameter with AdamW (4 + 4 + 2 with
  8-bit AdamW);
- ``fsdp``: the same bytes sharded over the N GPUs (accelerate FSDP, full shard), plus the bf16 parameters and
  gradients of two decoder layers gathered at a time (the one computing and the one prefetched);
- ``lora``: the frozen base in float32 (the trainer keeps float32 master weights and casts per step), adapters of
  rank r on every linear layer of the decoder trained with 16 bytes a parameter, gradient checkpointing on.

Every setting adds the activations of one micro-batch (bf16; ``batch_size`` forget + ``batch_size`` retain
sequences of ``max_length`` tokens): 34 x hidden bytes a token and layer without checkpointing (Korthikanti et al.
2022, attention scores excluded: the sdpa kernel keeps none), 2 x hidden a token and layer plus one layer's 34 x
hidden with it; the logits at 10 bytes a token and vocabulary entry (bf16 logits, float32 log-softmax and its
gradient); the precomputed teacher at most its ``teacher_memory_budget_mb``; and ``RESERVED_GB`` for the CUDA
context and allocator fragmentation. A setting fits when its estimate is at most the GPU's memory. Estimates,
not measurements: they are meant to rule settings out, with 10-20% error either way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from asu.errors import UsageError

Setting = Literal["full", "fsdp", "lora"]
#: CUDA context (about 0.5 GB) and the caching allocator's fragmentation, per GPU.
RESERVED_GB = 1.5
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 34  # one decoder layer, bf16, no sequence parallelism
CHECKPOINTED_BYTES_PER_TOKEN_HIDDEN = 2  # the bf16 layer input kept per layer under checkpointing
LOGIT_BYTES_PER_TOKEN_VOCAB = 10  # bf16 logits + float32 log-softmax + float32 gradient
GIB = 2**30


@dataclass(frozen=True)
class PlanRequest:
    """The hardware and the round's shape (defaults: the ``pretrained`` recipe's micro-batch)."""

    gpus: int = 1
    gpu_memory_gb: float = 80.0
    batch_size: int = 4
    max_length: int = 500
    optimizer: Literal["adamw", "adamw_8bit"] = "adamw"
    lora_rank: int = 8
    teacher_memory_budget_mb: float = 2048.0

    def __post_init__(self) -> None:
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 1:
            raise UsageError(f"--gpus {self.gpus!r}: give the number of GPUs, a whole number >= 1")
        if not (math.isfinite(self.gpu_memory_gb) and self.gpu_memory_gb > 0):
            raise UsageError(f"--gpu-memory {self.gpu_memory_gb!r}: give one GPU's memory in GB, e.g. 80")
        for name in ("batch_size", "max_length", "lora_rank"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name}={getattr(self, name)} must be >= 1")
        if self.optimizer not in ("adamw", "adamw_8bit"):
            raise UsageError(f"optimizer={self.optimizer!r}: use 'adamw' or 'adamw_8bit'")


@dataclass(frozen=True)
class Shape:
    """What the estimate needs from the architecture (counted on the meta device)."""

    parameters: int
    layers: int
    hidden: int
    vocab: int
    largest_layer_parameters: int
    lora_parameters_per_rank: int  # sum of (in + out) over the decoder's linear layers: adapter size = r x this


@dataclass(frozen=True)
class Estimate:
    """One setting's peak memory on one GPU, in GiB, by part."""

    setting: Setting
    weights_gb: float
    gradients_gb: float
    optimizer_gb: float
    activations_gb: float
    logits_gb: float
    teacher_gb: float
    reserved_gb: float
    fits: bool

    @property
    def total_gb(self) -> float:
        return (self.weights_gb + self.gradients_gb + self.optimizer_gb + self.activations_gb + self.logits_gb
                + self.teacher_gb + self.reserved_gb)

    def to_dict(self) -> dict:
        return {**asdict(self), "total_gb": round(self.total_gb, 2)}


def model_shape(model_dir: str | Path, trust_remote_code: bool = False) -> Shape:
    """Count the parameters of the model in ``model_dir`` (only its ``config.json`` is read)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise UsageError(f"{folder} has no config.json: --model takes a model folder (only its config.json is read, "
                         "so a folder holding just the config of a large model works) or a model name")
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    # Outside the context: tying inside it re-registers the output embedding as a new meta tensor.
    model.tie_weights()  # tied input and output embeddings are one tensor, counted once
    text = config.get_text_config()
    blocks = _decoder_layers(model)
    linear = sum(m.in_features + m.out_features for block in blocks for m in block.modules()
                 if isinstance(m, torch.nn.Linear))
    return Shape(
        parameters=sum(p.numel() for p in model.parameters()),
        layers=len(blocks),
        hidden=int(text.hidden_size),
        vocab=int(text.vocab_size),
        largest_layer_parameters=max(sum(p.numel() for p in b.parameters()) for b in blocks),
        lora_parameters_per_rank=linear,
    )


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder blocks: the largest ``ModuleList`` of the model (``model.layers`` in Llama-family models)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise UsageError(f"{type(model).__name__} has no list of decoder layers to plan for")
    return list(max(lists, key=lambda m: sum(p.numel() for p in m.parameters())))


def estimate(shape: Shape, request: PlanRequest, setting: Setting) -> Estimate:
    """Peak memory of one GPU for ``setting`` (see the module docstring for every term)."""
    p = shape.parameters
    tokens = 2 * request.batch_size * request.max_length  # forget + retain sequences of one micro-batch
    state_bytes = 8 if request.optimizer == "adamw" else 2
    layer_acts = ACTIVATION_BYTES_PER_TOKEN_HIDDEN * tokens * shape.hidden
    full_acts = shape.layers * layer_acts
    checkpointed = shape.layers * CHECKPOINTED_BYTES_PER_TOKEN_HIDDEN * tokens * shape.hidden + layer_acts
    teacher = request.teacher_memory_budget_mb * 2**20
    if setting == "full":
        weights, grads, states, acts = 4 * p, 4 * p, state_bytes * p, full_acts
    elif setting == "fsdp":
        n = request.gpus
        gathered = 2 * shape.largest_layer_parameters * 2  # two layers' bf16 parameters in flight
        weights, grads, states = 4 * p / n + gathered, 4 * p / n + gathered, state_bytes * p / n
        acts = full_acts
    elif setting == "lora":
        adapter = request.lora_rank * shape.lora_parameters_per_rank
        weights, grads, states, acts = 4 * p + 4 * adapter, 4 * adapter, state_bytes * adapter, checkpointed
    else:
        raise UsageError(f"setting={setting!r}: use 'full', 'fsdp' or 'lora'")
    logits = LOGIT_BYTES_PER_TOKEN_VOCAB * tokens * shape.vocab
    parts = [weights / GIB, grads / GIB, states / GIB, acts / GIB, logits / GIB, teacher / GIB, RESERVED_GB]
    total = sum(parts)
    return Estimate(setting, *(round(x, 3) for x in parts), fits=total <= request.gpu_memory_gb)


def plan(model_dir: str | Path, request: PlanRequest, trust_remote_code: bool = False) -> dict:
    """Every setting's estimate and the recommendation: the first that fits of ``full`` (simplest, fastest),
    ``fsdp`` (only with several GPUs) and ``lora``; ``None`` when none fits."""
    shape = model_shape(model_dir, trust_remote_code)
    settings: list[Setting] = ["full", "fsdp", "lora"] if request.gpus > 1 else ["full", "lora"]
    estimates = [estimate(shape, request, s) for s in settings]
    chosen = next((e.setting for e in estimates if e.fits), None)
    return {"model": str(model_dir), "shape": asdict(shape), "request": asdict(request),
            "estimates": [e.to_dict() for e in estimates], "recommended": chosen}


__all__ = ["Estimate", "PlanRequest", "Shape", "estimate", "model_shape", "plan"]
