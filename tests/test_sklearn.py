"""FashionNetClassifier against scikit-learn's own estimator checks, pipelines and searches."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fashionnet.sklearn import FashionNetClassifier  # noqa: E402


# Every check runs; we skip none. scikit-learn itself skips one, check_array_api_input, unless
# SCIPY_ARRAY_API=1 is set: it is for estimators that compute on non-NumPy arrays, and this one
# converts its input to NumPy through validate_data.
@parametrize_with_checks([FashionNetClassifier(hidden_layer_sizes=(32,), random_state=0)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n=300):
    x, y = make_blobs(n_samples=n, centers=3, n_features=5, random_state=0)
    return x, np.array(["cat", "dog", "bird"])[y]


def test_string_labels_pipeline_and_cross_validation():
    x, y = blobs()
    clf = make_pipeline(StandardScaler(), FashionNetClassifier((16,), random_state=0))
    scores = cross_val_score(clf, x, y, cv=3)
    assert scores.mean() > 0.95
    clf.fit(x, y)
    assert set(clf.predict(x[:10])) <= {"cat", "dog", "bird"}


def test_grid_search_over_hyperparameters():
    x, y = blobs(150)
    search = GridSearchCV(
        FashionNetClassifier((8,), epochs=100, random_state=0),
        {"lr": [1e-3, 1e-2], "hidden_layer_sizes": [(8,), (16,)]},
        cv=2,
    )
    search.fit(StandardScaler().fit_transform(x), y)
    assert set(search.best_params_) == {"lr", "hidden_layer_sizes"}
    assert search.best_score_ > 0.9


def test_partial_fit_learns_in_steps():
    x, y = blobs()
    x = StandardScaler().fit_transform(x)
    clf = FashionNetClassifier((16,), random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(x, y)
    for _ in range(40):
        clf.partial_fit(x, y, classes=["bird", "cat", "dog"])
    assert clf.n_iter_ == 40 and clf.score(x, y) > 0.95
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_same_random_state_same_predictions():
    x, y = blobs(100)
    a = FashionNetClassifier((8,), epochs=5, random_state=3).fit(x, y).predict_proba(x)
    b = FashionNetClassifier((8,), epochs=5, random_state=3).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(a, b)


def test_early_stopping_stops_when_validation_loss_stops_falling():
    # overlapping classes and a large network: it overfits, the validation loss turns up
    x, y = make_blobs(n_samples=200, centers=3, n_features=5, cluster_std=6.0, random_state=0)
    clf = FashionNetClassifier((128, 128), lr=1e-2, epochs=500, early_stopping=True, patience=3,
                               random_state=0)  # fmt: skip
    clf.fit(StandardScaler().fit_transform(x), y)
    assert clf.n_iter_ < 500
    assert clf.history_.best_epoch == clf.n_iter_ - 3
