"""servers.d: Claude Desktop's `mcpServers` format, one internal representation, errors that say where.

Every `*.json` file in the directory holds `{"mcpServers": {NAME: ENTRY}}`. An ENTRY is either a stdio
server (`command`, `args`, `env`, `cwd`) or a remote one (`url`, `transport`/`type`, `headers`), plus the
gateway's own per-server options (`enabled`, `timeout`, `tools`, `prefix`, `era`). Files merge in name
order. A broken file or entry is reported and skipped; it never stops the other servers.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator

Era = Literal["auto", "legacy", "modern"]
Transport = Literal["stdio", "http", "sse"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DEFAULT_TIMEOUT = 60.0


RESERVED_NAME = "fmos"  # the gateway's own tools are listed as this server (gateway/own.py)

@dataclass(frozen=True)
class ConfigError:
    """One problem in one place: file, server (when known), key (when known)."""

    file: str
    message: str
    server: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.server is not None:
            where += f": server '{self.server}'"
        if self.key is not None:
            where += f": key '{self.key}'"
        return f"{where}: {self.message}"


class ToolFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    allow: list[StrictStr] = []
    deny: list[StrictStr] = []


class _Options(BaseModel):
    """The gateway's per-server options, valid on both kinds of entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: StrictBool = True
    timeout: StrictInt | StrictFloat = Field(default=DEFAULT_TIMEOUT, gt=0)
    tools: ToolFilter = ToolFilter()
    prefix: StrictStr | StrictBool | None = None
    era: Era = "auto"

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: Any) -> Any:
        if v is True:
            raise ValueError("must be a string or false")
        if isinstance(v, str) and not _PREFIX.match(v):
            raise ValueError("must be 1-64 characters from A-Z a-z 0-9 . _ -")
        return v


class _StdioEntry(_Options):
    command: StrictStr = Field(min_length=1)
    args: list[StrictStr] = []
    env: dict[str, StrictStr] = {}
    cwd: StrictStr | None = None
    type: Literal["stdio"] | None = None  # Claude Code writes it; harmless


class _RemoteEntry(_Options):
    url: StrictStr
    transport: Literal["http", "sse"] = "http"
    type: Literal["http", "sse", "streamable-http", "streamableHttp"] | None = None  # Claude Code's spelling
    headers: dict[str, StrictStr] = {}

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v


class ServerSpec(BaseModel):
    """One downstream server, whatever file and format it came from."""

    model_config = ConfigDict(frozen=True)
    name: str
    file: str
    transport: Transport
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    enabled: bool = True
    timeout: float = DEFAULT_TIMEOUT
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    prefix: str | None = None  # None: no prefix; the default is the server's name
    era: Era = "auto"


@dataclass
class ServersConfig:
    servers: dict[str, ServerSpec] = field(default_factory=dict)
    errors: list[ConfigError] = field(default_factory=list)


def gateway_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables `${VAR}` may use: the process environment plus FMOS_PYTHON (this interpreter)."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("FMOS_PYTHON", sys.executable)
    return env


def load_servers_dir(directory: Path, environ: Mapping[str, str] | None = None) -> ServersConfig:
    config = ServersConfig()
    env = gateway_environment(environ)
    if not directory.is_dir():
        config.errors.append(ConfigError(str(directory), "servers directory does not exist"))
        return config
    for path in sorted(directory.glob("*.json")):
        _load_file(path, env, config)
    return config


def _load_file(path: Path, env: Mapping[str, str], config: ServersConfig) -> None:
    label = str(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as dup:
        config.errors.append(ConfigError(label, f"key '{dup.key}' appears twice in one object"))
        return
    except json.JSONDecodeError as exc:
        config.errors.append(ConfigError(label, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"))
        return
    except (OSError, UnicodeDecodeError) as exc:
        config.errors.append(ConfigError(label, f"cannot read: {exc}"))
        return
    if not isinstance(document, dict):
        config.errors.append(ConfigError(label, "must hold a JSON object with an 'mcpServers' object"))
        return
    for key in document:
        if key not in ("mcpServers", "$schema"):
            config.errors.append(ConfigError(label, "unknown top-level key (expected 'mcpServers')", key=key))
    servers = document.get("mcpServers")
    if not isinstance(servers, dict):
        config.errors.append(ConfigError(label, "must be an object of servers", key="mcpServers"))
        return
    base = path.parent
    for name, entry in servers.items():
        if name in config.servers:
            first = config.servers[name].file
            config.errors.append(ConfigError(label, f"defined twice: already defined in {first}", server=name))
            continue
        spec = _parse_entry(label, base, name, entry, env, config.errors)
        if spec is not None:
            config.servers[name] = spec


def _parse_entry(
    label: str, base: Path, name: str, entry: Any, env: Mapping[str, str], errors: list[ConfigError]
) -> ServerSpec | None:
    if not name or not name.strip():
        errors.append(ConfigError(label, "server names must not be empty", server=name))
        return None
    if name == RESERVED_NAME:
        errors.append(ConfigError(label, f"the name '{RESERVED_NAME}' is the gateway's own; choose another", server=name))
        return None
    if not isinstance(entry, dict):
        errors.append(ConfigError(label, "must be an object", server=name))
        return None
    try:
        entry = _expand(entry, env, ())
    except _MissingVariable as missing:
        errors.append(ConfigError(label, f"environment variable {missing.var} is not set", server=name, key=missing.key))
        return None
    if "url" in entry and "command" in entry:
        errors.append(ConfigError(label, "a server has either 'command' (stdio) or 'url' (remote), not both", server=name))
        return None
    if "url" not in entry and "command" not in entry:
        errors.append(ConfigError(label, "missing: a stdio server needs 'command', a remote one 'url'", server=name, key="command"))
        return None
    model = _RemoteEntry if "url" in entry else _StdioEntry
    try:
        parsed = model.model_validate(entry)
    except ValidationError as exc:
        for err in exc.errors():
            errors.append(ConfigError(label, _describe(err), server=name, key=_key_path(err["loc"])))
        return None
    prefix = name if parsed.prefix is None else (parsed.prefix or None)
    common = dict(
        name=name, file=label, enabled=parsed.enabled, timeout=float(parsed.timeout),
        allow=tuple(parsed.tools.allow), deny=tuple(parsed.tools.deny), prefix=prefix, era=parsed.era,
    )
    if isinstance(parsed, _RemoteEntry):
        transport = "sse" if "sse" in (parsed.type or parsed.transport) else "http"
        return ServerSpec(transport=transport, url=parsed.url, headers=parsed.headers, **common)
    cwd = str((base / parsed.cwd).resolve()) if parsed.cwd else None
    return ServerSpec(transport="stdio", command=parsed.command, args=tuple(parsed.args), env=parsed.env, cwd=cwd, **common)


class _MissingVariable(Exception):
    def __init__(self, var: str, key: str) -> None:
        self.var, self.key = var, key


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _expand(value: Any, env: Mapping[str, str], loc: tuple[str | int, ...]) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string, keeping track of where we are."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            raise _MissingVariable(var, _key_path(loc))
        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, env, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env, (*loc, i)) for i, v in enumerate(value)]
    return value


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(entry)"


def _describe(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    msg = err.get("msg", "invalid")
    return msg.removeprefix("Value error, ")
