"""Command-line operations of the trust plane: policy check, tool approval, audit, tokens."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from fmos_mcp.config import load_servers_dir
from fmos_mcp.gateway.naming import exposed_name
from fmos_mcp.state.audit import AuditLog
from fmos_mcp.state.db import StateDB
from fmos_mcp.state.pins import PinStore
from fmos_mcp.trust.plane import token_digest
from fmos_mcp.trust.policy import load_policies


def policy_check(directory: Path) -> int:
    if not directory.is_dir():
        print(f"fmos-mcp: {directory} is not a directory", file=sys.stderr)
        return 2
    policies = load_policies(directory)
    for error in policies.errors:
        print(f"error: {error}")
    print(f"{len(policies.files)} file(s) valid: {len(policies.rules)} rules, {len(policies.judges)} judges, "
          f"{len(policies.limits)} limits, {len(policies.overrides)} class overrides, {len(policies.tokens)} tokens"
          + (f"; {len(policies.errors)} error(s)" if policies.errors else ""))
    return 1 if policies.errors else 0


def tools_approve(name: str, state_dir: Path, servers_dir: Path, by: str) -> int:
    """Approve the definition last seen of a tool, given as its exposed name or as SERVER/TOOL."""
    db = StateDB(state_dir)
    pins = PinStore(db)
    prefixes = {n: s.prefix for n, s in load_servers_dir(servers_dir).servers.items()}
    matches = [p for p in pins.load().values()
               if name in (f"{p.server}/{p.tool}", exposed_name(prefixes.get(p.server, p.server), p.tool))]
    if not matches:
        print(f"fmos-mcp: no tool named {name!r} has been seen (use the name `fmos-mcp tools` shows, or SERVER/TOOL)",
              file=sys.stderr)
        return 1
    pin = matches[0]
    if pin.approved:
        print(f"{pin.server}/{pin.tool} is already approved in its current definition")
        return 0
    pins.approve(pin.server, pin.tool, by)
    AuditLog(db).append_now([(time.time(), {
        "method": "tools/approve", "server": pin.server, "target": pin.tool, "action": "approve", "rule": "operator",
        "reason": f"approved by {by}", "findings": list(pin.findings), "definition_sha256": pin.seen_hash,
    })])
    print(f"approved {pin.server}/{pin.tool} (definition {pin.seen_hash[:12]}); a running gateway lists it within seconds")
    for finding in pin.findings:
        print(f"  had finding: {finding.get('detector')}/{finding.get('kind')} in {finding.get('where')}")
    return 0


def audit_show(state_dir: Path, last: int, tenant: str | None, as_json: bool) -> int:
    rows = AuditLog(StateDB(state_dir)).rows(last, tenant)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"]))
        print(f"{row['seq']:>6}  {when}  {row.get('tenant') or '-':<10} {row.get('action', ''):<8} "
              f"{row.get('tool') or row.get('target') or '-':<32} {row.get('rule', '')}: {row.get('reason', '')[:80]}")
    return 0


def audit_verify(state_dir: Path) -> int:
    result = AuditLog(StateDB(state_dir)).verify()
    if result.ok:
        print(f"audit trail intact: {result.rows} rows, chain and head verified")
        return 0
    print(f"audit trail TAMPERED: {len(result.problems)} problem(s) in {result.rows} rows")
    for problem in result.problems:
        print(f"  {problem}")
    return 1


def token_add(file: Path, tenant: str, roles: list[str], name: str | None) -> int:
    data: dict[str, Any] = {}
    if file.exists():
        data = yaml.safe_load(file.read_text()) or {}
    token = secrets.token_urlsafe(32)
    entry = {"name": name, "sha256": token_digest(token), "tenant": tenant, "roles": roles}
    data.setdefault("tokens", []).append({k: v for k, v in entry.items() if v is not None})
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# HTTP bearer tokens (SHA-256 digests only; the tokens themselves were shown once).\n")
        yaml.safe_dump(data, handle, sort_keys=False)
    os.replace(tmp, file)
    print(f"token for tenant '{tenant}'{' with roles ' + ', '.join(roles) if roles else ''} (shown once, keep it safe):")
    print(token)
    print(f"its digest is in {file}; restart the gateway to accept it")
    return 0
