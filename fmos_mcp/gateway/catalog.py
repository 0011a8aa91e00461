"""The aggregated catalog: every server's tools, prompts, resources and templates behind one set of names.

Built once per change (a server came up, went down, or sent list_changed), never per call: routing a call
is a dictionary lookup, and list pages are serialized once per catalog version.
"""

from __future__ import annotations

import base64
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from fmos_mcp.gateway.naming import Claim, assign, exposed_name
from fmos_mcp.traps.sizes import json_bytes

ListKind = str  # "tools" | "prompts" | "resources" | "resourceTemplates"
LIST_KINDS: tuple[ListKind, ...] = ("tools", "prompts", "resources", "resourceTemplates")


class InvalidCursor(ValueError):
    pass


class WirePage(dict):  # type: ignore[type-arg]
    """A list page already in wire form; `wire_bytes` is its size, computed once, for the trace."""

    wire_bytes: int = 0


@dataclass(frozen=True)
class ServerListing:
    """What one live server offers, in its own names."""

    server: str
    prefix: str | None
    tools: list[types.Tool] = field(default_factory=list)
    prompts: list[types.Prompt] = field(default_factory=list)
    resources: list[types.Resource] = field(default_factory=list)
    templates: list[types.ResourceTemplate] = field(default_factory=list)
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def tool_allowed(self, name: str) -> bool:
        if self.allow and not any(fnmatch.fnmatchcase(name, g) for g in self.allow):
            return False
        return not any(fnmatch.fnmatchcase(name, g) for g in self.deny)


@dataclass(frozen=True, slots=True)
class Route:
    server: str
    target: str  # the downstream's own name


@dataclass(frozen=True)
class _TemplateRoute:
    server: str
    template: str
    matcher: Any  # callable(uri) -> bool


@dataclass
class Catalog:
    version: int = 0
    tools: dict[str, Route] = field(default_factory=dict)
    prompts: dict[str, Route] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)  # uri -> server
    lists: dict[ListKind, list[Any]] = field(default_factory=lambda: {k: [] for k in LIST_KINDS})
    filtered: list[tuple[str, str]] = field(default_factory=list)  # (server, tool) hidden by allow/deny
    conflicts: list[str] = field(default_factory=list)
    _templates: list[_TemplateRoute] = field(default_factory=list)
    _pages: dict[tuple[ListKind, int, int], WirePage] = field(default_factory=dict)
    # What services derive from this version (a search index, a size): it lives and dies with the catalog.
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def memo(self, key: str, compute: Any) -> Any:
        """`derived[key]`, computed by `compute()` the first time it is asked for."""
        if key not in self.derived:
            self.derived[key] = compute()
        return self.derived[key]

    def route_resource(self, uri: str) -> str | None:
        server = self.resources.get(uri)
        if server is not None:
            return server
        for route in self._templates:
            if route.matcher(uri):
                return route.server
        return None

    def template_owner(self, uri_template: str) -> str | None:
        for route in self._templates:
            if route.template == uri_template:
                return route.server
        return None

    def page(self, kind: ListKind, cursor: str | None, size: int) -> WirePage:
        """One page of a list as a ready wire dict. Pages that start where ours do are cached for this
        catalog version; any other offset a client invents is served but not kept."""
        offset = decode_cursor(cursor)
        items = self.lists[kind]
        if offset > len(items):
            raise InvalidCursor(f"invalid cursor {cursor!r}: past the end of the list")
        key = (kind, offset, size)
        cached = self._pages.get(key)
        if cached is None:
            cached = WirePage({kind: [i.model_dump(by_alias=True, mode="json", exclude_none=True)
                                      for i in items[offset : offset + size]]})
            cached.wire_bytes = json_bytes(cached[kind])
            if offset + size < len(items):
                cached["nextCursor"] = encode_cursor(offset + size)
            if offset % size == 0:
                self._pages[key] = cached
        page = WirePage({kind: list(cached[kind]), "resultType": "complete"})  # legacy hosts' surface drops it
        if "nextCursor" in cached:
            page["nextCursor"] = cached["nextCursor"]
        page.wire_bytes = cached.wire_bytes
        return page

    def snapshot(self) -> dict[ListKind, set[str]]:
        """Identity of each list's content, to tell whether a rebuild changed what hosts see."""
        return {kind: {_fingerprint(item) for item in items} for kind, items in self.lists.items()}


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"fmos:{offset}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        tag, _, number = text.partition(":")
        offset = int(number)
        if tag != "fmos" or offset < 0:
            raise ValueError
        return offset
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor(f"invalid cursor {cursor!r}") from exc


def build_catalog(version: int, listings: list[ServerListing]) -> Catalog:
    catalog = Catalog(version=version)
    ordered = sorted(listings, key=lambda listing: listing.server)

    tool_claims: list[Claim] = []
    tool_defs: dict[tuple[str, str], types.Tool] = {}
    for listing in ordered:
        for tool in listing.tools:
            if not listing.tool_allowed(tool.name):
                catalog.filtered.append((listing.server, tool.name))
                continue
            tool_claims.append(Claim(listing.server, tool.name, exposed_name(listing.prefix, tool.name)))
            tool_defs[(listing.server, tool.name)] = tool
    table, conflicts = assign(tool_claims)
    catalog.conflicts += conflicts
    for name, claim in table.items():
        catalog.tools[name] = Route(claim.server, claim.original)
        catalog.lists["tools"].append(tool_defs[(claim.server, claim.original)].model_copy(update={"name": name}))

    prompt_claims = [
        Claim(listing.server, p.name, exposed_name(listing.prefix, p.name)) for listing in ordered for p in listing.prompts
    ]
    prompt_defs = {(listing.server, p.name): p for listing in ordered for p in listing.prompts}
    table, conflicts = assign(prompt_claims)
    catalog.conflicts += conflicts
    for name, claim in table.items():
        catalog.prompts[name] = Route(claim.server, claim.original)
        catalog.lists["prompts"].append(prompt_defs[(claim.server, claim.original)].model_copy(update={"name": name}))

    for listing in ordered:
        for resource in listing.resources:
            uri = str(resource.uri)
            owner = catalog.resources.get(uri)
            if owner is not None:
                catalog.conflicts.append(f"resource '{uri}' is offered by '{owner}' and '{listing.server}'; '{owner}' serves it")
                continue
            catalog.resources[uri] = listing.server
            catalog.lists["resources"].append(resource)
        for template in listing.templates:
            catalog._templates.append(_TemplateRoute(listing.server, template.uri_template, _matcher(template.uri_template)))
            catalog.lists["resourceTemplates"].append(template)
    return catalog


def _matcher(template: str) -> Any:
    try:
        parsed = UriTemplate.parse(template)
        return lambda uri: parsed.match(uri) is not None
    except (InvalidUriTemplate, ValueError):
        # Lenient fallback for templates the strict RFC 6570 parser refuses: {x} is one segment, {+x} anything.
        pattern = "".join(
            ("(.*)" if part.startswith("{+") or part.startswith("{#") else "([^/]*)") if part.startswith("{") else re.escape(part)
            for part in re.split(r"(\{[^}]*\})", template)
        )
        regex = re.compile(f"^{pattern}$")
        return lambda uri: regex.match(uri) is not None


def _fingerprint(item: Any) -> str:
    return item.model_dump_json(by_alias=True, exclude_none=True)
