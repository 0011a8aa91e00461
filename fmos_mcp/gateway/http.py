"""One Starlette app: streamable HTTP at /mcp, SSE at /sse (+ /messages/), bearer-token check, health.

DNS-rebinding protection stays on for every address. Binding anything but loopback requires a token; the
check runs before the MCP transports see the request, and failures are plain 401s.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fmos_mcp.gateway.core import Gateway
from fmos_mcp.gateway.upstream import IDENTITY_SCOPE_KEY, TRANSPORT_SCOPE_KEY, Identity

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport_security(host: str, extra_hosts: Sequence[str] = ()) -> TransportSecuritySettings:
    names = {*LOOPBACK_NAMES, *extra_hosts}
    if not is_loopback(host) and host not in ("0.0.0.0", "::"):
        names.add(host)
    if host in ("0.0.0.0", "::"):
        names.add(socket.gethostname())
    hosts = [f"[{n}]:*" if ":" in n else f"{n}:*" for n in sorted(names)]
    hosts += [h.removesuffix(":*") for h in hosts]  # a Host header without a port (default port 80)
    origins = [f"{scheme}://{h}" for scheme in ("http", "https") for h in hosts]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


class BearerGuard:
    """Checks the token, then tags the ASGI scope with who is calling (tenant, roles) and over what.

    `token` (--auth-token) acts as the default identity; `tokens` maps SHA-256 digests of issued tokens to
    their tenant and roles. The authenticated principal is the token's digest, so an SSE session can only
    be used with the token that opened it (the SDK checks `scope["user"]`)."""

    def __init__(self, app: ASGIApp, transport: str, token: str | None, identity: Identity,
                 tokens: Mapping[str, Identity] | None = None):
        self.app, self.transport, self.token, self.identity = app, transport, token, identity
        self.tokens = dict(tokens or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        identity = self.identity
        if self.token is not None or self.tokens:
            presented = _bearer(scope)
            found = self._identify(presented) if presented else None
            if found is None:
                response = JSONResponse(
                    {"error": "unauthorized", "detail": "a valid 'Authorization: Bearer <token>' header is required"},
                    status_code=401, headers={"WWW-Authenticate": 'Bearer realm="fmos-mcp"'},
                )
                await response(scope, receive, send)
                return
            identity, digest = found
            scope["user"] = AuthenticatedUser(AccessToken(token=digest, client_id=digest, scopes=list(identity.roles)))
        scope[IDENTITY_SCOPE_KEY] = identity
        scope[TRANSPORT_SCOPE_KEY] = self.transport
        await self.app(scope, receive, send)

    def _identify(self, presented: str) -> tuple[Identity, str] | None:
        digest = hashlib.sha256(presented.encode()).hexdigest()
        if self.token is not None and hmac.compare_digest(presented.encode(), self.token.encode()):
            return self.identity, digest
        for known, identity in self.tokens.items():  # constant time per entry; the table is small
            if hmac.compare_digest(known, digest):
                return identity, digest
        return None


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" and token.strip() else None
    return None


class _SseEndpoint:
    def __init__(self, sse: SseServerTransport, gateway: Gateway) -> None:
        self.sse, self.gateway = sse, gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        face = self.gateway.face
        async with self.sse.connect_sse(scope, receive, send) as (read, write):
            await face.server.run(read, write, face.initialization_options())


@dataclass(frozen=True)
class HttpOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    auth_token: str | None = None
    allowed_hosts: Sequence[str] = ()
    json_response: bool = False
    tokens: Mapping[str, Identity] = field(default_factory=dict)  # sha256(token) -> identity


# More faces on the same app (the VFM's OpenAI-compatible one): routes, given the bearer guard to wrap them in.
ExtraRoutes = Callable[[Callable[[ASGIApp, str], ASGIApp]], list[Route]]


def build_app(gateway: Gateway, options: HttpOptions, lifespan_extra: Any = None,
              extra_routes: ExtraRoutes | None = None) -> Starlette:
    security = transport_security(options.host, options.allowed_hosts)
    manager = StreamableHTTPSessionManager(
        app=gateway.face.server, json_response=options.json_response, security_settings=security
    )
    sse = SseServerTransport("/messages/", security_settings=security)
    identity = gateway.face.default_identity

    def guard(app: ASGIApp, transport: str) -> ASGIApp:
        return BearerGuard(app, transport, options.auth_token, identity, options.tokens)

    async def health(_request: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})  # public: says nothing about servers or tenants

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # uvicorn re-raises SIGTERM after shutdown, so nothing after serve() runs: downstream processes
        # are stopped here, when this context exits.
        async with anyio.create_task_group() as tasks:
            if lifespan_extra is not None:
                await tasks.start(lifespan_extra)
            await tasks.start(gateway.run)
            async with manager.run():
                yield
            tasks.cancel_scope.cancel()

    routes = [
        Route("/mcp", endpoint=guard(StreamableHTTPASGIApp(manager), "http")),
        Route("/sse", endpoint=guard(_SseEndpoint(sse, gateway), "sse"), methods=["GET"]),
        Mount("/messages/", app=guard(sse.handle_post_message, "sse")),
        Route("/healthz", endpoint=health, methods=["GET"]),
    ]
    if extra_routes is not None:
        routes += extra_routes(guard)
    return Starlette(routes=routes, lifespan=lifespan)
