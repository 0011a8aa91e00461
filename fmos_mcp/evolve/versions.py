"""Versioned artifacts in the state database: policies, skills, trap models and routing tables, each version
with its provenance, and one history of everything done to them.

A version is `candidate` when proposed, `refused` when the evaluation gate said no, `canary` while it serves a
share of sessions, `active` when it serves everyone, `retired` when a newer one replaced it and `rolled-back`
when it was taken back. At most one version of a kind is active and at most one is in canary.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from fmos_mcp.state.db import StateDB

KINDS = ("policies", "skills", "trap-model", "routing")


class VersionError(Exception):
    """A request the history does not allow (the message says why)."""


@dataclass(frozen=True)
class Version:
    id: int
    kind: str
    version: int
    status: str
    body: str
    sha256: str
    provenance: dict[str, Any]
    parent: int | None
    share: float | None
    evaluation: dict[str, Any] | None
    created: float

    @property
    def label(self) -> str:
        return f"#{self.id} {self.kind} v{self.version}"


class VersionStore:
    def __init__(self, db: StateDB) -> None:
        self.db = db

    # ----------------------------------------------------------------- reading

    def get(self, ref: int | str) -> Version:
        """By id (`7`, `#7`) or `kind@version` (`trap-model@3`)."""
        text = str(ref).lstrip("#")
        if "@" in text:
            kind, _, number = text.partition("@")
            rows = self._select("kind = ? AND version = ?", [kind, _int(number, text)])
        else:
            rows = self._select("id = ?", [_int(text, text)])
        if not rows:
            raise VersionError(f"no version {ref!r} (see `fmos-mcp evolve log`)")
        return rows[0]

    def active(self, kind: str) -> Version | None:
        rows = self._select("kind = ? AND status = 'active'", [kind])
        return rows[0] if rows else None

    def canary(self, kind: str) -> Version | None:
        rows = self._select("kind = ? AND status = 'canary'", [kind])
        return rows[0] if rows else None

    def all(self, kind: str | None = None) -> list[Version]:
        return self._select("kind = ?", [kind]) if kind else self._select("1", [])

    def history(self, last: int = 50) -> list[dict[str, Any]]:
        with self.db.locked() as db:
            rows = db.execute("SELECT ts, kind, version, action, actor, detail FROM evolve_log ORDER BY id DESC LIMIT ?",
                              [last]).fetchall()
        return [{"ts": r[0], "kind": r[1], "version": r[2], "action": r[3], "actor": r[4],
                 "detail": json.loads(r[5]) if r[5] else {}} for r in reversed(rows)]

    def stamp(self) -> tuple[Any, ...]:
        """Changes when any version's status changes (what a running gateway polls)."""
        with self.db.locked() as db:
            return tuple(db.execute("SELECT count(*), max(id), group_concat(id || status || coalesce(share, ''))"
                                    " FROM versions").fetchone())

    # ----------------------------------------------------------------- changing

    def propose(self, kind: str, body: str, provenance: dict[str, Any], *, actor: str) -> Version:
        if kind not in KINDS:
            raise VersionError(f"unknown artifact kind {kind!r}; one of {', '.join(KINDS)}")
        digest = hashlib.sha256(body.encode()).hexdigest()
        active = self.active(kind)
        with self.db.locked() as db, db.conn:
            number = (db.execute("SELECT max(version) FROM versions WHERE kind = ?", [kind]).fetchone()[0] or 0) + 1
            cursor = db.execute(
                "INSERT INTO versions (kind, version, status, body, sha256, provenance, parent, created) "
                "VALUES (?, ?, 'candidate', ?, ?, ?, ?, ?)",
                [kind, number, body, digest, json.dumps(provenance, sort_keys=True), active.id if active else None,
                 time.time()])
            self._log(db, kind, number, "propose", actor, {"id": cursor.lastrowid, **provenance})
        return self.get(cursor.lastrowid)

    def adopt(self, kind: str, body: str, provenance: dict[str, Any], *, actor: str) -> Version:
        """Record `body` as the active version unless it already is (an operator's edit of the files)."""
        active = self.active(kind)
        if active is not None and active.sha256 == hashlib.sha256(body.encode()).hexdigest():
            return active
        return self.promote(self.propose(kind, body, provenance, actor=actor).id, actor=actor)

    def evaluated(self, ref: int | str, evaluation: dict[str, Any], *, refused: bool, actor: str) -> Version:
        version = self.get(ref)
        with self.db.locked() as db, db.conn:
            status = "refused" if refused and version.status == "candidate" else version.status
            db.execute("UPDATE versions SET evaluation = ?, status = ? WHERE id = ?",
                       [json.dumps(evaluation, sort_keys=True), status, version.id])
            self._log(db, version.kind, version.version, "refuse" if refused else "eval", actor,
                      {"gate": evaluation.get("gate")})
        return self.get(version.id)

    def start_canary(self, ref: int | str, share: float, *, actor: str) -> Version:
        version = self.get(ref)
        if version.status == "refused":
            raise VersionError(f"{version.label} was refused by the evaluation gate; propose a new candidate")
        if version.status not in ("candidate", "canary"):
            raise VersionError(f"{version.label} is {version.status}; only a candidate can start a canary")
        if not 0 < share <= 100:
            raise VersionError(f"--share is a percentage of sessions in (0, 100], not {share}")
        with self.db.locked() as db, db.conn:
            db.execute("UPDATE versions SET status = 'candidate', share = NULL WHERE kind = ? AND status = 'canary'",
                       [version.kind])
            db.execute("UPDATE versions SET status = 'canary', share = ? WHERE id = ?", [share, version.id])
            self._log(db, version.kind, version.version, "canary", actor, {"share": share})
        return self.get(version.id)

    def promote(self, ref: int | str, *, actor: str) -> Version:
        version = self.get(ref)
        if version.status == "refused":
            raise VersionError(f"{version.label} was refused by the evaluation gate; it cannot be promoted")
        return self._activate(version, "promote", actor, {})

    def rollback(self, kind: str, ref: int | str | None = None, *, actor: str, why: str = "") -> Version:
        """Stop a running canary, or go back to `ref`, or to the version the active one replaced."""
        canary = self.canary(kind)
        if canary is not None and ref is None:
            with self.db.locked() as db, db.conn:
                db.execute("UPDATE versions SET status = 'rolled-back' WHERE id = ?", [canary.id])
                self._log(db, kind, canary.version, "rollback", actor, {"canary": True, "why": why})
            return self.active(kind) or canary
        active = self.active(kind)
        if ref is not None:
            target = self.get(ref)
        elif active is not None and active.parent is not None:
            target = self.get(active.parent)
        else:
            raise VersionError(f"no earlier {kind} version to roll back to (see `fmos-mcp evolve log`)")
        if target.kind != kind:
            raise VersionError(f"{target.label} is not a {kind} version")
        return self._activate(target, "rollback", actor, {"why": why, "from": active.version if active else None},
                              demoted="rolled-back")

    def _activate(self, version: Version, action: str, actor: str, detail: dict[str, Any], *,
                  demoted: str = "retired") -> Version:
        with self.db.locked() as db, db.conn:
            db.execute(f"UPDATE versions SET status = '{demoted}' WHERE kind = ? AND status = 'active' AND id != ?",
                       [version.kind, version.id])
            db.execute("UPDATE versions SET status = 'active', share = NULL WHERE id = ?", [version.id])
            self._log(db, version.kind, version.version, action, actor, {"id": version.id, **detail})
        return self.get(version.id)

    # ----------------------------------------------------------------- internals

    def _select(self, where: str, args: list[Any]) -> list[Version]:
        with self.db.locked() as db:
            rows = db.execute("SELECT id, kind, version, status, body, sha256, provenance, parent, share, evaluation,"
                              f" created FROM versions WHERE {where} ORDER BY id", args).fetchall()
        return [Version(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8],
                        json.loads(r[9]) if r[9] else None, r[10]) for r in rows]

    @staticmethod
    def _log(db: Any, kind: str, version: int | None, action: str, actor: str, detail: dict[str, Any]) -> None:
        db.execute("INSERT INTO evolve_log (ts, kind, version, action, actor, detail) VALUES (?, ?, ?, ?, ?, ?)",
                   [time.time(), kind, version, action, actor, json.dumps(detail, sort_keys=True)])


def _int(text: str, ref: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise VersionError(f"{ref!r} is not a version: give an id (7) or kind@version (trap-model@3)") from None
