"""A versioned model repository that a crash can never leave inconsistent.

Layout, as in TF Serving / Triton::

    <root>/<model>/<version>/        integer versions that only grow: the framework's weight files + meta.json
    <root>/<model>/promoted.json     the pointer: {"version": N, "previous": M or null, "promoted_at": ...}
    <root>/<model>/.lock             flock file that serialises writers
    <root>/<model>/.last_version     the highest version number ever allocated
    <root>/<model>/.staging-*        in-progress writes, never visible as versions

One writer at a time (per model, across processes) and any number of readers. Readers never take the
lock and never write anything, so they work on a read-only mount.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from servekit.errors import NotFound

META_FILE = "meta.json"
POINTER_FILE = "promoted.json"
LOCK_FILE = ".lock"
LAST_VERSION_FILE = ".last_version"
_STAGING = ".staging-"
_TRASH = ".trash-"
_TMP = ".tmp-"
_VERSION_NAME = re.compile(r"[1-9][0-9]*")
_TRASH_NAME = re.compile(r"\.trash-([1-9][0-9]*)-.*", re.DOTALL)


class ModelRepository:
    """Versioned model folders with a promoted pointer per model; crash-safe for one writer and any readers."""

    def __init__(self, root: str | os.PathLike, keep_versions: int = 5):
        if isinstance(keep_versions, bool) or not isinstance(keep_versions, int) or keep_versions < 1:
            raise ValueError(f"keep_versions must be an integer >= 1, not {keep_versions!r}")
        self.root = Path(root)
        self.keep_versions = keep_versions

    # -- readers: never lock, never write --------------------------------------------------------------------

    def models(self) -> list[str]:
        """Model names that have a folder under root (sorted)."""
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return []
        return sorted(e.name for e in entries if _valid_model_name(e.name) and _is_dir(e))

    def folder(self, model: str, version: int) -> Path:
        """The folder of ``version`` (whether or not it exists)."""
        return self._series(model) / str(_check_version(version))

    def versions(self, model: str) -> list[int]:
        """Valid versions ascending: integer-named folders whose meta.json parses as a JSON object."""
        series = self._series(model)
        return [v for v in _numbered(series) if _read_meta(series / str(v)) is not None]

    def meta(self, model: str, version: int) -> dict:
        """The version's meta.json; NotFound (listing the kept versions) when missing or invalid."""
        meta = _read_meta(self.folder(model, version))
        if meta is None:
            raise NotFound(f"model {model!r} has no version {version!r}; versions: {self.versions(model)}")
        return meta

    def pointer(self, model: str) -> dict | None:
        """The raw pointer as stored, or None if missing, unreadable or not pointing at a valid version."""
        series = self._series(model)
        pointer = _read_pointer(series)
        if pointer is None or _read_meta(series / str(pointer["version"])) is None:
            return None
        return pointer

    def promoted(self, model: str) -> int | None:
        """The version that should serve: the pointer's if valid, else the newest valid version (except those
        written with ``"promote": "never"`` in their meta), else None."""
        series = self._series(model)
        # The common path is cheap (servers poll it): one pointer read plus one meta read.
        pointer = _read_pointer(series)
        if pointer is not None and _read_meta(series / str(pointer["version"])) is not None:
            return pointer["version"]
        for version in reversed(_numbered(series)):
            meta = _read_meta(series / str(version))
            if meta is not None and meta.get("promote") != "never":  # written not to serve unless promoted
                return version
        return None

    def describe(self, model: str) -> dict:
        """The model's promoted and previous versions and every valid version's meta, newest first."""
        series = self._series(model)
        pointer = self.pointer(model)
        promoted = self.promoted(model)
        listed = []
        for version in reversed(_numbered(series)):
            meta = _read_meta(series / str(version))
            if meta is not None:
                listed.append({**meta, "version": version, "promoted": version == promoted})
        return {
            "model": model,
            "promoted": promoted,
            "previous": pointer.get("previous") if pointer else None,
            "versions": listed,
        }

    # -- writers: hold the model's lock ----------------------------------------------------------------------

    def write_version(self, model: str, write_weights: Callable[[Path], None], meta: dict) -> int:
        """Write a new version (not promoted) through ``write_weights(folder)`` plus ``meta``; return its number."""
        series = self._series(model)
        with self._locked(series):
            version = self._next_version(series)
            # Serialise before writing weights so a bad meta fails fast and leaves nothing behind.
            meta_bytes = json.dumps({**meta, "version": version, "model": model}, indent=2).encode()
            staging = series / f"{_STAGING}{secrets.token_hex(8)}"
            # os.mkdir (not tempfile.mkdtemp) so the folder gets the umask's mode, readable by server users.
            os.mkdir(staging)
            try:
                write_weights(staging)
                with open(staging / META_FILE, "wb") as out:
                    out.write(meta_bytes)
                _fsync_tree(staging)
                # Recorded before the rename: a crash in between only skips a number, never reuses one.
                _write_atomically(series / LAST_VERSION_FILE, f"{version}\n".encode())
                os.rename(staging, series / str(version))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _fsync_dir(series)
        return version

    def promote(self, model: str, version: int) -> dict:
        """Make ``version`` the promoted one (NotFound if not a valid version); return the new pointer."""
        series = self._series(model)
        _check_version(version)
        with self._locked(series):
            if _read_meta(series / str(version)) is None:
                raise NotFound(f"model {model!r} has no version {version!r}; versions: {self.versions(model)}")
            # "previous" is what was serving before (the pointer's version, or the newest one as a fallback).
            serving = self.promoted(model)
            if serving is not None and serving != version:
                previous = serving
            else:
                old = _read_pointer(series)
                previous = old.get("previous") if old else None
                if not _is_version_number(previous) or previous == version:
                    previous = None
            pointer = {
                "version": version,
                "previous": previous,
                "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            _write_atomically(series / POINTER_FILE, json.dumps(pointer).encode())
        return pointer

    def prune(self, model: str) -> list[int]:
        """Delete versions beyond the newest ``keep_versions`` (sparing promoted, previous and the one below
        promoted) and leftovers of killed writers; return the removed version numbers."""
        series = self._series(model)
        removed = []
        with self._locked(series):
            valid = self.versions(model)
            keep = set(valid[-self.keep_versions :])
            promoted = self.promoted(model)
            if promoted is not None:
                keep.add(promoted)
                below = [v for v in valid if v < promoted]
                if below:
                    keep.add(below[-1])
            pointer = _read_pointer(series)
            if pointer is not None and _is_version_number(pointer.get("previous")):
                keep.add(pointer["previous"])
            for version in valid:
                if version in keep:
                    continue
                # Renamed away first so that no reader ever sees a half-deleted version.
                trash = series / f"{_TRASH}{version}-{secrets.token_hex(8)}"
                os.rename(series / str(version), trash)
                _fsync_dir(series)
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(version)
            # Writers hold the lock for their whole write, so any leftover here was abandoned by a killed one.
            for entry in os.scandir(series):
                if entry.name.startswith((_STAGING, _TRASH)):
                    if _is_dir(entry):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        _unlink(entry.path)
                elif entry.name.startswith(_TMP):
                    _unlink(entry.path)
        return removed

    # -- internals -------------------------------------------------------------------------------------------

    def _series(self, model: str) -> Path:
        if not _valid_model_name(model):
            raise NotFound(f"invalid model name {model!r}")
        return self.root / model

    @contextmanager
    def _locked(self, series: Path) -> Iterator[None]:
        if not series.is_dir():
            series.mkdir(parents=True, exist_ok=True)
            _fsync_dir(series.parent)
        # flock locks belong to the open file description: a fresh open per call also serialises threads.
        fd = os.open(series / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _next_version(self, series: Path) -> int:
        """One more than every number ever used: .last_version, any numbered or trashed entry, the pointer."""
        highest = 0
        try:
            highest = int((series / LAST_VERSION_FILE).read_text().strip())
        except (OSError, ValueError):
            pass
        for entry in os.scandir(series):
            if _VERSION_NAME.fullmatch(entry.name):
                highest = max(highest, int(entry.name))
            elif match := _TRASH_NAME.fullmatch(entry.name):
                highest = max(highest, int(match.group(1)))
        pointer = _read_pointer(series)
        if pointer is not None:
            for key in ("version", "previous"):
                if _is_version_number(pointer.get(key)):
                    highest = max(highest, pointer[key])
        return highest + 1


def _valid_model_name(name: object) -> bool:
    """One plain path component: no separators, not hidden (hidden names are the repository's own files)."""
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def _is_version_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_version(version: object) -> int:
    if not _is_version_number(version):
        raise NotFound(f"invalid version {version!r}")
    return version


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _numbered(series: Path) -> list[int]:
    """Integer-named entries of a model folder, ascending (valid or not)."""
    try:
        names = os.listdir(series)
    except OSError:
        return []
    return sorted(int(name) for name in names if _VERSION_NAME.fullmatch(name))


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def _read_meta(folder: Path) -> dict | None:
    meta = _read_json(folder / META_FILE)
    return meta if isinstance(meta, dict) else None


def _read_pointer(series: Path) -> dict | None:
    """The stored pointer if it is a JSON object with a plausible version number (valid or not)."""
    pointer = _read_json(series / POINTER_FILE)
    if isinstance(pointer, dict) and _is_version_number(pointer.get("version")):
        return pointer
    return None


def _write_atomically(path: Path, data: bytes) -> None:
    """Temp file in the same folder, write, fsync, replace, fsync the folder."""
    tmp = path.with_name(f"{_TMP}{path.name}-{secrets.token_hex(8)}")
    # os.open with 0o666 (not mkstemp's 0o600) so readers running as another user can read the file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_tree(top: Path) -> None:
    """fsync every file and folder under ``top`` (bottom-up), then ``top`` itself."""
    for dirpath, _dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
