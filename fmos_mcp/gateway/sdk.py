"""The few places the gateway reaches below the MCP SDK's public surface, kept in one module.

Pinned to mcp 2.3.x; tests/test_sdk_seams.py fails loudly if an upgrade moves any of them.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from mcp.client._probe import negotiate_auto
from mcp.client.session import ClientSession
from mcp.server.connection import Connection
from mcp.server.session import ServerSession
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from fmos_mcp.traps.request import HostCapabilities


def is_modern(protocol_version: str | None) -> bool:
    return protocol_version in MODERN_PROTOCOL_VERSIONS


class MirroringClientSession(ClientSession):
    """A client session that declares exactly the host's capabilities to a downstream server.

    The SDK derives the declaration from which callbacks are registered and always claims both elicitation
    modes; a gateway must offer only what the host really has (a host without sampling must not receive
    sampling requests, and one with form elicitation only must not receive URL requests).
    """

    def __init__(self, *args: Any, mirrored: HostCapabilities, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mirrored = mirrored

    def _build_capabilities(self, version: str) -> types.ClientCapabilities:  # SDK override
        caps = self._mirrored
        sampling = None
        if caps.sampling:
            sampling = types.SamplingCapability(
                tools=types.SamplingToolsCapability() if caps.sampling_tools else None,
                context=types.SamplingContextCapability() if caps.sampling_context else None,
            )
        elicitation = None
        if caps.elicitation:
            elicitation = types.ElicitationCapability(
                form=types.FormElicitationCapability() if caps.elicitation_form else None,
                url=types.UrlElicitationCapability() if caps.elicitation_url else None,
            )
        roots = types.RootsCapability(list_changed=caps.roots_list_changed or None) if caps.roots else None
        return types.ClientCapabilities(sampling=sampling, elicitation=elicitation, roots=roots)


class WatchedDispatcher(JSONRPCDispatcher):
    """A JSON-RPC dispatcher that says when its connection ended, so an idle crash is noticed at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed = anyio.Event()

    async def run(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().run(*args, **kwargs)
        finally:
            self.closed.set()


async def negotiate(session: ClientSession, era: str) -> None:
    """`auto` probes server/discover and falls back to initialize; `legacy` and `modern` force one era."""
    if era == "legacy":
        await session.initialize()
    elif era == "modern":
        await session.discover()
    else:
        await negotiate_auto(session)


PROGRESS_KEYS = ("progress_token", "progressToken")  # typed `_meta` (RequestParamsMeta) and wire spelling


def progress_token(meta: Any) -> Any:
    """The progress token in a request's `_meta`, whether parsed (snake_case) or raw (wire)."""
    if not meta:
        return None
    return next((meta[key] for key in PROGRESS_KEYS if key in meta), None)


def without_progress(meta: Any) -> Any:
    if not meta:
        return meta
    return {k: v for k, v in meta.items() if k not in PROGRESS_KEYS} or None


def connection_of(session: ServerSession) -> Connection:
    """The per-connection object behind a per-request ServerSession (for standalone notifications)."""
    return session._connection  # noqa: SLF001 - no public accessor in mcp 2.3


def host_capabilities(caps: types.ClientCapabilities | None) -> HostCapabilities:
    if caps is None:
        return HostCapabilities()
    sampling, elicitation, roots = caps.sampling, caps.elicitation, caps.roots
    return HostCapabilities(
        sampling=sampling is not None,
        sampling_tools=bool(sampling and sampling.tools is not None),
        sampling_context=bool(sampling and sampling.context is not None),
        # An empty elicitation object means form mode (the 2025-06-18 shape).
        elicitation_form=bool(elicitation and (elicitation.form is not None or elicitation.url is None)),
        elicitation_url=bool(elicitation and elicitation.url is not None),
        roots=roots is not None,
        roots_list_changed=bool(roots and roots.list_changed),
    )
