"""The offload store: payloads kept in the state database, per tenant, content-addressed, with retention.

An artifact's id is the first 32 hex digits of the SHA-256 of its bytes, so the same payload is stored once
per tenant and putting it again only refreshes its expiry. Every lookup is keyed by (tenant, id): another
tenant's artifact is indistinguishable from one that never existed.

Expired artifacts are refused at once. `purge_expired` then drops their bytes but keeps a small tombstone
(the row without its data) for `tombstone` seconds, so that an old pointer still says "expired" rather
than "unknown". Synchronous: callers run it on a worker thread.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fmos_mcp.durations import duration_text
from fmos_mcp.state.db import StateDB

URI_PREFIX = "fmos://artifacts/"
KINDS = ("text", "json", "blob")
_ID = re.compile(r"[0-9a-f]{32}")


class ArtifactNotFound(LookupError):
    """Unknown here: never stored for this tenant (or for any tenant), or gone long ago."""


class ArtifactExpired(LookupError):
    """Stored once, past its retention now."""


@dataclass(frozen=True)
class Artifact:
    id: str
    sha256: str
    bytes: int
    kind: str  # text | json | blob
    mime: str | None
    created: float = 0.0
    expires: float | None = None
    origin: str | None = None
    data: bytes | None = field(default=None, repr=False)  # set by `get`, not by `put`

    @property
    def uri(self) -> str:
        return URI_PREFIX + self.id

    def pointer(self) -> dict[str, object]:
        """What `_meta["fmos/offload"]` carries."""
        return {"uri": self.uri, "bytes": self.bytes, "sha256": self.sha256}


def artifact_uri(artifact_id: str) -> str:
    return URI_PREFIX + artifact_id


def parse_uri(uri: str) -> str:
    """The id in `fmos://artifacts/<id>`; a bare id is accepted too."""
    ident = uri.removeprefix(URI_PREFIX) if isinstance(uri, str) else ""
    if not _ID.fullmatch(ident):
        raise ValueError(f"not an artifact URI: {uri!r} (expected {URI_PREFIX}<32 hex digits>)")
    return ident


class ArtifactStore:
    def __init__(self, db: StateDB, retention: float | None, clock: Callable[[], float] = time.time,
                 tombstone: float | None = None) -> None:
        self.db = db
        self.retention = retention  # seconds; None keeps artifacts until deleted
        self.clock = clock
        self.tombstone = retention if tombstone is None else tombstone

    def put(self, tenant: str, data: bytes, kind: str, mime: str | None = None, origin: str | None = None) -> Artifact:
        if kind not in KINDS:
            raise ValueError(f"artifact kind must be one of {KINDS}, not {kind!r}")
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()  # outside the lock: 20 MB take ~10 ms
        ident, now = digest[:32], self.clock()
        expires = None if self.retention is None else now + self.retention
        with self.db.locked() as d, d.conn:
            row = d.execute("SELECT sha256, created, length(data) < bytes FROM artifacts WHERE tenant = ? AND id = ?",
                            [tenant, ident]).fetchone()
            if row is None:
                d.execute("INSERT INTO artifacts (tenant, id, sha256, bytes, kind, mime, data, origin, created, expires) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          [tenant, ident, digest, len(data), kind, mime, data, origin, now, expires])
                created = now
            else:
                if row[0] != digest:  # 128 bits collide only on purpose; refuse rather than serve wrong bytes
                    raise ValueError(f"artifact id collision for {artifact_uri(ident)}")
                created = now if row[2] else row[1]
                d.execute("UPDATE artifacts SET kind = ?, mime = ?, origin = ?, expires = ?, created = ?"
                          + (", data = ?" if row[2] else "") + " WHERE tenant = ? AND id = ?",
                          [kind, mime, origin, expires, created, *([data] if row[2] else []), tenant, ident])
        return Artifact(ident, digest, len(data), kind, mime, created, expires, origin)

    def get(self, tenant: str, ref: str) -> Artifact:
        """The artifact with its bytes; `ref` is an id or a URI."""
        ident = parse_uri(ref)
        with self.db.locked() as d:
            row = d.execute("SELECT sha256, bytes, kind, mime, created, expires, origin, data FROM artifacts "
                            "WHERE tenant = ? AND id = ?", [tenant, ident]).fetchone()
        if row is None:
            raise ArtifactNotFound(self._unknown(ident))
        sha, size, kind, mime, created, expires, origin, data = row
        if expires is not None and expires <= self.clock() or len(data) < size:
            raise ArtifactExpired(self._expired(ident, expires, origin))
        return Artifact(ident, sha, size, kind, mime, created, expires, origin, bytes(data))

    def purge_expired(self) -> int:
        """Drop the bytes of expired artifacts (tombstones stay a while); returns how many were dropped."""
        now = self.clock()
        with self.db.locked() as d, d.conn:
            dropped = d.execute("UPDATE artifacts SET data = x'' WHERE expires <= ? AND length(data) > 0 "
                                "AND bytes > 0", [now]).rowcount
            d.execute("DELETE FROM artifacts WHERE expires <= ? AND (bytes = 0 OR expires + ? <= ?)",
                      [now, self.tombstone or 0, now])
        return dropped

    def _unknown(self, ident: str) -> str:
        kept = f"; artifacts are kept {_duration(self.retention)}" if self.retention else ""
        return (f"no artifact {artifact_uri(ident)} for you: it was never stored for this tenant, "
                f"or it expired long ago{kept}")

    def _expired(self, ident: str, expires: float | None, origin: str | None) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires or 0))
        again = f"re-run {origin}" if origin else "re-run the tool that produced it"
        return (f"artifact {artifact_uri(ident)} expired at {when} (artifacts are kept "
                f"{_duration(self.retention)}) and its content is gone; {again} to get it again")


def _duration(seconds: float | None) -> str:
    return "until deleted" if seconds is None else duration_text(seconds)
