"""Structured logging: JSON lines on stderr, never stdout (stdout is JSON-RPC in stdio mode)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

# Keys whose values are never written to a log, whatever the level.
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|authorization|api[_-]?key|cookie|credential)", re.I)
_REDACTED = "[redacted]"


def _redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if _SECRET_KEY.search(key):
            event[key] = _REDACTED
        elif key in ("env", "headers") and isinstance(event[key], dict):
            event[key] = {k: _REDACTED for k in event[key]}
    return event


_SECRET_TEXT = re.compile(
    r"(\bbearer\s+)[^\s\"',;]{6,}"
    r"|((?:token|secret|password|passwd|api[_-]?key|authorization)[\"']?\s*[:=]?\s*[\"']?)(?!bearer\b)[^\s\"',;]{6,}"
    r"|\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bAKIA[0-9A-Z]{16}\b|\b[A-Za-z0-9+/_-]{40,}={0,2}",
    re.IGNORECASE,
)


_URL_USERINFO = re.compile(r"(https?://)[^/\s@'\"]+@")
_URL_QUERY = re.compile(r"(https?://[^\s'\"?#]*)\?[^\s'\"#]*")


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    """Mask secrets in free text a process printed: values we know are secret, URL credentials and query
    strings, and what looks like a token."""
    for value in known:
        if len(value) >= 6:
            text = text.replace(value, _REDACTED)
    text = _URL_QUERY.sub(rf"\1?{_REDACTED}", _URL_USERINFO.sub(rf"\1{_REDACTED}@", text))
    return _SECRET_TEXT.sub(lambda m: (m.group(1) or m.group(2) or "") + _REDACTED, text)


def secrets_of(*groups: Iterable[str]) -> tuple[str, ...]:
    """The values a server's configuration makes secret: env and header values, URL credentials and query values."""
    found: list[str] = []
    for group in groups:
        for value in group:
            found.append(value)
            for part in re.findall(r"//([^/@\s]+)@|[?&][^=&#\s]+=([^&#\s]+)", value):
                found.extend(p for p in part if p)
    return tuple(v for v in found if len(v) >= 6)


class _Stderr:
    """Whatever `sys.stderr` is when a line is written (a test harness or a host may replace it later)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", *, stream: Any = None) -> None:
    """Route structlog and the standard library (the MCP SDK, uvicorn) to one JSON stream on stderr."""
    stream = stream or _Stderr()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.processors.format_exc_info],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The SDK and servers log a line per request at INFO; keep them one notch quieter than ours.
    root.setLevel(max(numeric, logging.WARNING))
    for noisy in ("mcp", "uvicorn.access", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def get(name: str) -> Any:
    return structlog.get_logger(name)
