import json

import numpy as np
import pytest

from fashionnet.model import mlp
from fashionnet.optim import SGD, Adam
from fashionnet.schedules import make_schedule
from fashionnet.train import TrainingDiverged, TrainState, evaluate, fit


def blobs(rng, n=200, features=8, classes=3):
    centers = rng.normal(scale=3.0, size=(classes, features))
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.normal(size=(n, features))).astype(np.float32)
    return x, y


def train_once(seed: int, epochs: int = 3):
    rng = np.random.default_rng(seed)
    x, y = blobs(rng)
    model = mlp(8, [16], 3, rng=rng, dropout=0.2)
    opt = Adam(model.parameters(), lr=1e-2)
    history = fit(model, opt, (x, y), val=(x[:50], y[:50]), epochs=epochs, batch_size=32, rng=rng)
    return model, opt, history


def test_overfits_a_tiny_dataset_to_100_percent(rng):
    x = rng.normal(size=(32, 10)).astype(np.float32)
    y = rng.integers(0, 4, 32)  # random labels: only memorisation can fit them
    model = mlp(10, [64], 4, rng=rng)
    history = fit(
        model, Adam(model.parameters(), lr=1e-2), (x, y), epochs=200, batch_size=8, rng=rng
    )
    assert evaluate(model, x, y)[1] == 1.0
    assert history.epochs[-1]["train_loss"] < 0.05


def test_learns_separable_blobs_with_sgd_momentum(rng):
    x, y = blobs(rng)
    model = mlp(8, [16], 3, rng=rng)
    fit(
        model,
        SGD(model.parameters(), lr=0.05, momentum=0.9),
        (x, y),
        epochs=10,
        batch_size=16,
        rng=rng,
    )
    assert evaluate(model, x, y)[1] > 0.95


def test_same_seed_gives_bit_identical_weights():
    _, opt_a, hist_a = train_once(7)
    _, opt_b, hist_b = train_once(7)
    np.testing.assert_array_equal(opt_a.data, opt_b.data)
    np.testing.assert_array_equal(opt_a.m, opt_b.m)
    assert [r["train_loss"] for r in hist_a.epochs] == [r["train_loss"] for r in hist_b.epochs]
    _, opt_c, _ = train_once(8)
    assert not np.array_equal(opt_a.data, opt_c.data)


def test_history_records_every_epoch():
    _, _, history = train_once(0, epochs=4)
    assert [r["epoch"] for r in history.epochs] == [1, 2, 3, 4]
    for record in history.epochs:
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(
            record
        )
    assert 1 <= history.best_epoch <= 4
    assert history.train_seconds > 0


def test_best_epoch_weights_are_restored(rng):
    x, y = blobs(rng)
    model = mlp(8, [16], 3, rng=rng)
    opt = Adam(model.parameters(), lr=1e-2)
    snapshots = []

    def remember(record):
        snapshots.append(opt.data.copy())

    history = fit(
        model,
        opt,
        (x, y),
        val=(x[:40], y[:40]),
        epochs=6,
        batch_size=32,
        rng=rng,
        callbacks=[remember],
    )
    np.testing.assert_array_equal(opt.data, snapshots[history.best_epoch - 1])
    best = min(r["val_loss"] for r in history.epochs)
    assert history.best()["val_loss"] == best


def test_early_stopping_waits_for_patience(rng):
    x, y = blobs(rng)
    model = mlp(8, [16], 3, rng=rng)
    # lr so small that the weights, so the validation loss, cannot change after the first epoch
    opt = SGD(model.parameters(), lr=1e-12)
    history = fit(model, opt, (x, y), val=(x, y), epochs=50, batch_size=64, rng=rng, patience=3)
    assert history.stopped_early
    assert len(history.epochs) == history.best_epoch + 3


def test_a_callback_can_stop_training(rng):
    x, y = blobs(rng)
    model = mlp(8, [16], 3, rng=rng)
    history = fit(
        model,
        Adam(model.parameters()),
        (x, y),
        epochs=10,
        batch_size=64,
        rng=rng,
        callbacks=[lambda record: record["epoch"] == 2],
    )
    assert len(history.epochs) == 2


def test_schedule_sets_the_learning_rate_each_step(rng):
    x, y = blobs(rng, n=64)
    model = mlp(8, [16], 3, rng=rng)
    opt = SGD(model.parameters(), lr=1.0)
    schedule = make_schedule({"name": "step", "lr": 0.1, "step_size": 2, "gamma": 0.5})
    history = fit(model, opt, (x, y), epochs=2, batch_size=32, rng=rng, schedule=schedule)
    assert [r["lr"] for r in history.epochs] == [0.1, 0.05]  # steps 1 and 3


def test_non_finite_loss_raises_with_epoch_and_step(rng):
    x, y = blobs(rng, n=64)
    x[40] = np.nan
    model = mlp(8, [16], 3, rng=rng)
    with pytest.raises(TrainingDiverged, match="epoch 1, step"):
        fit(model, Adam(model.parameters()), (x, y), epochs=1, batch_size=8, rng=rng)


def test_bad_epochs_rejected(rng):
    x, y = blobs(rng, n=16)
    model = mlp(8, [4], 3, rng=rng)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, Adam(model.parameters()), (x, y), epochs=0, batch_size=8, rng=rng)


def test_best_epoch_restores_batchnorm_running_statistics_too(rng):
    x, y = blobs(rng)
    model = mlp(8, [16], 3, rng=rng, batch_norm=True)
    opt = Adam(model.parameters(), lr=1e-2)
    snapshots = []

    def remember(record):
        snapshots.append({k: b.copy() for k, b in model.named_buffers().items()})

    wrong = (y[:40] + 1) % 3  # validation labels the model unlearns: its loss rises
    history = fit(model, opt, (x, y), val=(x[:40], wrong), epochs=6, batch_size=32, rng=rng,
                  callbacks=[remember])  # fmt: skip
    assert history.best_epoch < 6, "the test needs a best epoch before the last"
    for name, b in model.named_buffers().items():
        np.testing.assert_array_equal(b, snapshots[history.best_epoch - 1][name])


def test_a_run_stopped_by_patience_stays_stopped_when_resumed(rng):
    x, y = blobs(rng)
    model = mlp(8, [16], 3, rng=rng)
    opt = SGD(model.parameters(), lr=1e-12)
    state = TrainState()
    saved = []  # what a checkpoint written by an epoch callback holds
    history = fit(model, opt, (x, y), val=(x, y), epochs=50, batch_size=64, rng=rng, patience=2,
                  state=state, callbacks=[lambda r: saved.append(state.to_saved())])  # fmt: skip
    assert history.stopped_early
    n_epochs = len(history.epochs)
    assert n_epochs < 50
    scalars, arrays = saved[-1]
    resumed = TrainState.from_saved(json.loads(json.dumps(scalars)), arrays)  # as from a file
    again = fit(model, opt, (x, y), val=(x, y), epochs=50, batch_size=64, rng=rng, patience=2,
                state=resumed)  # fmt: skip
    assert len(again.epochs) == n_epochs


@pytest.mark.parametrize(
    ("labels", "message"),
    [(np.array([0, 1, 2, 3, 19]), r"labels must be in 0\.\.9 \(the model's outputs\), got 0\.\.19"),
     (np.array([0, 1, -1, 2, 3]), r"labels must be in 0\.\.9 \(the model's outputs\), got -1\.\.3"),
     (np.arange(4), "5 images and 4 labels: expected as many"),
     (np.arange(0), "0 images and 0 labels")],
)  # fmt: skip
def test_evaluate_names_labels_it_cannot_score(labels, message, rng):
    """Labels past the model's outputs were NumPy's IndexError (or, for -1, silently the last
    class); evaluate(model, x, y) is the library call users make with their own arrays."""
    from fashionnet.model import FlipAveraged

    model = mlp(784, [8], 10, rng=rng)
    x = np.zeros((len(labels) if len(labels) != 4 else 5, 784), np.float32)
    for scored in (model, FlipAveraged(model)):
        with pytest.raises(ValueError, match=message):
            evaluate(scored, x, labels)


@pytest.mark.parametrize(
    ("train_labels", "val_labels", "message"),
    [(np.arange(50) % 12, None, r"train: labels must be in 0\.\.9 \(the model.s .*0\.\.11"),
     (-(np.arange(50) % 3), None, r"train: labels must be in 0\.\.9 .*, got -2\.\.0"),
     (np.arange(49) % 10, None, "train: 50 images and 49 labels"),
     (np.arange(50) % 10, np.array([1, 2, 3, 4, 10]), r"val: labels must be in 0\.\.9 .*1\.\.10")],
)  # fmt: skip
def test_fit_names_labels_it_cannot_train_on_before_a_step(train_labels, val_labels, message,
                                                           rng):  # fmt: skip
    """A negative label trained silently as the last class; one past the outputs was NumPy's
    IndexError in the middle of an epoch."""
    model = mlp(784, [8], 10, rng=rng)
    before = model.state_dict()
    x = rng.random((50, 784), dtype=np.float32)
    val = None if val_labels is None else (x[:5], val_labels)
    with pytest.raises(ValueError, match=message):
        fit(model, Adam(model.parameters()), (x, train_labels), val=val, epochs=1, batch_size=16,
            rng=rng)  # fmt: skip
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # not a step taken
