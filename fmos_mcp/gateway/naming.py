"""Exposed names: `NAME__tool`, always valid under `[A-Za-z0-9._-]{1,128}`, deterministic, collision-free."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_NAME = 128
SEPARATOR = "__"
_INVALID = re.compile(r"[^A-Za-z0-9._-]")
VALID_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def _digest(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def sanitize(part: str) -> str:
    return _INVALID.sub("_", part) or "_"


def exposed_name(prefix: str | None, name: str) -> str:
    """The name a host sees. Too long or invalid input is rewritten deterministically (with a hash tail)."""
    raw = f"{prefix}{SEPARATOR}{name}" if prefix else name
    clean = f"{sanitize(prefix)}{SEPARATOR}{sanitize(name)}" if prefix else sanitize(name)
    if clean == raw and len(clean) <= MAX_NAME:
        return clean
    return _with_tail(clean, _digest(prefix or "", name))


def _with_tail(base: str, tail: str) -> str:
    return f"{base[: MAX_NAME - len(tail) - 1]}-{tail}"


@dataclass(frozen=True, slots=True)
class Claim:
    server: str
    original: str
    wanted: str


def assign(claims: Iterable[Claim]) -> tuple[dict[str, Claim], list[str]]:
    """Give every claim a distinct name. Claims arrive in a deterministic order; the first keeps its name,
    later ones on the same name get a hash tail of (server, original). Returns the table and the conflicts."""
    table: dict[str, Claim] = {}
    conflicts: list[str] = []
    for claim in claims:
        name = claim.wanted
        if name in table:
            owner = table[name]
            name = _with_tail(claim.wanted, _digest(claim.server, claim.original))
            conflicts.append(
                f"'{claim.wanted}' from server '{claim.server}' collides with server '{owner.server}'; exposed as '{name}'"
            )
            salt = 0
            while name in table:  # a hash collision on top of a name collision: practically never
                salt += 1
                name = _with_tail(claim.wanted, _digest(claim.server, claim.original, str(salt)))
        table[name] = claim
    return table, conflicts
