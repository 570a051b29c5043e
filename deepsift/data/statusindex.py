"""The per-id status of a real-image folder, indexed on disk: RAM does not grow with the number of ids.

``status.jsonl`` (one line per fetch, appended, the latest line of an id wins) stays the record.
Beside it, ``status.sqlite`` maps each id to its latest line. The index remembers how many bytes
of the JSONL it has read (and the file's identity): opening it reads only lines appended since, a
missing, foreign or stale index (the JSONL replaced or cut shorter) is rebuilt from the JSONL,
streaming. At D3 size (2.3 M ids) a resumed ``data fetch-real`` or a ``data build --real-dir``
looks ids up there instead of holding a dict of every line (benchmarks/bench_status.py).
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Iterator

INDEX_FILE = "status.sqlite"
_BATCH = 20_000
_SCHEMA = 1


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


class StatusIndex:
    """Latest status line per id of ``folder/status.jsonl``, looked up in SQLite (a read-only mapping)."""

    def __init__(self, folder: str | os.PathLike, jsonl_name: str = "status.jsonl") -> None:
        self.folder = Path(folder)
        self.jsonl = self.folder / jsonl_name
        self.path = self.folder / INDEX_FILE
        self._db: sqlite3.Connection | None = None
        self._temp: Path | None = None
        self._seen: sqlite3.Connection | None = None
        self._seen_path: Path | None = None
        self._open()

    # -- keeping up with the JSONL ---------------------------------------------------------------
    def _connect(self, where: str | Path) -> sqlite3.Connection:
        db = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=OFF")  # a lost index is rebuilt from the JSONL: no need to pay for fsyncs
        db.execute("CREATE TABLE IF NOT EXISTS status (id TEXT PRIMARY KEY, line TEXT NOT NULL) WITHOUT ROWID")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        return db

    def _open(self) -> None:
        """The index beside the JSONL; a read-only or full folder gets one in the temporary folder instead."""
        import tempfile

        if not self.jsonl.is_file():  # nothing to index yet: no file is made (a fresh folder stays as it was)
            self._db = self._connect(":memory:")
            return
        for where in (self.path, None):
            made = where is not None and not where.exists()  # a file this call creates: removed if it fails
            try:
                if where is None:
                    fd, name = tempfile.mkstemp(prefix="deepsift-status-", suffix=".sqlite")
                    os.close(fd)
                    self._temp = Path(name)
                    where = self._temp
                elif where.exists() and where.stat().st_size and not _is_sqlite(where):
                    where.unlink()  # a stray file under the index's name
                self._db = self._connect(where)
                self._sync()
                return
            except (sqlite3.Error, OSError):
                if self._db is not None:
                    self._db.close()
                    self._db = None
                if made:  # a full or read-only folder keeps no half-made index (nor its journal)
                    for leftover in (self.path, self.path.with_name(INDEX_FILE + "-journal")):
                        leftover.unlink(missing_ok=True)
        self._db = self._connect(":memory:")  # last resort: correct, but in RAM
        self._sync()

    def _meta(self) -> dict[str, str]:
        assert self._db is not None
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def refresh(self) -> None:
        """Bring the index up to date with the JSONL (only appended lines are read; a stale index is rebuilt)."""
        if self._db is None or (self._temp is None and self.jsonl.is_file() and not self.path.exists()):
            if self._db is not None:
                self._db.close()
            self._open()
            return
        try:
            self._sync()
        except sqlite3.Error:  # the folder filled up since: go on with an index elsewhere
            self._db.close()
            self._db = None
            self.path = Path("/nonexistent-deepsift") / INDEX_FILE
            self._open()

    def _sync(self) -> None:
        if not self.jsonl.is_file():
            self._reset()
            return
        st = self.jsonl.stat()
        meta = self._meta()
        offset = int(meta.get("offset", "0"))
        same_file = meta.get("inode") == str(st.st_ino) and meta.get("schema") == str(_SCHEMA)
        if not same_file or offset > st.st_size or not self._prefix_matches(meta, offset):
            self._reset()
            offset = 0
        if offset < st.st_size:
            self._read_from(offset, st.st_ino)

    def _prefix_matches(self, meta: dict[str, str], offset: int) -> bool:
        """Whether the bytes just before ``offset`` are still those the index read (not a rewritten file)."""
        tail = meta.get("tail", "")
        if offset == 0 or not tail:
            return offset == 0
        want = bytes.fromhex(tail)
        with open(self.jsonl, "rb") as fh:
            fh.seek(offset - len(want))
            return fh.read(len(want)) == want

    def _reset(self) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM status")
        self._db.execute("DELETE FROM meta")

    def _read_from(self, offset: int, inode: int) -> None:
        """Index complete lines from byte ``offset`` on (a torn last line waits for its end)."""
        assert self._db is not None
        db = self._db
        rows: list[tuple[str, str]] = []
        end = offset
        db.execute("BEGIN")
        try:
            with open(self.jsonl, "rb") as fh:
                fh.seek(offset)
                for raw in fh:
                    if not raw.endswith(b"\n"):
                        break  # a line still being written (or cut by a killed run)
                    end += len(raw)
                    try:
                        entry = json.loads(raw)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        continue
                    if isinstance(entry, dict) and "id" in entry:
                        rows.append((str(entry["id"]), raw.decode("utf-8").rstrip("\n")))
                    if len(rows) >= _BATCH:
                        db.executemany("INSERT OR REPLACE INTO status VALUES (?, ?)", rows)
                        rows.clear()
                if rows:
                    db.executemany("INSERT OR REPLACE INTO status VALUES (?, ?)", rows)
                fh.seek(max(0, end - 64))
                tail = fh.read(end - max(0, end - 64)).hex()
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [("offset", str(end)), ("inode", str(inode)), ("schema", str(_SCHEMA)), ("tail", tail)])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- the mapping -------------------------------------------------------------------------------
    def get(self, record_id: str, default: dict | None = None) -> dict | None:
        """The latest status line of ``record_id`` as a dict, or ``default``."""
        assert self._db is not None
        row = self._db.execute("SELECT line FROM status WHERE id = ?", (str(record_id),)).fetchone()
        return json.loads(row[0]) if row else default

    def __getitem__(self, record_id: str) -> dict:
        entry = self.get(record_id)
        if entry is None:
            raise KeyError(record_id)
        return entry

    def __contains__(self, record_id: object) -> bool:
        assert self._db is not None
        return self._db.execute("SELECT 1 FROM status WHERE id = ?", (str(record_id),)).fetchone() is not None

    def __len__(self) -> int:
        assert self._db is not None
        return int(self._db.execute("SELECT COUNT(*) FROM status").fetchone()[0])

    def __iter__(self) -> Iterator[str]:
        assert self._db is not None
        return (r[0] for r in self._db.execute("SELECT id FROM status"))

    def items(self) -> Iterator[tuple[str, dict]]:
        """``(id, latest line)`` pairs, streamed."""
        assert self._db is not None
        return ((r[0], json.loads(r[1])) for r in self._db.execute("SELECT id, line FROM status"))

    def first_sighting(self, record_id: str) -> bool:
        """True the first time an id is offered in this run (duplicates in the input are skipped), on disk too."""
        assert self._db is not None
        if self._seen is None:  # a scratch database in the temporary folder, removed on close
            import tempfile

            fd, name = tempfile.mkstemp(prefix="deepsift-seen-", suffix=".sqlite")
            os.close(fd)
            self._seen_path = Path(name)
            self._seen = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
            self._seen.execute("PRAGMA synchronous=OFF")
            self._seen.execute("PRAGMA journal_mode=OFF")
            self._seen.execute("CREATE TABLE seen (id TEXT PRIMARY KEY) WITHOUT ROWID")
        return self._seen.execute("INSERT OR IGNORE INTO seen VALUES (?)", (str(record_id),)).rowcount == 1

    def close(self) -> None:
        """Close the database (and remove a temporary one)."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None
        if self._seen is not None:
            self._seen.close()
            self._seen = None
        if self._seen_path is not None:
            self._seen_path.unlink(missing_ok=True)
            self._seen_path = None

    def __getstate__(self) -> dict:  # travels (e.g. to Ray workers) as its folder; reopened there
        return {"folder": str(self.folder), "jsonl": self.jsonl.name}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"], state["jsonl"])  # type: ignore[misc]

    def __enter__(self) -> "StatusIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
