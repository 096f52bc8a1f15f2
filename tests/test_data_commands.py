"""fashionnet data verify / info / convert, and checksum warnings on every load."""

import gzip

import numpy as np
import pytest

from conftest import write_idx_folder
from fashionnet.cli import main
from fashionnet.data import load_fashion_mnist
from fashionnet.data.integrity import IDX_MD5


@pytest.mark.realdata
def test_verify_passes_on_the_real_files(real_data, capsys):
    assert main(["data", "verify", str(real_data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("ok") for line in lines)
    assert load_fashion_mnist(real_data).warnings == ()


@pytest.mark.realdata
def test_a_one_bit_flip_is_noticed_on_every_load(real_data, tmp_path, capsys):
    for path in real_data.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[5000] ^= 0x01  # one label changes from k to k^1: still a valid file
    labels.write_bytes(gzip.compress(bytes(raw)))
    assert main(["data", "verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "t10k-labels" in out
    argv = ["train", "--data", str(tmp_path), "--limit", "300", "--val-size", "50", "--epochs",
            "1", "--hidden", "8", "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    assert main(argv) == 0  # the data still loads: a modified copy may be deliberate
    err = capsys.readouterr().err
    assert "warning" in err and "t10k-labels-idx1-ubyte.gz" in err and "not the official" in err


def test_verify_knows_the_four_official_files():
    assert sorted(IDX_MD5) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"]
    )  # fmt: skip


def test_verify_without_official_files_is_one_line(tmp_path, capsys):
    assert main(["data", "verify", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_info_lists_counts_per_class(tmp_path, capsys):
    write_idx_folder(tmp_path, np.random.default_rng(0), n_train=30, n_test=10)
    assert main(["data", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "train: 30 images 28x28 uint8" in out and "test: 10 images" in out and "Ankle boot" in out
    )


@pytest.mark.parametrize("fmt", ["idx", "csv", "npz"])
def test_convert_round_trips_every_format(fmt, tmp_path, capsys):
    write_idx_folder(tmp_path / "src", np.random.default_rng(0), n_train=30, n_test=10)
    (tmp_path / "src" / "classes.txt").write_text("\n".join(f"class {i}" for i in range(10)))
    assert (
        main(["data", "convert", str(tmp_path / "src"), str(tmp_path / "out"), "--format", fmt])
        == 0
    )
    a, b = load_fashion_mnist(tmp_path / "src"), load_fashion_mnist(tmp_path / "out")
    for name in ("train", "test"):
        np.testing.assert_array_equal(getattr(a, name).images, getattr(b, name).images)
        np.testing.assert_array_equal(getattr(a, name).labels, getattr(b, name).labels)
    assert b.class_names == a.class_names
    assert (tmp_path / "out").stat().st_mode & 0o777 != 0o700


def test_convert_leaves_nothing_when_it_fails(tmp_path, monkeypatch, capsys):
    from fashionnet.data import load

    write_idx_folder(tmp_path / "src", np.random.default_rng(0), n_train=30, n_test=10)

    def disk_full(path, split):
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(load, "write_npz", disk_full)
    code = main(
        ["data", "convert", str(tmp_path / "src"), str(tmp_path / "out"), "--format", "npz"]
    )
    assert code == 2  # one line naming the folder asked for, not a traceback
    err = capsys.readouterr().err
    assert err == f"fashionnet: error: {tmp_path / 'out'}: No space left on device\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_convert_refuses_an_existing_folder(tmp_path, capsys):
    write_idx_folder(tmp_path / "src", np.random.default_rng(0), n_train=30, n_test=10)
    (tmp_path / "out").mkdir()
    assert (
        main(["data", "convert", str(tmp_path / "src"), str(tmp_path / "out"), "--format", "csv"])
        == 2
    )
    assert "already exists" in capsys.readouterr().err


def test_show_draws_chosen_images_and_a_grid_per_class(tmp_path, capsys):
    from PIL import Image

    write_idx_folder(tmp_path / "d", np.random.default_rng(0), n_train=40)
    out = tmp_path / "grid.png"
    assert main(["data", "show", str(tmp_path / "d"), "--per-class", "3", "--out", str(out)]) == 0
    with Image.open(out) as picture:  # 3 columns, 10 rows: taller than wide
        assert picture.size[1] > 2 * picture.size[0]
    assert "wrote" in capsys.readouterr().out
    one = tmp_path / "one.png"
    args = ["data", "show", str(tmp_path / "d"), "--index", "5", "--split", "test"]
    assert main([*args, "--out", str(one)]) == 0
    with Image.open(one) as picture:
        assert picture.format == "PNG"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--index", "999"], "--index 999: the train split has 40 images"),
     (["--out-name", "grid.txt"], "expected a .png, .svg, .pdf file name")],
)  # fmt: skip
def test_show_refuses_bad_requests_in_one_line(args, message, tmp_path, capsys):
    write_idx_folder(tmp_path / "d", np.random.default_rng(0), n_train=40)
    name = args[1] if args[0] == "--out-name" else "grid.png"
    extra = [] if args[0] == "--out-name" else args
    out = tmp_path / name
    assert main(["data", "show", str(tmp_path / "d"), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_data_show_refuses_a_grid_over_the_limit_in_one_line(tmp_path, capsys):
    from fashionnet.cli.data import MAX_GRID

    data = tmp_path / "data"
    write_idx_folder(data, np.random.default_rng(0), n_train=30, n_test=10)
    out = tmp_path / "grid.png"
    indices = [str(i % 30) for i in range(MAX_GRID + 1)]
    assert main(["data", "show", str(data), "--index", *indices, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at most" in err and not out.exists()


def _test_files_alone(folder):
    """A folder holding the official test files and no training files, as users keep for
    evaluate."""
    write_idx_folder(folder, np.random.default_rng(0), n_train=30, n_test=10)
    for path in folder.glob("train-*"):
        path.unlink()
    return folder


def test_info_show_and_convert_take_the_test_files_alone(tmp_path, capsys):
    data = _test_files_alone(tmp_path / "d")
    assert main(["data", "info", str(data)]) == 0
    out = capsys.readouterr().out
    assert "train: none; " in out and "no train data" in out and "test: 10 images 28x28" in out
    grid = tmp_path / "grid.png"  # no --split: the split there is
    assert main(["data", "show", str(data), "--per-class", "1", "--out", str(grid)]) == 0
    assert "test images" in capsys.readouterr().out and grid.is_file()
    out_dir = tmp_path / "npz"
    assert main(["data", "convert", str(data), str(out_dir), "--format", "npz"]) == 0
    assert "10 test images; no train data" in capsys.readouterr().out
    assert sorted(p.name for p in out_dir.iterdir()) == ["test.npz"]
    from fashionnet.data import load_test_split

    converted, _, _ = load_test_split(out_dir)
    np.testing.assert_array_equal(converted.images, load_test_split(data)[0].images)


def test_show_of_a_split_not_there_and_train_without_train_data_are_one_line(tmp_path, capsys):
    data = _test_files_alone(tmp_path / "d")
    grid = tmp_path / "grid.png"
    assert main(["data", "show", str(data), "--split", "train", "--out", str(grid)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no train data" in err and not grid.exists()
    argv = ["train", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no train data" in err and not (tmp_path / "run").exists()


def test_an_official_idx_file_stands_for_its_folder(tmp_path, capsys):
    write_idx_folder(tmp_path, np.random.default_rng(0), n_train=30, n_test=10)
    for name in ("t10k-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        assert main(["data", "info", str(tmp_path / name)]) == 0
        out = capsys.readouterr().out
        assert f"data {tmp_path}\n" in out and "train: 30 images" in out and "test: 10" in out


def test_a_file_naming_no_split_is_shown_as_test_data_and_refused_for_training(tmp_path, capsys):
    from fashionnet.data import Split
    from fashionnet.data.npzfile import write_npz

    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (12, 28, 28), np.uint8), rng.integers(0, 10, 12))
    write_npz(tmp_path / "shop.npz", split)
    assert main(["data", "info", str(tmp_path / "shop.npz")]) == 0
    out = capsys.readouterr().out
    assert "test: 12 images" in out and "a training file's name must hold 'train'" in out
    assert main(["train", "--data", str(tmp_path / "shop.npz"), "--epochs", "1"]) == 2
    assert "a training file's name must hold 'train'" in capsys.readouterr().err
