"""Credentials in text: high-precision patterns for keys, tokens and passwords.

Precision matters more here than in log redaction: outputs are redacted before the model sees them and
arguments that match are refused, so a commit hash or a UUID must never match.
"""

from __future__ import annotations

import re

REDACTED = "[redacted by fmos]"

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private-key", re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z]+ )*PRIVATE KEY-----|$)")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("aws-secret-key", re.compile(r"(?i)aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})")),
    ("github-token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}\b")),
    ("api-key", re.compile(r"\b(?:sk|rk)-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{20,}\b|\bsk_(?:live|test)_[A-Za-z0-9]{16,}\b")),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("url-password", re.compile(r"(?<=://)[^/\s:@'\"]+:([^/\s@'\"]{3,})(?=@)")),
    ("password-assignment", re.compile(
        r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
        r"[\"']?\s*[:=]\s*[\"']?([^\s\"',;}{]{6,})")),
    ("bearer-token", re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{16,})")),
]


def find(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every secret value; for key=value forms, only the value."""
    hits = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            start, end = (match.start(1), match.end(1)) if match.lastindex else match.span()
            if not _placeholder(text[start:end]):
                hits.append((kind, start, end))
    return hits


def redact(text: str) -> tuple[str, list[str]]:
    """The text with every secret value replaced, and the kinds that were found."""
    hits = find(text)
    if not hits:
        return text, []
    spans = sorted({(s, e) for _, s, e in hits})
    out, last = [], 0
    for start, end in spans:
        if start < last:  # overlapping matches: the first one already covered it
            continue
        out += [text[last:start], REDACTED]
        last = end
    out.append(text[last:])
    return "".join(out), sorted({k for k, _, _ in hits})


def _placeholder(value: str) -> bool:
    """`${DB_PASSWORD}`, `<password>`, `****`, `changeme`: mentions of secrets, not secrets."""
    v = value.strip("\"'")
    return (v.startswith(("${", "<", "{{", "%")) or set(v) <= set("*xX.-_") or v.lower() in
            {"changeme", "password", "redacted", "[redacted]", "none", "null", "example", "secret"})
