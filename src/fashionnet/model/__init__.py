"""Models: Sequential (a stack of layers over one flat parameter buffer) and the networks the
presets build from it."""

from .networks import ACTIVATIONS, cnn, mlp, resnet
from .sequential import (
    INFERENCE_BATCH,
    Classifier,
    FlipAveraged,
    Sequential,
    mirror,
    model_from_config,
    tta_of,
    unwrap,
    with_tta,
)

__all__ = [
    "ACTIVATIONS",
    "INFERENCE_BATCH",
    "Classifier",
    "FlipAveraged",
    "Sequential",
    "cnn",
    "mirror",
    "mlp",
    "model_from_config",
    "resnet",
    "tta_of",
    "unwrap",
    "with_tta",
]
