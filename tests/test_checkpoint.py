import io
import json
import zipfile

import numpy as np
import pytest

from fashionnet.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    export_safetensors,
    load_model,
    load_model_with_metadata,
    read_checkpoint,
    save_checkpoint,
)
from fashionnet.model import mlp
from fashionnet.optim import Adam


@pytest.fixture
def model(rng):
    return mlp(12, [8], 3, rng=rng, dropout=0.1)


def test_round_trip_predicts_identically(tmp_path, model, rng):
    path = tmp_path / "m.npz"
    save_checkpoint(path, model, metadata={"class_names": ["a", "b", "c"]})
    loaded = load_model(path)
    x = rng.normal(size=(20, 12)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.config() == model.config()
    meta, arrays = read_checkpoint(path)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["class_names"] == ["a", "b", "c"]
    assert set(arrays) == {"param.0.weight", "param.0.bias", "param.3.weight", "param.3.bias"}


def test_optimizer_state_is_stored(tmp_path, model):
    opt = Adam(model.parameters(), lr=1e-3)
    opt.grad[...] = 1.0
    opt.step()
    save_checkpoint(tmp_path / "m.npz", model, optimizer_state=opt.state_dict())
    meta, arrays = read_checkpoint(tmp_path / "m.npz")
    assert meta["optimizer"]["type"] == "Adam" and meta["optimizer"]["steps"] == 1
    np.testing.assert_array_equal(arrays["optim.m"], opt.m)


def test_the_file_is_a_plain_npz_without_pickles(tmp_path, model):
    path = tmp_path / "m.npz"
    save_checkpoint(path, model)
    with np.load(path, allow_pickle=False) as npz:  # numpy itself reads it without pickle
        assert json.loads(npz["metadata"].tobytes())["format"] == "fashionnet-checkpoint"
    with zipfile.ZipFile(path) as zf:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())


def test_non_finite_weights_are_never_saved(tmp_path, model):
    model.parameters()[0].data[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        save_checkpoint(tmp_path / "m.npz", model)
    assert list(tmp_path.iterdir()) == []


def rewrite(path, tmp_path, change):
    """Copy the checkpoint's members into a new zip, letting `change` edit the dict first."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    change(members)
    out = tmp_path / "hostile.npz"
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out


def npy_bytes(array, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def edit_metadata(members, edit):
    meta = json.loads(np.load(io.BytesIO(members["metadata.npy"])).tobytes())
    edit(meta)
    members["metadata.npy"] = npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8))


HOSTILE = {
    "pickled object array": lambda m: m.__setitem__(
        "param.0.bias.npy", npy_bytes(np.array([object()] * 8, dtype=object), allow_pickle=True)
    ),
    "missing array": lambda m: m.pop("param.0.bias.npy"),
    "extra array": lambda m: m.__setitem__("evil.npy", npy_bytes(np.zeros(3))),
    "wrong shape": lambda m: m.__setitem__("param.0.bias.npy", npy_bytes(np.zeros(9, np.float32))),
    "newer format": lambda m: edit_metadata(m, lambda d: d.__setitem__("format_version", 99)),
    "huge declared layer": lambda m: edit_metadata(
        m, lambda d: d["model"]["layers"][0].__setitem__("out_features", 10**12)
    ),
    "not json": lambda m: m.__setitem__(
        "metadata.npy", npy_bytes(np.frombuffer(b"{oops", np.uint8))
    ),
    "no metadata": lambda m: m.pop("metadata.npy"),
}


@pytest.mark.parametrize("change", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_files_are_refused(tmp_path, model, change):
    path = tmp_path / "m.npz"
    save_checkpoint(path, model)
    with pytest.raises(CheckpointError) as info:
        load_model(rewrite(path, tmp_path, change))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_truncated_files_are_refused(tmp_path, model, cut):
    path = tmp_path / "m.npz"
    save_checkpoint(path, model)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(CheckpointError):
        load_model(path)


def test_a_directory_or_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "nope.npz")


def test_safetensors_export_loads_in_the_reference_reader(tmp_path, model, capsys):
    from fashionnet.cli import main

    save_checkpoint(tmp_path / "m.npz", model)
    assert main(["export", str(tmp_path / "m.npz"), "--format", "safetensors",
                 str(tmp_path / "m.safetensors")]) == 0  # fmt: skip
    raw = (tmp_path / "m.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert (8 + n) % 8 == 0
    assert json.loads(header["__metadata__"]["fashionnet_model"]) == model.config()
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    tensors = safetensors_numpy.load_file(str(tmp_path / "m.safetensors"))
    assert set(tensors) == set(model.state_dict())
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(tensors[name], array)


def test_a_safetensors_export_rebuilds_the_model_running_statistics_included(tmp_path, rng,
                                                                            capsys):  # fmt: skip
    from fashionnet.cli import main

    model = mlp(16, [8], 3, rng=rng, batch_norm=True)
    for _ in range(3):  # running statistics away from their start
        model.forward(rng.normal(size=(16, 16)).astype(np.float32) + 2, training=True)
    meta = {"class_names": ["a", "b", "c"], "image_shape": [4, 4], "input_scale": 1 / 255}
    save_checkpoint(tmp_path / "m.npz", model, metadata=meta)
    out = tmp_path / "m.safetensors"
    assert main(["export", str(tmp_path / "m.npz"), "--format", "safetensors", str(out)]) == 0
    loaded, loaded_meta = load_model_with_metadata(out)
    x = rng.normal(size=(5, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert {k: loaded_meta[k] for k in meta} == meta
    capsys.readouterr()
    images = (x * 40 + 100).clip(0, 255).astype(np.uint8).reshape(5, 4, 4)
    np.savez(tmp_path / "x.npz", x=images, y=np.zeros(5, np.int64))
    assert main(["predict", str(out), str(tmp_path / "x.npz")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


@pytest.mark.parametrize("damage", ["header_too_long", "bad_offsets", "not_json", "other_model"])
def test_a_damaged_safetensors_file_is_one_clear_error(damage, tmp_path, model):
    export_safetensors(tmp_path / "m.safetensors", model)
    raw = bytearray((tmp_path / "m.safetensors").read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    if damage == "header_too_long":
        raw[:8] = (len(raw) * 2).to_bytes(8, "little")
    elif damage == "not_json":
        raw[9:12] = b"}}}"
    else:
        name = next(k for k in header if k != "__metadata__")
        if damage == "bad_offsets":
            header[name]["data_offsets"][1] += 10**9
        else:
            header["__metadata__"]["fashionnet_model"] = json.dumps(
                mlp(5, [4], 2, rng=np.random.default_rng(0)).config()
            )
        head = json.dumps(header).encode()
        head += b" " * (-len(head) % 8)
        raw = bytearray(len(head).to_bytes(8, "little") + head + raw[8 + n :])
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"m\.safetensors"):
        load_model(tmp_path / "m.safetensors")


def test_export_to_a_missing_folder_is_one_line(tmp_path, model, capsys):
    from fashionnet.cli import main

    save_checkpoint(tmp_path / "m.npz", model)
    code = main(["export", str(tmp_path / "m.npz"), "--format", "safetensors",
                 str(tmp_path / "no" / "m.safetensors")])  # fmt: skip
    assert code == 2 and capsys.readouterr().err.count("\n") == 1


def test_batchnorm_running_statistics_are_saved(tmp_path, rng):
    model = mlp(12, [8], 3, rng=rng, batch_norm=True)
    for _ in range(3):
        model.forward(rng.normal(size=(16, 12)).astype(np.float32) + 2, training=True)
    save_checkpoint(tmp_path / "m.npz", model)
    loaded = load_model(tmp_path / "m.npz")
    for name, b in model.named_buffers().items():
        np.testing.assert_array_equal(loaded.named_buffers()[name], b)
    x = rng.normal(size=(5, 12)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_loading_for_inference_needs_numpy_alone(tmp_path, model):
    import subprocess
    import sys

    save_checkpoint(tmp_path / "m.npz", model)
    code = (
        "import sys; sys.modules['tqdm'] = None  # any import of tqdm now fails\n"
        "import numpy as np, fashionnet\n"
        f"m = fashionnet.load_model({str(tmp_path / 'm.npz')!r})\n"
        "print(m.predict(np.zeros((2, 12), np.float32)).shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2,)"
