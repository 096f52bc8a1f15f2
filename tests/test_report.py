"""fashionnet report: every picture is a real PNG, report.html embeds them, report.md links them."""

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
