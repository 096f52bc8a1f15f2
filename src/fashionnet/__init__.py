"""fashionnet: a from-scratch NumPy neural-network toolkit for Fashion-MNIST."""

from ._version import __version__
from .calibrate import calibrate
from .checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from .classify import classify
from .data import (
    CLASS_NAMES,
    DataError,
    Dataset,
    Split,
    load_fashion_mnist,
    read_csv,
    read_idx,
    to_float,
)
from .layers import Dropout, Flatten, LeakyReLU, Linear, Parameter, ReLU, Sigmoid, Tanh
from .losses import softmax, softmax_cross_entropy
from .model import FlipAveraged, Sequential, cnn, mlp, resnet
from .optim import SGD, Adam, AdamW, make_optimizer
from .schedules import make_schedule
from .train import History, TrainingDiverged, evaluate, fit

__all__ = [
    "CLASS_NAMES",
    "SGD",
    "Adam",
    "AdamW",
    "CheckpointError",
    "DataError",
    "Dataset",
    "Dropout",
    "Flatten",
    "FlipAveraged",
    "History",
    "LeakyReLU",
    "Linear",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Split",
    "Tanh",
    "TrainingDiverged",
    "__version__",
    "calibrate",
    "classify",
    "cnn",
    "evaluate",
    "fit",
    "load_fashion_mnist",
    "load_model",
    "make_optimizer",
    "make_schedule",
    "mlp",
    "read_checkpoint",
    "read_csv",
    "read_idx",
    "resnet",
    "save_checkpoint",
    "softmax",
    "softmax_cross_entropy",
    "to_float",
]
