"""Model files someone hands you: broken or hostile ones are refused with one line, exit 2,
and nothing in them ever runs (a canary file would appear if a pickle were loaded)."""

import io
import json
import pickle
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_idx_folder
from fashionnet.checkpoint import CheckpointError, load_model, save_checkpoint
from fashionnet.cli import main
from fashionnet.model import mlp


class Canary:
    """Unpickling this opens (creates) the canary file: proof that code ran."""

    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def npy(array, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def members_of(path):
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def write_zip(path, members, compression=zipfile.ZIP_STORED, repeat=()):
    """`members` as a zip; the names in `repeat` are written a second time (a later member of
    the same name is what a naive reader would use)."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", compression) as zf:
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate, rightly
        for name, data in members.items():
            zf.writestr(name, data)
        for name in repeat:
            zf.writestr(name, members[name][:-4] + b"\0\0\0\0")


def nested_residual(depth):
    layer = {"type": "ReLU"}
    for _ in range(depth):
        layer = {"type": "Residual", "body": [layer], "shortcut": []}
    return layer


def metadata_text(members, old, new):
    """The metadata member with its JSON text edited as text (for what json.dumps won't write)."""
    text = np.load(io.BytesIO(members["metadata.npy"])).tobytes().replace(old, new, 1)
    return {**members, "metadata.npy": npy(np.frombuffer(text, np.uint8))}


def with_metadata(members, edit):
    meta = json.loads(np.load(io.BytesIO(members["metadata.npy"])).tobytes())
    edit(meta)
    return {**members, "metadata.npy": npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))}


def build_corpus(valid: Path, out: Path, canary: Path) -> dict[str, Path]:
    Canary.path = str(canary)
    evil = np.empty(1, dtype=object)
    evil[0] = Canary()
    pickled = npy(evil, allow_pickle=True)
    good = members_of(valid)
    raw = valid.read_bytes()
    weight = "param.0.weight.npy"
    huge_header = npy(np.zeros(4, np.float32)).replace(b"(4,)", b"(10000000000000,)")
    cases = {
        "truncated.npz": raw[: len(raw) // 2],
        "empty.npz": b"",
        "garbage.npz": bytes(range(256)) * 40,
        "pickle-file.npz": pickle.dumps(Canary()),
        "flipped-byte.npz": raw[:3000] + bytes([raw[3000] ^ 0x01]) + raw[3001:],
        "pickled-weight.npz": {**good, weight: pickled},
        "pickled-metadata.npz": {**good, "metadata.npy": pickled},
        "object-dtype.npz": {**good, weight: npy(np.array(["a", 1], dtype=object), True)},
        "huge-shape-header.npz": {**good, weight: huge_header},
        "missing-array.npz": {k: v for k, v in good.items() if k != weight},
        "extra-array.npz": {**good, "extra.npy": npy(np.zeros(3))},
        "wrong-shape.npz": {**good, weight: npy(np.zeros((5, 5), np.float32))},
        "newer-format.npz": with_metadata(good, lambda m: m.update(format_version=99)),
        "huge-layer-config.npz": with_metadata(
            good, lambda m: m["model"]["layers"][0].update(in_features=10**9, out_features=10**9)
        ),
        "unknown-layer.npz": with_metadata(
            good, lambda m: m["model"]["layers"].append({"type": "Exec"})
        ),
        "nan-weights.npz": {**good, weight: npy(np.full((784, 8), np.nan, np.float32))},
        "metadata-not-json.npz": {**good, "metadata.npy": npy(np.frombuffer(b"{oops", np.uint8))},
        "fortran-order.npz": {
            **good,
            weight: npy(np.asfortranarray(np.zeros((784, 8), np.float32))),
        },
        "not-a-checkpoint.npz": {"x.npy": npy(np.zeros(3))},
        # metadata outside the arrays table (issue 15 A)
        "image-shape-scalar.npz": with_metadata(good, lambda m: m.update(image_shape=5)),
        "image-shape-flat.npz": with_metadata(good, lambda m: m.update(image_shape=[784])),
        "image-shape-huge.npz": with_metadata(good, lambda m: m.update(image_shape=[20000, 20000])),
        "image-shape-wrong.npz": with_metadata(good, lambda m: m.update(image_shape=[10, 10])),
        "image-shape-floats.npz": with_metadata(good, lambda m: m.update(image_shape=[28.0, 28])),
        "class-names-empty.npz": with_metadata(good, lambda m: m.update(class_names=[])),
        "class-names-three.npz": with_metadata(
            good, lambda m: m.update(class_names=["a", "b", "c"])
        ),
        "class-names-ints.npz": with_metadata(
            good, lambda m: m.update(class_names=list(range(10)))
        ),
        "class-names-long.npz": with_metadata(
            good, lambda m: m.update(class_names=["x" * 999] * 10)
        ),
        "input-scale-list.npz": with_metadata(good, lambda m: m.update(input_scale=[1])),
        "input-scale-negative.npz": with_metadata(good, lambda m: m.update(input_scale=-1)),
        "input-scale-nan.npz": metadata_text(
            with_metadata(good, lambda m: m.update(input_scale=0.5)), b"0.5", b"NaN"
        ),
        "layers-strings.npz": with_metadata(
            good, lambda m: m["model"].update(layers=["Linear", "ReLU"])
        ),
        "layers-not-a-list.npz": with_metadata(good, lambda m: m["model"].update(layers=7)),
        "residual-450-deep.npz": with_metadata(
            good, lambda m: m["model"]["layers"].append(nested_residual(450))
        ),
        "declared-shape-overflow.npz": with_metadata(
            good, lambda m: m["arrays"][weight[:-4]].update(shape=[10**200, 10**200])
        ),
        "layer-size-overflow.npz": with_metadata(
            good, lambda m: m["model"]["layers"][0].update(out_features=10**200)
        ),
        "metadata-5000-digits.npz": metadata_text(
            good, b'"format_version": 1', b'"format_version": ' + b"9" * 5000
        ),
        "metadata-nested-deep.npz": metadata_text(
            good,
            b'"numpy_version"',
            b'"x": ' + b"[" * 100_000 + b"]" * 100_000 + b', "numpy_version"',
        ),
        # the archive itself (issue 15 F)
        "duplicate-member.npz": ({**good}, zipfile.ZIP_STORED, (weight,)),
        "deflated-members.npz": ({**good}, zipfile.ZIP_DEFLATED, ()),
        "path-member.npz": {
            **with_metadata(
                good, lambda m: m["arrays"].update({"../../pwned": m["arrays"][weight[:-4]]})
            ),
            "../../pwned.npy": good[weight],
        },
        "oversized-member.npz": {**good, weight: good[weight] + b"\0" * 100_000},
    }
    paths = {}
    for name, content in cases.items():
        path = out / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, tuple):
            write_zip(path, *content)
        else:
            write_zip(path, content)
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    valid = root / "valid.npz"
    save_checkpoint(valid, mlp(784, [8], 10, rng=np.random.default_rng(0)))
    data = root / "data"
    write_idx_folder(data, np.random.default_rng(0), n_train=20, n_test=20)
    canary = root / "CANARY"
    return build_corpus(valid, root, canary), data, canary, valid


def test_the_corpus_is_large_enough(corpus):
    assert len(corpus[0]) >= 40


def test_the_valid_file_loads(corpus, capsys):
    _, data, _, valid = corpus
    assert main(["evaluate", str(valid), "--data", str(data)]) == 0


def test_every_hostile_file_is_one_line_exit_2_and_runs_nothing(corpus, capsys):
    paths, data, canary, _ = corpus
    refused = {}
    for name, path in paths.items():
        code = main(["evaluate", str(path), "--data", str(data)])
        err = capsys.readouterr().err
        refused[name] = (code, err)
        assert code == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("fashionnet: error:"), (name, err)
        assert "Traceback" not in err
    assert not canary.exists()
    assert len(refused) >= 10


def test_huge_declarations_are_refused_before_allocating(corpus):
    paths, data, canary, _ = corpus
    for name in ("huge-shape-header.npz", "huge-layer-config.npz"):
        # 1 GiB of address space: any attempt to allocate the declared arrays would fail loudly
        limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (2**30 * 2, 2**30 * 2))"
        code = f"{limit}; import sys; from fashionnet.cli import main; sys.exit(main(sys.argv[1:]))"
        result = subprocess.run(
            [sys.executable, "-c", code, "evaluate", str(paths[name]), "--data", str(data)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1
    assert not canary.exists()


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    changes=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 20_000)),
)
def test_mutated_checkpoints_load_or_raise_checkpoint_error(tmp_path, changes, cut):
    path = tmp_path / "m.npz"
    if not path.exists():
        save_checkpoint(path, mlp(6, [4], 3, rng=np.random.default_rng(0)))
    raw = bytearray(path.read_bytes())
    for pos, value in changes:
        raw[pos % len(raw)] = value
    mutated = tmp_path / "mutated.npz"
    mutated.write_bytes(bytes(raw[:cut] if cut is not None else raw))
    try:
        model = load_model(mutated)
    except CheckpointError as e:
        assert "\n" not in str(e)
    else:  # a mutation the CRCs cannot see (in a header's padding, say) must still give a model
        assert model.predict(np.zeros((1, 6), np.float32)).shape == (1,)
