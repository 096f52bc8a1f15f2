import math

import numpy as np
import pytest

from conftest import numerical_grad
from fashionnet.losses import log_softmax, softmax, softmax_cross_entropy


def test_uniform_logits_cost_log_of_the_class_count():
    loss, grad = softmax_cross_entropy(np.zeros((4, 10)), np.array([0, 3, 5, 9]))
    assert loss == pytest.approx(math.log(10))
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-15)  # softmax - one-hot sums to 0
    assert grad[0, 0] == pytest.approx((0.1 - 1) / 4)
    assert grad[0, 1] == pytest.approx(0.1 / 4)


def test_hand_computed_two_class_case():
    logits = np.array([[math.log(3.0), 0.0]])  # softmax = (0.75, 0.25)
    loss, grad = softmax_cross_entropy(logits, np.array([1]))
    assert loss == pytest.approx(-math.log(0.25))
    np.testing.assert_allclose(grad, [[0.75, -0.75]])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gradient_matches_finite_differences(smoothing, rng):
    logits = rng.normal(size=(3, 5)) * 3
    labels = np.array([4, 0, 2])
    _, grad = softmax_cross_entropy(logits, labels, label_smoothing=smoothing)
    numeric = numerical_grad(
        lambda: softmax_cross_entropy(logits, labels, label_smoothing=smoothing)[0], logits
    )
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_label_smoothing_of_uniform_logits_still_costs_log_k():
    loss, _ = softmax_cross_entropy(np.zeros((2, 10)), np.array([1, 2]), label_smoothing=0.1)
    assert loss == pytest.approx(math.log(10))


def test_huge_logits_stay_finite():
    logits = np.array([[1000.0, -1000.0, 0.0]], dtype=np.float32)
    loss, grad = softmax_cross_entropy(logits, np.array([1]))
    assert math.isfinite(loss) and loss == pytest.approx(2000.0)
    assert np.isfinite(grad).all()
    assert np.isfinite(log_softmax(logits)).all()


def test_float32_in_float32_out(rng):
    logits = rng.normal(size=(8, 10)).astype(np.float32)
    _, grad = softmax_cross_entropy(logits, rng.integers(0, 10, 8))
    assert grad.dtype == np.float32
    assert softmax(logits).dtype == np.float32


def test_softmax_rows_sum_to_one(rng):
    np.testing.assert_allclose(softmax(rng.normal(size=(5, 7)) * 50).sum(axis=1), 1.0)


def test_bad_smoothing_is_rejected():
    with pytest.raises(ValueError, match="label_smoothing"):
        softmax_cross_entropy(np.zeros((1, 2)), np.array([0]), label_smoothing=1.0)
