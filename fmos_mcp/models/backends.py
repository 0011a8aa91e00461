"""Physical models behind the VFM: a neutral request/response model and the backends that serve it.

- `OpenAIBackend`: any OpenAI-compatible `chat/completions` endpoint (vLLM, llama.cpp, Ollama, hosted APIs);
  timeout per attempt, retries with backoff on connect errors, 429 and 5xx; reports the endpoint's own usage.
- `HostBackend`: MCP `sampling/createMessage` to the connected host through the request's `HostChannel`;
  MCP reports no usage, so tokens are estimated (characters / 4) and marked so.
- `FallbackChain`: tries backends in order while they fail with `BackendError`.

Every failure is a `BackendError` naming the backend and the cause, with secrets masked: the API key is read
from the environment at each request and never appears in an error, a log line or a record.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import httpx2
import mcp_types as types

from fmos_mcp import logs
from fmos_mcp.models import reasoning
from fmos_mcp.models.config import BackendSpec, ModelsConfig
from fmos_mcp.models.reasoning import ReasoningSetting

log = logs.get("fmos.models")

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_BACKOFF = 0.25  # seconds before the first retry, doubled each time
_MAX_WAIT = 10.0  # cap on a server's Retry-After


# ----------------------------------------------------------------------------- the neutral request/response


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # user | assistant
    content: str


@dataclass(frozen=True, slots=True)
class Preferences:
    """MCP ModelPreferences: priorities 0..1 (None: not said) and model name hints, most preferred first."""

    cost: float | None = None
    speed: float | None = None
    intelligence: float | None = None
    hints: tuple[str, ...] = ()

    @classmethod
    def from_mcp(cls, prefs: types.ModelPreferences | None) -> Preferences | None:
        if prefs is None:
            return None
        hints = tuple(h.name for h in prefs.hints or () if h.name)
        return cls(prefs.cost_priority, prefs.speed_priority, prefs.intelligence_priority, hints)

    def to_mcp(self) -> types.ModelPreferences:
        return types.ModelPreferences(hints=[types.ModelHint(name=h) for h in self.hints] or None,
                                      cost_priority=self.cost, speed_priority=self.speed,
                                      intelligence_priority=self.intelligence)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    system: str | None = None
    max_tokens: int = 512
    temperature: float | None = None
    reasoning: ReasoningSetting = field(default_factory=ReasoningSetting)
    stop: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    preferences: Preferences | None = None  # passed on to the host; the router reads them from its features

    def __post_init__(self) -> None:
        # Accept the plain {role, content} dicts callers tend to have.
        messages = tuple(m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in self.messages)
        object.__setattr__(self, "messages", messages)
        object.__setattr__(self, "stop", tuple(self.stop))
        if not messages:
            raise ValueError("a generation request needs at least one message")

    @classmethod
    def prompt(cls, text: str, **options: Any) -> GenerationRequest:
        return cls((Message("user", text),), **options)

    @classmethod
    def from_sampling(cls, params: types.CreateMessageRequestParams) -> GenerationRequest:
        """A downstream server's sampling request, for a model other than the host. Text only: ValueError
        names what else it carries (the caller then relays it to the host, or refuses)."""
        messages = tuple(Message(m.role, _text_of(m.content, strict=True)) for m in params.messages)
        return cls(messages, params.system_prompt, params.max_tokens, params.temperature,
                   stop=tuple(params.stop_sequences or ()), metadata=dict(params.metadata or {}),
                   preferences=Preferences.from_mcp(params.model_preferences))

    def to_sampling(self) -> types.CreateMessageRequestParams:
        return types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role=m.role, content=types.TextContent(type="text", text=m.content))
                      for m in self.messages],
            system_prompt=self.system, max_tokens=self.max_tokens, temperature=self.temperature,
            stop_sequences=list(self.stop) or None, metadata=dict(self.metadata) or None,
            model_preferences=self.preferences.to_mcp() if self.preferences else None,
        )

    def chars(self) -> int:
        return len(self.system or "") + sum(len(m.content) for m in self.messages)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False  # True when the backend reported nothing and we counted characters / 4


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    model: str  # what the backend says served it
    backend: str  # the configured backend's name
    usage: Usage
    finish_reason: str  # stop | length | the backend's own word
    latency_ms: float
    reasoning_applied: dict[str, Any] = field(default_factory=dict)
    failed: tuple[str, ...] = ()  # backends of a chain that failed before this one answered

    def to_sampling_result(self) -> types.CreateMessageResult:
        """The answer to a downstream server's sampling request."""
        stop = {"stop": "endTurn", "length": "maxTokens"}.get(self.finish_reason, self.finish_reason)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=self.text),
                                         model=self.model, stop_reason=stop)


class BackendError(Exception):
    """A backend could not answer. `retryable`: worth another attempt at the same backend."""

    def __init__(self, backend: str, cause: str, *, retryable: bool = False, retry_after: float | None = None,
                 secrets: Sequence[str] = ()) -> None:
        self.backend = backend
        self.cause = logs.redact_text(cause, secrets)
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait (429, 503)
        super().__init__(f"model backend '{backend}' failed: {self.cause}")


class Backend(Protocol):
    name: str
    kind: str
    spec: BackendSpec

    async def generate(self, request: GenerationRequest, *, channel: Any = None) -> Generation: ...

    def cost(self, usage: Usage) -> float: ...


def estimate_tokens(chars: int) -> int:
    return max(1, (chars + 3) // 4)


class _Priced:
    spec: BackendSpec

    def cost(self, usage: Usage) -> float:
        """USD, from the configured prices per 1M tokens in and out."""
        return (usage.input_tokens * self.spec.price_in + usage.output_tokens * self.spec.price_out) / 1e6


# ----------------------------------------------------------------------------- OpenAI-compatible endpoints


class OpenAIBackend(_Priced):
    kind = "openai"

    def __init__(self, spec: BackendSpec, *, client: httpx2.AsyncClient | None = None) -> None:
        if not spec.base_url or not spec.model:
            raise ValueError(f"openai backend '{spec.name}' needs base_url and model")
        self.spec = spec
        self.name = spec.name
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self._client = client
        self._own_client = client is None
        self._timeout = httpx2.Timeout(spec.timeout, connect=min(spec.timeout, 10.0))

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    async def generate(self, request: GenerationRequest, *, channel: Any = None) -> Generation:
        body, applied = reasoning.apply(self.spec.knob, request.reasoning, self._body(request))
        headers, secrets = self._auth()
        started = time.perf_counter()
        data = await self._post(body, headers, secrets)
        latency = (time.perf_counter() - started) * 1000
        return self._generation(data, request, latency, applied)

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        system = [{"role": "system", "content": request.system}] if request.system else []
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": system + [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    def _auth(self) -> tuple[dict[str, str], tuple[str, ...]]:
        env = self.spec.api_key_env
        if not env:
            return {}, ()
        key = os.environ.get(env)
        if not key:
            raise BackendError(self.name, f"the environment variable {env} (its API key) is not set")
        return {"Authorization": f"Bearer {key}"}, (key,)

    async def _post(self, body: dict[str, Any], headers: dict[str, str], secrets: tuple[str, ...]) -> dict[str, Any]:
        client = self._client or self._new_client()
        for attempt in range(self.spec.retries + 1):
            try:
                response = await client.post(self.url, json=body, headers=headers, timeout=self._timeout)
                return self._parse(response, secrets)
            except BackendError as exc:
                error = exc
            except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.RemoteProtocolError, httpx2.ReadError) as exc:
                error = BackendError(self.name, _describe(exc, self.url), retryable=True, secrets=secrets)
            except httpx2.TimeoutException as exc:  # the model is slow: another attempt would double the wait
                raise BackendError(self.name, f"no answer within {self.spec.timeout:g} s ({type(exc).__name__})") from None
            except httpx2.HTTPError as exc:
                raise BackendError(self.name, _describe(exc, self.url), secrets=secrets) from None
            if not error.retryable or attempt == self.spec.retries:
                raise error
            delay = error.retry_after if error.retry_after is not None else _BACKOFF * 2**attempt
            log.info("model backend retry", backend=self.name, attempt=attempt + 1, delay_s=delay, cause=error.cause)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _new_client(self) -> httpx2.AsyncClient:
        # One client per backend: connections to the endpoint are reused across requests.
        self._client = httpx2.AsyncClient(timeout=self._timeout)
        return self._client

    def _parse(self, response: httpx2.Response, secrets: tuple[str, ...]) -> dict[str, Any]:
        if response.status_code >= 400:
            detail = logs.redact_text(response.text, secrets)[:300].strip()  # redact, then cut: no key halves
            raise BackendError(self.name, f"HTTP {response.status_code} from {self.url}: {detail}",
                               retryable=response.status_code in _RETRY_STATUS,
                               retry_after=_seconds(response.headers.get("retry-after")), secrets=secrets)
        try:
            data = response.json()
            data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            text = logs.redact_text(response.text, secrets)[:200]
            raise BackendError(self.name, f"not a chat completion: {text!r}", secrets=secrets) from None
        return data

    def _generation(self, data: dict[str, Any], request: GenerationRequest, latency: float,
                    applied: dict[str, Any]) -> Generation:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        reported = data.get("usage") or {}
        if "prompt_tokens" in reported and "completion_tokens" in reported:
            usage = Usage(int(reported["prompt_tokens"]), int(reported["completion_tokens"]))
        else:
            usage = Usage(estimate_tokens(request.chars()), estimate_tokens(len(text)), estimated=True)
        return Generation(text, str(data.get("model") or self.spec.model), self.name, usage,
                          choice.get("finish_reason") or "stop", latency, applied)


def _seconds(retry_after: str | None) -> float | None:
    try:
        return min(max(float(retry_after), 0.0), _MAX_WAIT) if retry_after is not None else None
    except ValueError:
        return None  # an HTTP date: the usual backoff will do


def _describe(exc: Exception, url: str) -> str:
    return f"{type(exc).__name__} on {url}: {exc}" if str(exc) else f"{type(exc).__name__} on {url}"


# ----------------------------------------------------------------------------- the host, through MCP sampling


class HostBackend(_Priced):
    """The connected host's own model. Needs the request's channel back to the host (`HostChannel`)."""

    kind = "host"

    def __init__(self, spec: BackendSpec | None = None) -> None:
        self.spec = spec or BackendSpec("host", "host", price_in=0.0, price_out=0.0)
        self.name = self.spec.name

    async def generate(self, request: GenerationRequest, *, channel: Any = None) -> Generation:
        if channel is None:
            raise BackendError(self.name, "no way back to a host for this request (no channel)")
        _, applied = reasoning.apply(self.spec.knob, request.reasoning, {})
        started = time.perf_counter()
        try:
            result = await channel.request("sampling/createMessage", request.to_sampling())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the host refused, timed out or went away
            raise BackendError(self.name, f"the host's sampling failed: {type(exc).__name__}: {exc}") from None
        latency = (time.perf_counter() - started) * 1000
        text = _text_of(result.content)
        usage = Usage(estimate_tokens(request.chars()), estimate_tokens(len(text)), estimated=True)
        finish = {"endTurn": "stop", "stopSequence": "stop", "maxTokens": "length"}.get(result.stop_reason or "endTurn")
        return Generation(text, result.model, self.name, usage, finish or str(result.stop_reason), latency, applied)


def _text_of(content: Any, *, strict: bool = False) -> str:
    parts = content if isinstance(content, list) else [content]
    other = [getattr(p, "type", type(p).__name__) for p in parts if getattr(p, "type", None) != "text"]
    if strict and other:
        raise ValueError(f"only text content can go to a model other than the host, not {', '.join(other)}")
    return "".join(p.text for p in parts if getattr(p, "type", None) == "text")


# ----------------------------------------------------------------------------- chains and construction


class FallbackChain:
    """Backends tried in order: the first answer wins; `BackendError` moves on to the next one."""

    kind = "chain"

    def __init__(self, backends: Sequence[Backend]) -> None:
        if not backends:
            raise ValueError("a fallback chain needs at least one backend")
        self.backends = tuple(backends)
        self.name = " > ".join(b.name for b in self.backends)

    async def generate(self, request: GenerationRequest, *, channel: Any = None) -> Generation:
        failures: list[BackendError] = []
        for backend in self.backends:
            try:
                generation = await backend.generate(request, channel=channel)
            except BackendError as exc:
                failures.append(exc)
                log.warning("model backend failed", backend=exc.backend, cause=exc.cause,
                            next=self._after(backend))
                continue
            return replace(generation, failed=tuple(f.backend for f in failures))
        raise BackendError(self.name, "; ".join(f"{f.backend}: {f.cause}" for f in failures))

    def cost(self, generation: Generation) -> float:
        """The cost of an answer, priced by the backend that gave it."""
        return next(b.cost(generation.usage) for b in self.backends if b.name == generation.backend)

    def _after(self, backend: Backend) -> str | None:
        index = self.backends.index(backend)
        return self.backends[index + 1].name if index + 1 < len(self.backends) else None


def build(spec: BackendSpec) -> Backend:
    return OpenAIBackend(spec) if spec.kind == "openai" else HostBackend(spec)


def build_all(config: ModelsConfig) -> dict[str, Backend]:
    return {name: build(spec) for name, spec in config.backends.items()}


def chain_of(backends: Mapping[str, Backend], names: Sequence[str]) -> FallbackChain:
    return FallbackChain([backends[n] for n in names])
