"""The one SQLite database every plane persists to, with numbered migrations."""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

DB_FILE = "fmos.sqlite3"


def _v1(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS traces (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            session TEXT, tenant TEXT, transport TEXT, era TEXT,
            direction TEXT, method TEXT NOT NULL, server TEXT, name TEXT,
            arg_bytes INTEGER, result_bytes INTEGER, latency_ms REAL,
            outcome TEXT NOT NULL, error TEXT, traps TEXT
        )
        """
    )
    db.execute("CREATE INDEX IF NOT EXISTS traces_ts ON traces (ts)")
    db.execute("CREATE INDEX IF NOT EXISTS traces_tenant_ts ON traces (tenant, ts)")


def _v2(db: sqlite_utils.Database) -> None:
    """The trust plane: tool pins (approved definitions) and the hash-chained audit trail."""
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS tool_pins (
            server TEXT NOT NULL, tool TEXT NOT NULL,
            seen_hash TEXT NOT NULL, seen_definition TEXT NOT NULL, seen_at REAL NOT NULL,
            approved_hash TEXT, approved_at REAL, approved_by TEXT,
            findings TEXT,
            PRIMARY KEY (server, tool)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS audit (
            seq INTEGER PRIMARY KEY, ts REAL NOT NULL, record TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL
        )
        """
    )
    # Append only, as far as SQLite can say so; `audit verify` catches whoever drops these triggers.
    db.execute("CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
               "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END")
    db.execute("CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
               "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END")


def _v3(db: sqlite_utils.Database) -> None:
    """The data plane: offloaded artifacts (per tenant, content-addressed), memory, cached embeddings."""
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS artifacts (
            tenant TEXT NOT NULL, id TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
            kind TEXT NOT NULL, mime TEXT, data BLOB NOT NULL, origin TEXT,
            created REAL NOT NULL, expires REAL,
            PRIMARY KEY (tenant, id)
        )
        """
    )
    db.execute("CREATE INDEX IF NOT EXISTS artifacts_expires ON artifacts (expires)")
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS memory (
            id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, text TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '[]',
            sha256 TEXT NOT NULL, created REAL NOT NULL, UNIQUE (tenant, sha256)
        )
        """
    )
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5(text, tags, content='memory', content_rowid='id')")
    db.execute("CREATE TRIGGER IF NOT EXISTS memory_ai AFTER INSERT ON memory BEGIN "
               "INSERT INTO memory_fts (rowid, text, tags) VALUES (new.id, new.text, new.tags); END")
    db.execute("CREATE TRIGGER IF NOT EXISTS memory_ad AFTER DELETE ON memory BEGIN "
               "INSERT INTO memory_fts (memory_fts, rowid, text, tags) VALUES ('delete', old.id, old.text, old.tags); END")
    db.execute(
        "CREATE TABLE IF NOT EXISTS embeddings (sha256 TEXT NOT NULL, model TEXT NOT NULL, vector BLOB NOT NULL, "
        "PRIMARY KEY (sha256, model))"
    )


def _v4(db: sqlite_utils.Database) -> None:
    """Budgets: usage per budget, subject and fixed window (written behind), and shared budgets' prices."""
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS budget_usage (
            budget TEXT NOT NULL, subject TEXT NOT NULL, resource TEXT NOT NULL,
            window_seconds REAL NOT NULL, window_start REAL NOT NULL, used REAL NOT NULL, updated REAL NOT NULL,
            PRIMARY KEY (budget, subject, resource, window_seconds, window_start)
        )
        """
    )
    db.execute("CREATE INDEX IF NOT EXISTS budget_usage_start ON budget_usage (window_start)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS budget_prices (budget TEXT PRIMARY KEY, resource TEXT NOT NULL, "
        "price REAL NOT NULL, updated REAL NOT NULL)"
    )


def _v5(db: sqlite_utils.Database) -> None:
    """Self-evolution: features on trace rows, installation secrets (the export's pseudonym key), versioned
    artifacts with provenance, and the history of what was proposed, evaluated, served, promoted or rolled back."""
    db.execute("ALTER TABLE traces ADD COLUMN features TEXT")
    db.execute("CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS versions (
            id INTEGER PRIMARY KEY, kind TEXT NOT NULL, version INTEGER NOT NULL, status TEXT NOT NULL,
            body TEXT NOT NULL, sha256 TEXT NOT NULL, provenance TEXT NOT NULL, parent INTEGER,
            share REAL, evaluation TEXT, created REAL NOT NULL, UNIQUE (kind, version)
        )
        """
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS evolve_log (id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, "
        "version INTEGER, action TEXT NOT NULL, actor TEXT NOT NULL, detail TEXT)"
    )


# Append only: a migration, once shipped, never changes.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5]


class StateDB:
    """A thread-safe handle: writes happen on worker threads, off the event loop."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / DB_FILE
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.Lock()
        with self._lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self.db.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for number, migration in enumerate(MIGRATIONS, start=1):
            if number > current:
                with self.db.conn:
                    migration(self.db)
                    self.db.execute("INSERT INTO schema_version (version) VALUES (?)", [number])

    def secret(self, name: str) -> str:
        """A random per-installation secret (created on first use); never exported, never logged."""
        with self.locked() as db, db.conn:
            row = db.execute("SELECT value FROM secrets WHERE name = ?", [name]).fetchone()
            if row is None:
                db.execute("INSERT INTO secrets (name, value) VALUES (?, ?)", [name, secrets.token_hex(32)])
                row = db.execute("SELECT value FROM secrets WHERE name = ?", [name]).fetchone()
            return row[0]

    @contextmanager
    def locked(self) -> Iterator[sqlite_utils.Database]:
        with self._lock:
            yield self.db

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()
