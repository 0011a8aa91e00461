"""The offload step: large parts of a result move to the artifact store and leave a pointer behind.

Per part of a `CallToolResult` (or `ReadResourceResult`), measured as its own bytes (text as UTF-8, binary
decoded, structured content as compact JSON; see traps/sizes.py):

- a text block (or embedded text resource) above the threshold is stored as its exact UTF-8 bytes, kind
  `json` when it parses as a JSON object or array, else `text`; a pointer text block takes its place;
- `structured_content` above the threshold is stored as `json.dumps(value, ensure_ascii=False,
  separators=(",", ":"))` in UTF-8 (so a read returns that canonical text, not the downstream's own
  spacing) and replaced by `{"offloaded": {uri, bytes, sha256}, "shape": {...}}`;
- an image, audio or embedded blob above the threshold is stored as its decoded bytes with its mimeType
  (kind `blob`) and a pointer text block takes its place;
- everything else (and every part at or under the threshold) is kept exactly as it came; so are resource
  contents whose URI is already an artifact's (`fmos://artifacts/...`), or reading one back would loop.

Pointers keep their block's position (content[i] stays content[i]) and carry `_meta["fmos/offload"]`. The
result's `_meta` (merged with what it had) gets `"fmos/offload": {"uri", "bytes", "sha256"}` of the first
artifact, and also `"fmos/offloads": [{...}, ...]` in content order (structured content last) when several
were made. `resources/read` of the URI gives back the stored bytes exactly (`artifact_resource`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

import mcp_types as types

from fmos_mcp.context.artifacts import URI_PREFIX, Artifact
from fmos_mcp.context.readers import decode
from fmos_mcp.context.shape import compact, describe, fit_shape, preview

StorePut = Callable[[bytes, str, str | None], Artifact]  # (data, kind, mime) -> Artifact
META_ONE, META_MANY = "fmos/offload", "fmos/offloads"
SUMMARIES = ("shape", "preview", "none")

Result = types.CallToolResult | types.ReadResourceResult


def offload_result(result: Result, threshold_bytes: int, preview_bytes: int, summary_mode: str,
                   store_put: StorePut) -> tuple[Result, list[Artifact]]:
    """The result with every part above `threshold_bytes` stored and replaced; the artifacts made."""
    if summary_mode not in SUMMARIES:
        raise ValueError(f"summary must be one of {SUMMARIES}, not {summary_mode!r}")
    step = _Offload(threshold_bytes, preview_bytes, summary_mode, store_put)
    if isinstance(result, types.ReadResourceResult):
        contents = [step.resource_contents(c) for c in result.contents]
        changes: dict[str, Any] = {"contents": contents}
    else:
        changes = {"content": [step.block(b) for b in result.content]}
        if result.structured_content is not None:
            changes["structured_content"] = step.structured(result.structured_content)
    if not step.made:
        return result, []
    changes["meta"] = _with_pointers(result.meta, step.made)
    return result.model_copy(update=changes), step.made


def artifact_resource(artifact: Artifact) -> types.ReadResourceResult:
    """`resources/read` of an artifact: its exact bytes, as text (text, json) or base64 (blob)."""
    if artifact.data is None:
        raise ValueError(f"{artifact.uri} was loaded without its bytes")
    mime = artifact.mime or ("application/json" if artifact.kind == "json" else
                             "text/plain" if artifact.kind == "text" else "application/octet-stream")
    contents: types.TextResourceContents | types.BlobResourceContents
    if artifact.kind == "blob":
        contents = types.BlobResourceContents(uri=artifact.uri, mime_type=mime,
                                              blob=base64.b64encode(artifact.data).decode("ascii"))
    else:
        contents = types.TextResourceContents(uri=artifact.uri, mime_type=mime, text=decode(artifact.data))
    return types.ReadResourceResult(contents=[contents], meta={"fmos/artifact": {
        "bytes": artifact.bytes, "sha256": artifact.sha256, "kind": artifact.kind}})


def _with_pointers(meta: dict[str, Any] | None, made: list[Artifact]) -> dict[str, Any]:
    """`fmos/offload` is always the first (in content order) artifact; `fmos/offloads` lists all of them
    when there are several (a tool's text and its structured content, say)."""
    merged = dict(meta or {})
    merged[META_ONE] = made[0].pointer()
    if len(made) > 1:
        merged[META_MANY] = [a.pointer() for a in made]
    return merged


class _Offload:
    def __init__(self, threshold: int, preview_bytes: int, summary: str, put: StorePut) -> None:
        self.threshold, self.preview_bytes, self.summary, self.put = threshold, preview_bytes, summary, put
        self.made: list[Artifact] = []

    def store(self, data: bytes, kind: str, mime: str | None) -> Artifact:
        artifact = self.put(data, kind, mime)
        if all(a.id != artifact.id for a in self.made):  # the same bytes twice: one artifact
            self.made.append(artifact)
        return artifact

    # ------------------------------------------------------------- parts of a tool result

    def block(self, block: Any) -> Any:
        if isinstance(block, types.TextContent):
            return self.text_block(block)
        if isinstance(block, types.ImageContent | types.AudioContent):
            return self.binary_block(block, block.data, block.mime_type, block.type)
        if isinstance(block, types.EmbeddedResource):
            replaced = self.resource_contents(block.resource)
            if replaced is block.resource:
                return block
            return _pointer_block(replaced.text, replaced.meta, block.annotations, block.meta)
        return block  # resource links are already pointers

    def text_block(self, block: types.TextContent) -> Any:
        data = block.text.encode("utf-8", "surrogatepass")
        if len(data) <= self.threshold:
            return block
        text, meta = self.pointer_text(data, None, block.text)
        return _pointer_block(text, meta, block.annotations, block.meta)

    def binary_block(self, block: Any, encoded: str, mime: str | None, what: str) -> Any:
        if len(encoded) * 3 // 4 <= self.threshold:  # cheap bound first: base64 is 4 chars per 3 bytes
            return block
        data = _b64(encoded)
        if data is None or len(data) <= self.threshold:  # undecodable: kept as it came
            return block
        artifact = self.store(data, "blob", mime)
        text = describe(artifact, f"{mime or 'binary'} {what}")
        return _pointer_block(text, {META_ONE: artifact.pointer()}, block.annotations, block.meta)

    def structured(self, value: Any) -> Any:
        try:
            data = compact(value).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):
            return value
        if len(data) <= self.threshold:
            return value
        artifact = self.store(data, "json", "application/json")
        return {"offloaded": artifact.pointer(), "shape": fit_shape(value)}

    # ------------------------------------------------------------- resource contents

    def resource_contents(self, contents: Any) -> Any:
        if contents.uri.startswith(URI_PREFIX):  # an artifact being read back: offloading it again would loop
            return contents
        if isinstance(contents, types.TextResourceContents):
            data = contents.text.encode("utf-8", "surrogatepass")
            if len(data) <= self.threshold:
                return contents
            text, meta = self.pointer_text(data, contents.mime_type, contents.text)
        else:
            data = _b64(contents.blob) if len(contents.blob) * 3 // 4 > self.threshold else None
            if data is None or len(data) <= self.threshold:
                return contents
            artifact = self.store(data, "blob", contents.mime_type)
            text, meta = describe(artifact, f"{contents.mime_type or 'binary'} resource"), {META_ONE: artifact.pointer()}
        merged_meta = {**(contents.meta or {}), **meta}
        return types.TextResourceContents(uri=contents.uri, mime_type="text/plain", text=text, meta=merged_meta)

    def pointer_text(self, data: bytes, mime: str | None, text: str) -> tuple[str, dict[str, Any]]:
        value, is_json = _as_json(text)
        kind = "json" if is_json else "text"
        artifact = self.store(data, kind, mime or ("application/json" if is_json else "text/plain"))
        shape = head = None
        if self.summary == "shape" and is_json:
            shape = fit_shape(value)
        elif self.summary != "none":
            head = preview(text, self.preview_bytes)
        what = "JSON text" if is_json else "text"
        return describe(artifact, what, shape=shape, head=head), {META_ONE: artifact.pointer()}


def _pointer_block(text: str, meta: dict[str, Any] | None, annotations: Any, old_meta: dict[str, Any] | None) -> Any:
    return types.TextContent(type="text", text=text, annotations=annotations, meta={**(old_meta or {}), **(meta or {})})


def _as_json(text: str) -> tuple[Any, bool]:
    """A JSON object or array (scalars are not worth a shape)."""
    start = text.lstrip()[:1]
    if start not in ("{", "["):
        return None, False
    try:
        return json.loads(text), True
    except (ValueError, RecursionError):
        return None, False


def _b64(encoded: str) -> bytes | None:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        try:  # MIME-style base64 with line breaks
            return base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
