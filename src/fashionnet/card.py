"""MODEL_CARD.md: what a model is, what it is for and what it is not, in every run folder.

The sections are those of Hugging Face's model cards (model, intended use and input, training
data, training procedure, evaluation, limitations), filled from the run's own record, so the
card never says more than the run measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._fsutil import atomic_write
from ._text import shown
from ._version import __version__
from .calibrate import MIN_IMAGES
from .data import CLASS_NAMES

ARCHITECTURE_KEYS = ("arch", "hidden", "stages", "activation", "batch_norm", "dropout", "tta")
PROCEDURE_KEYS = ("optimizer", "lr", "weight_decay", "schedule", "warmup_epochs", "cycle_epochs",
                  "epochs", "batch_size", "label_smoothing", "flip", "shift", "erase", "patience",
                  "seed")  # fmt: skip


def _setting(config: dict[str, Any], key: str) -> str:
    value = config.get(key)
    if isinstance(value, list) and value and isinstance(value[0], list):  # stages
        return "/".join(",".join(map(str, stage)) for stage in value)
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return (
        "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def architecture(config: dict[str, Any]) -> str:
    """One line: `mlp, hidden 256,128, relu, batch_norm true, ...` from a run's config."""
    return ", ".join(f"{k} {_setting(config, k)}" for k in ARCHITECTURE_KEYS if k in config)


def model_card(name: str, meta: dict[str, Any], evaluation: dict[str, Any]) -> str:
    """The card's Markdown, from a model's metadata and its test-set evaluation."""
    m, config = meta.get("metrics", {}), meta.get("config", {})
    names = [shown(n) for n in meta.get("class_names", [])]  # a newline would end a table row
    h, w = meta.get("image_shape", [28, 28])
    scale = round(1 / float(meta.get("input_scale", 1 / 255)))
    pc = evaluation["per_class"]
    rows = [f"| {n} | {pc['precision'][i]:.4f} | {pc['recall'][i]:.4f} | {pc['f1'][i]:.4f} | "
            f"{pc['support'][i]} |" for i, n in enumerate(names)]  # fmt: skip
    confused = [f"{names[t]} -> {names[p]} ({c} images)" for t, p, c in
                evaluation.get("most_confused", [])[:3]]  # fmt: skip
    preset = m.get("preset", config.get("preset"))
    weakest = min(range(len(names)), key=lambda i: pc["f1"][i]) if names else 0
    return "\n".join(
        [
            f"# Model card: {shown(name)}",
            "",
            "## Model",
            "",
            f"- An image classifier ({config.get('arch', 'mlp')}) trained with fashionnet "
            f"{meta.get('fashionnet_version', __version__)}, preset `{preset}`.",
            f"- Architecture: {architecture(config)}.",
            f"- Parameters: {m.get('n_parameters', 0):,}.",
            "- Files: `model.npz` (fashionnet's pickle-free format, docs/checkpoint-format.md); "
            "`fashionnet export` writes ONNX and safetensors.",
            "",
            "## Intended use and input",
            "",
            f"- Sorting pictures of a single garment, shoe or bag into the {len(names)} classes: "
            + ", ".join(names)
            + ".",
            f"- Input: one {h}x{w} grayscale image, pixel values 0..{scale} (the model divides by "
            f"{scale}), the object light on a black background, its longest side filling the "
            "frame, "
            "as in Fashion-MNIST. `fashionnet predict` and `fashionnet.classify` turn photos into "
            "this form (EXIF orientation, transparency, background removal, "
            "cropping); `fashionnet predict --show` draws what the model saw.",
            "- Not for: pictures of people wearing clothes, several objects in one picture, "
            "anything outside these classes (the model always answers one of them), or "
            "decisions about people.",
            "",
            "## Training data",
            "",
            f"- {m.get('data', 'unknown')} (MD5 of the files: "
            f"{m.get('data_checksum', 'unknown')}).",
            f"- {m.get('train_size', '?')} training images, {m.get('val_size', '?')} held out for "
            f"validation (choosing the best epoch), {m.get('test_size', '?')} test images used "
            "only for the figures below.",
            *_started_from(meta.get("from_model")),
            "",
            "## Training procedure",
            "",
            "- "
            + ", ".join(f"{k} {_setting(config, k)}" for k in PROCEDURE_KEYS if k in config)
            + ".",
            f"- {m.get('epochs', '?')} epochs run (best: epoch {m.get('best_epoch', '?')}"
            + (", stopped early" if m.get("stopped_early") else "")
            + f"), {m.get('train_seconds', 0.0):.1f} s of training.",
            _calibration(meta),
            "",
            "## Evaluation",
            "",
            f"On {evaluation['test_size']} test images: accuracy "
            f"**{evaluation['test_accuracy']:.4f}**, loss {evaluation['test_loss']:.4f}, top-2 "
            f"accuracy {evaluation['top_2_accuracy']:.4f}, macro F1 {evaluation['macro_f1']:.4f}, "
            f"expected calibration error {evaluation['expected_calibration_error']:.4f}.",
            "",
            "| class | precision | recall | F1 | support |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            "## Limitations",
            "",
            _what_it_has_seen(meta, h, w),
            f"- Its weakest class is {names[weakest] if names else '?'} (F1 "
            f"{pc['f1'][weakest]:.4f}); the most frequent confusions: "
            + ("; ".join(confused) or "none")
            + ".",
            "- Probabilities are its own estimates: read them with the calibration error above "
            "(0 is perfectly calibrated) and the report's calibration chart.",
            "",
        ]
    )


def _calibration(meta: dict[str, Any]) -> str:
    """How the probabilities were scaled (calibrate.py), or why they were not."""
    if "calibration" not in meta:
        return "- Probabilities as trained: no temperature fitted (calibrate false)."
    c = meta["calibration"]
    if not c:
        n = meta.get("metrics", {}).get("val_size", "?")
        return (f"- Probabilities as trained: {n} validation images, fewer than the "
                f"{MIN_IMAGES} a temperature is fitted on.")  # fmt: skip
    return (f"- Probabilities calibrated on the {c['images']:,} validation images: the logits "
            f"divided by a temperature of {c['temperature']:.3f}, folded into the last layer "
            f"(their cross-entropy {c['val_loss_before']:.4f} -> {c['val_loss_after']:.4f}, "
            f"expected calibration error {c['val_ece_before']:.4f} -> "
            f"{c['val_ece_after']:.4f}).")  # fmt: skip


def _what_it_has_seen(meta: dict[str, Any], h: int, w: int) -> str:
    """The limitation its training pictures set: Fashion-MNIST's product shots, or a user's own."""
    m = meta.get("metrics", {})
    if tuple(meta.get("class_names", ())) == CLASS_NAMES:
        return ("- Trained on catalogue photos of the 2010s (Zalando), reduced to 28x28 gray: "
                "colour, texture and fine detail are gone, and photos unlike product shots (busy "
                "backgrounds, people, angles) are outside what it has seen.")  # fmt: skip
    data = shown(str(m.get("data", "unknown")))
    return (f"- Trained on {m.get('train_size', '?')} pictures of its own classes ({data}), "
            f"reduced to {h}x{w} gray: colour, texture and fine detail are gone, and pictures "
            "unlike those are outside what it has seen.")  # fmt: skip


def _started_from(origin: Any) -> list[str]:
    """The card's line on a fine-tuned model: the model its weights started from."""
    if not isinstance(origin, dict):
        return []
    kept = [shown(n) for n in origin.get("classes_kept", [])]
    last = (f"the last layer's too for {', '.join(kept)} (classes that model has)" if kept
            else "the last layer's at random (that model has none of these classes)")  # fmt: skip
    path, digest = shown(str(origin.get("path"))), origin.get("sha256")
    return [f"- Fine-tuned: training started from the weights of `{path}` (SHA-256 {digest}); "
            f"{last}."]  # fmt: skip


def write_model_card(folder: Path, meta: dict[str, Any], evaluation: dict[str, Any]) -> Path:
    path = folder / "MODEL_CARD.md"
    with atomic_write(path) as f:
        f.write(model_card(folder.name, meta, evaluation).encode())
    return path
