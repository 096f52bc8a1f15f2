"""fashionnet report: every picture is a real PNG, report.html embeds them, report.md links them."""

import json
import re
import warnings

import numpy as np
from PIL import Image

from browser import chromium, console_errors
from conftest import write_idx_folder
from fashionnet.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_of_a_run(tmp_path, rng, capsys):
    data = tmp_path / "data"
    write_idx_folder(data, rng, n_train=120, n_test=60)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--epochs", "3", "--val-size", "20", "--hidden",
                 "16", "--out", str(run), "--quiet"]) == 0  # fmt: skip
    assert main(["report", str(run), "--data", str(data)]) == 0
    files = {p.name: p for p in (run / "report").iterdir()}
    pictures = ["learning_curves.png", "confusion_matrix.png", "misclassified.png",
                "correct_per_class.png", "first_layer.png", "confidence.png"]  # fmt: skip
    for name in pictures:
        assert files[name].read_bytes().startswith(PNG), name
        assert files[name].stat().st_size > 5000, name
    page = files["report.html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count('<img src="data:image/png;base64,') == len(pictures)
    md = files["report.md"].read_text()
    assert all(f"]({name})" in md for name in pictures) and "test accuracy" in md


def test_report_of_a_folder_without_a_model_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _train_tiny_run(tmp_path, rng):
    data = tmp_path / "data"
    write_idx_folder(data, rng, n_train=160, n_test=60)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--epochs", "6", "--val-size", "20", "--hidden",
                 "16", "--out", str(run), "--quiet"]) == 0  # fmt: skip
    return run


def test_the_report_tells_a_reader_what_they_look_at(tmp_path, rng):
    run = _train_tiny_run(tmp_path, rng)
    page = (run / "report" / "report.html").read_text()
    for fact in ("preset", "architecture", "parameters", "MD5", "train, 20 validation",
                 "epochs (best", "date", "fashionnet", "expected calibration error", "support",
                 "Most confused", "learning rate", "warm restarts", "MODEL_CARD.md"):  # fmt: skip
        assert fact in page, fact
    assert page.count('<p class="caption">') == page.count("<img ")
    for width in re.findall(r'<img [^>]*width="(\d+)"', page):  # 150 dpi shown at 100 px/inch
        assert int(width) <= 1040
    with Image.open(run / "report" / "learning_curves.png") as im:
        assert round(im.info["dpi"][0]) == 150 and im.height > im.width * 0.6  # loss over lr


def test_every_run_has_a_model_card(tmp_path, rng):
    run = _train_tiny_run(tmp_path, rng)
    card = (run / "MODEL_CARD.md").read_text()
    sections = ["## Model", "## Intended use and input", "## Training data",
                "## Training procedure", "## Evaluation", "## Limitations"]  # fmt: skip
    assert [s for s in sections if s in card] == sections
    assert "pixel values 0..255" in card and "28x28" in card and "T-shirt/top" in card
    assert "catalogue photos of the 2010s (Zalando)" in card  # Fashion-MNIST's classes
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.4f}" in card and f"{metrics['n_parameters']:,}" in card


def test_class_names_from_the_data_are_shown_escaped_and_drawn_quietly(tmp_path, rng):
    """classes.txt is the user's (or anyone's): an escape sequence in a name must not reach a
    terminal that shows report.md or the card, and a name in a script the font cannot draw
    is drawn as boxes without a warning per glyph on stderr."""
    from fashionnet.plots import confusion_heatmap, image_grid

    data = tmp_path / "data"
    write_idx_folder(data, rng, n_train=160, n_test=60)
    names = [f"class {i}" for i in range(10)]
    names[3], names[7] = "bag\x1b]0;pwned\x07\x1b[2J", "鞋"
    (data / "classes.txt").write_text("\n".join(names) + "\n")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--epochs", "2", "--val-size", "20", "--hidden",
                 "16", "--out", str(run), "--quiet"]) == 0  # fmt: skip
    for text in ((run / "report" / "report.md").read_text(), (run / "MODEL_CARD.md").read_text(),
                 (run / "report" / "report.html").read_text()):  # fmt: skip
        assert "\x1b" not in text and "\x07" not in text
        assert r"bag\x1b]0;pwned\x07\x1b[2J" in text and "鞋" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph's warning would raise here
        cjk = ["鞋", "鞋子", "包", "裙子", "衬衫", "外套", "凉鞋", "运动鞋", "裤子", "套头衫"]
        confusion_heatmap(np.eye(10, dtype=int), cjk, tmp_path / "c.png")
        image_grid(np.zeros((2, 28, 28), np.uint8), ["鞋 0.91", "包 0.55"], tmp_path / "g.png")


def test_the_report_renders_in_a_real_browser_with_every_picture(tmp_path, rng):
    run = _train_tiny_run(tmp_path, rng)
    with chromium(1100, 900) as driver:
        driver.get((run / "report" / "report.html").as_uri())
        loaded = driver.find_element("tag name", "body").get_attribute("data-pictures")
        n, total = map(int, loaded.split("/"))
        assert n == total == 6
        widths = driver.execute_script(
            "return [].map.call(document.images, i => i.getBoundingClientRect().width)"
        )
        assert all(w > 300 for w in widths)  # drawn, at a readable size
        font = driver.execute_script("return parseFloat(getComputedStyle(document.body).fontSize)")
        assert font >= 14
        driver.save_screenshot(str(tmp_path / "report.png"))
        assert not console_errors(driver)
    with Image.open(tmp_path / "report.png") as shot:
        assert len(np.unique(np.asarray(shot.convert("L")))) > 20  # a page, not a blank


def test_the_header_shows_the_temperature_a_run_fitted(tmp_path):
    from conftest import write_learnable
    from fashionnet.checkpoint import load_model_with_metadata, save_checkpoint

    data = write_learnable(tmp_path / "data", 600, 100)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--epochs", "1", "--val-size", "250", "--hidden",
                 "16", "--out", str(run), "--quiet"]) == 0  # fmt: skip
    model, meta = load_model_with_metadata(run / "model.npz")
    t = meta["calibration"]["temperature"]
    page = (run / "report" / "report.html").read_text()
    assert f"calibrated: temperature {t:.3f}, fitted on 250 validation images" in page
    # a record that is not a number (a file damaged or made by hand) is left out, not a traceback
    kept = {k: meta[k] for k in ("class_names", "image_shape", "input_scale", "config", "metrics")}
    save_checkpoint(run / "model.npz", model,
                    metadata=kept | {"calibration": {"temperature": "hot"}})  # fmt: skip
    assert main(["report", str(run), "--data", str(data)]) == 0
    assert "calibrated" not in (run / "report" / "report.html").read_text()
