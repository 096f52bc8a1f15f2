"""FashionNetClassifier: a fashionnet MLP as a scikit-learn estimator.

scikit-learn is an optional dependency, imported by this module only (`pip install
fashionnet[sklearn]`). Inputs are validated by scikit-learn's own utilities; labels may be any
values (strings too); features are used as given, so scale them (StandardScaler, or / 255 for
pixels) as with any neural network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .model import Sequential, mlp
from .optim import Optimizer, make_optimizer
from .schedules import make_schedule
from .train import History, fit


class FashionNetClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron classifier trained with fashionnet (float32, minibatch)."""

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (256, 128),
        *,
        activation: str = "relu",
        optimizer: str = "adam",
        lr: float = 1e-3,
        batch_size: int = 128,
        epochs: int = 200,
        weight_decay: float = 0.0,
        dropout: float = 0.0,
        batch_norm: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        patience: int = 5,
        random_state: Any = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any, y: Any) -> FashionNetClassifier:
        """Train a fresh network for `epochs` passes (fewer with early stopping)."""
        x, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        self._start(x.shape[1])
        val = None
        if self.early_stopping:
            n_val = max(1, round(self.validation_fraction * len(x)))
            if len(x) - n_val < 1:
                raise ValueError(f"early_stopping needs more than {n_val} samples, got {len(x)}")
            order = self._rng.permutation(len(x))
            val_idx, order = order[:n_val], order[n_val:]
            val = (x[val_idx].astype(np.float32), labels[val_idx])
            x, labels = x[order], labels[order]
        steps = self.epochs * -(-len(x) // self.batch_size)
        self.history_: History = fit(
            self.model_, self._optimizer, (x.astype(np.float32), labels), val=val,
            epochs=self.epochs, batch_size=self.batch_size, rng=self._rng,
            schedule=make_schedule({"name": "cosine", "lr": self.lr, "total_steps": steps}),
            patience=self.patience if self.early_stopping else None, progress=False,
        )  # fmt: skip
        self.n_iter_ = len(self.history_.epochs)
        self.loss_curve_ = [r["train_loss"] for r in self.history_.epochs]
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> FashionNetClassifier:
        """One more pass over (X, y); the first call needs `classes` (all labels there will be)."""
        first = not hasattr(self, "model_")
        x, y = validate_data(self, X, y, dtype=[np.float64, np.float32], reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("the first call to partial_fit needs classes=[every label]")
            self.classes_ = np.unique(classes)
            self._start(x.shape[1])
            self.loss_curve_ = []
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(
                f"labels {unknown.tolist()} are not in classes {self.classes_.tolist()}"
            )
        labels = np.searchsorted(self.classes_, y)
        history = fit(self.model_, self._optimizer, (x.astype(np.float32), labels), epochs=1,
                      batch_size=self.batch_size, rng=self._rng, progress=False)  # fmt: skip
        self.loss_curve_.append(history.epochs[-1]["train_loss"])
        self.n_iter_ = len(self.loss_curve_)
        return self

    def _start(self, n_features: int) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}"
            )
        seed = check_random_state(self.random_state).randint(2**31 - 1)
        self._rng = np.random.default_rng(seed)
        self.model_: Sequential = mlp(
            n_features, list(self.hidden_layer_sizes), max(2, len(self.classes_)), rng=self._rng,
            activation=self.activation, dropout=self.dropout, batch_norm=self.batch_norm,
        )  # fmt: skip
        self._optimizer: Optimizer = make_optimizer(
            self.optimizer, self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )

    # ------------------------------------------------------------------ predicting

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        x = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        # float64 inference: each row's probabilities then cannot depend on which other rows
        # share its batch (float32 BLAS kernels differ by batch shape in the 7th digit)
        probs = self.model_.predict_proba(x.astype(np.float64), pixels=False)
        return probs[:, : len(self.classes_)] if len(self.classes_) == 1 else probs

    def predict(self, X: Any) -> np.ndarray:
        probs = self.predict_proba(X)  # checks fitted-ness first
        return self.classes_[probs.argmax(axis=1)]
