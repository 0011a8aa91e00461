"""Payload sizes as the content's own bytes (text as UTF-8, binary as decoded bytes), not the JSON frame."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def content_bytes(value: Any) -> int:
    """Bytes of what a result carries: text, decoded blobs and images, structured content."""
    if value is None:
        return 0
    known = getattr(value, "wire_bytes", None)
    if known is not None:  # measured once where it was built (a list page)
        return known
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, Mapping):
        return json_bytes(value)
    total = 0
    for block in _blocks(value):
        text = getattr(block, "text", None)
        if isinstance(text, str):
            total += len(text.encode("utf-8", "surrogatepass"))
        data = getattr(block, "data", None) or getattr(block, "blob", None)
        if isinstance(data, str):
            total += len(data) * 3 // 4  # base64
        resource = getattr(block, "resource", None)
        if resource is not None:
            total += content_bytes([resource])
    structured = getattr(value, "structured_content", None)
    if structured is not None:
        total += json_bytes(structured)
    return total


def json_bytes(value: Any) -> int:
    try:
        return len(json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError):
        return 0


def _blocks(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    for attr in ("content", "contents", "messages"):
        blocks = getattr(value, attr, None)
        if isinstance(blocks, list):
            if attr == "messages":
                return [getattr(m, "content", None) for m in blocks]
            return blocks
    content = getattr(value, "content", None)  # sampling results carry a single block
    return [content] if content is not None else []
