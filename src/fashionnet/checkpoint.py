"""Checkpoint files: uncompressed .npz of plain numeric arrays, written atomically.

Members: `metadata.npy` (UTF-8 JSON as uint8: format version, versions, model config, ...),
`param.<layer>.<name>.npy` per parameter, `buffer.<layer>.<name>.npy` per buffer and
`optim.<name>.npy` for optimiser moments. Reading never goes through np.load: each member's
header is parsed and checked against the metadata before its bytes are read as plain numbers,
so no object array can be built and nothing in a file can run. Spec: docs/checkpoint-format.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._fsutil import NotARegularFile, atomic_write, open_regular
from ._version import __version__
from .data import ZIP_ERRORS
from .facts import FactError, ModelFacts, check_layer_config
from .layers import Array
from .model import Classifier, Sequential, model_from_config, unwrap

FORMAT = "fashionnet-checkpoint"
SAFETENSORS_FORMAT = "fashionnet-safetensors"
FORMAT_VERSION = 1
_MAX_METADATA_BYTES = 16 << 20
_MAX_NPY_HEADER = 1 << 16
# param.0.weight, buffer.3.body.1.running_mean, optim.m, train.order: dotted words, no paths
_MEMBER_NAME = re.compile(r"(param|buffer|optim|train)(\.[A-Za-z0-9_]+)+")
_ALLOWED_DTYPES = {np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)}


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, hostile or from a newer fashionnet."""


class NonFiniteError(ValueError):
    """Refused to save NaN or infinite values: no checkpoint ever holds them."""


def _json_bytes(obj: Any) -> Array:
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode(), dtype=np.uint8)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Classifier,
    *,
    metadata: dict[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    arrays: dict[str, Array] | None = None,
) -> None:
    """Atomically write model weights, its config, optional optimiser state, metadata and any
    further named arrays (e.g. the training state's data order)."""
    net = unwrap(model)
    stored = {f"param.{name}": p.data for name, p in net.named_parameters().items()}
    stored |= {f"buffer.{name}": b for name, b in net.named_buffers().items()}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fashionnet_version": __version__,
        "numpy_version": np.__version__,
        "model": model.config(),
        **(metadata or {}),
    }
    if optimizer_state is not None:
        meta["optimizer"] = {k: v for k, v in optimizer_state.items() if k != "arrays"}
        stored |= {f"optim.{k}": v for k, v in optimizer_state["arrays"].items()}
    for k, v in (arrays or {}).items():
        if k.startswith(("param.", "buffer.", "optim.")) or k == "metadata":
            raise ValueError(f"array name {k!r} is reserved")
        stored[k] = v
    for k, v in stored.items():
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise NonFiniteError(f"refusing to save non-finite values in {k}")
    shapes = {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in stored.items()}
    meta["arrays"] = shapes
    with atomic_write(path) as f:
        np.savez(f, metadata=_json_bytes(meta), **stored)  # type: ignore[arg-type]


def _read_member_header(
    zf: zipfile.ZipFile, member: str, path: Path
) -> tuple[IO[bytes], tuple[int, ...], np.dtype[Any]]:
    f = zf.open(member)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        if fortran or dtype.hasobject:
            raise ValueError("object or Fortran-order arrays are refused")
    except ValueError as e:
        f.close()
        raise CheckpointError(f"{path}: member {member}: bad array header ({e})") from None
    return f, shape, dtype


def _read_array(
    zf: zipfile.ZipFile, member: str, path: Path, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> Array:
    f, got_shape, got_dtype = _read_member_header(zf, member, path)
    with f:
        if got_shape != shape or got_dtype != dtype:
            raise CheckpointError(
                f"{path}: member {member}: shape {got_shape} {got_dtype}, expected {shape} {dtype}"
            )
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        data = f.read(n)
        if len(data) != n or f.read(1):
            raise CheckpointError(f"{path}: member {member}: {len(data)} data bytes, expected {n}")
    return np.frombuffer(data, dtype).reshape(shape).copy()


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Array]]:
    """(metadata, arrays) of a checkpoint, every array validated against the metadata."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a .npz checkpoint file")
    try:
        f = open_regular(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except NotARegularFile as e:
        raise CheckpointError(f"{path}: {e.strerror}") from None
    with f:
        try:
            zf = zipfile.ZipFile(f)
        except (*ZIP_ERRORS, ValueError) as e:
            raise CheckpointError(f"{path}: not a fashionnet checkpoint ({e})") from None
        with zf:
            try:
                return _read_validated(zf, path)
            except ZIP_ERRORS as e:
                raise CheckpointError(f"{path}: corrupt checkpoint ({e})") from None


def _read_validated(zf: zipfile.ZipFile, path: Path) -> tuple[dict[str, Any], dict[str, Array]]:
    infos = zf.infolist()
    seen: set[str] = set()
    for info in infos:  # before any member is read: an archive that could mean two things
        if info.filename in seen:
            raise CheckpointError(f"{path}: member {info.filename} appears twice")
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"{path}: member {info.filename} is compressed; members are stored"
            )
        seen.add(info.filename)
    members = seen
    if "metadata.npy" not in members:
        raise CheckpointError(f"{path}: no metadata member: not a fashionnet checkpoint")
    f, shape, dtype = _read_member_header(zf, "metadata.npy", path)
    f.close()
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > _MAX_METADATA_BYTES:
        raise CheckpointError(f"{path}: metadata must be a 1-D uint8 array of at most 16 MiB")
    raw = _read_array(zf, "metadata.npy", path, shape, dtype)
    try:
        meta = json.loads(raw.tobytes().decode())
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a 5,000-digit number, nesting
        raise CheckpointError(f"{path}: metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fashionnet checkpoint (no format marker)")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this fashionnet reads "
            f"({FORMAT_VERSION}); upgrade fashionnet"
        )
    specs = meta.get("arrays")
    if not isinstance(specs, dict):
        raise CheckpointError(f"{path}: metadata has no array list")
    expected = {f"{name}.npy" for name in specs} | {"metadata.npy"}
    if members != expected:
        extra, missing = sorted(members - expected), sorted(expected - members)
        raise CheckpointError(
            f"{path}: members do not match metadata (extra {extra}, missing {missing})"
        )
    arrays: dict[str, Array] = {}
    for name, spec in specs.items():
        if not _MEMBER_NAME.fullmatch(name) or ".." in name:
            raise CheckpointError(f"{path}: array name {name[:80]!r} is not a checkpoint's")
        try:
            shape = tuple(int(d) for d in spec["shape"])
            dtype = np.dtype(spec["dtype"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: bad array spec for {name} ({e})") from None
        if dtype not in _ALLOWED_DTYPES or any(d < 0 for d in shape):
            raise CheckpointError(f"{path}: array {name}: dtype {dtype} shape {shape} not allowed")
        info = zf.getinfo(f"{name}.npy")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size:
            raise CheckpointError(
                f"{path}: array {name}: declared shape {shape} exceeds its member"
            )
        if info.file_size > nbytes + _MAX_NPY_HEADER:
            raise CheckpointError(f"{path}: member {name}.npy is larger than its shape says")
        arrays[name] = _read_array(zf, f"{name}.npy", path, shape, dtype)
        if dtype.kind == "f" and not np.isfinite(arrays[name]).all():
            raise CheckpointError(f"{path}: {name} holds non-finite values")
    return meta, arrays


def load_model(path: str | os.PathLike[str]) -> Classifier:
    """A model ready for predict / predict_proba; needs nothing but numpy."""
    return load_model_with_metadata(path)[0]


def load_model_with_metadata(path: str | os.PathLike[str]) -> tuple[Classifier, dict[str, Any]]:
    """The model and its file's metadata (class names, image shape, metrics, config), from a
    checkpoint or a safetensors export (told apart by the first bytes)."""
    path = Path(path)
    try:
        with open_regular(path) as f:
            magic = f.read(9)
    except OSError:
        magic = b""  # read_checkpoint names the problem
    if len(magic) == 9 and magic[8:9] == b"{" and not magic.startswith(b"PK"):
        return _read_safetensors(path)
    meta, arrays = read_checkpoint(path)
    model = _build_model(path, meta, arrays)
    return model, _with_facts(path, meta, model)


def _promised_shapes(path: Path, config: Any) -> dict[str, tuple[int, ...]]:
    """Every parameter's and buffer's shape the config promises, without building anything:
    a config declaring huge layers, or nesting deep enough to exhaust the stack, is refused
    before anything is allocated."""
    try:
        check_layer_config(config)
        return Sequential.param_shapes(config)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path}: model config cannot be rebuilt ({e})") from None


def _with_facts(path: Path, meta: dict[str, Any], model: Classifier) -> dict[str, Any]:
    """`meta` with its class names, image shape and input scale checked against the model."""
    try:
        facts = ModelFacts.parse(meta, model)
    except FactError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return meta if facts is None else {**meta, **facts.as_metadata()}


def _build_model(path: Path, meta: dict[str, Any], arrays: dict[str, Array]) -> Classifier:
    stored = {
        k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(("param.", "buffer."))
    }
    promised = _promised_shapes(path, meta.get("model"))
    if set(stored) != set(promised):
        raise CheckpointError(
            f"{path}: parameters {sorted(stored)} do not match the config's {sorted(promised)}"
        )
    for name, shape in promised.items():
        if stored[name].shape != shape:
            raise CheckpointError(
                f"{path}: {name} has shape {stored[name].shape}, config says {shape}"
            )
    for name, w in stored.items():
        if not np.isfinite(w).all():
            raise CheckpointError(f"{path}: {name} holds non-finite values")
    try:
        model = model_from_config(meta["model"])
    except (TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path}: model config cannot be rebuilt ({e})") from None
    mine = unwrap(model).state_dict()
    try:
        state = {k: v.astype(mine[k].dtype, copy=False) for k, v in stored.items()}
        unwrap(model).load_state_dict(state)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return model


def export_safetensors(
    path: str | os.PathLike[str], model: Classifier, *, metadata: dict[str, Any] | None = None
) -> None:
    """Every tensor the model needs (parameters and BatchNorm's running statistics) in the
    safetensors layout other tools read: an 8-byte little-endian header length, a JSON header
    {name: {dtype, shape, data_offsets}}, then the raw little-endian data. The model config and
    `metadata` (class names, image shape, input scale) travel as JSON strings in __metadata__,
    so `load_model` rebuilds the model from the file alone."""
    dtypes = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}
    header: dict[str, Any] = {"__metadata__": {
        "format": SAFETENSORS_FORMAT, "fashionnet_model": json.dumps(model.config()),
        "fashionnet_metadata": json.dumps(metadata or {}),
    }}  # fmt: skip
    blobs, offset = [], 0
    for name, array in unwrap(model).state_dict().items():
        blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": dtypes[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
    with atomic_write(path) as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for blob in blobs:
            f.write(blob)


def _tensor_bytes(
    spec: Any, shape: tuple[int, ...], data_size: int
) -> tuple[np.dtype[Any], int, int] | None:
    """(dtype, start, end) of a header entry when it agrees with the promised shape and lies
    within the data; None otherwise."""
    dtypes: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
    if not isinstance(spec, dict) or spec.get("dtype") not in dtypes:
        return None
    dtype, offsets = dtypes[spec["dtype"]], spec.get("data_offsets")
    if spec.get("shape") != list(shape) or not (
        isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
    ):
        return None
    start, end = offsets
    if not 0 <= start <= end <= data_size or end - start != math.prod(shape) * dtype.itemsize:
        return None
    return dtype, start, end


def _read_safetensors(path: Path) -> tuple[Classifier, dict[str, Any]]:
    """A fashionnet safetensors export: the header checked against the file's size and the
    model config before any tensor is read."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        n = int.from_bytes(f.read(8), "little")
        if n > min(_MAX_METADATA_BYTES, size - 8):
            raise CheckpointError(f"{path}: safetensors header of {n} bytes does not fit the file")
        try:
            header = json.loads(f.read(n))
            extra = header.pop("__metadata__")
            config = json.loads(extra["fashionnet_model"])
            meta = json.loads(extra.get("fashionnet_metadata", "{}"))
            promised = _promised_shapes(path, config)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path}: not a fashionnet safetensors export ({e})") from None
        if set(header) != set(promised):
            raise CheckpointError(
                f"{path}: tensors {sorted(header)} do not match the config's {sorted(promised)}"
            )
        state = {}
        for name, spec in header.items():
            where = _tensor_bytes(spec, promised[name], size - 8 - n)
            if where is None:
                raise CheckpointError(f"{path}: tensor {name}: bad dtype, shape or offsets")
            dtype, start, end = where
            f.seek(8 + n + start)
            state[name] = np.frombuffer(f.read(end - start), dtype).reshape(promised[name])
    for name, array in state.items():
        if not np.isfinite(array).all():
            raise CheckpointError(f"{path}: {name} holds non-finite values")
    dtype = next(iter(state.values())).dtype.newbyteorder("=")
    try:
        model = model_from_config(config, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: model config cannot be rebuilt ({e})") from None
    unwrap(model).load_state_dict({k: v.astype(dtype) for k, v in state.items()})
    return model, _with_facts(path, {**meta, "model": config}, model)
