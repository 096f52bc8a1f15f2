"""fashionnet predict on every input kind, and against evaluate on the real test set."""

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from fashionnet.checkpoint import save_checkpoint
from fashionnet.cli import main
from fashionnet.data import CLASS_NAMES, load_fashion_mnist, to_float
from fashionnet.data.formats import Split, write_csv, write_idx
from fashionnet.model import mlp


@pytest.fixture
def model_file(tmp_path, rng):
    model = mlp(784, [16], 10, rng=rng)
    save_checkpoint(tmp_path / "m.npz", model, metadata={"image_shape": [28, 28]})
    return tmp_path / "m.npz", model


def predicted(capsys):
    return [
        json.loads(line)["predictions"][0]["class"] for line in capsys.readouterr().out.splitlines()
    ]


def test_every_input_kind_gives_the_models_answer(model_file, tmp_path, rng, capsys, monkeypatch):
    path, model = model_file
    images = np.zeros((5, 28, 28), np.uint8)  # black borders, like Fashion-MNIST: no inversion
    images[:, 3:-3, 3:-3] = rng.integers(0, 256, (5, 22, 22))
    expected = [CLASS_NAMES[c] for c in model.predict(to_float(images))]
    np.savez(tmp_path / "x.npz", x=images, y=np.zeros(5, int))

    write_csv(tmp_path / "with_labels.csv", Split(images, np.zeros(5, int)))
    (tmp_path / "no_labels.csv").write_text(
        "\n".join(",".join(map(str, im.ravel())) for im in images) + "\n"
    )
    write_idx(tmp_path / "x-idx3-ubyte", images)
    for name in ("x.npz", "with_labels.csv", "no_labels.csv", "x-idx3-ubyte"):
        assert main(["predict", str(path), str(tmp_path / name), "--json"]) == 0
        assert predicted(capsys) == expected, name
    Image.fromarray(images[0]).save(tmp_path / "0.png")
    assert main(["predict", str(path), str(tmp_path / "0.png"), "--json"]) == 0
    assert predicted(capsys) == expected[:1]
    Image.fromarray(images[1]).convert("RGB").save(tmp_path / "1.jpg", quality=95)
    assert main(["predict", str(path), str(tmp_path / "1.jpg"), "--json"]) == 0
    assert predicted(capsys)[0] in CLASS_NAMES  # JPEG is lossy: a class, maybe not the same
    monkeypatch.setattr(
        sys, "stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "0.png").read_bytes()))
    )
    assert main(["predict", str(path), "-", "--json"]) == 0
    assert predicted(capsys) == expected[:1]


def test_top_k_lists_k_classes_in_order(model_file, tmp_path, rng, capsys):
    path, _ = model_file
    np.savez(tmp_path / "x.npz", x=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), y=[0, 0])
    assert main(["predict", str(path), str(tmp_path / "x.npz"), "--top-k", "3", "--json"]) == 0
    for line in capsys.readouterr().out.splitlines():
        probs = [p["probability"] for p in json.loads(line)["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)


@pytest.mark.parametrize("content", [b"\x89PNG broken", b"not,a,csv\n1,2\n"])
def test_bad_inputs_are_one_line(model_file, tmp_path, content, capsys):
    path, _ = model_file
    bad = tmp_path / ("bad.png" if content.startswith(b"\x89") else "bad.csv")
    bad.write_bytes(content)
    assert main(["predict", str(path), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad." in err


@pytest.mark.realdata
def test_predict_on_the_test_csv_agrees_with_evaluate_to_the_last_image(
    tmp_path, real_data, capsys
):
    data = load_fashion_mnist(real_data)
    out = tmp_path / "run"
    assert main(["train", "--preset", "seed", "--data", str(real_data), "--epochs", "3",
                 "--out", str(out), "--quiet", "--no-report"]) == 0  # fmt: skip
    capsys.readouterr()
    write_csv(tmp_path / "test.csv", data.test)
    assert main(["predict", str(out), str(tmp_path / "test.csv"), "--json"]) == 0
    names = predicted(capsys)
    assert len(names) == 10000
    classes = np.array([data.class_names.index(n) for n in names])
    assert main(["evaluate", str(out), "--data", str(real_data), "--json"]) == 0
    accuracy = json.loads(capsys.readouterr().out)["test_accuracy"]
    assert (classes == data.test.labels).mean() == accuracy


@pytest.mark.realdata
def test_photos_on_white_match_the_originals(tmp_path, real_data, capsys):
    data = load_fashion_mnist(real_data)
    out = tmp_path / "run"
    assert main(["train", "--preset", "seed", "--data", str(real_data), "--epochs", "3",
                 "--out", str(out), "--quiet", "--no-report"]) == 0  # fmt: skip
    capsys.readouterr()
    originals, photos = [], []
    for i in range(20):
        image = data.test.images[i]
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        originals.append(str(tmp_path / f"{i}.png"))
        # a product photo: dark on white, colour, 100x100
        photo = (
            Image.fromarray(255 - image).convert("RGB").resize((100, 100), Image.Resampling.BICUBIC)
        )
        photo.save(tmp_path / f"{i}-photo.png")
        photos.append(str(tmp_path / f"{i}-photo.png"))
    assert main(["predict", str(out), *originals, "--json"]) == 0
    a = predicted(capsys)
    assert main(["predict", str(out), *photos, "--json"]) == 0
    b = predicted(capsys)
    same = sum(x == y for x, y in zip(a, b, strict=True))
    print(f"{same} of 20 photos on white agree with their originals")
    assert same >= 16
