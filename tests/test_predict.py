"""fashionnet predict on every input kind, and against evaluate on the real test set."""

import io
import json
import sys
from pathlib import Path

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


def test_tta_predicts_the_same_weights_through_other_views(tmp_path, rng, capsys):
    """--tta on predict and evaluate, and classify's tta: the model file's own views by default,
    or each image alone, its mirror, or ten views, all from the same weights."""
    from fashionnet import classify
    from fashionnet.classify import through
    from fashionnet.model import FlipAveraged

    net = mlp(784, [16], 10, rng=rng)
    model = FlipAveraged(net, "flip-shift")
    path = tmp_path / "m.npz"
    save_checkpoint(path, model, metadata={"image_shape": [28, 28]})
    images = np.zeros((6, 28, 28), np.uint8)
    images[:, 3:-3, 5:-5] = rng.integers(0, 256, (6, 22, 18))
    labels = rng.integers(0, 10, 6)
    np.savez(tmp_path / "x.npz", x=images, y=labels)
    x = to_float(images)
    views = {"model": ("flip-shift", model), "none": (None, net),
             "flip": ("flip", FlipAveraged(net)), "flip-shift": ("flip-shift", model)}  # fmt: skip
    assert not np.allclose(net.predict_proba(x), FlipAveraged(net).predict_proba(x))
    for tta, (mode, expected) in views.items():
        probs = expected.predict_proba(x)
        assert main(["predict", str(path), str(tmp_path / "x.npz"), "--json", "--top-k", "10",
                     "--tta", tta]) == 0  # fmt: skip
        for line, row in zip(capsys.readouterr().out.splitlines(), probs, strict=True):
            by_class = {p["class"]: p["probability"] for p in json.loads(line)["predictions"]}
            np.testing.assert_allclose([by_class[n] for n in CLASS_NAMES], row, rtol=1e-5)
        assert main(["evaluate", str(path), "--data", str(tmp_path / "x.npz"), "--json",
                     "--tta", tta]) == 0  # fmt: skip
        result = json.loads(capsys.readouterr().out)
        assert result["tta"] == mode and result["test_accuracy"] == np.mean(
            probs.argmax(1) == labels
        )
        scores = [{c["label"]: c["score"] for c in found} for found in
                  classify(path, images, top_k=10, tta=tta)]  # fmt: skip
        np.testing.assert_allclose([[s[n] for n in CLASS_NAMES] for s in scores], probs, rtol=1e-5)
    save_checkpoint(tmp_path / "wide.npz", mlp(32 * 24, [8], 10, rng=rng),
                    metadata={"image_shape": [32, 24]})  # fmt: skip
    np.savez(tmp_path / "wide_x.npz", x=np.zeros((2, 32, 24), np.uint8))
    for command in (["predict", str(tmp_path / "wide.npz"), str(tmp_path / "wide_x.npz")],
                    ["evaluate", str(tmp_path / "wide.npz")]):  # fmt: skip
        assert main([*command, "--tta", "flip"]) == 2  # no mirror of a 32x24 image: one line
        assert capsys.readouterr().err == ("fashionnet: error: tta flip: averaging views needs "
                                           "square images; the model's are 32x24\n")  # fmt: skip
    assert through(model, "none") is net and through(model, "model") is model
    assert through(net, "flip-shift").model is net  # the weights shared, not copied
    with pytest.raises(ValueError, match="tta must be one of model, none, flip, flip-shift"):
        through(model, "rotate")


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


@pytest.mark.parametrize("threads", ["1", "3"])
def test_an_unreadable_input_is_named_and_the_others_are_classified(
    model_file, tmp_path, threads, monkeypatch, capsys
):
    """One broken photo in a folder, or a missing file among the arguments, used to stop the
    whole command with nothing classified. Each is one line now; the rest are classified, the
    --show sheet drawn for them, and the exit status is still 2. Inputs are read on several
    threads: output and errors still come in input order."""
    monkeypatch.setenv("FASHIONNET_THREADS", threads)
    path, _ = model_file
    folder = tmp_path / "shop"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "1.png").write_bytes(b"\x89PNG cut short")
    sheet = tmp_path / "seen.png"
    argv = ["predict", str(path), str(folder), str(tmp_path / "gone.jpg"), "--json"]
    assert main([*argv, "--show", str(sheet)]) == 2
    out, err = capsys.readouterr()
    assert [json.loads(line)["input"] for line in out.splitlines()] == [
        str(folder / "0.png"), str(folder / "2.png")]  # fmt: skip
    lines = err.splitlines()
    assert lines[0].startswith(f"fashionnet: error: {folder / '1.png'}: ")
    assert lines[1] == f"fashionnet: error: {tmp_path / 'gone.jpg'}: no such file or folder"
    assert lines[2:] == [f"what the model saw: {sheet}"] and sheet.is_file()
    # nothing readable: nothing printed, no sheet
    sheet.unlink()
    assert main(["predict", str(path), str(folder / "1.png"), "--show", str(sheet)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and not sheet.exists()


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


def test_arrays_without_labels_npy_and_folders(model_file, tmp_path, rng, capsys):
    path, model = model_file
    images = np.zeros((3, 28, 28), np.uint8)
    images[:, 2:-2, 4:-4] = rng.integers(1, 256, (3, 24, 20))
    expected = [CLASS_NAMES[c] for c in model.predict(to_float(images))]
    np.savez(tmp_path / "x_only.npz", x=images)
    np.save(tmp_path / "batch.npy", images)
    np.save(tmp_path / "one.npy", images[0] / 255.0)  # one image, floats 0..1
    for name, want in (
        ("x_only.npz", expected),
        ("batch.npy", expected),
        ("one.npy", expected[:1]),
    ):
        assert main(["predict", str(path), str(tmp_path / name), "--json"]) == 0
        assert predicted(capsys) == want, name
    folder = tmp_path / "pictures"
    (folder / "b").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    for i, where in enumerate(["b/2.png", "1.png", "b/0.PNG"]):
        Image.fromarray(images[i]).save(folder / where)
    Image.fromarray(images[0]).save(folder / ".hidden" / "x.png")
    (folder / "notes.txt").write_text("not a picture")
    assert main(["predict", str(path), str(folder), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["input"] for line in lines] == [
        str(folder / "1.png"),
        str(folder / "b/0.PNG"),
        str(folder / "b/2.png"),
    ]
    assert [line["predictions"][0]["class"] for line in lines] == [
        expected[1],
        expected[2],
        expected[0],
    ]


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("text.png", b"hello, I am text\n", "text.png: not an image (it starts with b'hello, I"),
        ("labels-idx1-ubyte", None, "a list of 3 numbers (labels?), expected images"),
        ("empty", b"", "unknown input (expected an image"),
        ("wide.csv", b"1,2,3\n4,5,6\n", "rows of 3 values, expected 784 pixels"),
        ("cube.npy", np.zeros((2, 3, 4, 5)), "shape (2, 3, 4, 5), expected images"),
        ("pickled.npy", np.array([{"a": 1}], dtype=object), "object"),
    ],
)
def test_wrong_inputs_name_the_file_and_what_was_expected(model_file, tmp_path, name, content,
                                                          words, capsys):  # fmt: skip
    path, _ = model_file
    target = tmp_path / name
    if content is None:
        write_idx(target, np.array([1, 2, 3], np.uint8))
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        np.save(target, content, allow_pickle=True)
    assert main(["predict", str(path), str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "0x" not in err, err


def test_show_draws_each_input_beside_what_the_model_saw(model_file, tmp_path, capsys):
    path, _ = model_file
    picture = np.full((90, 60, 3), 255, np.uint8)
    picture[10:80, 20:40] = 30
    Image.fromarray(picture).save(tmp_path / "photo.jpg")
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 28, 28), np.uint8))
    out = tmp_path / "seen.png"
    args = ["predict", str(path), str(tmp_path / "photo.jpg"), str(tmp_path / "x.npz")]
    assert main([*args, "--show", str(out)]) == 0
    with Image.open(out) as sheet:
        assert sheet.height > sheet.width  # one row per input, three of them
    assert "what the model saw" in capsys.readouterr().err
    assert main([*args, "--show", str(tmp_path / "seen.txt")]) == 2
    capsys.readouterr()
    nowhere = tmp_path / "no" / "seen.png"  # refused before any prediction is printed
    assert main([*args, "--show", str(nowhere)]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == f"fashionnet: error: --show {nowhere}: no " \
                                                f"folder {nowhere.parent}\n"  # fmt: skip


def test_classify_takes_paths_pictures_and_arrays(model_file, tmp_path, rng):
    from fashionnet import classify

    path, model = model_file
    images = np.zeros((2, 28, 28), np.uint8)
    images[:, 3:-3, 5:-5] = rng.integers(1, 256, (2, 22, 18))
    want = [CLASS_NAMES[c] for c in model.predict(to_float(images))]
    Image.fromarray(images[0]).save(tmp_path / "0.png")
    one = classify(path, tmp_path / "0.png", top_k=3)
    assert [p["label"] for p in one][:1] == want[:1] and len(one) == 3
    assert [p["score"] for p in one] == sorted((p["score"] for p in one), reverse=True)
    assert classify(model, Image.fromarray(images[1]))[0]["label"] == want[1]
    assert classify(path.parent / "m.npz", images[1] / 255.0)[0]["label"] == want[1]
    many = classify(model, [images[0], (tmp_path / "0.png").read_bytes(), images[1].astype(float)])
    assert [found[0]["label"] for found in many] == [want[0], want[0], want[1]]
    batch = classify(model, images)
    assert [found[0]["label"] for found in batch] == want
    with pytest.raises(ValueError, match="top_k"):
        classify(model, images, top_k=0)


@pytest.mark.parametrize(
    ("x", "words"),
    [
        (
            np.zeros((2, 28, 28), np.uint8),
            "got uint8 values: convert images with fashionnet.to_float",
        ),
        (np.full((2, 784), 255.0, np.float32), "whole numbers up to 255: divide by 255"),
        (np.zeros((2, 32, 32), np.float32), r"inputs of shape \(1024,\) per sample"),
    ],
)
def test_model_predict_refuses_inputs_it_would_get_wrong(rng, x, words):
    model = mlp(784, [8], 10, rng=rng)
    with pytest.raises(ValueError, match=words):
        model.predict(x)
    assert model.predict(to_float(np.zeros((2, 28, 28), np.uint8))).shape == (2,)  # (n, h, w) ok


def test_heic_photos_are_found_in_folders_and_by_their_first_bytes(model_file, tmp_path, capsys):
    """iPhones save photos as HEIC: a folder of them, and one whose name has lost its suffix."""
    pillow_heif = pytest.importorskip("pillow_heif", reason="the heif extra is not installed")
    path, _ = model_file
    picture = np.full((90, 60, 3), 255, np.uint8)
    picture[10:80, 20:40] = 30
    (tmp_path / "photos").mkdir()
    Image.fromarray(picture).save(tmp_path / "photos" / "a.png")
    pillow_heif.from_pillow(Image.fromarray(picture)).save(tmp_path / "photos" / "b.HEIC")
    (tmp_path / "b-copy").write_bytes((tmp_path / "photos" / "b.HEIC").read_bytes())
    argv = ["predict", str(path), str(tmp_path / "photos"), str(tmp_path / "b-copy"), "--json"]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["input"]).name for r in lines] == ["a.png", "b.HEIC", "b-copy"]
    assert len({r["predictions"][0]["class"] for r in lines}) == 1  # the same picture, 3 files
