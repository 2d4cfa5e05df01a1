"""A small thread-safe sqlite key -> JSON store: model scores, judge replies and generations are cached in it."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable

from cqia_nb.core.paths import cache_dir


class KVStore:
    """A small thread-safe sqlite key -> JSON store (scores here, judge replies in ``judge``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        with self._lock:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError:
                pass
            self._db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, Any] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                q = f"SELECT key, value FROM kv WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v in self._db.execute(q, chunk):
                    try:
                        out[k] = json.loads(v)
                    except ValueError:  # a damaged row is recomputed, never trusted
                        pass
        return out

    def get(self, key: str) -> Any:
        return self.get_many([key]).get(key)

    def put_many(self, items: dict[str, Any]) -> None:
        if not items:
            return
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", rows)
            self._db.commit()

    def put(self, key: str, value: Any) -> None:
        self.put_many({key: value})

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM kv").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def default_cache_path(name: str = "scores.sqlite") -> Path:
    return cache_dir() / name

