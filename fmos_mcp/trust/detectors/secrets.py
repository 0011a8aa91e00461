"""Credentials in text: high-precision patterns for keys, tokens and passwords.

Precision matters more here than in log redaction: outputs are redacted before the model sees them and
arguments that match are refused, so a commit hash or a UUID must never match.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import lru_cache
from typing import Any

REDACTED = "[redacted by fmos]"

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private-key", re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z]+ )*PRIVATE KEY-----|$)")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("aws-secret-key", re.compile(r"(?i)aws_?secret_?access_?key[\"']?\s*(?:[:=]\s*|\s+)[\"']?([A-Za-z0-9/+=]{40})")),
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
    # environment-style assignments: DB_PASSWORD=..., PGPASSWORD=..., STRIPE_API_KEY=...
    ("env-secret", re.compile(
        r"\b[A-Z][A-Z0-9_]*(?:PASSWORD|PASSWD|_PWD|SECRET|_TOKEN|API_KEY|APIKEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)"
        r"[\"']?\s*[:=]\s*[\"']?([^\s\"',;}{]{6,})")),
    # secrets handed to a command line as an option value: --password X, --token=X, docker login -p X
    ("cli-secret", re.compile(
        r"(?i)--(?:password|passwd|token|secret|api[-_]?key|client[-_]secret|access[-_]key|auth[-_]token)(?:=|\s+)"
        r"['\"]?([^\s'\"$<{-][^\s'\"]{5,})"
        r"|\b(?:docker|podman|helm|oras|nerdctl)\b[^\n|;]{0,40}\blogin\b[^\n|;]{0,100}?\s-p\s+['\"]?([^\s'\"$<{-][^\s'\"]{3,})")),
    # user:password given to an HTTP client: curl -u admin:S3cret, wget --password
    ("cli-user-password", re.compile(r"(?i)\b(?:curl|wget|http)\b[^\n|;]{0,120}?\s(?:-u|--user)(?:=|\s+)['\"]?[^\s:'\"]+:"
                                     r"([^\s'\"$<{][^\s'\"]{3,})")),
    # a password told in words: "the root password is Winter2026!", "ssh pass: hunter2!!"
    ("prose-password", re.compile(
        r"(?i)\b(?:pass(?:word|phrase)?|pwd|pw|pin)\s+(?:for\s+\S+\s+)?(?:is|was|=|:)\s+['\"]?"
        r"((?=[^\s'\"]*[\d!@#$%^&*?])(?=[^\s'\"]*[A-Za-z])[^\s'\"]{6,})")),
    # credentials of the HTTP Basic scheme, and webhook URLs (whoever holds one can post as the owner)
    ("basic-auth", re.compile(r"\bBasic\s+([A-Za-z0-9+/]{12,}={0,2})(?![A-Za-z0-9+/=])")),
    ("webhook-url", re.compile(r"https://(?:hooks\.slack\.com/services|discord(?:app)?\.com/api/webhooks|[\w-]+\.webhook\.office\.com)"
                               r"/[A-Za-z0-9/_-]{16,}")),
    # tokens with a vendor prefix
    ("vendor-token", re.compile(r"\b(?:glpat-[A-Za-z0-9_-]{20}|npm_[A-Za-z0-9]{36}|pypi-AgE[A-Za-z0-9_-]{50,}|hf_[A-Za-z]{34}|"
                                r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}|dop_v1_[a-f0-9]{64}|xapp-\d-[A-Za-z0-9-]{20,}|"
                                r"shpat_[a-fA-F0-9]{32}|sq0atp-[A-Za-z0-9_-]{22})\b")),
    # a password given on a database client's command line: mysql -pS3cret, mysql -p'S3cret'
    ("cli-password", re.compile(r"\b(?:mysql|mysqldump|mysqladmin|mariadb)\b[^\n|;]{0,200}?\s-p(?:'([^'\s]{4,})'|\"([^\"\s]{4,})\"|([^\s'\"-][^\s'\"]{3,}))")),
]


# Every pattern above needs one of these (lower-cased) substrings: text with none of them is skipped at once.
_ANCHORS = ("private key", "akia", "asia", "aws", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk-", "rk-",
            "sk_", "xox", "aiza", "eyj", "://", "passw", "pwd", "secret", "api", "access", "auth", "bearer", "token",
            "credential", "mysql", "mariadb", "private_key", "login", "basic", "glpat-", "npm_", "pypi-", "hf_", "sg.",
            "dop_v1_", "shpat_", "sq0atp-", "curl", "wget", "http", "pass", "pw", "pin")


def possible(text: str) -> bool:
    """A cheap test that is true whenever `find` could find something."""
    low = text.lower()
    return any(anchor in low for anchor in _ANCHORS)


def find(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every secret value; for key=value forms, only the value."""
    if len(text) < 8:
        return []
    if len(text) <= CACHED_LENGTH:  # short values (names, enum values, ids) come back again and again
        return list(_find_cached(text))
    return _find(text)


CACHED_LENGTH = 512


@lru_cache(maxsize=8192)
def _find_cached(text: str) -> tuple[tuple[str, int, int], ...]:
    return tuple(_find(text))


def _find(text: str) -> list[tuple[str, int, int]]:
    if not possible(text):
        return []
    hits = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            group = next((g for g in range(1, (match.lastindex or 0) + 1) if match.group(g) is not None), 0)
            start, end = match.span(group)
            if not placeholder(text[start:end]) and (kind != "basic-auth" or _user_password(text[start:end])):
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


def _user_password(token: str) -> bool:
    """Basic credentials are base64 of user:password."""
    try:
        return b":" in base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False


def redacted_json(value: Any, limit: int) -> str:
    """`value` as JSON with its secrets redacted, then cut to `limit` characters (cutting first could split a
    secret so that no pattern recognises the part that is left)."""
    text, _ = redact(json.dumps(value, sort_keys=True, default=str))
    return text if len(text) <= limit else text[:limit] + "..."


def placeholder(value: str) -> bool:
    """`${DB_PASSWORD}`, `<password>`, `****`, `changeme`: mentions of secrets, not secrets."""
    v = value.strip("\"'")
    return (v.startswith(("${", "<", "{{", "%")) or set(v) <= set("*xX.-_") or v.lower() in
            {"changeme", "password", "redacted", "[redacted]", "none", "null", "example", "secret"})
