"""What a sweep leaves besides its trials: DIR/best (the chosen trial), DIR/summary.json (with the
chosen trial's test figures: the test set is used once, at the end, for that trial only),
DIR/leaderboard.csv, DIR/report.html (Optuna's charts) and the chosen recipe as a command line."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from .._fsutil import atomic_write
from ..config import FIELD_TYPES, PRESETS, RunConfig, show_setting
from .trial import Sweep, config_of, counts, state_of


def values_of(sweep: Sweep, trial: Any) -> dict[str, Any]:
    """A trial's settings as RunConfig values (choices are stored as their index)."""
    out = {}
    for p in sweep.params:
        if p.name in trial.params:
            v = trial.params[p.name]
            out[p.name] = p.choices[int(v)] if p.kind == "choice" else v
    return out


def train_command(config: RunConfig) -> str:
    """The `fashionnet train` line that trains this recipe again (flags for what differs from
    its preset)."""
    base = PRESETS[config.preset]
    parts = ["fashionnet", "train", "--preset", config.preset]
    for name in FIELD_TYPES:
        value = getattr(config, name)
        if name == "preset" or value == getattr(base, name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            parts += [flag, show_setting(value)]
    return " ".join(parts)


def best_trial(study: Any) -> Any | None:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return None
    sign = -1 if study.direction.name == "MINIMIZE" else 1
    return max(complete, key=lambda t: (sign * t.value, -t.number))


def finish(study: Any, sweep: Sweep) -> dict[str, Any] | None:
    """Choose, test once, and write DIR/best, summary.json, leaderboard.csv and report.html."""
    from ..card import write_model_card
    from ..checkpoint import load_model_with_metadata
    from ..data import load_fashion_mnist
    from ..runs import evaluate_test_set, splits_of

    folder = Path(sweep.folder)
    write_leaderboard(study, sweep, folder / "leaderboard.csv")
    best = best_trial(study)
    if best is None:
        return None
    config = config_of(sweep, values_of(sweep, best))
    trial_dir = Path(best.user_attrs["folder"])
    model, meta = load_model_with_metadata(trial_dir / "model.npz")
    _, test = splits_of(config, load_fashion_mnist(config.data))
    evaluation = evaluate_test_set(model, test.images, test.labels)
    evaluation.pop("probabilities")
    write_model_card(trial_dir, meta, evaluation)
    link = folder / "best"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(os.path.relpath(trial_dir, folder), link)
    summary = {
        "best_trial": best.number, "folder": str(trial_dir), sweep.metric: best.value,
        "test_accuracy": evaluation["test_accuracy"], "test_loss": evaluation["test_loss"],
        "test_size": evaluation["test_size"], "values": {k: show_setting(v) for k, v in
                                                           values_of(sweep, best).items()},
        "train_command": train_command(config), "finished_trials": sum(
            counts(t) for t in study.get_trials(deepcopy=False)),
    }  # fmt: skip
    with atomic_write(folder / "summary.json") as f:
        f.write((json.dumps(summary, indent=2) + "\n").encode())
    write_report(study, sweep, summary, folder / "report.html")
    return summary


def write_leaderboard(study: Any, sweep: Sweep, path: Path) -> None:
    trials = study.get_trials(deepcopy=False)
    sign = -1 if study.direction.name == "MINIMIZE" else 1
    ranked = sorted(trials, key=lambda t: (t.value is None, -sign * (t.value or 0), t.number))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "state", sweep.metric, "epochs", "seconds",
                     *[p.name for p in sweep.params]])  # fmt: skip
    for t in ranked:
        values = values_of(sweep, t)
        writer.writerow([t.number, state_of(t),
                         "" if t.value is None else f"{t.value:.4f}",
                         t.user_attrs.get("epochs", ""), f"{t.user_attrs.get('seconds', 0):.1f}",
                         *[show_setting(values[p.name]) if p.name in values else ""
                           for p in sweep.params]])  # fmt: skip
    with atomic_write(path) as f:
        f.write(out.getvalue().encode())


def _charts(study: Any) -> list[tuple[str, str]]:
    """(title, PNG data URL) of Optuna's matplotlib charts; a chart that cannot be drawn yet
    (too few trials) is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vm

    charts = []
    for title, plot in (("Optimisation history", vm.plot_optimization_history),
                        ("Parameter importances", vm.plot_param_importances),
                        ("Parallel coordinates", vm.plot_parallel_coordinate)):  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks these charts experimental
                ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        axes: Any = ax  # one Axes, or an array of them
        fig: Any = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        fig.set_size_inches(9, 5)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        charts.append((title, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()))
    return charts


def write_report(study: Any, sweep: Sweep, summary: dict[str, Any], path: Path) -> None:
    e = html.escape
    rows = list(csv.reader((path.parent / "leaderboard.csv").read_text().splitlines()))
    table = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows[:21])
    body = [
        f"<h1>fashionnet sweep: {e(path.parent.name)}</h1>",
        f"<p>{summary['finished_trials']} trials of preset {e(sweep.preset)}, ranked on "
        f"{e(sweep.metric)}. Chosen: trial {summary['best_trial']} ({e(sweep.metric)} "
        f"{summary[sweep.metric]:.4f}); its test accuracy, measured once at the end: "
        f"<b>{summary['test_accuracy']:.4f}</b>.</p>",
        f"<p>Train it again:</p><pre>{e(summary['train_command'])}</pre>",
        "<h2>Leaderboard (top 20)</h2><table>",
        table,
        "</table>",
    ]
    for title, url in _charts(study):
        body += [f"<h2>{e(title)}</h2>", f'<img src="{url}" alt="{e(title)}">']
    page = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>fashionnet sweep'
            "</title><style>body{font-family:sans-serif;max-width:1000px;margin:auto}img{max-width:"
            "100%}td{padding:2px 8px}tr:nth-child(even){background:#f3f3f3}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")  # fmt: skip
    with atomic_write(path) as f:
        f.write(page.encode())
