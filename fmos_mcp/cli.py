"""fmos-mcp command line: serve, servers, tools, trace."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from fmos_mcp import __version__, hostconfig, logs, paths
from fmos_mcp.app import App, AppConfig, build
from fmos_mcp.evolve import commands as evolve
from fmos_mcp.gateway.core import GatewaySettings
from fmos_mcp.gateway.downstream import ServerState
from fmos_mcp.gateway.http import HttpOptions, is_loopback
from fmos_mcp.gateway.pool import DownstreamPool, PoolKey
from fmos_mcp.gateway.serving import serve_http, serve_stdio
from fmos_mcp.models.budget_commands import budget_show
from fmos_mcp.models.openai_api import openai_routes
from fmos_mcp.state.db import StateDB
from fmos_mcp.state.traces import TraceStore
from fmos_mcp.traps.request import HostCapabilities
from fmos_mcp.trust import commands


def _dirs(parser: argparse.ArgumentParser) -> None:
    config_home = paths.user_config_dir()
    parser.add_argument("--servers-dir", type=Path, default=None,
                        help=f"downstream servers (*.json); default ./servers.d, else {config_home / 'servers.d'}")
    parser.add_argument("--policies-dir", type=Path, default=None,
                        help=f"policies; default ./policies, else {config_home / 'policies'}")
    parser.add_argument("--state-dir", type=Path, default=None, help=f"state database; default {paths.user_state_dir()}")
    parser.add_argument("--tenant", default=None,
                        help="the tenant stdio hosts (and --auth-token holders) act as; default: policies' identity, else local")
    parser.add_argument("--role", dest="roles", action="append", default=None,
                        help="a role of that identity (repeatable); default: policies' identity roles")
    parser.add_argument("--log-level", default=os.environ.get("FMOS_LOG_LEVEL"),
                        help="debug, info, warning, error (default: info for serve, warning otherwise)")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmos-mcp", description="One mediated MCP endpoint over many MCP servers.")
    parser.add_argument("--version", action="version", version=f"fmos-mcp {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="serve the gateway (stdio by default)")
    _dirs(serve)
    serve.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio",
                       help="stdio, or http/sse (both serve one app: streamable HTTP at /mcp and SSE at /sse)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--auth-token", default=os.environ.get("FMOS_AUTH_TOKEN") or None,
                       help="bearer token required on HTTP (env FMOS_AUTH_TOKEN); mandatory off loopback")
    serve.add_argument("--allowed-host", action="append", default=[],
                       help="an extra Host header value to accept (DNS-rebinding protection)")
    serve.add_argument("--json-response", action="store_true", help="answer streamable HTTP with plain JSON")
    serve.add_argument("--startup-grace", type=_positive, default=5.0,
                       help="seconds a host's first list waits for servers still starting")
    serve.add_argument("--page-size", type=int, default=500,
                       help="items per page of every list hosts see (fewer pages: fewer round trips)")
    serve.add_argument("--no-trust", action="store_true",
                       help="switch the trust plane off (policies, detectors, audit): only to measure what it costs")
    serve.add_argument("--input-timeout", type=_positive, default=300.0,
                       help="seconds a host has to answer a server's request (elicitation, sampling, roots; for a "
                            "modern-era host, its InputRequiredResult round) before the waiting call is cancelled")

    for name, text in (("servers", "each downstream server: status, era, tool count, last error"),
                       ("tools", "every aggregated tool: name, server, status")):
        probe = sub.add_parser(name, help=text)
        _dirs(probe)
        if name == "tools":
            probe.add_argument("action", nargs="?", choices=["approve"], help="approve: release a quarantined tool")
            probe.add_argument("tool", nargs="?", help="with approve: the tool's name (as listed) or SERVER/TOOL")
            probe.add_argument("--by", default=os.environ.get("USER", "operator"), help="who approves (for the audit)")
        probe.add_argument("--json", action="store_true")
        probe.add_argument("--timeout", type=_positive, default=30.0, help="seconds to wait for servers to start")

    for name, text in (("install", "register fmos-mcp in a host's MCP configuration (stdio)"),
                       ("uninstall", "remove fmos-mcp from a host and put back the servers it had")):
        host = sub.add_parser(name, help=text)
        host.add_argument("host", choices=hostconfig.HOSTS)
        host.add_argument("--config", type=Path, help="the host's configuration file (default: its user-scope file)")
        host.add_argument("--name", default=hostconfig.DEFAULT_NAME, help="the server name fmos-mcp gets in the host")
        host.add_argument("--dry-run", action="store_true", help="print the change, write nothing")
        if name == "install":
            _dirs(host)

    config = sub.add_parser("config", help="move a host's existing servers into servers.d")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    imp = config_sub.add_parser("import", help="move a host's mcpServers entries into servers.d (one file each)")
    imp.add_argument("--from", dest="host", required=True, choices=hostconfig.HOSTS)
    imp.add_argument("path", nargs="?", type=Path, help="the host's configuration file (default: its user-scope file)")
    imp.add_argument("--servers-dir", type=Path, default=None)
    imp.add_argument("--secrets-as-env", action="store_true",
                     help="write env and header values as ${VAR} references instead of copying them")
    imp.add_argument("--name", default=hostconfig.DEFAULT_NAME, help="fmos-mcp's own entry in the host (left alone)")
    imp.add_argument("--dry-run", action="store_true")
    imp.add_argument("--log-level", default=None)

    trace = sub.add_parser("trace", help="recent requests the gateway recorded")
    _dirs(trace)
    trace.add_argument("--last", type=int, default=20)
    trace.add_argument("--json", action="store_true")
    trace_sub = trace.add_subparsers(dest="trace_command")
    export = trace_sub.add_parser("export", help="every trace row as JSON Lines, without personal data or secrets")
    _dirs(export)
    export.add_argument("--out", type=Path, default=None, help="default: standard output")
    export.add_argument("--last", type=int, default=None, help="only the last N rows")
    export.add_argument("--only-tenant", dest="only_tenant", default=None, help="only this tenant's rows")

    _evolve_parser(sub)

    policy = sub.add_parser("policy", help="policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate every policy file; report each error with file, rule and key")
    check.add_argument("directory", type=Path, nargs="?", default=None, help="default: the policies directory")

    audit = sub.add_parser("audit", help="the hash-chained audit trail of trust decisions")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    show = audit_sub.add_parser("show", help="recent decisions")
    _dirs(show)
    show.add_argument("--last", type=int, default=50)
    show.add_argument("--json", action="store_true")
    verify = audit_sub.add_parser("verify", help="check that no row was edited, deleted or cut off")
    _dirs(verify)

    budget = sub.add_parser("budget", help="budgets: usage, what is left, when windows reset, shared prices")
    _dirs(budget)
    budget.add_argument("--json", action="store_true")

    token = sub.add_parser("token", help="HTTP bearer tokens mapped to a tenant and roles")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    add = token_sub.add_parser("add", help="issue a token (printed once; only its SHA-256 is stored)")
    add.add_argument("--tenant", required=True)
    add.add_argument("--role", dest="roles", action="append", default=[])
    add.add_argument("--name", default=None, help="who or what holds it")
    add.add_argument("--file", type=Path, default=None, help="default: tokens.yaml in the policies directory")
    add.add_argument("--policies-dir", type=Path, default=None)
    return parser


def _evolve_parser(sub: Any) -> None:
    evolve = sub.add_parser("evolve", help="learn traps and routes from traces; versions, canaries, rollback")
    evolve_sub = evolve.add_subparsers(dest="evolve_command", required=True)
    train = evolve_sub.add_parser("train", help="fit a trap model on the traces; report on held-back sessions")
    _dirs(train)
    train.add_argument("--holdout", type=float, default=0.3, help="share of the latest sessions held back")
    train.add_argument("--out", type=Path, default=None, help="write the model (JSON) here")
    train.add_argument("--json", action="store_true")
    propose = evolve_sub.add_parser("propose", help="record a candidate version")
    _dirs(propose)
    propose.add_argument("kind", choices=["trap-model", "routing", "policies", "skills"])
    propose.add_argument("--from", dest="source", type=Path, default=None,
                         help="a model or table file, or a policies or skills directory; default: learn from the "
                              "traces (trap-model, routing) or the configured directory")
    propose.add_argument("--note", default=None)
    evaluate = evolve_sub.add_parser("eval", help="replay traces and evaluation sets through current and candidate")
    _dirs(evaluate)
    evaluate.add_argument("candidate", help="a version id (7) or kind@version (trap-model@2)")
    evaluate.add_argument("--evalset", type=Path, action="append", default=[],
                          help="JSON Lines of labelled calls (repeatable); default: evalsets/*.jsonl beside policies/")
    evaluate.add_argument("--json", action="store_true")
    canary = evolve_sub.add_parser("canary", help="serve an evaluated candidate to a share of sessions")
    _dirs(canary)
    canary.add_argument("candidate")
    canary.add_argument("--share", type=float, required=True, help="percentage of sessions")
    promote = evolve_sub.add_parser("promote", help="make an evaluated candidate the active version")
    _dirs(promote)
    promote.add_argument("candidate")
    rollback = evolve_sub.add_parser("rollback", help="stop a canary, or go back to the previous (or a given) version")
    _dirs(rollback)
    rollback.add_argument("version", nargs="?", default=None)
    rollback.add_argument("--kind", choices=["trap-model", "routing", "policies", "skills"], default=None)
    history = evolve_sub.add_parser("log", help="versions and the history of what was done to them")
    _dirs(history)
    history.add_argument("--last", type=int, default=50)
    history.add_argument("--json", action="store_true")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help(sys.stderr)
        return 2
    logs.configure(getattr(args, "log_level", None) or ("info" if args.command == "serve" else "warning"))
    handler = {
        "serve": _serve, "servers": _servers, "tools": _tools, "trace": _trace,
        "install": _install, "uninstall": _uninstall, "config": _config_import,
        "policy": _policy, "audit": _audit, "token": _token, "budget": _budget, "evolve": _evolve,
    }[args.command]
    try:
        return handler(args)
    except hostconfig.HostConfigError as exc:
        print(f"fmos-mcp: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _config(args: argparse.Namespace, transport: str = "stdio", settings: GatewaySettings | None = None) -> AppConfig:
    config_home = paths.user_config_dir()
    return AppConfig(
        servers_dir=args.servers_dir or paths.default_dir("servers.d", config_home),
        policies_dir=args.policies_dir or paths.default_dir("policies", config_home),
        state_dir=args.state_dir or paths.user_state_dir(),
        transport=transport,
        tenant=args.tenant,
        roles=tuple(args.roles) if args.roles is not None else None,
        settings=settings or GatewaySettings(),
    )


# ----------------------------------------------------------------------------- serve

def _serve(args: argparse.Namespace) -> int:
    transport = "stdio" if args.transport == "stdio" else "http"
    if args.page_size < 1:
        print("fmos-mcp: --page-size must be at least 1", file=sys.stderr)
        return 2
    settings = GatewaySettings(startup_grace=args.startup_grace, round_ttl=args.input_timeout, page_size=args.page_size)
    if transport == "stdio":
        settings = replace(settings, pool_idle=float("inf"))  # one host, for the life of the process
    app = build(replace(_config(args, transport, settings), trust=not args.no_trust))
    if transport == "stdio":
        anyio.run(serve_stdio, app.gateway, app.background)
        return 0
    tokens = app.trust.tokens()
    if not is_loopback(args.host) and not (args.auth_token or tokens):
        print(f"fmos-mcp: refusing to listen on {args.host} without a token: pass --auth-token, set FMOS_AUTH_TOKEN "
              "or issue tokens with `fmos-mcp token add` (only loopback addresses may go without one)", file=sys.stderr)
        return 2
    options = HttpOptions(args.host, args.port, args.auth_token, tuple(args.allowed_host), args.json_response, tokens)
    serve_http(app.gateway, options, background=app.background, on_ready=lambda: _announce(app, args),
               extra_routes=lambda guard: openai_routes(app.gateway, guard, app.models.model_names))
    return 0


def _announce(app: App, args: argparse.Namespace) -> None:
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host}:{args.port}"
    auth = ' --header "Authorization: Bearer $FMOS_AUTH_TOKEN"' if args.auth_token else ""
    lines = [
        f"fmos-mcp {__version__}: {len(app.servers.servers)} servers from {app.config.servers_dir}, "
        f"state in {app.config.state_dir / 'fmos.sqlite3'}",
        f"  streamable HTTP  {base}/mcp",
        f"  SSE              {base}/sse",
        "Connect a host:",
        f"  Claude Code      claude mcp add --transport http fmos {base}/mcp{auth}",
        f'  Cursor / others  {{"mcpServers": {{"fmos": {{"url": "{base}/mcp"}}}}}}',
        f"  Try it           npx @modelcontextprotocol/inspector --cli {base}/mcp --method tools/list",
    ]
    if app.errors:
        lines.append(f"{len(app.errors)} configuration error(s); servers with errors are skipped:")
        lines += [f"  {error}" for error in app.errors]
    print("\n".join(lines), flush=True)


# ----------------------------------------------------------------------------- servers / tools

def _probe(args: argparse.Namespace) -> tuple[App, DownstreamPool]:
    """Start every server once with no host capabilities and wait for each first attempt."""
    settings = GatewaySettings(startup_grace=args.timeout, connect_timeout=args.timeout)
    app = build(_config(args, "stdio", settings))
    result: list[DownstreamPool] = []

    async def run() -> None:
        async with anyio.create_task_group() as tasks:
            await tasks.start(app.gateway.run)
            tenant = app.gateway.face.default_identity.tenant
            result.append(await app.gateway.pool_for(PoolKey(tenant, HostCapabilities())))
            tasks.cancel_scope.cancel()

    anyio.run(run)
    return app, result[0]


def _servers(args: argparse.Namespace) -> int:
    app, pool = _probe(args)
    rows = [
        {
            "name": s.name, "status": s.state.value, "era": s.era, "transport": s.spec.transport,
            "tools": len(s.tools) if s.state is ServerState.UP else None, "last_error": s.last_error,
            "file": s.spec.file,
        }
        for s in sorted(pool.servers.values(), key=lambda s: s.name)
    ]
    errors = [str(e) for e in app.errors]
    if args.json:
        print(json.dumps({"servers": rows, "config_errors": errors}, indent=2))
    else:
        _table(rows, ["name", "status", "era", "tools", "last_error"])
        for error in errors:
            print(f"config error: {error}")
    down = any(r["status"] not in ("up", "disabled") for r in rows)
    return 1 if down or errors else 0


def _tools(args: argparse.Namespace) -> int:
    if args.action == "approve":
        if not args.tool:
            print("fmos-mcp: tools approve needs the tool's name", file=sys.stderr)
            return 2
        config = _config(args)
        return commands.tools_approve(args.tool, config.state_dir, config.servers_dir, args.by)
    app, pool = _probe(args)
    catalog, vetting = pool.catalog, app.trust.vetting
    rows: list[dict[str, Any]] = []
    for tool in catalog.lists["tools"]:
        route = catalog.tools[tool.name]
        profile = vetting.profiles.get((route.server, route.target))
        rows.append({"name": tool.name, "server": route.server, "original": route.target, "status": "active",
                     **_trust_columns(profile), "description": (tool.description or "").split("\n")[0][:100]})
    for q in vetting.quarantined.values():
        profile = vetting.profiles.get((q.server, q.tool))
        rows.append({"name": q.exposed, "server": q.server, "original": q.tool, "status": "quarantined",
                     **_trust_columns(profile), "reason": q.reason, "findings": list(q.findings), "description": ""})
    for server, name in catalog.filtered:
        rows.append({"name": None, "server": server, "original": name, "status": "filtered", "description": ""})
    unavailable = [s.name for s in pool.servers.values() if s.state not in (ServerState.UP, ServerState.DISABLED)]
    if args.json:
        print(json.dumps({"tools": rows, "conflicts": catalog.conflicts, "unavailable_servers": unavailable,
                          "config_errors": [str(e) for e in app.errors],
                          "policy_errors": [str(e) for e in app.trust.policies.errors]}, indent=2))
    else:
        _table(rows, ["name", "server", "status", "class", "path", "description"])
        for conflict in catalog.conflicts:
            print(f"conflict: {conflict}")
        for q in vetting.quarantined.values():
            print(f"quarantined: {q.exposed} ({q.reason}): "
                  + "; ".join(f"{f['detector']}/{f['kind']} in {f['where']}" for f in q.findings[:3])
                  + f"\n  release with: fmos-mcp tools approve {q.exposed}")
        for name in unavailable:
            print(f"server '{name}' is unavailable; its tools are not listed (see `fmos-mcp servers`)")
    return 0


def _trust_columns(profile: Any) -> dict[str, Any]:
    if profile is None:
        return {}
    return {**profile.classification.as_json(), "path": "fast" if profile.fast else "trust",
            "rules": [r.id for r in profile.rules] + [j.id for j in profile.judges] + [lim.id for lim in profile.limits]}


# ----------------------------------------------------------------------------- hosts

def _install(args: argparse.Namespace) -> int:
    config = _config(args)
    path = args.config or hostconfig.config_path(args.host)
    gateway = hostconfig.GatewayPaths(config.servers_dir, config.policies_dir, config.state_dir)
    outcome = hostconfig.install(args.host, path, args.name, gateway, dry_run=args.dry_run)
    _report(outcome, args.dry_run, f"{args.host} will start fmos-mcp as '{args.name}' (restart the host to load it)")
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    path = args.config or hostconfig.config_path(args.host)
    outcome = hostconfig.uninstall(args.host, path, args.name, dry_run=args.dry_run)
    _report(outcome, args.dry_run, f"fmos-mcp removed from {args.host}")
    return 0


def _config_import(args: argparse.Namespace) -> int:
    path = args.path or hostconfig.config_path(args.host)
    servers_dir = args.servers_dir or paths.default_dir("servers.d", paths.user_config_dir())
    result = hostconfig.import_servers(
        path, servers_dir, secrets_as_env=args.secrets_as_env, gateway_name=args.name, dry_run=args.dry_run
    )
    verb = "would write" if args.dry_run else "wrote"
    for file in result.written:
        print(f"{verb} {file}")
    for note in result.skipped:
        print(f"skipped {note}")
    for note in result.notes:
        print(f"note: {note}")
    if result.variables:
        print("set these environment variables where fmos-mcp runs (their values were in the host's file):")
        for name in sorted(result.variables):
            print(f"  {name}")
    if result.host is not None:
        _report(result.host, args.dry_run, f"{len(result.written)} server(s) moved out of {path}")
    if not result.written:
        print(f"nothing to import from {path}")
    return 0


def _report(outcome: hostconfig.Outcome, dry_run: bool, done: str) -> None:
    for note in outcome.notes:
        print(note)
    if not outcome.changed:
        print(f"{outcome.path}: already up to date, nothing changed")
    elif dry_run:
        print(outcome.diff, end="")
    else:
        print(f"{outcome.path}: updated (original kept as {outcome.path.name}{hostconfig.BACKUP_SUFFIX}); {done}")


# ----------------------------------------------------------------------------- trace

def _trace(args: argparse.Namespace) -> int:
    if args.trace_command == "export":
        return _trace_export(args)
    state_dir = args.state_dir or paths.user_state_dir()
    if not (state_dir / "fmos.sqlite3").exists():
        print(f"no state database in {state_dir} yet: run `fmos-mcp serve` first", file=sys.stderr)
        return 1
    rows = TraceStore(StateDB(state_dir)).recent(args.last)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        row["time"] = time.strftime("%H:%M:%S", time.localtime(row["ts"]))
        row["ms"] = f"{row['latency_ms']:.1f}"
        row["traps"] = ",".join(t["decision"] for t in row["traps"]) or ""
    _table(rows, ["time", "tenant", "method", "server", "name", "ms", "outcome", "traps", "error"])
    return 0


def _trace_export(args: argparse.Namespace) -> int:
    def export() -> int:
        ctx = _evolve_context(args)
        if args.out is None:
            return evolve.trace_export(ctx, sys.stdout, last=args.last, tenant=args.only_tenant)
        with args.out.open("w", encoding="utf-8") as out:
            return evolve.trace_export(ctx, out, last=args.last, tenant=args.only_tenant)
    return evolve.run(export)


# ----------------------------------------------------------------------------- evolve

def _evolve_context(args: argparse.Namespace) -> evolve.Context:
    config = _config(args)
    return evolve.Context.open(config.state_dir, config.policies_dir, config.servers_dir)


def _evolve(args: argparse.Namespace) -> int:
    def dispatch() -> int:
        ctx, command = _evolve_context(args), args.evolve_command
        if command == "train":
            return evolve.train(ctx, holdout=args.holdout, out=args.out, as_json=args.json)
        if command == "propose":
            return evolve.propose(ctx, args.kind, args.source, args.note)
        if command == "eval":
            return evolve.evaluate(ctx, args.candidate, args.evalset, as_json=args.json)
        if command == "canary":
            return evolve.canary(ctx, args.candidate, args.share)
        if command == "promote":
            return evolve.promote(ctx, args.candidate)
        if command == "rollback":
            return evolve.rollback(ctx, args.version, args.kind)
        return evolve.log(ctx, args.last, args.json)
    return evolve.run(dispatch)


# ----------------------------------------------------------------------------- trust plane

def _policy(args: argparse.Namespace) -> int:
    config_home = paths.user_config_dir()
    return commands.policy_check(args.directory or paths.default_dir("policies", config_home))


def _audit(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or paths.user_state_dir()
    if not (state_dir / "fmos.sqlite3").exists():
        print(f"no state database in {state_dir} yet: run `fmos-mcp serve` first", file=sys.stderr)
        return 1
    if args.audit_command == "verify":
        return commands.audit_verify(state_dir)
    return commands.audit_show(state_dir, args.last, args.tenant, args.json)


def _budget(args: argparse.Namespace) -> int:
    config_home = paths.user_config_dir()
    state_dir = args.state_dir or paths.user_state_dir()
    return budget_show(state_dir, args.policies_dir or paths.default_dir("policies", config_home), args.json)


def _token(args: argparse.Namespace) -> int:
    policies = args.policies_dir or paths.default_dir("policies", paths.user_config_dir())
    return commands.token_add(args.file or policies / "tokens.yaml", args.tenant, args.roles, args.name)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [min(len(row[i]), 60) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v[:60].ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
