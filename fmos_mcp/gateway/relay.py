"""Requests from downstream servers to the host, in both protocol eras of the host.

A handshake-era host is asked directly: the request is pushed on the stream of the host request that caused
it (`RequestChannel`). A modern-era host has no push channel: the gateway parks the request, answers the
host's call with an `InputRequiredResult`, and resumes the parked downstream work when the host retries
with `input_responses` (`InputRounds`). A round the host never comes back to expires and is cancelled.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST

from fmos_mcp import logs
from fmos_mcp.gateway.sdk import progress_token, without_progress

log = logs.get("fmos.relay")

_REQUEST_TYPES: dict[str, Any] = {
    "sampling/createMessage": types.CreateMessageRequest,
    "elicitation/create": types.ElicitRequest,
    "roots/list": types.ListRootsRequest,
}


def input_request(method: str, params: Any) -> Any:
    """The typed request a downstream asked for, ready to push or to embed in an InputRequiredResult.
    The downstream's progress token stays behind: it means nothing to the host (the relay maps progress)."""
    model = _REQUEST_TYPES.get(method)
    if model is None:
        raise MCPError(code=INVALID_REQUEST, message=f"the gateway does not relay '{method}' to hosts")
    if params is None:
        return model()
    meta = getattr(params, "meta", None)
    if progress_token(meta) is not None:
        params = params.model_copy(update={"meta": without_progress(meta)})
    return model(params=params)


def _result_type(method: str, params: Any) -> Any:
    if method == "sampling/createMessage":
        if getattr(params, "tools", None) or getattr(params, "tool_choice", None):
            return types.CreateMessageResultWithTools
        return types.CreateMessageResult
    return types.ElicitResult if method == "elicitation/create" else types.ListRootsResult


class RequestChannel:
    """The way back to the host on the stream of one host request (or the connection's own stream)."""

    def __init__(self, session: ServerSession, request_id: Any = None, timeout: float | None = None) -> None:
        self.session = session
        self.request_id = request_id
        self.timeout = timeout  # a host that never answers must not hold a server's call forever

    async def request(self, method: str, params: Any, on_progress: Any = None) -> Any:
        metadata = ServerMessageMetadata(related_request_id=self.request_id) if self.request_id is not None else None
        try:
            return await self.session.send_request(
                input_request(method, params), _result_type(method, params), metadata=metadata,
                progress_callback=on_progress, request_read_timeout_seconds=self.timeout,
            )
        except NoBackChannelError:
            raise MCPError(code=INVALID_REQUEST, message=f"the host connection cannot receive '{method}' requests") from None

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self.request_id is not None:  # a no-op when the host asked for no progress
            await self.session.report_progress(progress, total, message)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        await self.session.send_log_message(params.level, params.data, params.logger, related_request_id=self.request_id)


class _Answer:
    def __init__(self) -> None:
        self.event = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any = None, error: BaseException | None = None) -> None:
        if not self.event.is_set():
            self.value, self.error = value, error
            self.event.set()

    async def wait(self) -> Any:
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(frozen=True)
class RoundBinding:
    """What a retry must match: the same tenant asking the same thing."""

    tenant: str
    method: str
    name: str


@dataclass(eq=False)
class InputRound:
    token: str
    binding: RoundBinding
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    wakeup: anyio.Event = field(default_factory=anyio.Event)
    outcome: Any = None
    failure: BaseException | None = None
    asked: dict[str, tuple[Any, _Answer]] = field(default_factory=dict)  # not yet shown to the host
    shown: dict[str, _Answer] = field(default_factory=dict)  # in the last InputRequiredResult
    leg: RequestChannel | None = None  # the host request now waiting on this round
    expires_at: float | None = None
    _keys: Any = field(default_factory=lambda: itertools.count(1))

    def wake(self) -> None:
        self.wakeup.set()


class RoundChannel:
    """The host channel of work that runs across a modern host's retries."""

    def __init__(self, rnd: InputRound) -> None:
        self._round = rnd

    async def request(self, method: str, params: Any, on_progress: Any = None) -> Any:
        rnd = self._round
        answer = _Answer()
        key = f"{method.split('/')[0]}-{next(rnd._keys)}"
        rnd.asked[key] = (input_request(method, params), answer)
        rnd.wake()
        return await answer.wait()

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self._round.leg is not None:  # between legs nobody is listening
            await self._round.leg.progress(progress, total, message)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        if self._round.leg is not None:
            await self._round.leg.log(params)


Work = Callable[[RoundChannel], Awaitable[Any]]


class InputRounds:
    """Parked host calls of modern-era hosts, keyed by an unguessable `requestState` token."""

    def __init__(self, ttl: float = 300.0, max_live: int = 1000, gather: float = 0.005) -> None:
        if ttl <= 0:
            raise ValueError("the input round timeout must be positive")
        self.ttl = ttl
        self.max_live = max_live
        self.gather = gather  # a moment to collect sibling requests into one InputRequiredResult
        self._live: dict[str, InputRound] = {}
        self._tasks: anyio.abc.TaskGroup | None = None

    def __len__(self) -> int:
        return len(self._live)

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                while True:
                    await anyio.sleep(min(1.0, self.ttl / 4))
                    self._expire()
            finally:
                self._tasks = None
                for rnd in list(self._live.values()):
                    rnd.scope.cancel()

    def _expire(self) -> None:
        now = anyio.current_time()
        for token, rnd in list(self._live.items()):
            if rnd.expires_at is not None and now >= rnd.expires_at:
                log.info("input round expired", method=rnd.binding.method, name=rnd.binding.name, after_s=self.ttl)
                rnd.failure = MCPError(code=INVALID_PARAMS, message="Invalid or expired requestState")
                rnd.scope.cancel()
                self._live.pop(token, None)

    def start(self, binding: RoundBinding, work: Work, leg: RequestChannel) -> InputRound:
        if self._tasks is None:
            raise MCPError(code=INTERNAL_ERROR, message="the gateway is shutting down")
        if len(self._live) >= self.max_live:
            raise MCPError(code=INTERNAL_ERROR, message="too many calls are waiting for host input; try again later")
        rnd = InputRound(token=secrets.token_urlsafe(24), binding=binding, leg=leg)
        self._live[rnd.token] = rnd
        self._tasks.start_soon(self._drive, rnd, work)
        return rnd

    async def _drive(self, rnd: InputRound, work: Work) -> None:
        try:
            with rnd.scope:
                rnd.outcome = await work(RoundChannel(rnd))
        except Exception as exc:  # noqa: BLE001 - delivered to whichever leg is waiting
            rnd.failure = exc
        finally:
            if rnd.scope.cancelled_caught and rnd.failure is None:
                rnd.failure = MCPError(code=INVALID_PARAMS, message="Invalid or expired requestState")
            rnd.done.set()
            rnd.wake()

    def resume(self, token: str, binding: RoundBinding, responses: dict[str, Any] | None, leg: RequestChannel) -> InputRound:
        rnd = self._live.get(token)
        if rnd is None or rnd.binding != binding:
            # One answer for every cause, as the SDK does: the wire never says which check failed.
            raise MCPError(code=INVALID_PARAMS, message="Invalid or expired requestState")
        if rnd.leg is not None:  # claimed before any await: two retries of one round cannot both wait
            raise MCPError(code=INVALID_REQUEST, message="another retry of this call is already waiting")
        rnd.leg = leg
        rnd.expires_at = None
        for key, answer in rnd.shown.items():
            response = (responses or {}).get(key)
            if response is None:
                answer.set(error=MCPError(code=INVALID_PARAMS, message=f"the host sent no answer for '{key}'"))
            else:
                answer.set(response)
        rnd.shown.clear()
        return rnd

    async def next_answer(self, rnd: InputRound) -> Any:
        """Wait for the work to finish or to need the host; answer the leg that claimed the round."""
        handed_back = False
        try:
            while True:
                if rnd.done.is_set():
                    self._live.pop(rnd.token, None)
                    if rnd.failure is not None:
                        raise rnd.failure
                    return rnd.outcome
                if rnd.asked:
                    await anyio.sleep(self.gather)
                    if rnd.done.is_set():
                        continue
                    requests = {key: request for key, (request, _) in rnd.asked.items()}
                    rnd.shown.update({key: answer for key, (_, answer) in rnd.asked.items()})
                    rnd.asked.clear()
                    rnd.expires_at = anyio.current_time() + self.ttl
                    handed_back = True
                    return types.InputRequiredResult(input_requests=requests, request_state=rnd.token)
                rnd.wakeup = anyio.Event()
                if rnd.asked or rnd.done.is_set():
                    continue
                await rnd.wakeup.wait()
        finally:
            rnd.leg = None
            if not handed_back and not rnd.done.is_set():
                # The host abandoned this leg (cancelled, disconnected): the work stops with it.
                rnd.scope.cancel()
                self._live.pop(rnd.token, None)

