"""What the model sees in place of an offloaded payload: its shape, a head-and-tail preview, how to read more.

A shape is JSON-Schema-like and small: `{"type": "array", "length": 5000, "items": {"type": "object",
"properties": {...}, "optional": ["note"]}}`. Array items are merged (a sample of at most `max_items`, spread
over the array); a length that varies is `[min, max]`; a value of several types is `{"type": [..]}` for
scalars or `{"anyOf": [..]}`; objects list at most `max_keys` properties and count the rest in `moreKeys`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from fmos_mcp.context.readers import char_start, format_jq, format_path

if TYPE_CHECKING:
    from fmos_mcp.context.artifacts import Artifact

SHAPE_BYTES = 900  # with the instructions (~500 bytes) the pointer stays under ~1.5 KB
_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


# ----------------------------------------------------------------- shapes


def json_shape(value: Any, max_depth: int = 6, max_keys: int = 24, max_items: int = 64) -> dict[str, Any]:
    return _render(_infer(value, max_depth, max_keys, max_items), max_depth, max_keys)


def fit_shape(value: Any, budget_bytes: int = SHAPE_BYTES) -> dict[str, Any]:
    """The most detailed shape whose compact JSON fits the budget (at worst the outermost type alone)."""
    node = _infer(value, 6, 24, 64)  # once: the smaller renderings prune it
    for depth, keys in ((6, 24), (4, 16), (3, 10), (2, 6), (1, 4)):
        shape = _render(node, depth, keys)
        if len(compact(shape).encode()) <= budget_bytes:
            return shape
    return _render(node, 0, 0)


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# A node under inference maps each JSON type seen at one place to what was learnt about it:
# {"object": {"count": n, "props": {key: node}, "seen": {key: n}, "more": n}, "array": {"lengths": [lo, hi],
#  "items": node | None}, "string": None, ...}
Node = dict[str, Any]


def _infer(value: Any, depth: int, max_keys: int, max_items: int) -> Node:
    if isinstance(value, dict):
        props: dict[str, Node] = {}
        if depth > 0:
            for key in list(value)[:max_keys]:
                props[key] = _infer(value[key], depth - 1, max_keys, max_items)
        more = max(0, len(value) - max_keys) if depth > 0 else len(value)
        return {"object": {"count": 1, "props": props, "seen": dict.fromkeys(props, 1), "more": more}}
    if isinstance(value, list):
        items = None
        if depth > 0 and value:
            for item in _sample(value, max_items):
                node = _infer(item, depth - 1, max_keys, max_items)
                items = node if items is None else _merge(items, node, max_keys)
        return {"array": {"lengths": [len(value), len(value)], "items": items}}
    return {_SCALARS.get(type(value), "string"): None}


def _sample(items: list[Any], count: int) -> list[Any]:
    """At most `count` items spread evenly, first and last included."""
    if len(items) <= count:
        return items
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def _merge(a: Node, b: Node, max_keys: int) -> Node:
    out = dict(a)
    for kind, detail in b.items():
        if kind not in out:
            out[kind] = detail
        elif kind == "object":
            out[kind] = _merge_objects(out[kind], detail, max_keys)
        elif kind == "array":
            out[kind] = _merge_arrays(out[kind], detail, max_keys)
    return out


def _merge_objects(a: dict[str, Any], b: dict[str, Any], max_keys: int) -> dict[str, Any]:
    props, seen = dict(a["props"]), dict(a["seen"])
    more = max(a["more"], b["more"])
    for key, node in b["props"].items():
        if key in props:
            props[key] = _merge(props[key], node, max_keys)
            seen[key] += 1
        elif len(props) < max_keys:
            props[key], seen[key] = node, 1
        else:
            more += 1
    return {"count": a["count"] + b["count"], "props": props, "seen": seen, "more": more}


def _merge_arrays(a: dict[str, Any], b: dict[str, Any], max_keys: int) -> dict[str, Any]:
    lengths = [min(a["lengths"][0], b["lengths"][0]), max(a["lengths"][1], b["lengths"][1])]
    items = a["items"] if b["items"] is None else b["items"] if a["items"] is None else \
        _merge(a["items"], b["items"], max_keys)
    return {"lengths": lengths, "items": items}


def _render(node: Node, depth: int, keys: int) -> dict[str, Any]:
    if "integer" in node and "number" in node:
        node = {k: v for k, v in node.items() if k != "integer"}
    variants = [_render_one(kind, detail, depth, keys) for kind, detail in node.items()]
    if len(variants) == 1:
        return variants[0]
    if all(len(v) == 1 for v in variants):
        return {"type": [v["type"] for v in variants]}
    return {"anyOf": variants}


def _render_one(kind: str, detail: Any, depth: int, keys: int) -> dict[str, Any]:
    if kind == "array":
        lo, hi = detail["lengths"]
        out: dict[str, Any] = {"type": "array", "length": lo if lo == hi else [lo, hi]}
        if detail["items"] is not None and depth > 0:
            out["items"] = _render(detail["items"], depth - 1, keys)
        return out
    if kind == "object":
        shown = list(detail["props"])[:keys] if depth > 0 else []
        out = {"type": "object"}
        if shown:
            out["properties"] = {k: _render(detail["props"][k], depth - 1, keys) for k in shown}
        optional = [k for k in shown if detail["seen"][k] < detail["count"]]
        if optional:
            out["optional"] = optional
        more = detail["more"] + len(detail["props"]) - len(shown)
        if more:
            out["moreKeys"] = more
        return out
    return {"type": kind}


def example_path(shape: dict[str, Any] | None) -> list[str | int]:
    """A path to a leaf that exists, following first items and preferring scalar properties named like ids."""
    keys: list[str | int] = []
    while shape:
        if "anyOf" in shape:
            shape = shape["anyOf"][0]
        if shape.get("type") == "array" and shape.get("items") and shape.get("length"):
            keys.append(0)
            shape = shape["items"]
        elif shape.get("type") == "object" and shape.get("properties"):
            key = _pick_key(shape)
            keys.append(key)
            shape = shape["properties"][key]
        else:
            break
    return keys


def _pick_key(shape: dict[str, Any]) -> str:
    props, optional = shape["properties"], set(shape.get("optional", ()))
    always = [k for k in props if k not in optional] or list(props)
    for key in always:
        if key.lower() in ("id", "name", "title", "key"):
            return key
    nested = [k for k in always if props[k].get("type") in ("object", "array")]
    return nested[0] if nested and len(always) == 1 else always[0]


# ----------------------------------------------------------------- previews


MARKER = "… {} bytes omitted …\n"


def preview(text: str, budget_bytes: int) -> str:
    """Head and tail of `text` within about `budget_bytes` of UTF-8, cut on characters and, near the cut,
    on lines."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= budget_bytes:
        return text
    room = max(0, budget_bytes - len(MARKER.format(len(data)).encode()) - 1)
    head_end = _line_cut_back(data, char_start(data, room * 2 // 3))
    tail_start = _line_cut_forward(data, char_start(data, len(data) - (room - head_end)))
    head = data[:head_end].decode("utf-8", "surrogatepass")
    tail = data[tail_start:].decode("utf-8", "surrogatepass")
    return head + ("" if head.endswith("\n") else "\n") + MARKER.format(tail_start - head_end) + tail


def _line_cut_back(data: bytes, end: int) -> int:
    """End the head after the last newline in its final quarter, if there is one."""
    newline = data.rfind(b"\n", end - end // 4, end)
    return newline + 1 if newline >= 0 else end


def _line_cut_forward(data: bytes, start: int) -> int:
    """Start the tail after the first newline in its first quarter, if there is one."""
    newline = data.find(b"\n", start, start + (len(data) - start) // 4)
    return newline + 1 if 0 <= newline < len(data) - 1 else start


# ----------------------------------------------------------------- the pointer text


def describe(artifact: Artifact, what: str, *, shape: dict[str, Any] | None = None, head: str | None = None) -> str:
    """The text block that replaces a payload: what it was, its size, its shape (see `fit_shape`) or a
    preview, its URI and exactly how to read more. `what` says what it was ("JSON text", "image/png")."""
    expiry = f", kept until {_when(artifact.expires)}" if artifact.expires else ""
    lines = [f"[offloaded by fmos] {what}, {artifact.bytes:,} bytes, stored as {artifact.uri}{expiry}."]
    if shape is not None:
        lines.append("Shape: " + compact(shape))
    if head is not None:
        lines.append("Preview:\n" + head)
    lines += _how(artifact, shape)
    return "\n".join(lines)


def _how(artifact: Artifact, shape: dict[str, Any] | None) -> list[str]:
    uri = artifact.uri
    if artifact.kind == "blob":
        return [f"Read it: resources/read {uri} returns the original bytes (base64, {artifact.mime}); "
                f'fmos_read {{"uri": "{uri}", "offset": 0, "limit": 16383}} returns base64 slices.']
    how = [f'More: fmos_read {{"uri": "{uri}", "offset": 0, "limit": 16384}} (UTF-8 text by byte offset); '
           f'fmos_grep {{"uri": "{uri}", "pattern": "error", "context": 2}} (regex, line numbers)']
    if artifact.kind == "json":
        keys = example_path(shape)
        how.append(f'fmos_query {{"uri": "{uri}", "path": {compact(format_path(keys))}}} '
                   f"(JSONPath, or jq-like {format_jq(keys)}; $..id finds every id)")
    how.append(f"resources/read {uri} returns the exact original.")
    return ["; ".join(how)]


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
