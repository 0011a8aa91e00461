"""The gateway's own context tools: read back what was offloaded, find and page tools, skills, memory.

Every handler is `async (request, arguments) -> CallToolResult`; a wrong argument gets an `isError` result
that names the argument, never a protocol error, so the model can correct itself.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from fmos_mcp.context import readers
from fmos_mcp.context.artifacts import ArtifactExpired, ArtifactNotFound, ArtifactStore, parse_uri
from fmos_mcp.context.memory import MemoryStore
from fmos_mcp.context.offload import artifact_resource
from fmos_mcp.context.toolsearch import ToolSearch
from fmos_mcp.context.service import ContextService
from fmos_mcp.context.skills import SKILL_URI, Skill, SkillError, prompt_skill
from fmos_mcp.gateway.own import OWN_SERVER, OwnResources, OwnTool, tool_error, tool_text
from fmos_mcp.traps.request import MediatedRequest

READ_LIMIT = 16 * 1024  # bytes fmos_read returns by default
MAX_QUERY_BYTES = 64 * 1024  # a query result larger than this is cut: the path should be narrower


class BadArgument(ValueError):
    pass


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_URI = {"type": "string", "description": "fmos://artifacts/<id>, from the pointer that replaced a large result"}


def _tool(name: str, title: str, description: str, schema: dict[str, Any], *, read_only: bool = True) -> types.Tool:
    return types.Tool(name=name, title=title, description=description, input_schema=schema,
                      annotations=types.ToolAnnotations(read_only_hint=read_only, destructive_hint=False,
                                                        idempotent_hint=read_only, open_world_hint=False))


class ContextTools:
    def __init__(self, service: ContextService, store: ArtifactStore, search: ToolSearch, memory: MemoryStore,
                 skills: dict[str, Skill], skills_from_prompts: bool) -> None:
        self.service = service
        self.store = store
        self.search = search
        self.memory = memory
        self.skills = skills
        self.skills_from_prompts = skills_from_prompts

    # ----------------------------------------------------------------- what the catalog gets

    def own_tools(self) -> list[OwnTool]:
        skills = "; ".join(s.header() for s in self.skills.values())
        return [
            OwnTool(_tool("fmos_search_tools", "Search tools",
                          "Find tools of every connected server by what they do. Returns the best matches first and "
                          "a one-line summary per server. Activate a match with fmos_activate_tools or call it with "
                          "fmos_call_tool.",
                          _schema({"query": {"type": "string", "description": "what you want to do, in words"},
                                   "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 8},
                                   "server": {"type": "string", "description": "only tools of this server"}},
                                  ["query"])), self._search, meta_tool=True),
            OwnTool(_tool("fmos_activate_tools", "Activate tools",
                          "Add tools (names from fmos_search_tools) to your tool list; the least recently used are "
                          "removed past the limit.",
                          _schema({"names": {"type": "array", "items": {"type": "string"}, "minItems": 1}}, ["names"]),
                          read_only=False), self._activate, meta_tool=True),
            OwnTool(_tool("fmos_call_tool", "Call a tool by name",
                          "Call any tool of any connected server by its name, active or not, with its arguments.",
                          _schema({"name": {"type": "string"}, "arguments": {"type": "object"}}, ["name"]),
                          read_only=False), self._call, meta_tool=True),
            OwnTool(_tool("fmos_read", "Read a stored result",
                          "Read part of a large result the gateway stored (fmos://artifacts/...), by byte offset.",
                          _schema({"uri": _URI, "offset": {"type": "integer", "minimum": 0, "default": 0},
                                   "limit": {"type": "integer", "minimum": 1, "maximum": 1 << 20, "default": READ_LIMIT}},
                                  ["uri"])), self._read, meta_tool=True),
            OwnTool(_tool("fmos_grep", "Search a stored result",
                          "Lines of a stored result that match a regular expression, with context lines.",
                          _schema({"uri": _URI, "pattern": {"type": "string"},
                                   "context": {"type": "integer", "minimum": 0, "maximum": 20, "default": 2},
                                   "max_matches": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
                                  ["uri", "pattern"])), self._grep, meta_tool=True),
            OwnTool(_tool("fmos_query", "Query a stored JSON result",
                          "Select from a stored JSON result with a JSONPath ($.items[0].name, $..id) or jq-like "
                          "path (.items[].name).",
                          _schema({"uri": _URI, "path": {"type": "string"}}, ["uri", "path"])),
                    self._query, meta_tool=True),
            OwnTool(_tool("fmos_skill_load", "Load a skill",
                          "Load a skill's instructions into context. Without a name, list every skill. "
                          + (f"Skills: {skills}" if skills else ""),
                          _schema({"name": {"type": "string"}}, [])), self._skill_load, meta_tool=True),
            OwnTool(_tool("fmos_remember", "Remember",
                          "Store a fact or note in this tenant's long-term memory.",
                          _schema({"text": {"type": "string", "minLength": 1},
                                   "tags": {"type": "array", "items": {"type": "string"}}}, ["text"]),
                          read_only=False), self._remember, meta_tool=True),
            OwnTool(_tool("fmos_recall", "Recall",
                          "Search this tenant's long-term memory.",
                          _schema({"query": {"type": "string", "minLength": 1},
                                   "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5}}, ["query"])),
                    self._recall, meta_tool=True),
        ]

    def own_resources(self) -> list[OwnResources]:
        return [
            OwnResources(types.ResourceTemplate(name="artifact", uri_template="fmos://artifacts/{id}",
                                                description="A large tool result the gateway stored, byte for byte"),
                         "fmos://artifacts/", self._read_artifact),
            OwnResources(types.ResourceTemplate(name="skill-file", uri_template=SKILL_URI + "{name}/{+path}",
                                                description="A file of a skill (SKILL.md, references/, scripts/, assets/)"),
                         SKILL_URI, self._read_skill_file),
        ]

    # ----------------------------------------------------------------- stored results

    async def _artifact(self, request: MediatedRequest, uri: Any) -> Any:
        if not isinstance(uri, str):
            raise BadArgument("argument 'uri' must be a string like fmos://artifacts/<id>")
        try:
            ident = parse_uri(uri)
        except ValueError as exc:
            raise BadArgument(f"argument 'uri': {exc}") from None
        return await anyio.to_thread.run_sync(self.store.get, request.host.tenant, ident)

    async def _read(self, request: MediatedRequest, args: dict[str, Any]) -> types.CallToolResult:
        async def run() -> types.CallToolResult:
            artifact = await self._artifact(request, args.get("uri"))
            offset, limit = _int(args, "offset", 0, 0), _int(args, "limit", READ_LIMIT, 1)
            chunk, next_offset, total = readers.read(artifact.data, offset, limit, binary=artifact.kind == "blob")
            tail = f"; continue with offset {next_offset}" if next_offset is not None else "; end of the result"
            end = next_offset if next_offset is not None else total
            shown = "base64 of bytes" if artifact.kind == "blob" else "bytes"
            header = f"[{shown} {offset}-{end} of {total}{tail}]\n"
            return tool_text(header + chunk, {"uri": artifact.uri, "offset": offset, "next_offset": next_offset,
                                              "total": total, "text": chunk})
        return await _guard(run)

    async def _grep(self, request: MediatedRequest, args: dict[str, Any]) -> types.CallToolResult:
        async def run() -> types.CallToolResult:
            artifact = await self._artifact(request, args.get("uri"))
            pattern = args.get("pattern")
            if not isinstance(pattern, str) or not pattern:
                raise BadArgument("argument 'pattern' must be a non-empty regular expression")
            matches = await anyio.to_thread.run_sync(
                lambda: readers.grep(artifact.data, pattern, _int(args, "context", 2, 0), _int(args, "max_matches", 50, 1)))
            text = "\n--\n".join(m.text() for m in matches) or f"no line matches {pattern!r}"
            return tool_text(text, {"uri": artifact.uri, "matches": [m.as_json() for m in matches]})
        return await _guard(run)

    async def _query(self, request: MediatedRequest, args: dict[str, Any]) -> types.CallToolResult:
        async def run() -> types.CallToolResult:
            artifact = await self._artifact(request, args.get("uri"))
            path = args.get("path")
            if not isinstance(path, str) or not path:
                raise BadArgument("argument 'path' must be a JSONPath ($.a[0].b) or jq-like path (.a[0].b)")
            values = await anyio.to_thread.run_sync(readers.query, artifact.data, path)
            text = json.dumps(values, ensure_ascii=False)
            cut = len(text.encode()) > MAX_QUERY_BYTES
            if cut:
                text = text.encode()[:MAX_QUERY_BYTES].decode(errors="ignore") + " … [cut: narrow the path]"
            return tool_text(text, None if cut else {"values": values})
        return await _guard(run)

    async def _read_artifact(self, request: MediatedRequest, uri: str) -> types.ReadResourceResult:
        try:
            return artifact_resource(await self._artifact(request, uri))
        except (BadArgument, ArtifactNotFound, ArtifactExpired) as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc), data={"uri": uri}) from None

    # ----------------------------------------------------------------- tool search and paging

    async def _search(self, request: MediatedRequest, args: dict[str, Any]) -> types.CallToolResult:
        async def run() -> types.CallToolResult:
            query = args.get("query")
            if not isinstance(query, str) or not query.strip():
                raise BadArgument("argument 'query' must say, in words, what the tool should do")
            k = _int(args, "k", 8, 1)
            catalog = request.pool.catalog
            hits = await self.search.search(catalog, query, k, server=args.get("server"))
            tools = [{"name": h.name, "score": round(h.score, 4), "description": h.description} for h in hits]
            servers = _browse(self.search.summaries(catalog), [h.server for h in hits])
            lines = [f"{t['name']} ({t['score']}): {t['description'][:160]}" for t in tools] or ["no tool matches"]
            text = "\n".join(lines) + "\n\nServers:\n" + "\n".join(servers)
            return tool_text(text, {"tools": tools, "servers": servers})
        return await _guard(run)

    async def _activate(self, request: MediatedRequest, args: dict[str, Any]) -> types.CallToolResult:
        async def run() -> types.CallToolResult:
            names = args.get("names")
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise BadArgument("argument 'names' must be a non-empty list of tool names")
            catalog = request.pool.catalog
            unknown = [n for n in names if n not in catalog.tools or catalog.tools[n].server == OWN_SERVER]
            if unknown:
                raise BadArgument(f"argument 'names': no such tool: {', '.join(unknown)} (find names with fmos_search_tools)")
            added, evicted = await self.service.activate(request, names, notify=self.service.paged(catalog))
            active = self.service.paging.active(request.host.tenant, request.host.session_id)
            text = f"active now: {', '.join(active)}" + (f"; paged out: {', '.join(evicted)}" if evicted else "")
            return tool_text(text, {"active": active, "added": added, "paged_out": evicted})
        return await _guard(run)

    async def _call(self, request: MediatedRequest, args: dict[str, Any]) -> types.CallToolResult:
        name, arguments = args.get("name"), args.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, dict):
            return tool_error("argument 'name' must be a tool name and 'arguments' an object")
        route = request.pool.catalog.tools.get(name)
        if route is None or route.server == OWN_SERVER and name == "fmos_call_tool":
            return tool_error(f"argument 'name': no such tool '{name}' (find names with fmos_search_tools)")
        inner = MediatedRequest(
            method="tools/call", host=request.host, server=route.server, name=name, target=route.target,
            arguments=arguments, params=types.CallToolRequestParams(name=name, arguments=arguments),
            channel=request.channel, meta=request.meta, pool=request.pool, origin="fmos_call_tool",
        )
        return await request.pool.pipeline(inner)  # every trap sees the real call; it does not page the tool in

    # ----------------------------------------------------------------- skills

    def _all_skills(self, request: MediatedRequest) -> dict[str, Skill]:
        skills = dict(self.skills)
        if self.skills_from_prompts and request.pool is not None:
            for prompt in request.pool.catalog.lists["prompts"]:
                skill = prompt_skill(prompt.name, prompt.description)
                skills.setdefault(skill.name, skill)
        return skills

    async def _skill_load(self, request: MediatedRequest, args: dict[str, Any]) -> types.CallToolResult:
        skills = self._all_skills(request)
        name = args.get("name")
        if not name:
            listing = [{"name": s.name, "description": s.description} for s in skills.values()]
            return tool_text("\n".join(f"{s['name']}: {s['description']}" for s in listing) or "no skills",
                             {"skills": listing})
        skill = skills.get(name)
        if skill is None:
            return tool_error(f"argument 'name': no skill '{name}'; skills: {', '.join(skills) or 'none'}")
        body = skill.body
        if skill.source.startswith("prompt:"):
            body = await self._prompt_body(request, skill.source.removeprefix("prompt:"))
        files = [skill.uri(f) for f in skill.files]
        brought = [t for t in skill.allowed_tools if t in request.pool.catalog.tools]
        if brought:
            await self.service.activate(request, brought, notify=self.service.paged(request.pool.catalog))
            key = (request.host.tenant, request.host.session_id)
            self.service.skill_tools[key] = self.service.skill_tools.get(key, set()) | set(brought)
        text = f"# Skill: {skill.name}\n\n{body}"
        if files:
            text += "\n\nFiles (read them as resources when needed):\n" + "\n".join(files)
        return tool_text(text, {"name": skill.name, "files": files, "tools": brought})

    async def _prompt_body(self, request: MediatedRequest, prompt: str) -> str:
        route = request.pool.catalog.prompts.get(prompt)
        if route is None:
            return f"(the prompt {prompt} is no longer offered)"
        inner = MediatedRequest(method="prompts/get", host=request.host, server=route.server, name=prompt,
                                target=route.target, params=types.GetPromptRequestParams(name=prompt),
                                channel=request.channel, meta=request.meta, pool=request.pool, origin="fmos_skill_load")
        result = await request.pool.pipeline(inner)
        parts = [getattr(m.content, "text", "") for m in result.messages]
        return "\n\n".join(p for p in parts if p)

    async def _read_skill_file(self, request: MediatedRequest, uri: str) -> types.ReadResourceResult:
        name, _, path = uri.removeprefix(SKILL_URI).partition("/")
        skill = self.skills.get(name)
        try:
            if skill is None:
                raise SkillError(f"no skill '{name}'")
            data = skill.read(path or "SKILL.md")
        except SkillError as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc), data={"uri": uri}) from None
        try:
            return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, text=data.decode("utf-8"),
                                                                                 mime_type="text/markdown" if path.endswith(".md") else "text/plain")])
        except UnicodeDecodeError:
            return types.ReadResourceResult(contents=[types.BlobResourceContents(uri=uri, blob=base64.b64encode(data).decode(),
                                                                                 mime_type="application/octet-stream")])

    # ----------------------------------------------------------------- memory

    async def _remember(self, request: MediatedRequest, args: dict[str, Any]) -> types.CallToolResult:
        async def run() -> types.CallToolResult:
            text, tags = args.get("text"), args.get("tags") or []
            if not isinstance(text, str) or not text.strip():
                raise BadArgument("argument 'text' must be non-empty")
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise BadArgument("argument 'tags' must be a list of strings")
            ident = await anyio.to_thread.run_sync(self.memory.remember, request.host.tenant, text, tags)
            return tool_text(f"remembered (#{ident})", {"id": ident})
        return await _guard(run)

    async def _recall(self, request: MediatedRequest, args: dict[str, Any]) -> types.CallToolResult:
        async def run() -> types.CallToolResult:
            query = args.get("query")
            if not isinstance(query, str) or not query.strip():
                raise BadArgument("argument 'query' must be non-empty")
            found = await anyio.to_thread.run_sync(self.memory.recall, request.host.tenant, query, _int(args, "k", 5, 1))
            text = "\n".join(f"#{m['id']} ({m['score']:.3f}) {m['text']}" for m in found) or "nothing remembered matches"
            return tool_text(text, {"memories": found})
        return await _guard(run)


MAX_SERVER_LINES = 20


def _browse(lines: list[str], hit_servers: list[str]) -> list[str]:
    """At most MAX_SERVER_LINES server summaries: the servers of the hits first, then the rest by name."""
    if len(lines) <= MAX_SERVER_LINES:
        return lines
    rank = {server: i for i, server in enumerate(dict.fromkeys(hit_servers))}
    ordered = sorted(lines, key=lambda line: (rank.get(line.split(":", 1)[0], len(rank)), line))
    return [*ordered[:MAX_SERVER_LINES], f"... and {len(lines) - MAX_SERVER_LINES} more servers (search with server=NAME)"]


def _int(args: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadArgument(f"argument '{key}' must be an integer >= {minimum}")
    return value


async def _guard(run: Callable[[], Any]) -> types.CallToolResult:
    """Wrong arguments, missing or expired artifacts: an error the model can read, naming what was wrong."""
    try:
        return await run()
    except (BadArgument, ArtifactNotFound, ArtifactExpired, ValueError) as exc:
        return tool_error(str(exc))
