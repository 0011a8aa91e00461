"""What a rule, judge or limit applies to: server and tool globs, privilege classes, tenant and roles,
a time window, and constraints on the arguments. Compiled once when policies load."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class CallFacts:
    """The facts about one call that policies may look at."""

    server: str
    tool: str  # the server's own name
    exposed: str  # the name the host used
    classes: frozenset[str]
    tenant: str
    roles: frozenset[str]
    arguments: Mapping[str, Any]
    now: datetime  # aware (UTC)


@dataclass(frozen=True)
class Match:
    servers: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    classes: frozenset[str] = frozenset()
    tenants: tuple[str, ...] = ()
    roles: frozenset[str] = frozenset()
    not_roles: frozenset[str] = frozenset()
    days: frozenset[int] = frozenset()
    minutes: tuple[int, int] | None = None  # [start, end) minutes of the day; start > end wraps midnight
    tz: ZoneInfo | None = None
    schema: Any = None  # a jsonschema validator
    patterns: tuple[tuple[str, re.Pattern[str]], ...] = ()

    def scope(self, server: str, tool: str, exposed: str, classes: frozenset[str]) -> bool:
        """Whether the static part (server, tool, classes) selects this tool: the rule 'names' it."""
        if self.servers and not _globbed(server, self.servers):
            return False
        if self.tools and not (_globbed(tool, self.tools) or _globbed(exposed, self.tools)):
            return False
        return not self.classes or bool(self.classes & classes)

    def matches(self, call: CallFacts) -> bool:
        if not self.scope(call.server, call.tool, call.exposed, call.classes):
            return False
        if self.tenants and not _globbed(call.tenant, self.tenants):
            return False
        if self.roles and not self.roles & call.roles:
            return False
        if self.not_roles & call.roles:
            return False
        if (self.days or self.minutes) and not self._in_window(call.now):
            return False
        if self.schema is not None and not self.schema.is_valid(dict(call.arguments)):
            return False
        for key, pattern in self.patterns:
            value = _dig(call.arguments, key)
            if value is None or not pattern.search(value if isinstance(value, str) else str(value)):
                return False
        return True

    def _in_window(self, now: datetime) -> bool:
        local = now.astimezone(self.tz) if self.tz else now
        if self.days and local.weekday() not in self.days:
            return False
        if self.minutes is None:
            return True
        minute, (start, end) = local.hour * 60 + local.minute, self.minutes
        return start <= minute < end if start <= end else (minute >= start or minute < end)


def compile_match(spec: Mapping[str, Any]) -> Match:
    """Raises ValueError('key: message') for what the JSON Schema cannot check."""
    tz = None
    window = spec.get("time") or {}
    if window.get("tz"):
        try:
            tz = ZoneInfo(window["tz"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"time.tz: unknown time zone {window['tz']!r}") from None
    minutes = None
    if window.get("hours"):
        start, end = window["hours"].split("-")
        minutes = (_minute(start), _minute(end))
    arguments = spec.get("arguments") or {}
    validator = None
    if arguments.get("schema") is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(arguments["schema"])
        except jsonschema.SchemaError as exc:
            raise ValueError(f"arguments.schema: not a valid JSON Schema: {exc.message}") from None
        validator = jsonschema.Draft202012Validator(arguments["schema"])
    patterns = []
    for key, regex in (arguments.get("patterns") or {}).items():
        try:
            patterns.append((key, re.compile(regex)))
        except re.error as exc:
            raise ValueError(f"arguments.patterns.{key}: not a valid regular expression: {exc}") from None
    return Match(
        servers=_list(spec.get("servers")), tools=_list(spec.get("tools")),
        classes=frozenset(spec.get("classes", ())), tenants=_list(spec.get("tenants")),
        roles=frozenset(spec.get("roles", ())), not_roles=frozenset(spec.get("not_roles", ())),
        days=frozenset(_DAYS.index(d) for d in window.get("days", ())), minutes=minutes, tz=tz,
        schema=validator, patterns=tuple(patterns),
    )


def _list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _globbed(value: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(value, g) for g in globs)


def _minute(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _dig(arguments: Mapping[str, Any], dotted: str) -> Any:
    node: Any = arguments
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node

