"""Where models run and in which precision: the one decision every model load follows.

``Placement(device, dtype)`` with ``auto`` for both: the GPU when CUDA is available, else the CPU; bfloat16 on a
GPU that supports it (scoring, search, measurement, evaluation), float32 on the CPU. Training always keeps float32
master weights (:meth:`Placement.for_training`; ``accelerate`` moves the model and handles mixed precision), so a
bfloat16 placement changes how models are scored, never how they are trained.

Tolerance of bfloat16 scoring against float32 (``tests/asu/test_device.py`` measures it on CPU with the dtype
switch): answer probabilities within 0.02 absolute, ROUGE-L recall and fact recall within 0.05 on a memorised set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from asu.errors import UsageError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DTypeName = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Placement:
    """A device and dtype for loading models; ``auto`` resolves against the machine at load time."""

    device: DeviceName = "auto"
    dtype: DTypeName = "auto"

    def __post_init__(self) -> None:
        if self.device not in get_args(DeviceName) and not str(self.device).startswith("cuda:"):
            raise UsageError(f"device={self.device!r}: use one of {', '.join(get_args(DeviceName))} or 'cuda:<index>'")
        if self.dtype not in get_args(DTypeName):
            raise UsageError(f"dtype={self.dtype!r}: use one of {', '.join(get_args(DTypeName))}")

    def torch_device(self) -> torch.device:
        """The resolved device; a CUDA device on a machine without CUDA is an error naming the setting."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"device={self.device!r} but this machine has no CUDA device; set device: auto or cpu")
        if self.device == "mps" and not torch.backends.mps.is_available():
            raise UsageError("device='mps' but MPS is not available here; set device: auto or cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        """The resolved dtype: ``auto`` is bfloat16 on a CUDA device that supports it, else float32."""
        if self.dtype != "auto":
            return _DTYPES[self.dtype]
        device = self.torch_device()
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32

    def for_training(self) -> Placement:
        """Float32 on the CPU: the trainer's ``accelerate`` moves the model to its device and casts per step."""
        return Placement("cpu", "float32")

    def describe(self) -> str:
        return f"{self.torch_device()} {str(self.torch_dtype()).removeprefix('torch.')}"


#: The placement of every load that names none: GPU + bfloat16 where available, else CPU + float32.
AUTO = Placement()

__all__ = ["AUTO", "DTypeName", "DeviceName", "Placement"]
