"""The `context` policy section: what stays in the host's window and what the gateway moves out.

```yaml
context:
  exposure: auto            # flat | paged | auto (paged above auto_threshold_tokens of tool definitions)
  auto_threshold_tokens: 20000 # 10% of a 200k-token context window
  max_active_tools: 24      # paged: the least recently used tool is paged out past this
  offload:
    threshold_bytes: 20480  # results above this are stored and replaced by a pointer
    preview_bytes: 1024     # head and tail shown with the pointer
    summary: shape          # shape (JSON schema with array lengths) | preview | none
    rules:                  # per server and tool glob; the last rule that matches wins
      - {server: files, tool: "read_*", threshold_bytes: 65536}
      - {server: "*", tool: "get_image", never: true}
  retention: 7d             # artifacts expire after this (s, m, h, d)
  skills:
    paths: [skills]         # directories of Agent Skills (SKILL.md), relative to the policies directory
    from_prompts: true      # downstream prompts are skills too
    unload_after_use: true  # a loaded skill returns to its header after the next tool call that used it
```
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from fmos_mcp.durations import duration


SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The Data Agent: tool exposure, offload of large results, retention, skills.",
    "additionalProperties": False,
    "properties": {
        "exposure": {"enum": ["flat", "paged", "auto"]},
        "auto_threshold_tokens": {"type": "integer", "minimum": 0},
        "max_active_tools": {"type": "integer", "minimum": 1, "maximum": 1000},
        "offload": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "threshold_bytes": {"type": "integer", "minimum": 256},
                "preview_bytes": {"type": "integer", "minimum": 0, "maximum": 65536},
                "summary": {"enum": ["shape", "preview", "none"]},
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "server": {"type": "string", "minLength": 1},
                            "tool": {"type": "string", "minLength": 1},
                            "threshold_bytes": {"type": "integer", "minimum": 256},
                            "never": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "retention": {"type": ["string", "number"], "description": "seconds, or a number with s, m, h or d"},
        "skills": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "paths": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "from_prompts": {"type": "boolean"},
                "unload_after_use": {"type": "boolean"},
            },
        },
    },
}


@dataclass(frozen=True)
class OffloadRule:
    server: str = "*"
    tool: str = "*"
    threshold_bytes: int | None = None
    never: bool = False

    def matches(self, server: str, tool: str) -> bool:
        return fnmatch.fnmatchcase(server, self.server) and fnmatch.fnmatchcase(tool, self.tool)


@dataclass(frozen=True)
class ContextConfig:
    exposure: str = "auto"
    auto_threshold_tokens: int = 20000  # 10% of a 200k-token context window
    max_active_tools: int = 24
    threshold_bytes: int = 20 * 1024
    preview_bytes: int = 1024
    summary: str = "shape"
    rules: tuple[OffloadRule, ...] = ()
    retention: float = 7 * 86400.0
    skill_paths: tuple[str, ...] = ("skills",)
    skills_from_prompts: bool = True
    unload_after_use: bool = True

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> ContextConfig:
        section = section or {}
        offload = section.get("offload") or {}
        skills = section.get("skills") or {}
        base = cls()
        return cls(
            exposure=section.get("exposure", base.exposure),
            auto_threshold_tokens=section.get("auto_threshold_tokens", base.auto_threshold_tokens),
            max_active_tools=section.get("max_active_tools", base.max_active_tools),
            threshold_bytes=offload.get("threshold_bytes", base.threshold_bytes),
            preview_bytes=offload.get("preview_bytes", base.preview_bytes),
            summary=offload.get("summary", base.summary),
            rules=tuple(OffloadRule(**rule) for rule in offload.get("rules", ())),
            retention=duration(section.get("retention", base.retention)),
            skill_paths=tuple(skills.get("paths", base.skill_paths)),
            skills_from_prompts=skills.get("from_prompts", base.skills_from_prompts),
            unload_after_use=skills.get("unload_after_use", base.unload_after_use),
        )

    def threshold_for(self, server: str, tool: str) -> int | None:
        """Bytes above which a result of this tool is offloaded; None: never."""
        threshold: int | None = self.threshold_bytes
        for rule in self.rules:
            if rule.matches(server, tool):
                threshold = None if rule.never else (rule.threshold_bytes or self.threshold_bytes)
        return threshold


def check(section: dict[str, Any]) -> list[tuple[str, str, str]]:
    errors = []
    for index, rule in enumerate((section.get("offload") or {}).get("rules", ())):
        for key in ("server", "tool"):
            glob = rule.get(key, "*")
            try:
                re.compile(fnmatch.translate(glob))
            except re.error as exc:  # pragma: no cover - fnmatch escapes nearly everything
                errors.append(("context", f"offload.rules.{index}.{key}", f"bad glob {glob!r}: {exc}"))
        if rule.get("never") and "threshold_bytes" in rule:
            errors.append(("context", f"offload.rules.{index}", "a rule with never: true takes no threshold_bytes"))
    if "retention" in section:
        try:
            duration(section["retention"])
        except ValueError as exc:
            errors.append(("context", "retention", str(exc)))
    return errors
