"""One downstream MCP server: a persistent session, supervised, re-synced on list_changed, never fatal.

The supervisor connects (either protocol era), lists everything, and then waits for the connection to end;
a failure marks the server down with a reason and retries with backoff. Calls carry a per-call deadline
that stops while the host is being asked for something, and are cancelled downstream when it expires.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from enum import StrEnum
from typing import Any, Protocol

import anyio
import mcp_types as types
from mcp.client.session import ClientRequestContext, IncomingMessage
from mcp.client.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
    listen,
)
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR
from pydantic import TypeAdapter, ValidationError

from fmos_mcp import __version__, logs
from fmos_mcp.config import ServerSpec
from fmos_mcp.gateway.deadline import PausableDeadline
from fmos_mcp.gateway.inflight import CURRENT_CALL, InflightCall
from fmos_mcp.gateway.sdk import (
    MirroringClientSession,
    WatchedDispatcher,
    is_modern,
    negotiate,
    progress_token,
    without_progress,
)
from fmos_mcp.gateway.transports import StartError, StderrTail, open_transport
from fmos_mcp.traps.request import HostCapabilities

log = logs.get("fmos.downstream")

MAX_INPUT_ROUNDS = 10
MAX_LIST_PAGES = 100
_PROMPT_RESULT = TypeAdapter(types.GetPromptResult | types.InputRequiredResult)
_RESOURCE_RESULT = TypeAdapter(types.ReadResourceResult | types.InputRequiredResult)
_RESERVED_META = "io.modelcontextprotocol/"
LOG_LEVEL_META_KEY = "io.modelcontextprotocol/logLevel"
_KEEP_META = {LOG_LEVEL_META_KEY}


class ServerState(StrEnum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"
    DISABLED = "disabled"
    STOPPED = "stopped"


class DownstreamError(Exception):
    """A failure of the gateway's own making or observation, reported to the host in plain words."""


class ServerUnavailable(DownstreamError):
    pass


class CallTimedOut(DownstreamError):
    pass


class MalformedResult(DownstreamError):
    pass


class AmbiguousCaller(DownstreamError):
    def __init__(self, server: str) -> None:
        super().__init__(
            f"server '{server}' asked the host for something while calls of several hosts were in flight, "
            "and its request does not say which call it belongs to; no host was asked"
        )


class DownstreamHooks(Protocol):
    """What a server tells the pool it belongs to."""

    def server_changed(self, server: DownstreamServer) -> None: ...

    async def host_request(
        self, server: DownstreamServer, method: str, params: Any, reply_progress: Any = None
    ) -> Any: ...

    async def server_log(self, server: DownstreamServer, params: types.LoggingMessageNotificationParams) -> None: ...

    async def resource_updated(self, server: DownstreamServer, uri: str) -> None: ...


class Backoff:
    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial, self.maximum, self.current = initial, maximum, initial

    def next(self) -> float:
        delay, self.current = self.current, min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class DownstreamServer:
    def __init__(
        self,
        spec: ServerSpec,
        host_caps: HostCapabilities,
        hooks: DownstreamHooks,
        *,
        connect_timeout: float = 30.0,
        backoff_max: float = 30.0,
        health_interval: float = 15.0,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.host_caps = host_caps
        self.hooks = hooks
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self.state = ServerState.STARTING if spec.enabled else ServerState.DISABLED
        self.era: str | None = None
        self.last_error: str | None = None
        self.server_caps: types.ServerCapabilities | None = None
        self.server_info: types.Implementation | None = None
        self.instructions: str | None = None
        self.tools: list[types.Tool] = []
        self.prompts: list[types.Prompt] = []
        self.resources: list[types.Resource] = []
        self.templates: list[types.ResourceTemplate] = []
        self.ready = anyio.Event()  # the first connection attempt has settled, up or not
        self.restarts = 0
        self._session: MirroringClientSession | None = None
        self._restart = anyio.Event()
        self._backoff = Backoff(maximum=backoff_max)
        self._inflight: OrderedDict[int, InflightCall] = OrderedDict()
        self._dirty: set[str] = set()
        self._syncing = False
        self._tasks: anyio.abc.TaskGroup | None = None
        self._stderr: StderrTail | None = None
        self._closing_reason: str | None = None
        self._watched: set[str] = set()  # resources some host subscribed to
        self.log_level: str | None = None  # the level hosts of this pool asked for
        self._secrets = logs.secrets_of(spec.env.values(), spec.headers.values(), [spec.url or ""])
        self._relisten = anyio.Event()

    # ----------------------------------------------------------------- supervision

    async def run(self) -> None:
        if not self.spec.enabled:
            self.ready.set()
            return
        while True:
            up_since: float | None = None
            try:
                up_since = await self._connect_and_serve()
                reason = self._closing_reason or "the connection closed"
            except Exception as exc:  # noqa: BLE001 - every failure becomes a reason, never a crash
                reason = self._describe(exc)
            except BaseExceptionGroup as group:  # noqa: B036
                if group.subgroup(anyio.get_cancelled_exc_class()) is not None:
                    raise
                reason = self._describe(group)
            self._session = None
            if up_since is not None and anyio.current_time() - up_since > 10:
                self._backoff.reset()
            said_before = reason == self.last_error
            self._set_state(ServerState.DOWN, reason)
            self.ready.set()
            delay = self._backoff.next()
            # A server that keeps failing the same way is reported once, not on every retry.
            (log.debug if said_before else log.warning)("server down", server=self.name, reason=reason, retry_in=delay)
            await anyio.sleep(delay)
            self.restarts += 1

    async def _connect_and_serve(self) -> float:
        self._closing_reason = None
        self._restart = anyio.Event()
        self._set_state(ServerState.STARTING, self.last_error)
        self._stderr = StderrTail(self.name, self._secrets) if self.spec.transport == "stdio" else None
        async with AsyncExitStack() as stack:
            # Context managers that own task groups are entered outside any timeout scope (anyio nesting);
            # the handshake below is what a dead or silent server would hang.
            read, write = await stack.enter_async_context(open_transport(self.spec, self._stderr))
            dispatcher = WatchedDispatcher(read, write)
            session = MirroringClientSession(
                dispatcher=dispatcher,
                sampling_callback=self._on_sampling,
                elicitation_callback=self._on_elicitation,
                list_roots_callback=self._on_list_roots,
                logging_callback=self._on_log,
                message_handler=self._on_message,
                client_info=types.Implementation(name="fmos-mcp", version=__version__),
                mirrored=self.host_caps,
            )
            await stack.enter_async_context(session)
            with anyio.fail_after(self.connect_timeout):
                await negotiate(session, self.spec.era)
                self.era = session.protocol_version
                self.server_caps = session.server_capabilities
                self.server_info = session.server_info
                self.instructions = session.instructions
                await self._sync(session, {"tools", "prompts", "resources"})
            self._session = session
            up_since = anyio.current_time()
            self._set_state(ServerState.UP, None)
            self.ready.set()
            log.info("server up", server=self.name, era=self.era, tools=len(self.tools))
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                self._start_sync()  # for a list_changed that arrived during the first listing
                if is_modern(self.era):
                    tasks.start_soon(self._listen, session)
                else:
                    for uri in sorted(self._watched):  # subscriptions do not survive a restart downstream
                        tasks.start_soon(self._send_subscription, session, uri, True)
                if self.spec.transport != "stdio":
                    tasks.start_soon(self._watch_health, session)
                async with anyio.create_task_group() as wait:
                    wait.start_soon(_set_when, dispatcher.closed, wait.cancel_scope)
                    wait.start_soon(_set_when, self._restart, wait.cancel_scope)
                tasks.cancel_scope.cancel()
            self._tasks = None
            self._session = None
            return up_since

    def restart(self, reason: str) -> None:
        """Drop the connection (and the process) and let the supervisor reconnect."""
        self._closing_reason = reason
        self._restart.set()

    def _set_state(self, state: ServerState, error: str | None) -> None:
        self.state, self.last_error = state, error
        self.hooks.server_changed(self)

    def _describe(self, exc: BaseException) -> str:
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        if isinstance(exc, StartError):
            text = str(exc)
        elif isinstance(exc, TimeoutError):
            text = f"no MCP handshake within {self.connect_timeout:g} s"
        elif isinstance(exc, MCPError):
            text = f"{exc.error.message} (code {exc.error.code})"
        elif isinstance(exc, ValidationError):
            text = f"sent a malformed listing: {_first_error(exc)}"
        elif isinstance(exc, OSError):
            text = f"could not start: {exc.strerror or exc}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        tail = self._stderr.tail() if self._stderr else ""
        return logs.redact_text(f"{text}; stderr: {tail}" if tail else text, self._secrets)

    # ----------------------------------------------------------------- listings

    async def _sync(self, session: MirroringClientSession, kinds: set[str]) -> None:
        caps = session.server_capabilities or types.ServerCapabilities()
        if "tools" in kinds:
            self.tools = await _list_all(session.list_tools, "tools") if caps.tools else []
        if "prompts" in kinds:
            self.prompts = await _list_all(session.list_prompts, "prompts") if caps.prompts else []
        if "resources" in kinds:
            if caps.resources:
                self.resources = await _list_all(session.list_resources, "resources")
                self.templates = await _list_all(session.list_resource_templates, "resource_templates")
            else:
                self.resources, self.templates = [], []

    def _schedule_sync(self, kind: str) -> None:
        self._dirty.add(kind)
        self._start_sync()

    def _start_sync(self) -> None:
        if self._dirty and not self._syncing and self._tasks is not None:
            self._syncing = True
            self._tasks.start_soon(self._sync_dirty)

    async def _sync_dirty(self) -> None:
        try:
            while self._dirty and self._session is not None:
                kinds, self._dirty = self._dirty, set()
                try:
                    with anyio.fail_after(self.spec.timeout):
                        await self._sync(self._session, kinds)
                except (MCPError, ValidationError, TimeoutError) as exc:
                    self.restart(f"re-listing {', '.join(sorted(kinds))} failed: {self._describe(exc)}")
                    return
                log.info("server re-synced", server=self.name, kinds=sorted(kinds), tools=len(self.tools))
                self.hooks.server_changed(self)
        finally:
            self._syncing = False

    async def _listen(self, session: MirroringClientSession) -> None:
        """Modern-era change notifications arrive on one subscriptions/listen stream; it is re-opened when
        the set of watched resources changes (a listen filter is fixed for the stream's life)."""
        caps = session.server_capabilities or types.ServerCapabilities()
        wants = dict(
            tools_list_changed=bool(caps.tools and caps.tools.list_changed),
            prompts_list_changed=bool(caps.prompts and caps.prompts.list_changed),
            resources_list_changed=bool(caps.resources and caps.resources.list_changed),
        )
        while True:
            self._relisten = anyio.Event()
            uris = sorted(self._watched) if caps.resources and caps.resources.subscribe else []
            if any(wants.values()) or uris:
                async with anyio.create_task_group() as stream:
                    stream.start_soon(_set_when, self._relisten, stream.cancel_scope)
                    try:
                        async with listen(session, **wants, resource_subscriptions=uris) as subscription:
                            for kind, wanted in (("tools", "tools"), ("prompts", "prompts"), ("resources", "resources")):
                                if wants[f"{wanted}_list_changed"]:  # nothing is replayed: refetch once listening
                                    self._schedule_sync(kind)
                            async for event in subscription:
                                self._on_event(event)
                    except Exception as exc:  # noqa: BLE001 - a lost stream is re-opened, never fatal
                        log.debug("listen stream ended", server=self.name, error=str(exc))
                    stream.cancel_scope.cancel()
            with anyio.move_on_after(1.0):  # back off before re-opening a stream that ended by itself
                await self._relisten.wait()

    async def watch_resource(self, uri: str, on: bool) -> None:
        """Subscribe to (or drop) updates of one resource; kept across restarts of the server."""
        (self._watched.add if on else self._watched.discard)(uri)
        session = self._session
        if session is None:
            return  # re-sent when the server is back
        if is_modern(self.era):
            self._relisten.set()
        else:
            await self._send_subscription(session, uri, on)

    async def _send_subscription(self, session: MirroringClientSession, uri: str, on: bool) -> None:
        caps = self.server_caps
        if caps is None or caps.resources is None or not caps.resources.subscribe:
            return
        model = types.SubscribeRequest if on else types.UnsubscribeRequest
        params = (types.SubscribeRequestParams if on else types.UnsubscribeRequestParams)(uri=uri)
        try:
            with anyio.fail_after(self.spec.timeout):
                await session.send_request(model(params=params), types.EmptyResult)
        except Exception as exc:  # noqa: BLE001 - a refused subscription only means no updates
            log.info("resource subscription refused", server=self.name, uri=uri, error=str(exc))

    def _on_event(self, event: Any) -> None:
        if isinstance(event, ToolsListChanged):
            self._schedule_sync("tools")
        elif isinstance(event, PromptsListChanged):
            self._schedule_sync("prompts")
        elif isinstance(event, ResourcesListChanged):
            self._schedule_sync("resources")
        elif isinstance(event, ResourceUpdated) and self._tasks is not None:
            self._tasks.start_soon(self.hooks.resource_updated, self, event.uri)

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            log.warning("server sent something unreadable", server=self.name, error=str(message)[:300])
            return
        if is_modern(self.era):
            return  # the SDK tees listen-stream events here too; _listen handles them once
        root = message
        if isinstance(root, types.ToolListChangedNotification):
            self._schedule_sync("tools")
        elif isinstance(root, types.PromptListChangedNotification):
            self._schedule_sync("prompts")
        elif isinstance(root, types.ResourceListChangedNotification):
            self._schedule_sync("resources")
        elif isinstance(root, types.ResourceUpdatedNotification):
            await self.hooks.resource_updated(self, str(root.params.uri))

    async def _on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        await self.hooks.server_log(self, params)

    async def _watch_health(self, session: MirroringClientSession) -> None:
        while True:
            await anyio.sleep(self.health_interval)
            await self.probe(session)

    async def probe(self, session: MirroringClientSession | None = None) -> bool:
        """A cheap request with a short deadline; a silent server is restarted."""
        session = session or self._session
        if session is None:
            return False
        try:
            with anyio.fail_after(5):
                if is_modern(self.era):
                    await session.send_discover(self.era or "")
                else:
                    await session.send_ping()
            return True
        except Exception as exc:  # noqa: BLE001
            self.restart(f"stopped answering ({self._describe(exc)})")
            return False

    # ----------------------------------------------------------------- calls

    def _meta_for(self, meta: Any) -> dict[str, Any] | None:
        """What goes downstream in `_meta`: the host's own keys, and for a modern-era server the log level
        a handshake-era host set with logging/setLevel (modern servers log only to requests that ask)."""
        out = downstream_meta(meta)
        if self.log_level and is_modern(self.era):
            out.setdefault(LOG_LEVEL_META_KEY, self.log_level)
        return out or None

    def _require_session(self) -> MirroringClientSession:
        if self._session is None or self.state is not ServerState.UP:
            why = self.last_error or "it is still starting"
            raise ServerUnavailable(f"server '{self.name}' is {self.state.value}: {why}")
        return self._session

    async def call_tool(self, name: str, arguments: dict[str, Any] | None, call: InflightCall, meta: Any) -> Any:
        session = self._require_session()
        progress = _progress_sink(call)

        async def send(responses: Any, state: str | None) -> Any:
            return await session.call_tool(
                name, arguments, progress_callback=progress, input_responses=responses, request_state=state,
                meta=self._meta_for(meta), allow_input_required=True,
            )

        return await self._invoke(f"tools/call '{name}'", call, send, session)

    async def get_prompt(self, name: str, arguments: dict[str, str] | None, call: InflightCall, meta: Any) -> Any:
        session = self._require_session()

        async def send(responses: Any, state: str | None) -> Any:
            request = types.GetPromptRequest(params=types.GetPromptRequestParams(
                name=name, arguments=arguments, input_responses=responses, request_state=state, _meta=self._meta_for(meta),
            ))
            return await session.send_request(request, _PROMPT_RESULT, progress_callback=_progress_sink(call))

        return await self._invoke(f"prompts/get '{name}'", call, send, session)

    async def read_resource(self, uri: str, call: InflightCall, meta: Any) -> Any:
        session = self._require_session()

        async def send(responses: Any, state: str | None) -> Any:
            request = types.ReadResourceRequest(params=types.ReadResourceRequestParams(
                uri=uri, input_responses=responses, request_state=state, _meta=self._meta_for(meta),
            ))
            return await session.send_request(request, _RESOURCE_RESULT, progress_callback=_progress_sink(call))

        return await self._invoke(f"resources/read '{uri}'", call, send, session)

    async def request(self, what: str, request: Any, result_type: Any, call: InflightCall) -> Any:
        """Any other request (completion, subscribe, setLevel) under the same deadline and error rules."""
        session = self._require_session()

        async def send(_responses: Any, _state: str | None) -> Any:
            return await session.send_request(request, result_type)

        return await self._invoke(what, call, send, session)

    async def _invoke(
        self, what: str, call: InflightCall, send: Callable[[Any, str | None], Awaitable[Any]], session: Any
    ) -> Any:
        deadline = PausableDeadline(self.spec.timeout)
        call.deadline = deadline
        key = id(call)
        self._inflight[key] = call
        token = CURRENT_CALL.set(call)
        try:
            with deadline.scope:
                result = await self._drive_input_rounds(await send(None, None), send)
                await call.settle()
                return result
            self._suspect()  # only reached when the deadline cancelled the call
            raise CallTimedOut(
                f"server '{self.name}' did not answer {what} within {self.spec.timeout:g} s; the call was cancelled"
            )
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                if session is self._session:  # not when the server was already restarted under a long call
                    self.restart("the connection closed during a call")
                raise ServerUnavailable(f"server '{self.name}' closed the connection during {what}") from None
            raise
        except ValidationError as exc:
            raise MalformedResult(f"server '{self.name}' returned a malformed result for {what}: {_first_error(exc)}") from None
        except RuntimeError as exc:  # the SDK's result checks (output schema, claimed results) say RuntimeError
            what_kind = "violates its output schema" if "structured content" in str(exc) else "cannot be passed on"
            raise MalformedResult(f"server '{self.name}' returned a result that {what_kind} ({what}): {exc}") from None
        finally:
            CURRENT_CALL.reset(token)
            self._inflight.pop(key, None)

    async def _drive_input_rounds(self, result: Any, send: Callable[[Any, str | None], Awaitable[Any]]) -> Any:
        """A modern-era downstream asks for input by returning it; answer through the host and retry."""
        rounds, delay = 0, 0.05
        while isinstance(result, types.InputRequiredResult):
            rounds += 1
            if rounds > MAX_INPUT_ROUNDS:
                raise MalformedResult(f"server '{self.name}' asked for input more than {MAX_INPUT_ROUNDS} times in one call")
            responses: dict[str, Any] | None = None
            if result.input_requests:
                responses = {}
                try:
                    async with anyio.create_task_group() as tg:
                        for key, req in result.input_requests.items():
                            tg.start_soon(self._answer, key, req, responses)
                except BaseExceptionGroup as group:
                    raise _first_leaf(group) from None
            else:
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.25)
            result = await send(responses, result.request_state)
        return result

    async def _answer(self, key: str, req: Any, out: dict[str, Any]) -> None:
        out[key] = await self.hooks.host_request(self, req.method, req.params)

    def _suspect(self) -> None:
        if self._tasks is not None:
            self._tasks.start_soon(self.probe)

    def caller(self) -> InflightCall | None:
        """The call a pushed request belongs to: the latest one in flight, provided they all come from one
        host session. A handshake-era push names no call, so with several hosts calling at once there is no
        telling whose it is, and guessing would show one host's question to another."""
        calls = list(self._inflight.values())
        if not calls:
            return None
        if len({c.host.session_id for c in calls}) > 1:
            raise AmbiguousCaller(self.name)
        return calls[-1]

    # ----------------------------------------------------------------- requests pushed by the server

    async def _on_sampling(self, ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        return await self._relay_push("sampling/createMessage", params)

    async def _on_elicitation(self, ctx: ClientRequestContext, params: Any) -> Any:
        return await self._relay_push("elicitation/create", params)

    async def _on_list_roots(self, ctx: ClientRequestContext) -> Any:
        return await self._relay_push("roots/list", None)

    async def _relay_push(self, method: str, params: Any) -> Any:
        try:
            return await self.hooks.host_request(self, method, params, self._progress_back(params))
        except MCPError as exc:
            return exc.error
        except DownstreamError as exc:
            return types.ErrorData(code=INTERNAL_ERROR, message=str(exc))

    def _progress_back(self, params: Any) -> Any:
        """When the server asked for progress on its request, the host's progress goes back to it."""
        token = progress_token(getattr(params, "meta", None))
        session = self._session
        if token is None or session is None:
            return None

        async def forward(progress: float, total: float | None, message: str | None) -> None:
            await session.send_progress_notification(token, progress, total, message)

        return forward

    async def set_logging_level(self, level: str) -> None:
        """Handshake era: logging/setLevel. Modern era: an opt-in on every request (see _meta_for)."""
        self.log_level = level
        session = self._session
        caps = self.server_caps
        if session is None or is_modern(self.era) or caps is None or caps.logging is None:
            return
        try:
            with anyio.fail_after(5):
                await session.set_logging_level(level)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            log.info("server refused a log level", server=self.name, error=str(exc))

    async def send_roots_changed(self) -> None:
        session = self._session
        if session is not None and not is_modern(self.era) and self.host_caps.roots:
            await session.send_notification(types.RootsListChangedNotification())


async def _set_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _list_all(method: Callable[..., Awaitable[Any]], field: str) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await method(params=params)
        items.extend(getattr(page, field))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


def _progress_sink(call: InflightCall) -> Any:
    channel = call.channel
    if channel is None:
        return None

    async def forward(progress: float, total: float | None, message: str | None) -> None:
        async with call.forwarding():
            await channel.progress(progress, total, message)

    return forward


def downstream_meta(meta: Any) -> dict[str, Any]:
    """The host's `_meta` minus what the gateway re-stamps (protocol envelope, progress token)."""
    if not meta:
        return {}
    return {k: v for k, v in (without_progress(meta) or {}).items() if not k.startswith(_RESERVED_META) or k in _KEEP_META}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc

