"""The audit trail: every trust decision, append-only and hash-chained with a key kept beside the database.

Each row's hash is HMAC-SHA256(key, seq|ts|prev|record). Editing a row breaks its hash; deleting one breaks
the next row's `prev`; rewriting the chain needs the key; cutting rows off the end is caught by the head
file, written after every batch. `verify` reports each problem with the row it found it at.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmos_mcp.state.batch import BatchWriter
from fmos_mcp.state.db import StateDB

GENESIS = "0" * 64
KEY_FILE = "audit.key"
HEAD_FILE = "audit.head"


@dataclass
class Verification:
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    def __init__(self, db: StateDB) -> None:
        self.db = db
        self.key = _key(db.directory / KEY_FILE)
        self.head_file = db.directory / HEAD_FILE
        self.writer = BatchWriter("audit", self.append_now, batch=256, interval=0.2)
        self.run = self.writer.run
        self.flush = self.writer.flush

    def record(self, **entry: Any) -> None:
        """O(1) on the request path; the chain is computed by the writer."""
        self.writer.record((time.time(), entry))

    def append_now(self, entries: list[tuple[float, dict[str, Any]]]) -> None:
        """Append in one transaction (BEGIN IMMEDIATE: a CLI writing at the same time waits its turn)."""
        with self.db.locked() as db:
            conn = db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = row if row else (0, GENESIS)
                for ts, entry in entries:
                    seq += 1
                    record = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)
                    digest = self._hash(seq, ts, prev, record)
                    conn.execute("INSERT INTO audit (seq, ts, record, prev, hash) VALUES (?,?,?,?,?)",
                                 (seq, ts, record, prev, digest))
                    prev = digest
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        _write_atomic(self.head_file, f"{seq} {prev}\n")

    def _hash(self, seq: int, ts: float, prev: str, record: str) -> str:
        return hmac.new(self.key, f"{seq}|{ts!r}|{prev}|{record}".encode(), hashlib.sha256).hexdigest()

    def rows(self, last: int | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        with self.db.locked() as db:
            cursor = db.execute("SELECT seq, ts, record, hash FROM audit ORDER BY seq DESC" + (" LIMIT ?" if last and not tenant else ""),
                                [last] if last and not tenant else [])
            rows = [{"seq": seq, "ts": ts, **json.loads(record), "hash": digest} for seq, ts, record, digest in cursor]
        if tenant is not None:
            rows = [r for r in rows if r.get("tenant") == tenant][: last or None]
        return list(reversed(rows))

    def verify(self) -> Verification:
        result = Verification()
        prev, expected_seq = GENESIS, 1
        with self.db.locked() as db:
            cursor = db.execute("SELECT seq, ts, record, prev, hash FROM audit ORDER BY seq")
            for seq, ts, record, stored_prev, digest in cursor:
                result.rows += 1
                if seq != expected_seq:
                    result.problems.append(f"row {expected_seq}" + (f" to {seq - 1}" if seq - 1 > expected_seq else "")
                                           + " missing (deleted)")
                if stored_prev != prev:
                    result.problems.append(f"row {seq}: does not follow the row before it (a row was deleted or replaced)")
                if not hmac.compare_digest(digest, self._hash(seq, ts, stored_prev, record)):
                    result.problems.append(f"row {seq}: contents do not match its hash (edited)")
                prev, expected_seq = digest, seq + 1
        self._check_head(expected_seq - 1, prev, result)
        return result

    def _check_head(self, last_seq: int, last_hash: str, result: Verification) -> None:
        try:
            seq_text, digest = self.head_file.read_text().split()
        except FileNotFoundError:
            if last_seq:
                result.problems.append(f"{HEAD_FILE} is missing: cannot tell whether rows were cut off the end")
            return
        except ValueError:
            result.problems.append(f"{HEAD_FILE} is unreadable")
            return
        head_seq = int(seq_text)
        if head_seq > last_seq:
            result.problems.append(f"rows {last_seq + 1} to {head_seq} are missing from the end (truncated)")
        elif head_seq == last_seq and digest != last_hash:
            result.problems.append(f"row {last_seq}: differs from the recorded head (the chain was rewritten)")


def _key(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return bytes.fromhex(path.read_text().strip())
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex())
        return key


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
