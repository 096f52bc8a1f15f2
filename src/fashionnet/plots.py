"""Pictures of a run and its report: matplotlib is imported inside these functions only.

`write_report(run_dir, ...)` draws every picture into run_dir/report/ and ties them together in
report.html (images embedded, one self-contained file) and report.md.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from ._fsutil import atomic_write, open_regular
from .layers import Conv2D, Linear
from .model import Classifier, Sequential, unwrap


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Write the picture atomically: never half a file."""
    with atomic_write(path) as f:
        fig.savefig(f, dpi=100, format=path.suffix.lstrip(".") or "png")


def learning_curves(history: list[dict[str, Any]], best_epoch: int, path: Path) -> None:
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], label="train")
        if "val_" + key in history[0]:
            ax.plot(epochs, [r[f"val_{key}"] for r in history], label="validation")
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def confusion_heatmap(confusion: np.ndarray, names: list[str], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = confusion.max()
    for i in range(len(names)):
        for j in range(len(names)):
            color = "white" if confusion[i, j] > top / 2 else "black"
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_title("test set confusion matrix (counts)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def image_grid(images: np.ndarray, titles: list[str], path: Path, *, columns: int = 8) -> None:
    plt = _pyplot()
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def prediction_sheet(
    pictures: list[Any], views: np.ndarray, captions: list[str], path: Path
) -> None:
    """Each input (a PIL picture, or None when there is none to show) beside the view the model
    saw, captioned with its top classes: when a prediction is wrong, this shows why."""
    plt = _pyplot()
    rows = len(views)
    fig, axes = plt.subplots(rows, 2, figsize=(6.4, 2.6 * rows), squeeze=False)
    for (left, right), picture, view, caption in zip(axes, pictures, views, captions, strict=True):
        if picture is not None:
            left.imshow(picture, cmap="gray" if picture.mode in ("L", "I", "F") else None)
        left.set_title("input", fontsize=9)
        right.imshow(view, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        right.set_title(f"what the model saw ({view.shape[1]}x{view.shape[0]})", fontsize=9)
        left.set_xlabel(caption, fontsize=9, loc="left")
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def first_layer(model: Sequential, image_shape: tuple[int, int], path: Path) -> None:
    """The first Linear layer's weights as images, or the first Conv2D's filters."""
    plt = _pyplot()
    layer = next((la for la in model.layers if isinstance(la, (Linear, Conv2D))), None)
    if isinstance(layer, Conv2D):
        filters = layer.weight.data[:, 0]
    elif isinstance(layer, Linear):
        filters = layer.weight.data.T[:, : image_shape[0] * image_shape[1]].reshape(
            -1, *image_shape
        )
    else:
        return
    filters = filters[:32]
    columns = 8
    rows = -(-len(filters) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, f in zip(axes.ravel(), filters, strict=False):
        limit = float(np.abs(f).max()) or 1.0
        ax.imshow(f, cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.suptitle("first layer: weights of the first units (red +, blue -)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def confidence_histogram(probs: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Confidence of right and wrong predictions, and accuracy per confidence bin (calibration)."""
    plt = _pyplot()
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    bins = np.linspace(0, 1, 11)
    axes[0].hist([confidence[right], confidence[~right]], bins=bins, label=["right", "wrong"])
    axes[0].set_xlabel("confidence (top probability)")
    axes[0].set_ylabel("images")
    axes[0].legend()
    which = np.clip(np.digitize(confidence, bins) - 1, 0, 9)
    centers, accuracy = [], []
    for b in range(10):
        if (which == b).any():
            centers.append((bins[b] + bins[b + 1]) / 2)
            accuracy.append(right[which == b].mean())
    axes[1].plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    axes[1].plot(centers, accuracy, marker="o", label="model")
    axes[1].set_xlabel("confidence")
    axes[1].set_ylabel("accuracy")
    axes[1].legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


MAX_HISTORY_BYTES = 64 << 20  # a run's history is a few hundred bytes an epoch


def _read_history(path: Path) -> list[dict[str, Any]]:
    """history.jsonl's epoch records, or one error naming the file and the line."""
    records: list[dict[str, Any]] = []
    try:
        with open_regular(path) as f:
            text = f.read(MAX_HISTORY_BYTES + 1).decode(errors="replace")
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(text) > MAX_HISTORY_BYTES:
        raise ValueError(f"{path}: over {MAX_HISTORY_BYTES:,} bytes, not a run's history")
    for n, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line) if line.strip() else None
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{path}: line {n}: not an epoch record ({e})") from None
        if record is None:
            continue
        needed = ["epoch", "train_loss", "train_accuracy"]
        if records and "val_loss" in records[0]:
            needed += ["val_loss", "val_accuracy"]
        if not isinstance(record, dict) or not all(
            isinstance(record.get(k), int | float) and not isinstance(record.get(k), bool)
            for k in needed
        ):
            raise ValueError(f"{path}: line {n}: not an epoch record (needs {', '.join(needed)})")
        records.append(record)
    return records


def write_report(
    run_dir: Path,
    model: Classifier,
    meta: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    evaluation: dict[str, Any],
) -> list[Path]:
    """Every picture into run_dir/report/, plus report.html and report.md; returns the files."""
    history_file = run_dir / "history.jsonl"  # read first: a damaged one leaves no folder
    history = _read_history(history_file) if history_file.exists() else []
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    names = list(meta.get("class_names", [str(i) for i in range(probs.shape[1])]))
    shape = (images.shape[1], images.shape[2])
    predicted = probs.argmax(axis=1)
    pictures: dict[str, Path] = {}
    if history:
        pictures["Learning curves"] = out / "learning_curves.png"
        best = int(meta.get("metrics", {}).get("best_epoch", history[-1]["epoch"]))
        learning_curves(history, best, pictures["Learning curves"])
    pictures["Confusion matrix"] = out / "confusion_matrix.png"
    confusion_heatmap(np.array(evaluation["confusion_matrix"]), names, pictures["Confusion matrix"])
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probs[wrong].max(axis=1))][:32]  # the most confident mistakes
    pictures["Misclassified test images"] = out / "misclassified.png"
    titles = [
        f"true {names[labels[i]]}\npred {names[predicted[i]]} {probs[i].max():.2f}" for i in wrong
    ]
    image_grid(images[wrong], titles, pictures["Misclassified test images"])
    right = [np.flatnonzero((predicted == labels) & (labels == k))[:4] for k in range(len(names))]
    shown = np.concatenate(right).astype(int)
    pictures["Correct examples per class"] = out / "correct_per_class.png"
    image_grid(images[shown], [f"{names[labels[i]]} {probs[i].max():.2f}" for i in shown],
               pictures["Correct examples per class"])  # fmt: skip
    pictures["First layer"] = out / "first_layer.png"
    first_layer(unwrap(model), shape, pictures["First layer"])
    pictures["Confidence and calibration"] = out / "confidence.png"
    confidence_histogram(probs, labels, pictures["Confidence and calibration"])
    pictures = {k: v for k, v in pictures.items() if v.exists()}

    summary = [
        ("test accuracy", f"{evaluation['test_accuracy']:.4f}"),
        ("test loss", f"{evaluation['test_loss']:.4f}"),
        ("top-2 accuracy", f"{evaluation['top_2_accuracy']:.4f}"),
        ("macro F1", f"{evaluation['macro_f1']:.4f}"),
    ]
    pc = evaluation["per_class"]
    rows = [(n, pc["precision"][i], pc["recall"][i], pc["f1"][i]) for i, n in enumerate(names)]
    config = json.dumps(meta.get("config", {}), indent=2)
    md = [f"# fashionnet report: {run_dir.name}", ""]
    md += [f"- {k}: {v}" for k, v in summary] + [
        "",
        "| class | precision | recall | F1 |",
        "|---|---|---|---|",
    ]
    md += [f"| {n} | {p:.4f} | {r:.4f} | {f:.4f} |" for n, p, r, f in rows] + [""]
    for title, path in pictures.items():
        md += [f"## {title}", "", f"![{title}]({path.name})", ""]
    md += ["## Configuration", "", "```json", config, "```", ""]
    (out / "report.md").write_text("\n".join(md))

    def embedded(path: Path) -> str:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()

    body = [f"<h1>fashionnet report: {html.escape(run_dir.name)}</h1><ul>"]
    body += [f"<li>{html.escape(k)}: {v}</li>" for k, v in summary] + ["</ul><table>"]
    body += ["<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th></tr>"]
    body += [f"<tr><td>{html.escape(n)}</td><td>{p:.4f}</td><td>{r:.4f}</td><td>{f:.4f}</td></tr>"
             for n, p, r, f in rows] + ["</table>"]  # fmt: skip
    for title, path in pictures.items():
        body += [
            f"<h2>{html.escape(title)}</h2>",
            f'<img src="{embedded(path)}" alt="{html.escape(title)}">',
        ]
    body += ["<h2>Configuration</h2>", f"<pre>{html.escape(config)}</pre>"]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>fashionnet report {html.escape(run_dir.name)}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
        "td,th{padding:2px 10px;text-align:right}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    (out / "report.html").write_text(page)
    return [*pictures.values(), out / "report.md", out / "report.html"]
