"""What a trap decision saw, as features a learned trap can train on, with no argument value in the clear.

Arguments become shape tokens: type, length bucket, character classes (digits, shell syntax, path separators,
URLs, ...), numbers as signed log2 buckets, and short identifier-like values (an environment, a region, a
size) as keyed pseudonyms: HMAC-SHA256 under a per-installation secret that is never exported. A learned
model can tell `environment=production` from `staging` without any export carrying either word.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from fmos_mcp.trust.detectors.outputs import injection

_IDENT = re.compile(r"^[A-Za-z0-9_.:@+-]{1,40}$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_CLASSES = {
    "digit": re.compile(r"\d"), "upper": re.compile(r"[A-Z]"), "space": re.compile(r"\s"),
    "shell": re.compile(r"[;|&`$<>]"), "path": re.compile(r"[/\\]"), "url": re.compile(r"://"),
    "dotdot": re.compile(r"\.\."), "nonascii": re.compile(r"[^\x00-\x7f]"), "quote": re.compile(r"[\"']"),
}
_LENGTHS = (0, 8, 32, 128, 1024)
_DIGITS, _LETTERS = re.compile(r"\d+"), re.compile(r"[A-Za-z]+")
MAX_LEAVES = 32


def pseudonym(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:10]


def argument_tokens(arguments: Mapping[str, Any] | None, key: bytes) -> list[str]:
    """Shape tokens of a call's arguments (at most `MAX_LEAVES` leaves, nested two levels)."""
    tokens: list[str] = []
    for path, value in _leaves(arguments or {}, "", 0):
        tokens += _value_tokens(path, value, key)
        if len(tokens) > 8 * MAX_LEAVES:
            break
    return tokens


def _leaves(value: Any, path: str, depth: int) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping) and depth < 2:
        for i, (k, v) in enumerate(value.items()):
            if i >= MAX_LEAVES:
                return
            name = k if isinstance(k, str) and _KEY.match(k) else "?"  # a free-form key could itself be data
            yield from _leaves(v, f"{path}.{name}" if path else name, depth + 1)
    elif isinstance(value, list) and depth < 2:
        yield path, value
        for item in value[:4]:
            yield from _leaves(item, path + "[]", depth + 1)
    else:
        yield path, value


def _value_tokens(path: str, value: Any, key: bytes) -> list[str]:
    a = f"a.{path}"
    if value is None:
        return [f"{a}:null"]
    if isinstance(value, bool):
        return [f"{a}={str(value).lower()}"]
    if isinstance(value, int | float):
        magnitude = int(math.log2(abs(value) + 1)) if math.isfinite(value) else 99
        out = [f"{a}:num{'-' if value < 0 else '+'}{magnitude}"]
        if float(value).is_integer() and abs(value) <= 16:  # small counts (replicas, hours) matter exactly
            out.append(f"{a}:int={int(value)}")
        return out
    if isinstance(value, list):
        return [f"{a}:list{_bucket(len(value))}"]
    if isinstance(value, Mapping):
        return [f"{a}:object"]
    text = str(value)
    out = [f"{a}:str", f"{a}:len{_bucket(len(text))}"]
    out += [f"{a}:has_{name}" for name, pattern in _CLASSES.items() if pattern.search(text)]
    if len(text) >= 16:  # free text: what the output detectors would say of it, by kind (a score, not a verdict)
        out += sorted({f"{a}:says_{f.kind}" for f in injection(text[:4096])})
    if _IDENT.match(text):
        out.append(f"{a}=#{pseudonym(key, text)}")
        out.append(f"{a}:shape={_shape(text)}")
    return out


def _shape(text: str) -> str:
    """Structure without content: runs of digits become 9, of letters a ('1.4.3-rc1' -> '9.9.9-a9')."""
    return _LETTERS.sub("a", _DIGITS.sub("9", text))[:24]


def _bucket(n: int) -> int:
    return next((i for i, edge in enumerate(_LENGTHS) if n <= edge), len(_LENGTHS))


def call_features(*, server: str, tool: str, classes: Iterable[str], roles: Iterable[str], at: datetime,
                  arguments: Mapping[str, Any] | None, findings: Iterable[str], session: Mapping[str, int],
                  key: bytes) -> dict[str, Any]:
    """The features of one tool call as the trust plane saw it (JSON-ready, no values in the clear)."""
    return {
        "server": server, "tool": tool, "classes": sorted(classes), "roles": sorted(roles),
        "hour": at.hour, "weekday": at.weekday(),
        "args": argument_tokens(arguments, key), "findings": sorted(findings), "session": dict(session),
    }


def tokens(features: Mapping[str, Any]) -> list[str]:
    """The binary features a trap model reads."""
    hour, session = features.get("hour", 0), features.get("session") or {}
    out = [f"tool:{features.get('server')}/{features.get('tool')}"]
    out += [f"class:{c}" for c in features.get("classes", ())]
    out += [f"role:{r}" for r in features.get("roles", ())] or ["role:none"]
    out += [f"hour:{hour // 3}", "weekend" if features.get("weekday", 0) >= 5 else "weekday"]
    if hour < 7 or hour >= 19:
        out.append("offhours")
    out += list(features.get("args", ()))
    out += [f"finding:{f}" for f in features.get("findings", ())]
    for name, count in session.items():
        out.append(f"s.{name}:{min(int(count), 3) if name != 'calls' else _bucket(int(count))}")
        if name != "calls" and count:
            out.append(f"s.{name}:any")
    return out + _pairs(out)


def _pairs(tokens: list[str]) -> list[str]:
    """Conjunctions of what a call's meaning hangs on (values, numbers, shapes, roles, time): a linear model
    then learns 'this service at this replica count' or 'this role at night', not each alone."""
    keyish = sorted({t for t in tokens if _KEYISH.search(t)})[:MAX_PAIRED]
    return [f"{a}&{b}" for i, a in enumerate(keyish) for b in keyish[i + 1:]]


_KEYISH = re.compile(r"=#|:num|:int=|:shape=|^role:|^offhours$|^weekend$|^hour:")
MAX_PAIRED = 16


class SessionHistory:
    """Per-session counts of what the trust plane saw (calls, denies, judge denies, approvals asked, refusals):
    the 'recent traps in the session' a trap decision may look at. Bounded: the oldest sessions drop out."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._counts: dict[str, Counter[str]] = {}

    def of(self, session: str) -> dict[str, int]:
        counts = self._counts.get(session)
        return {name: counts.get(name, 0) for name in COUNTED} if counts else dict.fromkeys(COUNTED, 0)

    def bump(self, session: str, name: str) -> None:
        counts = self._counts.pop(session, None) or Counter()
        counts[name] += 1
        self._counts[session] = counts  # re-inserted: dict order is recency
        if len(self._counts) > self.limit:
            del self._counts[next(iter(self._counts))]


COUNTED = ("calls", "denies", "judge_denies", "approvals", "refusals")
