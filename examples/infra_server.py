"""An enterprise infrastructure MCP server for the Infra-Sentinel scenario, over a simulated cluster kept in SQLite.

The cluster lives in a SQLite database: nodes, VMs, services (version, replicas, environment, config), an
operations journal and service logs. The database is the file named by the INFRA_DB environment variable (seeded
when first opened, kept as it is afterwards), or an in-memory one when INFRA_DB is unset, so that every process
starts from the same seed. Nothing real is touched: exec_on_node only echoes the command it was given.

It exercises every MCP feature a gateway must carry, in both protocol eras: structured output, tool annotations,
progress, cancellation, elicitation (drain confirmation), sampling (incident summaries), roots (where to write
reports), resources and templates, prompts with completions, and tools that appear at run time (list_changed).
Some outputs are sensitive on purpose, for a gateway to handle: get_service shows a database URL with its
password, and get_logs returns free text that callers stored earlier (deploy notes).

Run it directly: `python examples/infra_server.py [stdio|http PORT]`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sqlite3
import string
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context, Elicit, ListRoots, Resolve, Sample
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageResult,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

mcp = MCPServer(
    "infra",
    instructions="Operate the example cluster: inspect nodes and services, provision VMs, deploy, scale, read logs.",
    log_level="WARNING",
)

ENVIRONMENTS = ("production", "staging", "development")
SIZES = ("small", "medium", "large")
VM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, environment TEXT NOT NULL, role TEXT NOT NULL,
                                  status TEXT NOT NULL, pods INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS vms (name TEXT PRIMARY KEY, size TEXT NOT NULL, labels TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS services (name TEXT PRIMARY KEY, version TEXT NOT NULL, replicas INTEGER NOT NULL,
                                     environment TEXT NOT NULL, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operations (id INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, status TEXT NOT NULL,
                                       detail TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS logs (id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, at TEXT NOT NULL,
                                 level TEXT NOT NULL, message TEXT NOT NULL);
"""
SEED_NODES = [
    ("web-1", "production", "web", "ready", 14),
    ("web-2", "production", "web", "ready", 12),
    ("db-1", "production", "database", "ready", 3),
    ("stage-1", "staging", "web", "ready", 6),
]
SEED_SERVICES = [  # name, version, replicas, environment
    ("checkout", "1.4.2", 4, "production"),
    ("search", "2.0.1", 3, "production"),
    ("payments", "3.1.0", 2, "production"),
    ("inventory", "0.9.8", 2, "staging"),
]


def _hints(*, read_only: bool = False, destructive: bool = False, idempotent: bool = False,
           open_world: bool = False) -> ToolAnnotations:
    return ToolAnnotations(read_only_hint=read_only, destructive_hint=destructive, idempotent_hint=idempotent,
                           open_world_hint=open_world)


READ_ONLY = _hints(read_only=True, idempotent=True)


# ----------------------------------------------------------------------------- models

def _absent(value: Any) -> bool:
    return value is None


class Node(BaseModel):
    name: str
    environment: str
    role: str
    status: str
    pods: int
    size: str | None = Field(None, exclude_if=_absent, description="VMs only: small, medium or large")
    labels: dict[str, str] | None = Field(None, exclude_if=_absent, description="VMs only: the labels given")


class NodeList(BaseModel):
    nodes: list[Node]


class ServiceConfig(BaseModel):
    database_url: str
    log_level: str
    max_connections: int


class Service(BaseModel):
    name: str
    version: str
    replicas: int
    environment: str
    config: ServiceConfig


class DrainConfirmation(BaseModel):
    confirm: bool = Field(description="Drain the node and evict its pods?")


# ----------------------------------------------------------------------------- the database

LOCK = threading.RLock()  # one connection, shared by the event loop and the worker threads of sync tools


def _now(at: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _password() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(20))


def _config(service: str, password: str) -> str:
    url = f"postgres://{service}:{password}@db-1:5432/{service}"
    return ServiceConfig(database_url=url, log_level="info", max_connections=20).model_dump_json()


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    with LOCK:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _seed(db: sqlite3.Connection) -> None:
    db.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?, ?)", SEED_NODES)
    start = time.time() - 60 * 41  # forty lines a minute apart, up to a minute ago
    for name, version, replicas, environment in SEED_SERVICES:
        db.execute("INSERT INTO services VALUES (?, ?, ?, ?, ?)",
                   (name, version, replicas, environment, _config(name, _password())))
        db.executemany("INSERT INTO logs (service, at, level, message) VALUES (?, ?, 'info', ?)",
                       [(name, _now(start + 60 * i), f"request {i} served in {(i * 7) % 97} ms") for i in range(1, 41)])


def _open(path: str) -> sqlite3.Connection:
    """Open the cluster database, creating and seeding it the first time (user_version marks a seeded one)."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.executescript(SCHEMA)
    with _transaction(conn):
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            _seed(conn)
            conn.execute("PRAGMA user_version = 1")
    return conn


DB = _open(os.environ.get("INFRA_DB") or ":memory:")


def _write() -> AbstractContextManager[sqlite3.Connection]:
    """One write transaction on the cluster database: all or nothing."""
    return _transaction(DB)


def _read(sql: str, *params: Any) -> list[sqlite3.Row]:
    with LOCK:
        return DB.execute(sql, params).fetchall()


def _record(db: sqlite3.Connection, op: str, status: str = "completed", **detail: Any) -> int:
    """Journal an operation; list_operations shows it."""
    cursor = db.execute("INSERT INTO operations (op, status, detail, at) VALUES (?, ?, ?, ?)",
                        (op, status, json.dumps(detail), _now()))
    return int(cursor.lastrowid or 0)


def _log(db: sqlite3.Connection, service: str, message: str, level: str = "info") -> None:
    db.execute("INSERT INTO logs (service, at, level, message) VALUES (?, ?, ?, ?)", (service, _now(), level, message))


# ----------------------------------------------------------------------------- lookups and checks

NODE_SQL = "SELECT n.*, v.size, v.labels FROM nodes n LEFT JOIN vms v ON v.name = n.name"


def _names(table: str) -> list[str]:
    return [row["name"] for row in _read(f"SELECT name FROM {table} ORDER BY name")]


def _to_node(row: sqlite3.Row) -> Node:
    labels = json.loads(row["labels"]) if row["labels"] is not None else None
    return Node(name=row["name"], environment=row["environment"], role=row["role"], status=row["status"],
                pods=row["pods"], size=row["size"], labels=labels)


def _node(name: str) -> Node:
    rows = _read(f"{NODE_SQL} WHERE n.name = ?", name)
    if not rows:  # ToolError: an anticipated failure whose text the model may read
        raise ToolError(f"unknown node {name!r}; known: {', '.join(_names('nodes'))}")
    return _to_node(rows[0])


def _service(name: str) -> Service:
    rows = _read("SELECT * FROM services WHERE name = ?", name)
    if not rows:
        raise ToolError(f"unknown service {name!r}; known: {', '.join(_names('services'))}")
    row = rows[0]
    return Service(name=row["name"], version=row["version"], replicas=row["replicas"],
                   environment=row["environment"], config=ServiceConfig.model_validate_json(row["config"]))


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ToolError(f"unknown {what} {value!r}; one of: {', '.join(choices)}")


def _check_range(what: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ToolError(f"{what} must be between {low} and {high}, not {value}")


# ----------------------------------------------------------------------------- nodes and VMs

@mcp.tool(annotations=READ_ONLY)
def list_nodes(environment: str | None = None) -> NodeList:
    """List the cluster's nodes (VMs included), optionally only those of one environment."""
    rows = _read(f"{NODE_SQL} WHERE ? IS NULL OR n.environment = ? ORDER BY n.name", environment, environment)
    return NodeList(nodes=[_to_node(row) for row in rows])


@mcp.tool(annotations=READ_ONLY)
def get_node(name: str) -> Node:
    """Show one node: environment, role, status and pod count (and size and labels for a VM)."""
    return _node(name)


@mcp.tool(annotations=_hints())
def provision_vm(
    name: str,
    size: Annotated[str, Field(description="small, medium or large")],
    environment: Annotated[str, Field(description="production, staging or development")],
    labels: dict[str, str] | None = None,
) -> Node:
    """Create a VM; it joins the cluster as a node of role "vm" with the labels given."""
    if not VM_NAME.fullmatch(name):
        raise ToolError(f"invalid VM name {name!r}: lowercase letters, digits and dashes, at most 63")
    _check_choice("size", size, SIZES)
    _check_choice("environment", environment, ENVIRONMENTS)
    with _write() as db:
        if db.execute("SELECT 1 FROM nodes WHERE name = ?", (name,)).fetchone():
            raise ToolError(f"a node named {name!r} already exists")
        db.execute("INSERT INTO nodes VALUES (?, ?, 'vm', 'ready', 0)", (name, environment))
        db.execute("INSERT INTO vms VALUES (?, ?, ?, ?)", (name, size, json.dumps(labels or {}), _now()))
        _record(db, "provision_vm", vm=name, size=size, environment=environment)
    return _node(name)


@mcp.tool(annotations=_hints(destructive=True, idempotent=True))
def delete_vm(name: str) -> str:
    """Delete a VM made by provision_vm (cluster nodes cannot be deleted)."""
    with _write() as db:
        if not db.execute("SELECT 1 FROM vms WHERE name = ?", (name,)).fetchone():
            raise ToolError(f"unknown VM {name!r}; VMs: {', '.join(_names('vms')) or 'none'}")
        db.execute("DELETE FROM vms WHERE name = ?", (name,))
        db.execute("DELETE FROM nodes WHERE name = ?", (name,))
        _record(db, "delete_vm", vm=name)
    return f"VM {name} deleted."


async def confirm_drain(name: str) -> DrainConfirmation | Elicit[DrainConfirmation]:
    rows = _read("SELECT environment FROM nodes WHERE name = ?", name)
    if not rows or rows[0]["environment"] != "production":
        return DrainConfirmation(confirm=True)  # staging needs no confirmation
    return Elicit(f"Drain production node {name!r}? Its pods will be evicted.", DrainConfirmation)


@mcp.tool(annotations=_hints(destructive=True, idempotent=True))
async def drain_node(
    name: str, reason: str, ctx: Context, confirmation: Annotated[DrainConfirmation, Resolve(confirm_drain)]
) -> str:
    """Cordon a node and evict its pods (production nodes ask for confirmation first)."""
    _node(name)
    if not confirmation.confirm:
        return f"Drain of {name} cancelled by the operator."
    with _write() as db:
        evicted = db.execute("SELECT pods FROM nodes WHERE name = ?", (name,)).fetchone()["pods"]
        db.execute("UPDATE nodes SET pods = 0, status = 'drained' WHERE name = ?", (name,))
        _record(db, "drain", node=name, reason=reason)
    await ctx.notify_resource_updated(f"infra://nodes/{name}")  # watchers on subscriptions/listen
    return f"Node {name} drained ({evicted} pods evicted). Reason: {reason}"


@mcp.tool(annotations=_hints(destructive=True, open_world=True))
def exec_on_node(node: str, command: str) -> str:
    """Run a shell command on a node (simulated: nothing is executed, the command is echoed)."""
    _node(node)
    with _write() as db:
        _record(db, "exec", node=node, command=command)
    return f"[{node}] $ {command}\n(simulated) exit status 0"


# ----------------------------------------------------------------------------- services

@mcp.tool(annotations=READ_ONLY)
def get_service(service: str) -> Service:
    """Show a service: version, replicas, environment and configuration (including its database URL)."""
    return _service(service)


@mcp.tool(annotations=_hints())
async def deploy_service(
    service: str,
    version: str,
    environment: Annotated[str, Field(description="production, staging or development")],
    ctx: Context,
    steps: int = 5,
    note: Annotated[str, Field(description="Free text written to the service's log")] = "",
) -> str:
    """Roll out a service version to an environment, reporting progress per step; cancellable."""
    _service(service)
    _check_choice("environment", environment, ENVIRONMENTS)
    _check_range("steps", steps, 1, 100)
    with _write() as db:
        op = _record(db, "deploy", "running", service=service, version=version, environment=environment)
        _log(db, service, f"deploy {version} to {environment} started" + (f"; note: {note}" if note else ""))
    try:
        for step in range(1, steps + 1):
            await asyncio.sleep(0.2)
            await ctx.report_progress(step, total=steps, message=f"{service} {version}: step {step}/{steps}")
    except asyncio.CancelledError:
        _finish_deploy(op, service, f"deploy {version} to {environment} cancelled", "cancelled")
        raise
    with _write() as db:
        db.execute("UPDATE services SET version = ?, environment = ? WHERE name = ?", (version, environment, service))
    _finish_deploy(op, service, f"deploy {version} to {environment} completed", "completed")
    return f"Deployed {service} {version} to {environment} in {steps} steps."


def _finish_deploy(op: int, service: str, message: str, status: str) -> None:
    with _write() as db:
        db.execute("UPDATE operations SET status = ? WHERE id = ?", (status, op))
        _log(db, service, message, "info" if status == "completed" else "warn")


@mcp.tool(annotations=_hints(idempotent=True))
def scale_service(service: str, replicas: Annotated[int, Field(description="0 to 100")]) -> str:
    """Set the number of replicas of a service (0 to 100)."""
    _check_range("replicas", replicas, 0, 100)
    with _write() as db:
        before = _service(service).replicas
        db.execute("UPDATE services SET replicas = ? WHERE name = ?", (replicas, service))
        _record(db, "scale", service=service, replicas=replicas, previous=before)
        _log(db, service, f"scaled from {before} to {replicas} replicas")
    return f"Scaled {service} from {before} to {replicas} replicas."


@mcp.tool(annotations=_hints(destructive=True))
def rotate_credentials(service: str) -> str:
    """Rotate a service's database password; the old one stops working."""
    with _write() as db:
        _service(service)
        db.execute("UPDATE services SET config = ? WHERE name = ?", (_config(service, _password()), service))
        _record(db, "rotate_credentials", service=service)
        _log(db, service, "database credentials rotated")
    return f"Credentials of {service} rotated; the new password is in the service's configuration."


@mcp.tool(annotations=READ_ONLY)
def get_logs(service: str, lines: int = 20) -> str:
    """The last N log lines of a service (1 to 500)."""
    _service(service)
    _check_range("lines", lines, 1, 500)
    rows = _read("SELECT * FROM (SELECT * FROM logs WHERE service = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                 service, lines)
    return "\n".join(f"{row['at']} {service} [{row['level']}] {row['message']}" for row in rows)


@mcp.tool(annotations=READ_ONLY)
def list_operations() -> list[dict[str, Any]]:
    """Every operation run on the cluster, oldest first, with its status (running, completed, cancelled)."""
    rows = _read("SELECT * FROM operations ORDER BY id")
    return [{"id": r["id"], "op": r["op"], **json.loads(r["detail"]), "status": r["status"], "at": r["at"]} for r in rows]


# ----------------------------------------------------------------------------- host requests

def incident_prompt(incident: str) -> Sample:
    text = f"Summarize this incident for an on-call engineer in one sentence: {incident}"
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=text))], max_tokens=120)


@mcp.tool(annotations=READ_ONLY)
async def summarize_incident(
    incident: str, summary: Annotated[CreateMessageResult, Resolve(incident_prompt)]
) -> str:
    """Ask the host's model to summarize an incident."""
    text = summary.content.text if summary.content.type == "text" else "(no text)"
    return f"Summary ({summary.model}): {text}"


def workspace() -> ListRoots:
    return ListRoots()


@mcp.tool(annotations=READ_ONLY)
async def report_destinations(roots: Annotated[ListRootsResult, Resolve(workspace)]) -> list[str]:
    """Where incident reports may be written: the host's workspace roots."""
    return [str(root.uri) for root in roots.roots]


def maintenance_window(hours: int = 2) -> str:
    """Open a maintenance window (only present once maintenance tools are enabled)."""
    with _write() as db:
        _record(db, "maintenance", hours=hours)
    return f"Maintenance window open for {hours} h."


@mcp.tool(annotations=_hints(idempotent=True))
async def enable_maintenance_tools(ctx: Context) -> str:
    """Add the maintenance tools to this server's tool list (announced with list_changed)."""
    if "maintenance_window" not in {t.name for t in await mcp.list_tools()}:
        mcp.add_tool(maintenance_window, annotations=_hints())
    await ctx.notify_tools_changed()  # modern-era listeners
    try:
        await ctx.request_context.session.send_tool_list_changed()  # handshake-era session
    except Exception:  # noqa: BLE001 - a modern request has no standalone channel
        pass
    return "maintenance tools enabled"


# ----------------------------------------------------------------------------- resources, prompts, completions

@mcp.resource("infra://inventory", mime_type="application/json")
def inventory() -> dict[str, Any]:
    """The cluster inventory: nodes and service versions."""
    nodes = [_to_node(row) for row in _read(f"{NODE_SQL} ORDER BY n.name")]
    services = {row["name"]: row["version"] for row in _read("SELECT name, version FROM services ORDER BY name")}
    return {"nodes": {n.name: n.model_dump(exclude={"name"}) for n in nodes}, "services": services}


@mcp.resource("infra://nodes/{name}", mime_type="application/json")
def node_resource(name: str) -> dict[str, Any]:
    """One node as a resource."""
    try:
        return _node(name).model_dump()
    except ToolError as exc:
        raise ResourceError(str(exc)) from None


@mcp.resource("infra://runbooks/{topic}", mime_type="text/markdown")
def runbook(topic: str) -> str:
    """The runbook for a topic (drain, deploy, rollback)."""
    return f"# Runbook: {topic}\n\n1. Check dashboards.\n2. Follow the {topic} checklist.\n3. Record the outcome."


@mcp.prompt()
def incident_report(service: str, severity: str = "sev2") -> str:
    """Draft an incident report for a service."""
    rows = _read("SELECT version FROM services WHERE name = ?", service)
    version = rows[0]["version"] if rows else "?"
    return f"Write a {severity} incident report for {service}, currently at version {version}."


@mcp.completion()
async def complete(
    ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument, context: CompletionContext | None
) -> Completion | None:
    if argument.name == "service":
        pool = _names("services")
    elif argument.name == "severity":
        pool = ["sev1", "sev2", "sev3"]
    elif argument.name == "name":
        pool = _names("nodes")
    else:
        return None
    return Completion(values=[v for v in pool if v.startswith(argument.value)])


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        mcp.run("streamable-http", port=int(sys.argv[2]))
    else:
        mcp.run("stdio")
