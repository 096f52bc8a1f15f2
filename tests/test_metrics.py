import numpy as np
import pytest

from fashionnet.metrics import (
    accuracy,
    confusion_matrix,
    most_confused,
    per_class,
    report,
    top_k_accuracy,
)

LABELS = np.array([0, 0, 0, 1, 1, 2])
PREDICTED = np.array([0, 0, 1, 1, 2, 2])


def test_accuracy_by_hand():
    assert accuracy(LABELS, PREDICTED) == pytest.approx(4 / 6)


def test_confusion_matrix_by_hand():
    np.testing.assert_array_equal(
        confusion_matrix(LABELS, PREDICTED, 3), [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    )
    assert confusion_matrix(LABELS, PREDICTED, 4).shape == (4, 4)  # a class never seen


def test_precision_recall_f1_by_hand():
    m = per_class(confusion_matrix(LABELS, PREDICTED, 3))
    np.testing.assert_allclose(m["precision"], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(m["recall"], [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(m["f1"], [0.8, 0.5, 2 / 3])
    np.testing.assert_array_equal(m["support"], [3, 2, 1])


def test_a_class_never_predicted_has_zero_precision_not_nan():
    m = per_class(confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2))
    assert m["precision"][1] == 0.0 and m["f1"][1] == 0.0


def test_top_k_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = np.array([1, 0, 0])
    assert top_k_accuracy(labels, probs, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(labels, probs, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(labels, probs, 3) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        top_k_accuracy(labels, probs, 4)


def test_most_confused_pairs():
    confusion = np.array([[5, 3, 0], [1, 4, 7], [0, 0, 9]])
    assert most_confused(confusion, top=2) == [(1, 2, 7), (0, 1, 3)]
    assert most_confused(np.eye(3, dtype=int)) == []


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"0\.\.2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix(np.array([0, 1]), np.array([0, 1, 1]), 3)


def test_report_is_consistent(rng):
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 4, 50)
    r = report(labels, probs)
    assert r["accuracy"] == accuracy(labels, probs.argmax(axis=1))
    assert np.sum(r["confusion_matrix"]) == 50
    assert r["top_2_accuracy"] >= r["accuracy"]
    assert r["macro_f1"] == pytest.approx(np.mean(r["per_class"]["f1"]))


def test_macro_averages_leave_out_classes_absent_from_labels_and_predictions():
    """scikit-learn's macro average runs over the labels in y_true or y_pred: a folder of two
    classes' photos scored against a ten-class model is not dragged down by eight empty rows."""
    metrics = pytest.importorskip("sklearn.metrics")
    labels = np.array([0, 0, 1, 1, 1, 6, 6])
    predicted = np.array([0, 4, 1, 1, 6, 6, 0])
    probs = np.full((7, 10), 0.01)
    probs[np.arange(7), predicted] = 0.91
    r = report(labels, probs)
    for name in ("precision", "recall", "f1"):
        expected = getattr(metrics, f"{name}_score")(labels, predicted, average="macro",
                                                     zero_division=0)  # fmt: skip
        assert r[f"macro_{name}"] == pytest.approx(expected)
    assert r["macro_f1"] > np.mean(r["per_class"]["f1"])  # the ten-class mean would be lower
