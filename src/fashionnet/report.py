"""A run's report: every picture into run_dir/report/, tied together in report.html (one
self-contained file, pictures embedded) and report.md.

A reader opens it without having seen the run: a header says what was trained on what, each
chart has a sentence saying what it shows, and the figures `evaluate` prints are there too.
"""

from __future__ import annotations

import base64
import datetime
import errno
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._fsutil import atomic_write, open_regular
from ._text import shown
from ._version import __version__
from .calibrate import temperature_of
from .card import architecture
from .config import ConfigError, RunConfig
from .model import Classifier, unwrap
from .plots import (
    DPI,
    confidence_histogram,
    confusion_heatmap,
    first_layer,
    image_grid,
    learning_curves,
)
from .runs import lr_schedule

MAX_HISTORY_BYTES = 64 << 20  # a run's history is a few hundred bytes an epoch

CAPTIONS = {
    "Learning curves": "Loss and accuracy after each epoch, on the training images (with "
    "augmentation and, if set, label smoothing, so higher than on clean images) and on the "
    "validation images; the dashed line marks the epoch whose weights were kept. Under the loss, "
    "the learning rate at every step.",
    "Confusion matrix": "How many test images of each true class (rows) were given each "
    "class (columns); the diagonal is right, the rest shows which classes the model mixes up.",
    "Misclassified test images": "The test images the model got wrong with the highest "
    "confidence: the true class, the predicted one and its probability.",
    "Correct examples per class": "Four correctly classified test images of every class, "
    "with the model's probability.",
    "First layer": "What the first layer looks for: each unit's weights drawn as an image "
    "(red: brighter pixels raise it, blue: lower it).",
    "Confidence and calibration": "Left: the top probability of right and wrong answers. "
    "Right: the accuracy of the images in each confidence bin; on the diagonal, a probability "
    "of 0.8 is right 80% of the time.",
}


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


def _lr_curve(meta: dict[str, Any]) -> tuple[tuple[np.ndarray, np.ndarray], list[float]] | None:
    """((epoch as a fraction, learning rate) at every step, the epochs where a restart begins),
    replayed from the run's config; None when the config cannot say (an older model file)."""
    try:
        config = RunConfig.from_json(meta["config"])
        n_train = int(meta["metrics"]["train_size"])
    except (ConfigError, KeyError, TypeError, ValueError):
        return None
    steps = -(-n_train // config.batch_size)
    schedule = lr_schedule(config, n_train)
    at = np.arange(config.epochs * steps)
    rate = np.array([schedule(int(s)) for s in at])
    restarts = []
    if config.schedule == "restarts" and config.cycle_epochs:
        start, length = config.cycle_epochs, config.cycle_epochs * 2
        while start < config.epochs:
            restarts.append(float(start))
            start, length = start + length, length * 2
    return (at / steps, rate), restarts


def _header(run_dir: Path, model: Classifier, meta: dict[str, Any]) -> list[tuple[str, str]]:
    m, config = meta.get("metrics", {}), meta.get("config", {})
    model_file = run_dir / "model.npz"
    made = (datetime.datetime.fromtimestamp(model_file.stat().st_mtime, datetime.UTC)
            .strftime("%Y-%m-%d %H:%M UTC") if model_file.exists() else "unknown")  # fmt: skip
    origin = meta.get("from_model")
    started = []
    if isinstance(origin, dict):  # a fine-tuned run: the model its weights started from
        where = f"{shown(str(origin.get('path')))} (SHA-256 {origin.get('sha256')})"
        started.append(("fine-tuned from", where))
    return [
        ("preset", str(m.get("preset", config.get("preset", "unknown")))),
        *started,
        ("architecture", architecture(config) if config else "unknown"),
        ("parameters", f"{unwrap(model).n_parameters():,}"),
        ("data", f"{m.get('data', 'unknown')} (MD5 {m.get('data_checksum', 'unknown')})"),
        ("images", f"{m.get('train_size', '?')} train, {m.get('val_size', '?')} validation, "
                   f"{m.get('test_size', '?')} test"),
        ("training", f"{m.get('epochs', '?')} epochs (best {m.get('best_epoch', '?')}), "
                     f"{float(m.get('train_seconds', 0.0)):.1f} s"),
        *_calibration(meta.get("calibration")),
        ("date", made),
        ("fashionnet", f"{meta.get('fashionnet_version', '?')} (report: {__version__})"),
    ]  # fmt: skip


def _calibration(record: Any) -> list[tuple[str, str]]:
    """The temperature a run fitted (calibrate.py), as the header shows it: from the file, so
    only a temperature calibrate could have written is shown."""
    t = temperature_of(record)
    if t is None:
        return []
    images = record.get("images")  # a record with a temperature is a dict
    fitted = f", fitted on {images} validation images" if isinstance(images, int) else ""
    return [("probabilities", f"calibrated: temperature {t:.3f}{fitted}")]


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
    if out.is_symlink():  # a shared run folder's report/ could lead anywhere: files go in there
        raise OSError(errno.EINVAL, "a link, not the run's own folder; remove it", str(out))
    out.mkdir(exist_ok=True)
    # names and the folder's name drawn, tabled and titled with control characters escaped
    names = [shown(n) for n in meta.get("class_names", range(probs.shape[1]))]
    shape = (images.shape[1], images.shape[2])
    predicted = probs.argmax(axis=1)
    pictures: dict[str, Path] = {}
    if history:
        pictures["Learning curves"] = out / "learning_curves.png"
        best = int(meta.get("metrics", {}).get("best_epoch", history[-1]["epoch"]))
        curve = _lr_curve(meta)
        learning_curves(history, best, pictures["Learning curves"],
                        *(curve if curve is not None else (None, [])))  # fmt: skip
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
    examples = np.concatenate(right).astype(int)
    pictures["Correct examples per class"] = out / "correct_per_class.png"
    image_grid(images[examples], [f"{names[labels[i]]} {probs[i].max():.2f}" for i in examples],
               pictures["Correct examples per class"])  # fmt: skip
    pictures["First layer"] = out / "first_layer.png"
    first_layer(unwrap(model), shape, pictures["First layer"])
    pictures["Confidence and calibration"] = out / "confidence.png"
    ece = float(evaluation["expected_calibration_error"])
    confidence_histogram(probs, labels, pictures["Confidence and calibration"], ece)
    pictures = {k: v for k, v in pictures.items() if v.exists()}
    captions = dict(CAPTIONS)
    if history and meta.get("config", {}).get("schedule") == "restarts":
        captions["Learning curves"] += (
            " Red lines: warm restarts, where the rate jumps back to its peak and a cosine cycle "
            "twice as long as the last begins; the losses rise for an epoch or two after each, "
            "then fall lower than before."
        )

    header = _header(run_dir, model, meta)
    summary = [
        ("test accuracy", f"{evaluation['test_accuracy']:.4f}"),
        ("test loss", f"{evaluation['test_loss']:.4f}"),
        ("top-2 accuracy", f"{evaluation['top_2_accuracy']:.4f}"),
        ("macro F1", f"{evaluation['macro_f1']:.4f}"),
        ("expected calibration error", f"{ece:.4f}"),
    ]
    pc = evaluation["per_class"]
    rows = [(n, pc["precision"][i], pc["recall"][i], pc["f1"][i], pc["support"][i])
            for i, n in enumerate(names)]  # fmt: skip
    confused = [f"{names[t]} -> {names[p]}: {c} images"
                for t, p, c in evaluation.get("most_confused", [])]  # fmt: skip
    config = json.dumps(meta.get("config", {}), indent=2)
    page = Page(shown(run_dir.name), header, summary, rows, confused, pictures, config, captions)
    _write_markdown(out, page)
    _write_html(out, page)
    return [*pictures.values(), out / "report.md", out / "report.html"]


@dataclass
class Page:
    """What report.md and report.html both show."""

    name: str
    header: list[tuple[str, str]]
    summary: list[tuple[str, str]]
    rows: list[tuple[Any, ...]]  # per class: name, precision, recall, F1, support
    confused: list[str]
    pictures: dict[str, Path]
    config: str
    captions: dict[str, str]


def _write_markdown(out: Path, page: Page) -> None:
    md = [f"# fashionnet report: {page.name}", ""]
    md += [f"- {k}: {v}" for k, v in page.header] + ["", "## Test set", ""]
    md += [f"- {k}: {v}" for k, v in page.summary] + [""]
    md += ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    md += [f"| {n} | {p:.4f} | {r:.4f} | {f:.4f} | {s} |" for n, p, r, f, s in page.rows]
    md += ["", "Most confused (true -> predicted):", ""] + [f"- {c}" for c in page.confused]
    for title, path in page.pictures.items():
        md += ["", f"## {title}", "", page.captions[title], "", f"![{title}]({path.name})"]
    md += ["", "## Configuration", "", "```json", page.config, "```", "",
           "The model card: [MODEL_CARD.md](../MODEL_CARD.md)", ""]  # fmt: skip
    with atomic_write(out / "report.md") as f:  # as every file of a run: never through a link
        f.write("\n".join(md).encode())


STYLE = (
    "body{font-family:system-ui,sans-serif;font-size:16px;line-height:1.45;max-width:1040px;"
    "margin:auto;padding:0 12px;color:#111}img{max-width:100%;height:auto}"
    "td,th{padding:2px 10px;text-align:right}td:first-child,th:first-child{text-align:left}"
    "table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}"
    "p.caption{color:#333;max-width:70ch}dt{font-weight:600;float:left;width:9em}dd{margin:0 0 "
    "2px 9.5em}"
)
# set on <body> once every picture has loaded: what the browser test waits for and checks
LOADED_SCRIPT = (
    "<script>window.addEventListener('load',function(){var i=[].slice.call("
    "document.images);document.body.dataset.pictures=i.filter(function(x){return x.complete&&"
    "x.naturalWidth>0}).length+'/'+i.length;});</script>"
)


def _write_html(out: Path, page: Page) -> None:
    from PIL import Image

    def e(text: object) -> str:
        return html.escape(str(text))

    body = [f"<h1>fashionnet report: {e(page.name)}</h1><dl>"]
    body += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in page.header] + ["</dl>"]
    body += ["<h2>Test set</h2><ul>"] + [f"<li>{e(k)}: <b>{v}</b></li>" for k, v in page.summary]
    body += ["</ul><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
             "<th>support</th></tr>"]  # fmt: skip
    body += [f"<tr><td>{e(n)}</td><td>{p:.4f}</td><td>{r:.4f}</td><td>{f:.4f}</td><td>{s}</td>"
             "</tr>" for n, p, r, f, s in page.rows] + ["</table>"]  # fmt: skip
    body += ["<p>Most confused (true -> predicted):</p><ul>"]
    body += [f"<li>{e(c)}</li>" for c in page.confused] + ["</ul>"]
    for title, path in page.pictures.items():
        with Image.open(path) as im:  # shown at 100 CSS pixels an inch: text at its real size
            width, height = round(im.width * 100 / DPI), round(im.height * 100 / DPI)
        data = base64.b64encode(path.read_bytes()).decode()
        body += [f"<h2>{e(title)}</h2>", f'<p class="caption">{e(page.captions[title])}</p>',
                 f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
                 f'alt="{e(title)}">']  # fmt: skip
    body += ["<h2>Configuration</h2>", f"<pre>{e(page.config)}</pre>",
             '<p>The model card: <a href="../MODEL_CARD.md">MODEL_CARD.md</a></p>']  # fmt: skip
    text = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>fashionnet report {e(page.name)}</title><style>{STYLE}</style>{LOADED_SCRIPT}"
        "</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    with atomic_write(out / "report.html") as f:  # a shared run's report.html may be a link
        f.write(text.encode())
