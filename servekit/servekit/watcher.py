"""Keeps a server on the promoted versions: polls the repository's pointers and hot-swaps new versions in.

Every ``poll_s`` it reads each model's pointer (one small file). When the
promoted version differs from the one serving, it loads that version into a
fresh instance, warms it up and swaps it in; requests keep being answered by
the old version meanwhile. A version that fails to load is logged and not
retried until ``RETRY_FAILED_S`` has passed or the pointer moves on.
"""

from __future__ import annotations

import logging
import threading
import time

from .models import ServedModel
from .repository import ModelRepository

log = logging.getLogger(__name__)

RETRY_FAILED_S = 30.0


class RepositoryWatcher:
    """Installs each model's promoted version, at start and whenever the pointer changes."""

    def __init__(self, repository: ModelRepository, models: dict[str, ServedModel], poll_s: float):
        self.repository, self.models, self.poll_s = repository, models, poll_s
        self._failed: dict[tuple[str, int], float] = {}  # (model, version) -> when it failed to load
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()

    def sync(self) -> list[tuple[str, int]]:
        """Install every model whose promoted version is not the one serving; returns what was swapped in."""
        swapped = []
        with self._sync_lock:  # a poll and an explicit sync never load the same version twice
            for served in self.models.values():
                version = self.repository.promoted(served.name)
                if version is None or version == served.version or self._recently_failed(served.name, version):
                    continue
                try:
                    meta = self.repository.meta(served.name, version)
                    served.load(self.repository.folder(served.name, version), meta, version)
                except Exception:  # a broken version must not stop the others, nor the polling
                    log.exception("could not load %s version %s; still serving %s", served.name, version,
                                  served.version)
                    self._failed[(served.name, version)] = time.monotonic()
                    continue
                swapped.append((served.name, version))
        return swapped

    def start(self) -> RepositoryWatcher:
        """Poll in a daemon thread until ``stop``."""
        threading.Thread(target=self._poll, name="repository-watcher", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.sync()
            except Exception:  # e.g. the shared volume briefly gone: keep serving, try again next poll
                log.exception("polling the model repository failed")

    def _recently_failed(self, model: str, version: int) -> bool:
        failed_at = self._failed.get((model, version))
        return failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_S
