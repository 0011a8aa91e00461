"""An infrastructure MCP server for the Infra-Sentinel scenario: nodes, deployments, logs, credentials.

It simulates a small fleet in memory and exercises every MCP feature a gateway must carry, in both protocol
eras: structured output, tool annotations, progress, cancellation, elicitation (drain confirmation),
sampling (incident summaries), roots (where to write reports), resources and templates, prompts with
completions, logging, and tools that appear at run time (list_changed).

Run it directly: `python examples/infra_server.py [stdio|http PORT]`.
"""

from __future__ import annotations

import asyncio
import sys
import time
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
    instructions="Operate the example fleet: inspect nodes, deploy services, drain nodes, read logs.",
    log_level="WARNING",
)

NODES: dict[str, dict[str, Any]] = {
    "web-1": {"environment": "production", "role": "web", "status": "ready", "pods": 14},
    "web-2": {"environment": "production", "role": "web", "status": "ready", "pods": 12},
    "db-1": {"environment": "production", "role": "database", "status": "ready", "pods": 3},
    "stage-1": {"environment": "staging", "role": "web", "status": "ready", "pods": 6},
}
SERVICES = {"checkout": "1.4.2", "search": "2.0.1", "payments": "3.1.0", "inventory": "0.9.8"}
OPERATIONS: list[dict[str, Any]] = []
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


class Node(BaseModel):
    name: str
    environment: str
    role: str
    status: str
    pods: int


class NodeList(BaseModel):
    nodes: list[Node]


class DrainConfirmation(BaseModel):
    confirm: bool = Field(description="Drain the node and evict its pods?")


def _node(name: str) -> Node:
    if name not in NODES:  # ToolError: an anticipated failure whose text the model may read
        raise ToolError(f"unknown node {name!r}; known: {', '.join(sorted(NODES))}")
    return Node(name=name, **NODES[name])


@mcp.tool(annotations=READ_ONLY)
def list_nodes(environment: str | None = None) -> NodeList:
    """List the fleet's nodes, optionally only those of one environment (production, staging)."""
    return NodeList(nodes=[_node(n) for n in sorted(NODES) if environment in (None, NODES[n]["environment"])])


@mcp.tool(annotations=READ_ONLY)
def get_node(name: str) -> Node:
    """Show one node: environment, role, status and pod count."""
    return _node(name)


async def confirm_drain(name: str) -> DrainConfirmation | Elicit[DrainConfirmation]:
    if NODES.get(name, {}).get("environment") != "production":
        return DrainConfirmation(confirm=True)  # staging needs no confirmation
    return Elicit(f"Drain production node {name!r}? Its pods will be evicted.", DrainConfirmation)


@mcp.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True))
async def drain_node(
    name: str, reason: str, ctx: Context, confirmation: Annotated[DrainConfirmation, Resolve(confirm_drain)]
) -> str:
    """Cordon a node and evict its pods (production nodes ask for confirmation first)."""
    _node(name)
    if not confirmation.confirm:
        return f"Drain of {name} cancelled by the operator."
    evicted, NODES[name]["pods"], NODES[name]["status"] = NODES[name]["pods"], 0, "drained"
    OPERATIONS.append({"op": "drain", "node": name, "reason": reason, "status": "completed"})
    await ctx.notify_resource_updated(f"infra://nodes/{name}")  # watchers on subscriptions/listen
    return f"Node {name} drained ({evicted} pods evicted). Reason: {reason}"


@mcp.tool(annotations=ToolAnnotations(destructive_hint=False, open_world_hint=False))
async def deploy_service(service: str, version: str, environment: str, ctx: Context, steps: int = 5) -> str:
    """Roll out a service version to an environment, reporting progress per step; cancellable."""
    if service not in SERVICES:
        raise ToolError(f"unknown service {service!r}; known: {', '.join(sorted(SERVICES))}")
    op = {"op": "deploy", "service": service, "version": version, "environment": environment, "status": "running"}
    OPERATIONS.append(op)
    try:
        for step in range(1, steps + 1):
            await asyncio.sleep(0.2)
            await ctx.report_progress(step, total=steps, message=f"{service} {version}: step {step}/{steps}")
    except asyncio.CancelledError:
        op["status"] = "cancelled"
        raise
    SERVICES[service] = version
    op["status"] = "completed"
    return f"Deployed {service} {version} to {environment} in {steps} steps."


@mcp.tool(annotations=READ_ONLY)
def list_operations() -> list[dict[str, Any]]:
    """Every operation this server ran: drains and deployments, with their status (completed, cancelled)."""
    return OPERATIONS


@mcp.tool(annotations=READ_ONLY)
def get_logs(service: str, lines: int = 20) -> str:
    """The last N log lines of a service."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    return "\n".join(f"{now} {service} [info] request {i} served in {(i * 7) % 97} ms" for i in range(lines))


@mcp.tool(annotations=ToolAnnotations(destructive_hint=True, open_world_hint=True))
def run_command(node: str, command: str) -> str:
    """Run a shell command on a node (simulated; nothing is executed)."""
    _node(node)
    return f"[{node}] $ {command}\n(simulated) exit status 0"


@mcp.tool(annotations=ToolAnnotations(destructive_hint=True))
def rotate_credentials(service: str) -> str:
    """Rotate the database credentials of a service."""
    return f"Credentials of {service} rotated; new secret stored in the vault."


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
    OPERATIONS.append({"op": "maintenance", "hours": hours, "status": "completed"})
    return f"Maintenance window open for {hours} h."


@mcp.tool()
async def enable_maintenance_tools(ctx: Context) -> str:
    """Add the maintenance tools to this server's tool list (announced with list_changed)."""
    if "maintenance_window" not in {t.name for t in await mcp.list_tools()}:
        mcp.add_tool(maintenance_window)
    await ctx.notify_tools_changed()  # modern-era listeners
    try:
        await ctx.request_context.session.send_tool_list_changed()  # handshake-era session
    except Exception:  # noqa: BLE001 - a modern request has no standalone channel
        pass
    return "maintenance tools enabled"


@mcp.resource("infra://inventory", mime_type="application/json")
def inventory() -> dict[str, Any]:
    """The fleet inventory: nodes and service versions."""
    return {"nodes": NODES, "services": SERVICES}


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
    return f"Write a {severity} incident report for {service}, currently at version {SERVICES.get(service, '?')}."


@mcp.completion()
async def complete(
    ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument, context: CompletionContext | None
) -> Completion | None:
    if argument.name == "service":
        pool = sorted(SERVICES)
    elif argument.name == "severity":
        pool = ["sev1", "sev2", "sev3"]
    elif argument.name == "name":
        pool = sorted(NODES)
    else:
        return None
    return Completion(values=[v for v in pool if v.startswith(argument.value)])


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        mcp.run("streamable-http", port=int(sys.argv[2]))
    else:
        mcp.run("stdio")
