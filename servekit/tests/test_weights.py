"""The framework-neutral weight layout: archive round trips, checks, the shared initialisation, flatten orders."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest

from servekit.errors import BadRequest
from servekit.weights import (
    SHAPES,
    from_npz,
    initial_weights,
    to_npz,
    torch_dense_from_canonical,
    torch_dense_to_canonical,
)


def test_the_same_seed_gives_the_same_start_and_keras_bounds():
    first, again, other = initial_weights(7), initial_weights(7), initial_weights(8)
    assert all(np.array_equal(first[n], again[n]) for n in SHAPES)
    assert not np.array_equal(first["conv1/kernel"], other["conv1/kernel"])
    assert sum(w.size for w in first.values()) == 34_826
    limit = np.sqrt(6.0 / (9 * 32 + 9 * 64))  # Glorot uniform for conv2: fan in 3*3*32, fan out 3*3*64
    assert np.abs(first["conv2/kernel"]).max() <= limit and np.abs(first["conv2/kernel"]).max() > 0.9 * limit
    assert not first["dense/bias"].any()


def test_archives_round_trip_exactly():
    weights = initial_weights(3)
    back = from_npz(to_npz(weights))
    assert all(np.array_equal(weights[n], back[n]) and back[n].dtype == np.float32 for n in SHAPES)


@pytest.mark.parametrize("broken", [
    b"not an archive",
    "missing",
    "wrong shape",
    "not finite",
])
def test_bad_weights_are_a_400(broken):
    weights = initial_weights(0)
    if broken == "missing":
        del weights["dense/bias"]
        data = _raw_npz(weights)
    elif broken == "wrong shape":
        weights["conv1/kernel"] = np.zeros((32, 1, 3, 3), np.float32)
        data = _raw_npz(weights)
    elif broken == "not finite":
        weights["dense/kernel"][0, 0] = np.nan
        data = _raw_npz(weights)
    else:
        data = broken
    with pytest.raises(BadRequest):
        from_npz(data)


def _raw_npz(weights) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    return buffer.getvalue()


def test_the_dense_layer_sees_the_same_features_in_either_flatten_order():
    rng = np.random.default_rng(1)
    feature_map = rng.normal(size=(5, 5, 64)).astype(np.float32)  # (h, w, c), as channels-last frameworks hold it
    kernel = rng.normal(size=(1600, 10)).astype(np.float32)
    keras_out = feature_map.reshape(-1) @ kernel
    torch_weight = torch_dense_from_canonical(kernel)
    torch_out = torch_weight @ feature_map.transpose(2, 0, 1).reshape(-1)  # torch flattens (c, h, w)
    assert np.allclose(keras_out, torch_out, atol=1e-4)
    assert np.array_equal(torch_dense_to_canonical(torch_weight), kernel)


# Hostile archives: each is refused from the zip directory or the .npy header, before its data is expanded.

BOMB_BYTES = 256 * 1024 * 1024  # what the bombs below would expand to
ZERO_CHUNK = bytes(1024 * 1024)


def _npy_header(shape, descr="<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _archive(members: dict[str, bytes], zeros: dict[str, int] | None = None, lie: dict[str, int] | None = None,
             method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """An archive of ``members`` (name -> bytes), ``zeros[name]`` zero bytes appended to a member as it is
    deflated, and ``lie[name]``: the uncompressed size the zip directory then claims for it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members.items():
            with archive.open(name, "w") as member:
                member.write(content)
                for _ in range((zeros or {}).get(name, 0) // len(ZERO_CHUNK)):
                    member.write(ZERO_CHUNK)
        for name, size in (lie or {}).items():
            archive.getinfo(name).file_size = size  # written into the central directory on close
    return buffer.getvalue()


def _valid_members() -> dict[str, bytes]:
    members = {}
    for name, array in initial_weights(0).items():
        buffer = io.BytesIO()
        np.save(buffer, array)
        members[f"{name}.npy"] = buffer.getvalue()
    return members


def _refusal_and_peak(data: bytes) -> tuple[str, int]:
    """from_npz's 400 message for ``data``, and the peak of Python and NumPy allocations while it ran."""
    tracemalloc.start()
    try:
        with pytest.raises(BadRequest) as refused:
            from_npz(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return refused.value.message, peak


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A member whose honest .npy header and directory entry describe 256 MiB of deflated zeros (~260 KB here)."""
    header = _npy_header((BOMB_BYTES // 4,))
    return _archive({"conv1/kernel.npy": header}, zeros={"conv1/kernel.npy": BOMB_BYTES})


def test_a_zip_bomb_is_refused_from_the_directory_with_bounded_memory(bomb):
    assert len(bomb) < 1024 * 1024
    message, peak = _refusal_and_peak(bomb)
    assert "conv1/kernel.npy expands to 268,435,584 bytes" in message
    assert peak < 4 * 1024 * 1024, peak


def test_a_directory_that_understates_a_member_is_read_no_further_than_it_says():
    members = _valid_members()
    header = _npy_header(SHAPES["conv1/kernel"])
    members["conv1/kernel.npy"] = header
    size = len(header) + 3 * 3 * 1 * 32 * 4  # what the member should take: the directory claims just that
    data = _archive(members, zeros={"conv1/kernel.npy": BOMB_BYTES}, lie={"conv1/kernel.npy": size})
    message, peak = _refusal_and_peak(data)
    assert "not a readable .npz archive" in message and "CRC" in message, message
    assert peak < 4 * 1024 * 1024, peak


def test_a_header_claiming_a_huge_array_is_refused_before_any_allocation():
    members = _valid_members()
    members["conv1/kernel.npy"] = _npy_header((10**6, 10**6), "<f8")
    message, peak = _refusal_and_peak(_archive(members))
    assert message == ("conv1/kernel.npy holds float64 of shape [1000000, 1000000]; conv1/kernel must be float32 "
                       "(little-endian) of shape [3, 3, 1, 32]")
    assert peak < 1024 * 1024, peak


@pytest.mark.parametrize(("change", "expected"), [
    ("extra member", "has 7 members; it must hold exactly 6"),
    ("duplicate", "holds conv1/bias.npy twice"),
    ("unknown name", "holds 'evil.npy'"),
    ("missing", "lacks dense/bias.npy"),
    ("float64", "holds float64 of shape [32]; conv1/bias must be float32"),
    ("big-endian", "holds >f4 of shape [32]"),
    ("object dtype", "holds object of shape [32]"),
    ("trailing data", "conv1/bias.npy has 129 bytes of data; conv1/bias takes 128"),
    ("short data", "conv1/bias.npy has 124 bytes of data; conv1/bias takes 128"),
    ("bzip2", "uses zip compression method 12"),
    ("not a zip", "no zip directory found"),
    ("too big", "at most 1,048,576 are accepted"),
    ("npy version 3", ".npy format 3.0"),
])
def test_malformed_archives_are_a_400_saying_what_is_wrong(change, expected):
    members = _valid_members()
    method = zipfile.ZIP_DEFLATED
    if change == "extra member":
        members["extra.npy"] = b""
    elif change == "duplicate":  # six members, conv1/bias twice
        del members["dense/bias.npy"]
        data = _archive({**members, "conv1/bias.npz": members["conv1/bias.npy"]})
        data = data.replace(b"conv1/bias.npz", b"conv1/bias.npy")  # the same length: still a consistent zip
    elif change == "unknown name":
        members["evil.npy"] = members.pop("dense/bias.npy")
    elif change == "missing":
        del members["dense/bias.npy"]
    elif change in ("float64", "big-endian", "object dtype"):
        descr = {"float64": "<f8", "big-endian": ">f4", "object dtype": "|O"}[change]
        members["conv1/bias.npy"] = _npy_header((32,), descr) + bytes(32 * 8)
    elif change == "trailing data":
        members["conv1/bias.npy"] += b"\0"
    elif change == "short data":
        members["conv1/bias.npy"] = members["conv1/bias.npy"][:-4]
    elif change == "bzip2":
        method = zipfile.ZIP_BZIP2
    elif change == "npy version 3":
        members["conv1/bias.npy"] = b"\x93NUMPY\x03\x00" + members["conv1/bias.npy"][8:]
    if change == "not a zip":
        data = b"PK\x03\x04 but nothing else"
    elif change == "too big":
        data = bytes(1024 * 1024 + 1)
    elif change != "duplicate":
        data = _archive(members, method=method)
    with pytest.raises(BadRequest) as refused:
        from_npz(data)
    assert expected in refused.value.message


def test_compressed_and_fortran_ordered_archives_still_load():
    weights = initial_weights(5)
    compressed = io.BytesIO()
    np.savez_compressed(compressed, **weights)
    fortran = io.BytesIO()
    np.savez(fortran, **{name: np.asfortranarray(array) for name, array in weights.items()})
    for data in (compressed.getvalue(), fortran.getvalue()):
        back = from_npz(data)
        assert all(np.array_equal(weights[n], back[n]) for n in SHAPES)
