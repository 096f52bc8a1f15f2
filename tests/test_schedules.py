import pytest

from fashionnet.schedules import make_schedule


def test_constant():
    lr = make_schedule({"name": "constant", "lr": 0.1})
    assert lr(0) == lr(10_000) == 0.1


def test_step_decay():
    lr = make_schedule({"name": "step", "lr": 1.0, "step_size": 10, "gamma": 0.5})
    assert [lr(s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]


def test_cosine_with_warmup():
    lr = make_schedule({"name": "cosine", "lr": 1.0, "total_steps": 110, "warmup_steps": 10})
    assert lr(0) == pytest.approx(0.1)
    assert lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.5)
    assert lr(110) == pytest.approx(0.0)
    assert lr(500) == pytest.approx(0.0)  # stays at the floor past the end


def test_cosine_min_lr():
    lr = make_schedule({"name": "cosine", "lr": 1.0, "total_steps": 10, "min_lr": 0.1})
    assert lr(10) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "linear", "lr": 1.0}, "'linear'"),
        ({"name": "constant", "lr": 0.0}, "lr must be positive"),
        ({"name": "step", "lr": 1.0, "step_size": 0}, "step_size"),
    ],
)
def test_bad_schedules_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        make_schedule(config)
