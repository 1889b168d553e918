"""Face-recognition backbones: IResNet and ResSaNet, built by name through a registry.

    model = create_model("iresnet50")                # or "ressanet50", see list_models()
    embeddings = model(normalize_input(images_uint8))  # (N, 512), not L2-normalised

Every model maps (N, 3, 112, 112) float images, RGB, normalised (x/255 - 0.5) / 0.5, to
(N, embedding_size) un-normalised embeddings; `model.input_config` (an `InputConfig`, timm's
pretrained_cfg idea) says so, and `embed_flip_averaged` is the evaluation embedding.
"""

from __future__ import annotations

from fmr.models import iresnet, ressanet  # noqa: F401  (registers the models)
from fmr.models.flops import count_flops, count_parameters
from fmr.models.inputs import DEFAULT_INPUT, InputConfig, embed_flip_averaged, normalize_input
from fmr.models.registry import create_model, list_models, register_model

INPUT_SIZE = 112

__all__ = [
    "DEFAULT_INPUT",
    "INPUT_SIZE",
    "InputConfig",
    "count_flops",
    "count_parameters",
    "create_model",
    "embed_flip_averaged",
    "list_models",
    "normalize_input",
    "register_model",
]
