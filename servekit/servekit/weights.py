"""One network, many frameworks: the weights in one framework-neutral layout, and the same initial weights.

The canonical layout is Keras' (channels last), by layer:

- ``conv1/kernel`` (3, 3, 1, 32) and ``conv2/kernel`` (3, 3, 32, 64): height, width, in, out (HWIO);
- ``dense/kernel`` (1600, 10): its rows in the order a channels-last (5, 5, 64) map is flattened, (h, w, c);
- ``conv1/bias`` (32,), ``conv2/bias`` (64,), ``dense/bias`` (10,).

A framework that works channels first (PyTorch: OIHW kernels, a (c, h, w) flatten before the dense layer)
transposes on the way in and out. Weights travel as a NumPy ``.npz`` archive.
"""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
from numpy.lib import format as npy_format

from .errors import BadRequest

SHAPES = {
    "conv1/kernel": (3, 3, 1, 32),
    "conv1/bias": (32,),
    "conv2/kernel": (3, 3, 32, 64),
    "conv2/bias": (64,),
    "dense/kernel": (1600, 10),
    "dense/bias": (10,),
}
Weights = dict[str, np.ndarray]

# An uploaded archive is checked against this layout before anything in it is decompressed or allocated:
# a zip bomb or a header claiming a terabyte array is refused from the zip directory or the .npy header.
WEIGHT_DTYPE = np.dtype("<f4")
MAX_NPY_HEADER_BYTES = 4096  # numpy writes 128 bytes; a longer header is refused before it is parsed
MAX_ARCHIVE_BYTES = 1 << 20  # an np.savez export is 141 KB
MAX_COMPRESSION_RATIO = 1032  # deflate's own maximum: a member claiming more is a forged directory
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what np.savez and np.savez_compressed write
END_OF_DIRECTORY = struct.Struct("<4s4H2LH")  # the zip's end of central directory record


def initial_weights(seed: int) -> Weights:
    """Keras' default initialisation (Glorot uniform kernels, zero biases), drawn by NumPy from ``seed``.

    The same seed gives the same numbers in every service, so every framework can start from one point.
    """
    generator = np.random.default_rng(seed)
    weights = {}
    for name, shape in SHAPES.items():
        if name.endswith("/bias"):
            weights[name] = np.zeros(shape, np.float32)
            continue
        receptive = int(np.prod(shape[:-2])) if len(shape) == 4 else 1
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weights[name] = generator.uniform(-limit, limit, shape).astype(np.float32)
    return weights


def check_weights(weights: Weights) -> Weights:
    """The weights as float32 arrays of the canonical shapes; 400 when a name or shape is wrong."""
    if set(weights) != set(SHAPES):
        raise BadRequest(f"weights must be exactly {', '.join(SHAPES)}; got {', '.join(sorted(weights))}")
    checked = {}
    for name, shape in SHAPES.items():
        array = np.asarray(weights[name])
        if array.shape != shape:
            raise BadRequest(f"{name} must have shape {list(shape)}, got {list(array.shape)}")
        if array.dtype.kind not in "fiu" or not np.all(np.isfinite(array)):
            raise BadRequest(f"{name} must hold finite numbers")
        checked[name] = array.astype(np.float32)
    return checked


def to_npz(weights: Weights) -> bytes:
    """The weights as the bytes of an ``.npz`` archive."""
    buffer = io.BytesIO()
    np.savez(buffer, **check_weights(weights))
    return buffer.getvalue()


def from_npz(data: bytes) -> Weights:
    """Weights read from ``.npz`` bytes as ``to_npz`` writes them; a 400 saying what is wrong otherwise.

    Nothing is decompressed before it is checked: the archive's size and member count, each member's name,
    size and compression in the zip directory, then each ``.npy`` header's shape and dtype; the data read is
    bounded by the size the layout expects. Nothing is ever unpickled.
    """
    if len(data) > MAX_ARCHIVE_BYTES:
        raise BadRequest(f"the weights archive is {len(data):,} bytes; at most {MAX_ARCHIVE_BYTES:,} are accepted")
    _check_member_count(data)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _layout_members(archive)
            weights = {name: _read_member(archive, info, name) for name, info in members.items()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise BadRequest(f"the weights are not a readable .npz archive: {exc}") from None
    return check_weights(weights)


def _check_member_count(data: bytes) -> None:
    """Refuse more members than the layout has, from the end record, before zipfile reads the directory."""
    start = data.rfind(b"PK\x05\x06", max(0, len(data) - END_OF_DIRECTORY.size - 0xFFFF))
    if start < 0 or len(data) - start < END_OF_DIRECTORY.size:
        raise BadRequest("the weights are not a .npz archive (no zip directory found)")
    members = END_OF_DIRECTORY.unpack_from(data, start)[4]
    if members > len(SHAPES):
        raise BadRequest(f"the weights archive has {members:,} members; it must hold exactly {len(SHAPES)}: "
                         f"{', '.join(f'{name}.npy' for name in SHAPES)}")


def _layout_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Each layer name's member, checked in the zip directory: names, duplicates, sizes, compression."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if name not in SHAPES or not info.filename.endswith(".npy"):
            raise BadRequest(f"the weights archive holds {info.filename!r:.80}; its members must be exactly "
                             f"{', '.join(f'{name}.npy' for name in SHAPES)}")
        if name in members:
            raise BadRequest(f"the weights archive holds {info.filename} twice")
        _check_directory_entry(info, name)
        members[name] = info
    missing = [f"{name}.npy" for name in SHAPES if name not in members]
    if missing:
        raise BadRequest(f"the weights archive lacks {', '.join(missing)}")
    return members


def _check_directory_entry(info: zipfile.ZipInfo, name: str) -> None:
    """A member's compression and sizes as the zip directory states them, against what ``name`` can take."""
    if info.compress_type not in ZIP_METHODS:
        raise BadRequest(f"{info.filename} uses zip compression method {info.compress_type}; only stored or "
                         "deflated members (np.savez, np.savez_compressed) are accepted")
    limit = _data_bytes(name) + MAX_NPY_HEADER_BYTES
    if info.file_size > limit:
        raise BadRequest(f"{info.filename} expands to {info.file_size:,} bytes; {name} takes at most {limit:,}")
    if info.file_size > max(1, info.compress_size) * MAX_COMPRESSION_RATIO:
        raise BadRequest(f"{info.filename} claims a compression ratio over {MAX_COMPRESSION_RATIO}:1, more than "
                         "deflate can give: the archive is forged")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    """One layer's array: its .npy header checked before any data, the data read up to the expected size."""
    expected = _data_bytes(name)
    with archive.open(info) as member:
        shape, fortran_order, dtype = _npy_header(member, info.filename)
        if shape != SHAPES[name] or dtype != WEIGHT_DTYPE:
            raise BadRequest(f"{info.filename} holds {dtype} of shape {list(shape)}; {name} must be float32 "
                             f"(little-endian) of shape {list(SHAPES[name])}")
        payload = member.read(expected + 1)  # one byte more tells trailing data
    if len(payload) != expected:
        raise BadRequest(f"{info.filename} has {len(payload):,} bytes of data; {name} takes {expected:,}")
    return np.frombuffer(payload, WEIGHT_DTYPE).reshape(shape, order="F" if fortran_order else "C")


def _npy_header(member, filename: str) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) from a .npy header (format 1.0 or 2.0), reading nothing past it."""
    version = npy_format.read_magic(member)
    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    if version not in readers:
        raise BadRequest(f"{filename} is .npy format {version[0]}.{version[1]}; 1.0 or 2.0 are accepted")
    return readers[version](member, max_header_size=MAX_NPY_HEADER_BYTES)


def _data_bytes(name: str) -> int:
    """The bytes of ``name``'s array in the layout's dtype."""
    return int(np.prod(SHAPES[name])) * WEIGHT_DTYPE.itemsize


def torch_dense_from_canonical(kernel: np.ndarray) -> np.ndarray:
    """(1600, 10) rows in (h, w, c) order -> a torch Linear weight (10, 1600) over a (c, h, w) flatten."""
    return kernel.reshape(5, 5, 64, 10).transpose(3, 2, 0, 1).reshape(10, 1600)


def torch_dense_to_canonical(weight: np.ndarray) -> np.ndarray:
    """A torch Linear weight (10, 1600) over a (c, h, w) flatten -> (1600, 10) rows in (h, w, c) order."""
    return weight.reshape(10, 64, 5, 5).transpose(2, 3, 1, 0).reshape(1600, 10)


def keras_export(model) -> Weights:
    """A Keras model of this network (its conv, conv and dense layers hold weights, in that order) -> canonical."""
    conv1, conv2, dense = _weighted_layers(model)
    return {name: np.asarray(value) for layer, prefix in ((conv1, "conv1"), (conv2, "conv2"), (dense, "dense"))
            for name, value in zip((f"{prefix}/kernel", f"{prefix}/bias"), layer.get_weights(), strict=True)}


def keras_import(model, weights: Weights) -> None:
    """Set a Keras model's conv, conv and dense layers from canonical weights (Keras' own layout)."""
    weights = check_weights(weights)
    for layer, prefix in zip(_weighted_layers(model), ("conv1", "conv2", "dense"), strict=True):
        layer.set_weights([weights[f"{prefix}/kernel"], weights[f"{prefix}/bias"]])


def _weighted_layers(model) -> list:
    layers = [layer for layer in model.layers if layer.get_weights()]
    if len(layers) != 3:
        raise ValueError(f"expected the conv, conv and dense layers to hold weights, found {len(layers)} layers")
    return layers


def shared_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """Under ``same_start``: the order every framework visits the ``count`` training images in, per epoch."""
    return np.random.default_rng([seed, epoch]).permutation(count)
