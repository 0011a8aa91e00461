"""What a detector reports: which check, what kind of attack, where, and a short excerpt (never a secret)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Finding:
    detector: str  # poisoning | shadowing | command-injection | path-traversal | secret | output-injection ...
    kind: str  # the signal, e.g. "hidden-unicode", "directive", "reverse-shell"
    where: str  # "description", "inputSchema.properties.path.description", "argument 'command'"
    excerpt: str = ""
    weight: int = 3  # poisoning findings add up; 3 or more quarantines

    def as_json(self) -> dict[str, Any]:
        out = {"detector": self.detector, "kind": self.kind, "where": self.where}
        if self.excerpt:
            out["excerpt"] = self.excerpt
        return out

    def describe(self) -> str:
        return f"{self.detector}/{self.kind} in {self.where}" + (f": {self.excerpt!r}" if self.excerpt else "")


def excerpt(text: str, start: int, end: int, width: int = 60) -> str:
    """A printable excerpt around a match, hidden characters shown as escapes."""
    lo, hi = max(0, start - 10), min(len(text), max(end, start + width))
    snippet = text[lo:hi]
    return "".join(c if c.isprintable() and not _invisible(c) else f"\\u{ord(c):04x}" for c in snippet)[:width + 20]


def _invisible(c: str) -> bool:
    o = ord(c)
    return o == 0xAD or 0x200B <= o <= 0x206F or 0xFE00 <= o <= 0xFE0F or 0xE0000 <= o <= 0xE0FFF or o in (0x115F, 0x1160, 0x3164, 0xFFA0)
