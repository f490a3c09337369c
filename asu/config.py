"""Typed configuration of one unlearning round, validated at construction.

Defaults follow the ASU paper's TOFU recipe (method.md §5): tau 2.3, lambda 0.1, lr 1e-5, 5 epochs,
AdamW with weight decay 0.01, linear decay with one epoch of warm-up, seed 1001. Every semantic choice is a
named ``Literal``; no empty value carries meaning (``layers=None`` means all layers, an empty tuple is rejected).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from asu.errors import UsageError
from asu.objectives import get_objective
from asu.strict import check_keys

TeacherKind = Literal["precomputed", "frozen_copy", "adapter_disabled"]
#: Which answer tokens the forget term trains on (see ``ASUConfig.forget_positions``).
ForgetPositions = Literal["answer", "facts"]
#: Which decoder layers the teacher smooths when ``layers`` lists none (see ``ASUConfig.layer_span``).
LayerSpan = Literal["all", "middle_third"]
#: When a round writes its crash-resume checkpoint: a named cadence or every N optimizer steps.
CheckpointEvery = Literal["epoch", "never"] | int


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class ASUConfig:
    """Everything that decides what one unlearning round does.

    Construct it directly or with :meth:`from_dict` (unknown keys are errors). Invalid values raise
    ``ValueError`` naming the field and the fix.
    """

    method: str = field(
        default="asu_gd",
        metadata=_help("objective name from asu.objectives (asu_gd, asu_kl, ga, gd, npo, idk, simnpo, rmu)"),
    )
    tau: float = field(
        default=2.3, metadata=_help("attention temperature of the forget teacher; >= 1 (1 = no smoothing)")
    )
    layers: tuple[int, ...] | None = field(
        default=None, metadata=_help("0-based decoder layers to smooth; None = all layers; an empty tuple is rejected")
    )
    layer_span: LayerSpan = field(
        default="all",
        metadata=_help("the layers smoothed when layers=None, by the model's depth n: all, or middle_third (layers "
                       "n//3 .. 2n//3 - 1, where factual recall is thought to live; the first and last layers keep "
                       "their attention, so a hotter teacher still writes words); explicit layers need 'all'"),
    )
    forget_weight: float = field(default=0.1, metadata=_help("lambda, weight of the forget term (paper: 0.1 for ASU)"))
    retain_weight: float = field(default=1.0, metadata=_help("gamma, weight of the retain term (paper: 1.0)"))
    forget_positions: ForgetPositions = field(
        default="answer",
        metadata=_help(
            "answer: the forget term covers every answer token and EOS (the paper); facts: only the tokens of the "
            "answer's facts (its content words that the question lacks, asu.search.tokens.answer_facts), and the "
            "teacher's mass on special and whitespace-only tokens is removed there, so a smoothed teacher that "
            "would stop or break the line mid-sentence teaches other words instead (passages keep every token)"
        ),
    )
    teacher: TeacherKind = field(
        default="precomputed",
        metadata=_help(
            "precomputed: teacher/reference distributions computed once from the model before its first update; "
            "frozen_copy: a second frozen model run at every step (the official code); "
            "adapter_disabled: the base model under a disabled LoRA adapter (finetune='lora' only)"
        ),
    )
    teacher_memory_budget_mb: float = field(
        default=2048.0,
        metadata=_help("precomputed: store exact full-vocabulary distributions when they fit this budget"),
    )
    teacher_top_k: int = field(
        default=256,
        metadata=_help("precomputed, over budget: keep the top-k probabilities plus one tail bucket per token"),
    )
    retain_kl_positions: Literal["answer", "sequence"] = field(
        default="answer",
        metadata=_help("asu_kl: retain KL on answer tokens + EOS, or on every non-padding token (question too)"),
    )
    npo_beta: float = field(default=0.1, metadata=_help("npo: inverse temperature beta of the preference loss"))
    simnpo_beta: float = field(
        default=4.5, metadata=_help("simnpo: inverse temperature beta of the length-normalised preference loss; > 0")
    )
    simnpo_gamma: float = field(
        default=0.0, metadata=_help("simnpo: reward margin gamma subtracted inside the log-sigmoid; finite, >= 0")
    )
    rmu_layer: int = field(
        default=7,
        metadata=_help(
            "rmu: 0-based decoder layer whose output hidden state is steered (forget) and kept (retain); "
            "must exist in the model (checked at round start)"
        ),
    )
    rmu_steering_coeff: float = field(
        default=2.0, metadata=_help("rmu: norm c of the random target vector of the forget activations; > 0")
    )
    learning_rate: float = field(default=1e-5, metadata=_help("AdamW peak learning rate"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay"))
    epochs: int = field(default=5, metadata=_help("passes over the forget set"))
    batch_size: int = field(
        default=4, metadata=_help("forget items per micro-batch per process (each paired 1:1 with a retain item)")
    )
    grad_accum_steps: int = field(default=4, metadata=_help("micro-batches per optimizer step"))
    max_grad_norm: float = field(
        default=1.0, metadata=_help("gradient clipping norm (the HF Trainer default the official code used)")
    )
    warmup: Literal["one_epoch", "none"] = field(
        default="one_epoch", metadata=_help("linear warm-up over the first epoch's steps when an epoch has > 1 step")
    )
    max_length: int = field(default=500, metadata=_help("max tokens of prompt + answer (longer answers are "
                                                        "truncated), and of one passage chunk"))
    chunk_overlap: int = field(default=32, metadata=_help("tokens two consecutive chunks of a passage share (a "
                                                          "sentence cut at a chunk's end is seen whole in the next)"))
    max_passage_chunks: int = field(default=64, metadata=_help("most chunks one passage may make; a longer passage "
                                                               "is refused (split it into several records)"))
    prompt_format: Literal["chat_template", "plain"] = field(
        default="chat_template",
        metadata=_help("chat_template: the tokenizer's chat template; plain: 'Question: ..\\nAnswer:'"),
    )
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto", metadata=_help("auto: bf16 on a CUDA GPU that supports it, fp32 on CPU")
    )
    finetune: Literal["full", "lora"] = field(
        default="full", metadata=_help("full fine-tune or LoRA (needs the peft extra)")
    )
    lora_rank: int = field(default=8, metadata=_help("LoRA rank r"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha"))
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help("recompute each decoder layer's activations in the backward pass: activation memory of one "
                       "layer instead of all (7B-class LoRA rounds on one GPU), about a third more compute"),
    )
    optimizer: Literal["adamw", "adamw_8bit"] = field(
        default="adamw",
        metadata=_help("adamw: torch AdamW (fp32 states, 8 bytes a trained parameter); adamw_8bit: bitsandbytes' "
                       "8-bit AdamW (2 bytes a trained parameter; needs the bitsandbytes package)"),
    )
    seed: int = field(default=1001, metadata=_help("seeds pairing, shuffling, refusal choice and initialisation"))
    checkpoint_every: CheckpointEvery = field(
        default="epoch",
        metadata=_help(
            "crash-resume checkpoints in <output_dir>/.checkpoint/: 'epoch' (every epoch's optimizer steps), "
            "an int N >= 1 (every N optimizer steps) or 'never'; a matching checkpoint is resumed in every case"
        ),
    )
    trust_remote_code: bool = field(default=False, metadata=_help("allow model code from the model folder"))

    def __post_init__(self) -> None:
        get_objective(self.method)  # unknown name -> KeyError listing the registered objectives
        if not (math.isfinite(self.tau) and self.tau >= 1.0):
            raise UsageError(
                f"tau={self.tau} is invalid: the teacher temperature must be a finite number >= 1 (1 = no smoothing)"
            )
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            if not self.layers:
                raise UsageError(
                    "layers=() selects no layer: use layers=None to smooth all layers, or list 0-based indices"
                )
            if any(not isinstance(i, int) or i < 0 for i in self.layers):
                raise UsageError(f"layers={self.layers} must hold non-negative 0-based layer indices")
        if self.forget_positions not in ("answer", "facts"):
            raise UsageError(f"forget_positions={self.forget_positions!r}: use 'answer' (every answer token, the "
                             "paper) or 'facts' (the answer's fact tokens only)")
        if self.forget_positions == "facts" and self.objective.forget == "idk":
            raise UsageError("forget_positions='facts' does not apply to method='idk' (its answers are refusals, "
                             "which state no fact); use forget_positions='answer'")
        if self.layer_span not in ("all", "middle_third"):
            raise UsageError(f"layer_span={self.layer_span!r}: use 'all' or 'middle_third'")
        if self.layers is not None and self.layer_span != "all":
            raise UsageError(f"layers={list(self.layers)} and layer_span={self.layer_span!r} both choose the smoothed "
                             "layers; keep one (layer_span='all' with explicit layers)")
        for name in ("forget_weight", "retain_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name}={value} must be a finite number >= 0")
        if not (isinstance(self.chunk_overlap, int) and 0 <= self.chunk_overlap <= self.max_length // 2):
            raise UsageError(f"chunk_overlap={self.chunk_overlap} must be a whole number in [0, max_length // 2 = "
                             f"{self.max_length // 2}]: each chunk must bring new tokens")
        for name in ("epochs", "batch_size", "grad_accum_steps", "max_length", "teacher_top_k", "lora_rank",
                     "max_passage_chunks"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.max_grad_norm > 0:
            raise UsageError(f"max_grad_norm={self.max_grad_norm} must be > 0")
        if not self.learning_rate > 0:
            raise UsageError(f"learning_rate={self.learning_rate} must be > 0")
        if self.npo_beta <= 0:
            raise UsageError(f"npo_beta={self.npo_beta} must be > 0")
        if not (math.isfinite(self.simnpo_beta) and self.simnpo_beta > 0):
            raise UsageError(f"simnpo_beta={self.simnpo_beta} must be a finite number > 0")
        if not (math.isfinite(self.simnpo_gamma) and self.simnpo_gamma >= 0):
            raise UsageError(f"simnpo_gamma={self.simnpo_gamma} must be a finite number >= 0")
        if isinstance(self.rmu_layer, bool) or not isinstance(self.rmu_layer, int) or self.rmu_layer < 0:
            raise UsageError(f"rmu_layer={self.rmu_layer!r} must be a non-negative 0-based decoder layer index")
        if not (math.isfinite(self.rmu_steering_coeff) and self.rmu_steering_coeff > 0):
            raise UsageError(f"rmu_steering_coeff={self.rmu_steering_coeff} must be a finite number > 0")
        if self.teacher_memory_budget_mb < 0:
            raise UsageError(f"teacher_memory_budget_mb={self.teacher_memory_budget_mb} must be >= 0")
        every = self.checkpoint_every
        if isinstance(every, bool) or not (every in ("epoch", "never") or (isinstance(every, int) and every >= 1)):
            raise UsageError(
                f"checkpoint_every={every!r} is invalid: use 'epoch', 'never' or a whole number of optimizer steps >= 1"
            )
        if not isinstance(self.gradient_checkpointing, bool):
            raise UsageError(f"gradient_checkpointing={self.gradient_checkpointing!r} must be true or false")
        if self.optimizer not in ("adamw", "adamw_8bit"):
            raise UsageError(f"optimizer={self.optimizer!r}: use 'adamw' or 'adamw_8bit' (needs bitsandbytes)")
        if self.teacher == "adapter_disabled" and self.finetune != "lora":
            raise UsageError(
                "teacher='adapter_disabled' needs finetune='lora'; use teacher='precomputed' for full fine-tuning"
            )

    def for_depth(self, num_layers: int) -> ASUConfig:
        """This config with ``layer_span`` resolved into explicit ``layers`` for a model of ``num_layers`` decoder
        layers (unchanged when the span is 'all')."""
        if self.layer_span == "all":
            return self
        # n // 3 .. 2n // 3 - 1; a model too shallow to have a middle third (1 layer) smooths its middle layer.
        layers = tuple(range(num_layers // 3, 2 * num_layers // 3)) or (num_layers // 2,)
        return replace(self, layers=layers, layer_span="all")

    @property
    def objective(self):  # -> asu.objectives.Objective
        """The registered objective named by ``method``."""
        return get_objective(self.method)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML friendly; ``layers`` as a list or None)."""
        out = asdict(self)
        out["layers"] = None if self.layers is None else list(self.layers)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ASUConfig:
        """Build from a dict; an unknown key is a ``UsageError`` with the closest valid name (``asu.strict``)."""
        check_keys(values, cls, what="ASUConfig")
        values = dict(values)
        if values.get("layers") is not None:
            values["layers"] = tuple(values["layers"])
        return cls(**values)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Field name -> help text, for CLIs and docs."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}
