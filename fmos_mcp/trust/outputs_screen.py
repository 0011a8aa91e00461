"""Screening results on their way to the host: credentials redacted, instructions neutralized, policy
redactions applied. Walks text content, embedded resource text and structured content alike."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types

from fmos_mcp.trust.detectors import outputs, secrets


@dataclass
class Screening:
    credentials: str = "redact"  # redact | block | log | off
    injection: str = "neutralize"  # neutralize | block | log | off
    patterns: tuple[re.Pattern[str], ...] = ()  # policy redactions
    values: tuple[str, ...] = ()  # argument values a redact rule names
    found: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.credentials != "off" or self.injection != "off" or bool(self.patterns or self.values)

    def text(self, text: str, where: str) -> str:
        if self.credentials != "off":
            redacted, kinds = secrets.redact(text)
            if kinds:
                self.found += [{"detector": "credential-exposure", "kind": k, "where": where} for k in kinds]
                if self.credentials == "redact":
                    text = redacted
        if self.injection != "off":
            hits = outputs.injection(text)
            if hits:
                self.found += [{**f.as_json(), "where": where} for f in hits]
                if self.injection == "neutralize":
                    text, _ = outputs.neutralize(text)
        for pattern in self.patterns:
            text, n = pattern.subn(secrets.REDACTED, text)
            if n:
                self.found.append({"detector": "policy-redaction", "kind": pattern.pattern[:40], "where": where})
        for value in self.values:
            if value and value in text:
                text = text.replace(value, secrets.REDACTED)
                self.found.append({"detector": "policy-redaction", "kind": "argument-value", "where": where})
        return text

    @property
    def block(self) -> bool:
        kinds = {f["detector"] for f in self.found}
        return (self.credentials == "block" and "credential-exposure" in kinds) or (
            self.injection == "block" and "output-injection" in kinds)


def screen_result(result: Any, screening: Screening) -> Any:
    """A copy of a CallToolResult / ReadResourceResult / GetPromptResult with its text screened; the same
    object when nothing was found."""
    if isinstance(result, types.CallToolResult):
        content = [_block(c, screening, f"content[{i}]") for i, c in enumerate(result.content)]
        structured = _walk(result.structured_content, lambda s, w: screening.text(s, w), "structuredContent")
        if not screening.found:
            return result
        return result.model_copy(update={"content": content, "structured_content": structured})
    if isinstance(result, types.ReadResourceResult):
        contents = [_resource(c, screening, f"contents[{i}]") for i, c in enumerate(result.contents)]
        return result if not screening.found else result.model_copy(update={"contents": contents})
    if isinstance(result, types.GetPromptResult):
        messages = [m.model_copy(update={"content": _block(m.content, screening, f"messages[{i}]")})
                    for i, m in enumerate(result.messages)]
        return result if not screening.found else result.model_copy(update={"messages": messages})
    return result


def _block(block: Any, screening: Screening, where: str) -> Any:
    if isinstance(block, types.TextContent):
        text = screening.text(block.text, where)
        return block if text == block.text else block.model_copy(update={"text": text})
    if isinstance(block, types.EmbeddedResource):
        resource = _resource(block.resource, screening, where + ".resource")
        return block if resource is block.resource else block.model_copy(update={"resource": resource})
    return block  # images, audio, links: passed as they came


def _resource(contents: Any, screening: Screening, where: str) -> Any:
    if isinstance(contents, types.TextResourceContents):
        text = screening.text(contents.text, where)
        return contents if text == contents.text else contents.model_copy(update={"text": text})
    return contents


def _walk(node: Any, fn: Callable[[str, str], str], where: str) -> Any:
    if isinstance(node, str):
        return fn(node, where)
    if isinstance(node, dict):
        return {k: _walk(v, fn, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, fn, f"{where}[{i}]") for i, v in enumerate(node)]
    return node
