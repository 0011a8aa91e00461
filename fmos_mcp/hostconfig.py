"""Host configuration files: register fmos-mcp in Claude Desktop, Claude Code or Cursor, and move a host's
existing servers into servers.d so that the host reaches them through the gateway.

Every change to a host's file is atomic (temporary file, then rename), keeps every key it does not own,
and is preceded by a one-time backup of the original (`<file>.fmos-backup`), which `uninstall` uses to
put back what `config import` moved out.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOSTS = ("claude-desktop", "claude-code", "cursor")
DEFAULT_NAME = "fmos"
BACKUP_SUFFIX = ".fmos-backup"
_ENV_NAME = re.compile(r"[^A-Za-z0-9_]")


class HostConfigError(Exception):
    """A host file that cannot be read or written, said in the user's terms."""


def config_path(host: str, *, home: Path | None = None, platform: str = sys.platform,
                environ: dict[str, str] | None = None) -> Path:
    """Where each host keeps its MCP servers (user scope), per operating system."""
    home = home or Path.home()
    env = os.environ if environ is None else environ
    if host == "claude-desktop":
        if platform == "darwin":
            return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
        if platform == "win32":
            return Path(env.get("APPDATA", home / "AppData" / "Roaming")) / "Claude" / "claude_desktop_config.json"
        return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "Claude" / "claude_desktop_config.json"
    if host == "claude-code":
        return home / ".claude.json"  # user scope; a project's .mcp.json is passed with --config
    if host == "cursor":
        return home / ".cursor" / "mcp.json"  # global; a project's .cursor/mcp.json is passed with --config
    raise HostConfigError(f"unknown host '{host}' (known: {', '.join(HOSTS)})")


@dataclass
class HostFile:
    path: Path
    document: dict[str, Any]
    original_text: str | None  # None: the file did not exist

    @classmethod
    def load(cls, path: Path) -> HostFile:
        if not path.exists():
            return cls(path, {}, None)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise HostConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            document = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise HostConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                                  "fix or move it, nothing was changed") from None
        if not isinstance(document, dict):
            raise HostConfigError(f"{path}: expected a JSON object at the top level; nothing was changed")
        servers = document.get("mcpServers", {})
        if not isinstance(servers, dict):
            raise HostConfigError(f"{path}: key 'mcpServers' must be an object; nothing was changed")
        return cls(path, document, text)

    @property
    def servers(self) -> dict[str, Any]:
        return self.document.setdefault("mcpServers", {})

    def render(self) -> str:
        return json.dumps(self.document, indent=2, ensure_ascii=False) + "\n"

    def diff(self) -> str:
        before = (self.original_text or "").splitlines(keepends=True)
        after = self.render().splitlines(keepends=True)
        return "".join(difflib.unified_diff(before, after, f"{self.path} (now)", f"{self.path} (after)"))

    def changed(self) -> bool:
        if self.original_text is None:
            return bool(self.servers)
        try:
            return json.loads(self.original_text) != self.document
        except json.JSONDecodeError:
            return True

    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + BACKUP_SUFFIX)

    def save(self) -> None:
        """Back up the original once, then replace the file atomically."""
        backup = self.backup_path()
        if not backup.exists():
            _atomic_write(backup, self.original_text if self.original_text is not None else "")
        _atomic_write(self.path, self.render())


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.fmos-tmp")
    tmp.write_text(text, encoding="utf-8")
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- install / uninstall

@dataclass(frozen=True)
class GatewayPaths:
    servers_dir: Path
    policies_dir: Path
    state_dir: Path
    python: Path = Path(sys.executable)


def gateway_entry(host: str, paths: GatewayPaths) -> dict[str, Any]:
    args = [
        "-m", "fmos_mcp", "serve",
        "--servers-dir", str(paths.servers_dir.resolve()),
        "--policies-dir", str(paths.policies_dir.resolve()),
        "--state-dir", str(paths.state_dir.resolve()),
    ]
    entry: dict[str, Any] = {"command": str(paths.python), "args": args}
    if host == "claude-code":
        entry = {"type": "stdio", **entry, "env": {}}
    return entry


@dataclass
class Outcome:
    path: Path
    changed: bool
    diff: str = ""
    notes: list[str] = field(default_factory=list)


def install(host: str, path: Path, name: str, paths: GatewayPaths, *, dry_run: bool = False) -> Outcome:
    host_file = HostFile.load(path)
    entry = gateway_entry(host, paths)
    notes = []
    if name in host_file.servers and host_file.servers[name] != entry and not _is_ours(host_file.servers[name]):
        raise HostConfigError(f"{path}: a server named '{name}' exists and is not fmos-mcp; choose --name")
    host_file.servers[name] = entry
    for directory in (paths.servers_dir, paths.policies_dir, paths.state_dir):
        if not directory.exists():
            notes.append(f"will create {directory}" if dry_run else f"created {directory}")
            if not dry_run:
                directory.mkdir(parents=True, exist_ok=True)
    outcome = Outcome(path, host_file.changed(), host_file.diff(), notes)
    if outcome.changed and not dry_run:
        host_file.save()
    return outcome


def uninstall(host: str, path: Path, name: str, *, dry_run: bool = False) -> Outcome:
    """Remove the gateway's entry and put back, from the backup, the servers `config import` moved out.
    Changes made since (other servers added or edited) are kept."""
    host_file = HostFile.load(path)
    notes = []
    if name in host_file.servers and _is_ours(host_file.servers[name]):
        del host_file.servers[name]
    else:
        notes.append(f"no fmos-mcp entry named '{name}' in {path}")
    backup = host_file.backup_path()
    if backup.exists():
        original = HostFile.load(backup)
        for server, entry in original.servers.items():
            if server not in host_file.servers and not _is_ours(entry):
                host_file.servers[server] = entry
                notes.append(f"restored server '{server}'")
    outcome = Outcome(path, host_file.changed(), host_file.diff(), notes)
    if not dry_run:
        if outcome.changed:
            _atomic_write(path, host_file.render())
        if backup.exists():
            backup.unlink()
    return outcome


def _is_ours(entry: Any) -> bool:
    args = entry.get("args") if isinstance(entry, dict) else None
    return isinstance(args, list) and "fmos_mcp" in args and "serve" in args


# ----------------------------------------------------------------------------- config import

# Keys a host writes that servers.d has too; anything else is reported and left behind.
_KNOWN_KEYS = {"command", "args", "env", "cwd", "url", "headers", "type", "transport"}


@dataclass
class Imported:
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)  # ${VAR} -> what it replaced (the user sets it)
    host: Outcome | None = None


def import_servers(
    path: Path, servers_dir: Path, *, secrets_as_env: bool = False, gateway_name: str = DEFAULT_NAME,
    dry_run: bool = False,
) -> Imported:
    """Write each of the host's servers to servers.d/<name>.json and remove it from the host's file."""
    host_file = HostFile.load(path)
    result = Imported()
    existing = _servers_d_names(servers_dir)
    for name in list(host_file.servers):
        entry = host_file.servers[name]
        if name == gateway_name or _is_ours(entry):
            continue
        if not isinstance(entry, dict):
            result.skipped.append(f"'{name}': not an object; left in the host's file")
            continue
        if name in existing:
            result.skipped.append(f"'{name}': already defined in {existing[name]}; left in the host's file")
            continue
        converted, dropped = _convert(name, entry, secrets_as_env, result.variables)
        if dropped:
            result.notes.append(f"'{name}': {', '.join(sorted(dropped))} has no servers.d equivalent and was left out")
        target = servers_dir / f"{_file_stem(name)}.json"
        if not dry_run:
            servers_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, json.dumps({"mcpServers": {name: converted}}, indent=2) + "\n")
            if not secrets_as_env and (converted.get("env") or converted.get("headers")):
                os.chmod(target, 0o600)  # literal secrets: readable by the user only
        result.written.append(target)
        del host_file.servers[name]
    result.host = Outcome(path, host_file.changed(), host_file.diff())
    if result.host.changed and not dry_run:
        host_file.save()
    return result


def _convert(name: str, entry: dict[str, Any], secrets_as_env: bool, variables: dict[str, str]) -> tuple[dict[str, Any], set[str]]:
    converted = {k: v for k, v in entry.items() if k in _KNOWN_KEYS}
    dropped = set(entry) - _KNOWN_KEYS
    if entry.get("disabled") is True:  # Cursor's and some clients' spelling
        converted["enabled"] = False
        dropped.discard("disabled")
    kind = converted.pop("type", None)
    if kind in ("sse",) and "url" in converted:
        converted["transport"] = "sse"
    if secrets_as_env:
        prefix = _ENV_NAME.sub("_", name).upper()
        for key, value in list((converted.get("env") or {}).items()):
            if isinstance(value, str) and not value.startswith("${"):
                variables[key] = value
                converted["env"][key] = f"${{{key}}}"
        for key, value in list((converted.get("headers") or {}).items()):
            if isinstance(value, str) and "${" not in value:
                var = f"{prefix}_{_ENV_NAME.sub('_', key).upper()}"
                variables[var] = value
                converted["headers"][key] = f"${{{var}}}"
    return converted, dropped


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "server"


def _servers_d_names(servers_dir: Path) -> dict[str, Path]:
    names: dict[str, Path] = {}
    for file in sorted(servers_dir.glob("*.json")) if servers_dir.is_dir() else []:
        try:
            servers = json.loads(file.read_text(encoding="utf-8")).get("mcpServers", {})
        except (OSError, ValueError, AttributeError):
            continue
        for name in servers if isinstance(servers, dict) else ():
            names.setdefault(name, file)
    return names
