"""The gateway's memory: training runs, evaluations and benchmarks in one SQLite file.

Each record is a JSON document with an id and a time; a new connection per call
keeps it safe across the gateway's request and run threads.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KINDS = ("runs", "evaluations", "benchmarks", "parity")


class Store:
    """JSON documents by kind (runs, evaluations, benchmarks), newest first."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            for kind in KINDS:
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {kind} "
                    "(id TEXT PRIMARY KEY, created_at REAL NOT NULL, body TEXT NOT NULL)"
                )

    def put(self, kind: str, record_id: str, body: dict, created_at: float | None = None) -> None:
        """Insert or replace a document."""
        with self._connect() as db:
            db.execute(
                f"INSERT INTO {self._table(kind)} (id, created_at, body) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                (record_id, created_at or time.time(), json.dumps(body)),
            )

    def get(self, kind: str, record_id: str) -> dict | None:
        """One document, or None."""
        with self._connect() as db:
            row = db.execute(f"SELECT body FROM {self._table(kind)} WHERE id = ?", (record_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def latest(self, kind: str, limit: int = 50) -> list[dict]:
        """The newest documents first."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT body FROM {self._table(kind)} ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success and is always closed."""
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:
                yield db
        finally:
            db.close()

    @staticmethod
    def _table(kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        return kind
