"""Checkpoints under MODEL_DIR that a crash can never leave half-written.

Layout per model::

    MODEL_DIR/<model>/CURRENT            name of the live version (replaced atomically)
    MODEL_DIR/<model>/<version>/         the framework's weight files + meta.json

A version is written in a temporary folder, renamed into place, and only then
made current by replacing CURRENT, so the last good checkpoint survives any
failure while writing the next one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

META_FILE = "meta.json"
POINTER_FILE = "CURRENT"


class CheckpointStore:
    """Versioned, atomically switched checkpoint folders, one series per model."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def save(self, model: str, write_weights: Callable[[Path], None], meta: dict) -> Path:
        """Write weights (via ``write_weights(folder)``) and ``meta`` as a new version; make it current."""
        series = self.root / model
        series.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=series, prefix=".staging-"))
        try:
            write_weights(staging)
            (staging / META_FILE).write_text(json.dumps(meta, indent=2))
            version = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
            final = series / version
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _write_text_atomically(series / POINTER_FILE, version)
        self._prune(series, keep=version)
        return final

    def current(self, model: str) -> tuple[Path, dict] | None:
        """The live version's folder and meta, or None when there is none (or it is unreadable)."""
        series = self.root / model
        try:
            version = (series / POINTER_FILE).read_text().strip()
            folder = series / version
            meta = json.loads((folder / META_FILE).read_text())
        except (OSError, ValueError) as exc:
            if (series / POINTER_FILE).exists():
                log.warning("checkpoint of %s is unreadable: %s", model, exc)
            return None
        return folder, meta

    def _prune(self, series: Path, keep: str) -> None:
        """Remove older versions and abandoned staging folders; keep the current one."""
        for entry in series.iterdir():
            if entry.is_dir() and entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True)


def _write_text_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
