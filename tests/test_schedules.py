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


def _restart_steps(lr, total, warmup=0):
    """The steps after warmup at which the learning rate jumps back up."""
    return [s for s in range(warmup + 1, total) if lr(s) > lr(s - 1)]


def test_restarts_double_each_cycle_and_the_last_runs_to_the_end():
    config = {"name": "restarts", "lr": 1.0, "total_steps": 280, "cycle_steps": 40}
    lr = make_schedule(config)
    assert _restart_steps(lr, 280) == [40, 120]  # cycles of 40, 80, then the last 160
    assert lr(0) == lr(40) == lr(120) == 1.0
    assert lr(20) == pytest.approx(0.5)  # half-way down the first cycle
    assert lr(80) == pytest.approx(0.5)  # half-way down the second
    assert lr(279) < 1e-3 and lr(280) == pytest.approx(0.0)
    # 200 steps: cycles of 40 and 80 would leave 80, less than the 160 a third needs, so the
    # second cycle is the last and runs to the end (160 steps) instead of restarting at 120
    short = make_schedule(config | {"total_steps": 200})
    assert _restart_steps(short, 200) == [40]
    assert short(120) == pytest.approx(0.5)
    assert short(200) == pytest.approx(0.0)


def test_restarts_without_room_for_a_second_cycle_is_cosine():
    for total in (30, 100):  # shorter than one cycle; shorter than a cycle and the next
        restarts = make_schedule(
            {"name": "restarts", "lr": 1.0, "total_steps": total, "cycle_steps": 40}
        )
        cosine = make_schedule({"name": "cosine", "lr": 1.0, "total_steps": total})
        assert [restarts(s) for s in range(total + 5)] == [cosine(s) for s in range(total + 5)]


def test_restarts_with_warmup_and_mult():
    lr = make_schedule(
        {"name": "restarts", "lr": 1.0, "total_steps": 100, "cycle_steps": 10, "mult": 3,
         "warmup_steps": 10}
    )  # fmt: skip
    assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0)
    # after the warmup, cycles of 10 and 30; a third (90) would not fit, so the second runs on
    assert _restart_steps(lr, 100, warmup=10) == [20]
    assert lr(60) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "linear", "lr": 1.0}, "'linear'"),
        ({"name": "constant", "lr": 0.0}, "lr must be positive"),
        ({"name": "step", "lr": 1.0, "step_size": 0}, "step_size"),
        ({"name": "restarts", "lr": 1.0, "total_steps": 10}, "cycle_steps"),
        ({"name": "restarts", "lr": 1.0, "total_steps": 10, "cycle_steps": 2, "mult": 0}, "mult"),
    ],
)
def test_bad_schedules_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        make_schedule(config)
