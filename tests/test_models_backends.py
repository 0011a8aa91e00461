"""The model plane's backend library: backends against a real local model and real HTTP endpoints, reasoning
levels for every knob kind, routing rules and preferences, and the `models` policy section."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
import structlog
from model_fixtures import Reply, completion

from conftest import ROOT
from fmos_mcp.models import backends as backends_module
from fmos_mcp.models.backends import (
    BackendError, FallbackChain, Generation, GenerationRequest, HostBackend, Message, OpenAIBackend, Preferences,
    Usage,
)
from fmos_mcp.models.config import BackendSpec, ModelsConfig, check, looks_like_key
from fmos_mcp.models.localmodel import MODEL_NAME, LocalModelServer, free_port, gguf_path
from fmos_mcp.models.reasoning import ReasoningSetting, apply
from fmos_mcp.models.routing import Dispatcher, Features, Router, RoutingError
from fmos_mcp.trust.policy import load_policies


def spec(name: str = "local", base_url: str = "http://127.0.0.1:9/v1", **options: Any) -> BackendSpec:
    return BackendSpec(name, "openai", base_url=base_url, model=options.pop("model", MODEL_NAME), **options)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends_module, "_BACKOFF", 0.01)


def counting_client(timeout: float = 5.0) -> tuple[httpx2.AsyncClient, list[str]]:
    sent: list[str] = []

    async def hook(request: httpx2.Request) -> None:
        sent.append(str(request.url))

    return httpx2.AsyncClient(timeout=timeout, event_hooks={"request": [hook]}), sent


# ----------------------------------------------------------------------------- the real local model


async def test_local_model_answers_with_its_own_usage(local_model: str) -> None:
    backend = OpenAIBackend(spec(base_url=local_model))
    request = GenerationRequest.prompt("Name one colour.", system="Answer in a few words.", max_tokens=12,
                                       temperature=0)
    try:
        generation = await backend.generate(request)
    finally:
        await backend.aclose()
    assert generation.text.strip() and generation.backend == "local" and generation.model == MODEL_NAME
    assert generation.finish_reason in ("stop", "length") and generation.latency_ms > 0
    assert generation.reasoning_applied == {"knob": "none", "requested": "default", "applied": False}
    # The usage is the server's own count: the same request straight to the endpoint reports the same numbers.
    async with httpx2.AsyncClient(timeout=30) as client:
        body = {"model": MODEL_NAME, "max_tokens": 12, "temperature": 0,
                "messages": [{"role": "system", "content": "Answer in a few words."},
                             {"role": "user", "content": "Name one colour."}]}
        reported = (await client.post(f"{local_model}/chat/completions", json=body)).json()["usage"]
    assert not generation.usage.estimated
    assert (generation.usage.input_tokens, generation.usage.output_tokens) == (
        reported["prompt_tokens"], reported["completion_tokens"])
    assert 0 < generation.usage.output_tokens <= 12


async def test_local_model_takes_the_thinking_switch_and_stops_at_max_tokens(local_model: str) -> None:
    backend = OpenAIBackend(spec(base_url=local_model, knob="thinking_switch"))
    request = GenerationRequest.prompt("Write a long story about a lighthouse.", max_tokens=5, temperature=0,
                                       reasoning=ReasoningSetting("high"))
    try:
        generation = await backend.generate(request)
    finally:
        await backend.aclose()
    assert generation.reasoning_applied["enable_thinking"] is True
    assert generation.finish_reason == "length" and generation.usage.output_tokens == 5


async def test_fallback_from_a_dead_port_to_the_local_model(local_model: str) -> None:
    client, sent = counting_client()
    dead = OpenAIBackend(spec("dead", f"http://127.0.0.1:{free_port()}/v1", retries=2), client=client)
    local = OpenAIBackend(spec(base_url=local_model))
    chain = FallbackChain([dead, local])
    try:
        generation = await chain.generate(GenerationRequest.prompt("Say hi.", max_tokens=8))
    finally:
        await client.aclose()
        await local.aclose()
    assert generation.backend == "local" and generation.failed == ("dead",) and generation.text
    assert len(sent) == 3  # one attempt and two retries on the connect error


def test_local_model_server_starts_and_stops() -> None:
    assert gguf_path().name.endswith(".gguf") and gguf_path().stat().st_size > 50_000_000
    server = LocalModelServer(threads=1, ctx=256)
    with server:
        assert server.startup_s is not None and server.startup_s < 30
        assert httpx2.get(f"{server.base_url}/models", timeout=5).json()["data"][0]["id"] == MODEL_NAME
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{server.base_url}/models", timeout=2)


# ----------------------------------------------------------------------------- retries, timeouts, errors


async def test_dead_port_fails_after_the_retries_naming_the_backend() -> None:
    client, sent = counting_client()
    backend = OpenAIBackend(spec("dead", f"http://127.0.0.1:{free_port()}/v1", retries=1), client=client)
    with pytest.raises(BackendError) as caught:
        await backend.generate(GenerationRequest.prompt("hi"))
    await client.aclose()
    assert len(sent) == 2 and caught.value.backend == "dead" and caught.value.retryable
    assert "model backend 'dead' failed: ConnectError" in str(caught.value)


async def test_retries_on_503_and_429_then_answers(scripted: Any) -> None:
    endpoint = scripted(Reply(503, {"error": "loading"}), Reply(429, {"error": "slow down"}, {"retry-after": "0"}),
                        Reply(200, completion("fine", prompt_tokens=11, completion_tokens=3)))
    backend = OpenAIBackend(spec("remote", endpoint.base_url, retries=2, price_in=2.0, price_out=8.0))
    generation = await backend.generate(GenerationRequest.prompt("hi", max_tokens=20, stop=("\n",)))
    await backend.aclose()
    assert len(endpoint.received) == 3 and generation.text == "fine"
    assert generation.usage == Usage(11, 3) and generation.model == "scripted-model"
    assert backend.cost(generation.usage) == pytest.approx((11 * 2 + 3 * 8) / 1e6)
    sent = endpoint.received[0]
    assert sent["path"] == "/v1/chat/completions" and sent["json"]["stop"] == ["\n"]
    assert sent["json"]["max_tokens"] == 20 and "authorization" not in {k.lower() for k in sent["headers"]}


async def test_client_errors_are_not_retried(scripted: Any) -> None:
    endpoint = scripted(Reply(400, {"error": "bad request"}))
    backend = OpenAIBackend(spec("remote", endpoint.base_url, retries=3))
    with pytest.raises(BackendError, match="HTTP 400") as caught:
        await backend.generate(GenerationRequest.prompt("hi"))
    await backend.aclose()
    assert len(endpoint.received) == 1 and not caught.value.retryable


async def test_a_slow_model_times_out_without_a_retry(scripted: Any) -> None:
    endpoint = scripted(Reply(delay=2.0))
    backend = OpenAIBackend(spec("slow", endpoint.base_url, timeout=0.3, retries=2))
    started = time.perf_counter()
    with pytest.raises(BackendError, match=r"no answer within 0.3 s"):
        await backend.generate(GenerationRequest.prompt("hi"))
    await backend.aclose()
    assert time.perf_counter() - started < 1.5 and len(endpoint.received) == 1


async def test_an_answer_that_is_not_a_completion_is_an_error(scripted: Any) -> None:
    endpoint = scripted(Reply(200, {"unexpected": True}))
    backend = OpenAIBackend(spec("odd", endpoint.base_url))
    with pytest.raises(BackendError, match="not a chat completion"):
        await backend.generate(GenerationRequest.prompt("hi"))
    await backend.aclose()


async def test_errors_and_logs_never_carry_the_api_key(scripted: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-test-" + secrets.token_hex(20)
    monkeypatch.setenv("FMOS_TEST_MODEL_KEY", key)
    # The endpoint echoes the Authorization header in its error body, as some proxies do; the second time
    # where the error's 300-character cut would fall inside the key.
    endpoint = scripted(Reply(500, '{"error": "upstream said: {auth}"}'),
                        Reply(401, '{"error": "bad key ' + "pad " * 68 + '{auth}"}'))
    backend = OpenAIBackend(spec("hosted", endpoint.base_url, api_key_env="FMOS_TEST_MODEL_KEY", retries=1))
    with structlog.testing.capture_logs() as logged, pytest.raises(BackendError) as caught:
        await FallbackChain([backend]).generate(GenerationRequest.prompt("hi"))
    await backend.aclose()
    assert endpoint.received[0]["headers"]["Authorization"] == f"Bearer {key}"  # it was sent...
    assert "HTTP 401" in str(caught.value) and "upstream" not in str(caught.value)
    assert key not in str(caught.value) and key not in repr(logged) and logged  # ...and never repeated
    assert key[8:20] not in str(caught.value) + repr(logged)


async def test_a_missing_key_variable_is_named_and_nothing_is_sent(scripted: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FMOS_TEST_ABSENT_KEY", raising=False)
    endpoint = scripted()
    backend = OpenAIBackend(spec("hosted", endpoint.base_url, api_key_env="FMOS_TEST_ABSENT_KEY"))
    with pytest.raises(BackendError, match="FMOS_TEST_ABSENT_KEY"):
        await backend.generate(GenerationRequest.prompt("hi"))
    assert endpoint.received == []


# ----------------------------------------------------------------------------- the host, through MCP sampling


class FakeHostChannel:
    """Stands in for the gateway's HostChannel to a real host (the end-to-end tests cover the real path): it
    receives the typed sampling request and answers with a typed CreateMessageResult."""

    def __init__(self, answer: str = "the host's answer", fail: Exception | None = None) -> None:
        self.answer, self.fail = answer, fail
        self.requests: list[tuple[str, Any]] = []

    async def request(self, method: str, params: Any, on_progress: Any = None) -> types.CreateMessageResult:
        self.requests.append((method, params))
        if self.fail:
            raise self.fail
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=self.answer),
                                         model="host-model-7", stop_reason="maxTokens")


async def test_host_backend_sends_sampling_and_estimates_usage() -> None:
    channel = FakeHostChannel("x" * 40)
    request = GenerationRequest((Message("user", "a" * 100), {"role": "assistant", "content": "ok"}),
                                system="be brief", max_tokens=64, temperature=0.2, stop=("END",),
                                preferences=Preferences(cost=0.1, intelligence=0.9, hints=("claude",)),
                                reasoning=ReasoningSetting("high"))
    generation = await HostBackend().generate(request, channel=channel)
    method, params = channel.requests[0]
    assert method == "sampling/createMessage" and isinstance(params, types.CreateMessageRequestParams)
    assert [m.content.text for m in params.messages] == ["a" * 100, "ok"] and params.system_prompt == "be brief"
    assert (params.max_tokens, params.temperature, params.stop_sequences) == (64, 0.2, ["END"])
    assert params.model_preferences.hints[0].name == "claude" and params.model_preferences.intelligence_priority == 0.9
    assert generation.model == "host-model-7" and generation.backend == "host" and generation.finish_reason == "length"
    assert generation.usage == Usage(input_tokens=28, output_tokens=10, estimated=True)  # (8 + 100 + 2) / 4
    assert generation.reasoning_applied == {"knob": "none", "requested": "high", "applied": False}


async def test_host_backend_failures_are_backend_errors() -> None:
    with pytest.raises(BackendError, match="no way back to a host"):
        await HostBackend().generate(GenerationRequest.prompt("hi"))
    refused = FakeHostChannel(fail=RuntimeError("user declined"))
    with pytest.raises(BackendError, match="user declined"):
        await HostBackend().generate(GenerationRequest.prompt("hi"), channel=refused)


def test_sampling_requests_convert_both_ways() -> None:
    params = types.CreateMessageRequestParams(
        messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text="hello"))],
        system_prompt="sys", max_tokens=33, stop_sequences=["#"],
        model_preferences=types.ModelPreferences(speed_priority=1.0, hints=[types.ModelHint(name="smol")]))
    request = GenerationRequest.from_sampling(params)
    assert request.messages == (Message("user", "hello"),) and request.system == "sys" and request.max_tokens == 33
    assert request.preferences == Preferences(speed=1.0, hints=("smol",)) and request.stop == ("#",)
    result = Generation("hi", "m", "local", Usage(1, 1), "length", 1.0).to_sampling_result()
    assert result.stop_reason == "maxTokens" and result.content.text == "hi" and result.model == "m"
    image = types.SamplingMessage(role="user", content=types.ImageContent(type="image", data="AA==",
                                                                           mime_type="image/png"))
    with pytest.raises(ValueError, match="only text content"):
        GenerationRequest.from_sampling(params.model_copy(update={"messages": [image]}))


# ----------------------------------------------------------------------------- reasoning levels, one test per knob


BODY = {"model": "m", "messages": [], "max_tokens": 2000}


def test_effort_knob() -> None:
    levels = {lvl: apply("effort", ReasoningSetting(lvl), BODY)[0]["reasoning_effort"]
              for lvl in ("off", "low", "medium", "high")}
    assert levels == {"off": "minimal", "low": "low", "medium": "medium", "high": "high"}
    body, record = apply("effort", ReasoningSetting(budget_tokens=3000), BODY)
    assert body["reasoning_effort"] == "medium" and record["applied"]
    assert body["max_completion_tokens"] == 2000 and "max_tokens" not in body and BODY["max_tokens"] == 2000


def test_budget_tokens_knob() -> None:
    body, record = apply("budget_tokens", ReasoningSetting("low"), BODY)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024} and record["budget_tokens"] == 1024
    body, record = apply("budget_tokens", ReasoningSetting("high"), BODY)  # clamped below max_tokens
    assert body["thinking"]["budget_tokens"] == 1999 and record["budget_tokens"] == 1999
    assert apply("budget_tokens", ReasoningSetting(budget_tokens=777), BODY)[0]["thinking"]["budget_tokens"] == 777
    assert apply("budget_tokens", ReasoningSetting("off"), BODY)[0]["thinking"] == {"type": "disabled"}


def test_thinking_switch_knob() -> None:
    body, record = apply("thinking_switch", ReasoningSetting("off"), {**BODY, "chat_template_kwargs": {"a": 1}})
    assert body["chat_template_kwargs"] == {"a": 1, "enable_thinking": False} and record["enable_thinking"] is False
    assert apply("thinking_switch", ReasoningSetting("medium"), BODY)[0]["chat_template_kwargs"]["enable_thinking"]
    assert apply("thinking_switch", ReasoningSetting(budget_tokens=0), BODY)[1]["enable_thinking"] is False


def test_none_knob_and_no_request_change_nothing() -> None:
    assert apply("none", ReasoningSetting("high"), BODY) == (BODY, {"knob": "none", "requested": "high",
                                                                    "applied": False})
    assert apply("effort", ReasoningSetting(), BODY)[0] is BODY
    with pytest.raises(ValueError, match="unknown reasoning knob"):
        apply("dial", ReasoningSetting("low"), BODY)


def test_reasoning_settings_parse_what_policies_and_callers_write() -> None:
    assert ReasoningSetting.parse(False) == ReasoningSetting("off")  # YAML's bare `off`
    assert ReasoningSetting.parse("HIGH") == ReasoningSetting("high")
    assert ReasoningSetting.parse(2048) == ReasoningSetting.parse("2048") == ReasoningSetting(budget_tokens=2048)
    assert ReasoningSetting.parse({"level": "low"}) == ReasoningSetting("low") and not ReasoningSetting.parse(None).requested
    assert ReasoningSetting(budget_tokens=20000).effective_level() == "high"
    for bad in ("extreme", -5, [1]):
        with pytest.raises(ValueError):
            ReasoningSetting.parse(bad)


# ----------------------------------------------------------------------------- routing


def models(**section: Any) -> ModelsConfig:
    base: dict[str, Any] = {
        "backends": [
            {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "smollm2-135m",
             "cost": 0.0, "speed": 0.9, "intelligence": 0.1, "context_window": 2048},
            {"name": "big", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-5",
             "cost": 0.9, "speed": 0.3, "intelligence": 0.95, "hints": ["frontier"]},
            {"name": "host", "kind": "host", "cost": 0.5, "speed": 0.5, "intelligence": 0.8},
        ],
        "default": "local", "fallback": ["big"],
    }
    return ModelsConfig.from_section({**base, **section})


def test_routes_match_in_order_and_their_reasoning_wins() -> None:
    router = Router(models(routes=[
        {"id": "acme-infra", "match": {"tenants": ["acme*"], "servers": ["infra"]}, "model": "big",
         "reasoning": "high", "fallback": []},
        {"id": "summaries", "match": {"tasks": ["summarize"]}, "model": "local", "reasoning": False},
    ]))
    decision = router.choose(Features(tenant="acme-eu", server="infra", task="summarize",
                                      reasoning=ReasoningSetting("low")))
    assert (decision.rule, decision.chain, decision.reasoning) == ("acme-infra", ("big",), ReasoningSetting("high"))
    decision = router.choose(Features(tenant="other", server="infra", task="summarize"))
    assert (decision.rule, decision.chain, decision.reasoning.level) == ("summaries", ("local", "big"), "off")
    # A route naming servers never matches the gateway's own requests; the requested level then stands.
    decision = router.choose(Features(tenant="acme", server=None, reasoning=ReasoningSetting("medium")))
    assert decision.rule == "default" and decision.reasoning.level == "medium" and decision.model == "local"


def test_sampling_modes_per_server() -> None:
    router = Router(models(sampling={"*": "fallback", "files": "host", "infra": "model", "lab": "preferences"}))
    assert router.choose(Features(server="other", host_has_sampling=True)).chain == ("host",)
    assert router.choose(Features(server="other", host_has_sampling=False)).chain == ("local", "big")
    assert router.choose(Features(server="files", host_has_sampling=True)).rule == "sampling:host"
    with pytest.raises(RoutingError, match="offers no sampling"):
        router.choose(Features(server="files", host_has_sampling=False))
    assert router.choose(Features(server="infra", host_has_sampling=True)).chain == ("local", "big")
    smart = router.choose(Features(server="lab", host_has_sampling=True, preferences=Preferences(intelligence=1)))
    assert (smart.rule, smart.model) == ("preferences", "big")
    # `model` mode strips the host even from a route that names it.
    router = Router(models(sampling={"*": "model"}, routes=[{"id": "r", "model": "host", "fallback": ["local"]}]))
    decision = router.choose(Features(host_has_sampling=True))
    assert decision.chain == ("local",) and "host (no host sampling here)" in decision.why


def test_preferences_hints_then_priorities() -> None:
    router = Router(models(sampling={"*": "preferences"}))

    def pick(prefs: Preferences, host: bool = False) -> str:
        return router.choose(Features(preferences=prefs, host_has_sampling=host)).model

    assert pick(Preferences(cost=1.0)) == "local"
    assert pick(Preferences(intelligence=1.0, cost=0.2)) == "big"
    assert pick(Preferences(speed=0.1, intelligence=0.8), host=True) == "big"
    assert pick(Preferences(hints=("nothing-like-it", "SmolLM"), intelligence=1.0)) == "local"  # substring, any case
    assert pick(Preferences(hints=("frontier",))) == "big"  # a declared hint
    assert pick(Preferences()) == "local"  # a tie goes to the default
    # No preferences at all: the default.
    assert router.choose(Features()).rule == "default"


def test_a_context_window_too_small_drops_the_backend() -> None:
    router = Router(models())
    decision = router.choose(Features(input_chars=4 * 3000, max_tokens=500))
    assert decision.chain == ("big",) and "context window 2048 too small" in decision.why


async def test_dispatcher_records_every_request(scripted: Any) -> None:
    endpoint = scripted(Reply(200, completion("ok", prompt_tokens=10, completion_tokens=5)))
    config = models(backends=[
        {"name": "dead", "kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "x",
         "retries": 0},
        {"name": "paid", "kind": "openai", "base_url": endpoint.base_url, "model": "y", "knob": "effort",
         "price_in": 1.0, "price_out": 4.0},
    ], default="dead", fallback=["paid"], routes=[{"id": "think", "match": {"tasks": ["plan"]}, "model": "dead",
                                                    "reasoning": "high"}])
    rows: list[dict[str, Any]] = []
    dispatcher = Dispatcher(config, on_record=rows.append)
    request = GenerationRequest.prompt("plan my week")
    generation = await dispatcher.generate(request, Features.of(request, tenant="t1", task="plan"))
    await dispatcher.aclose()
    assert generation.backend == "paid" and endpoint.received[0]["json"]["reasoning_effort"] == "high"
    row = rows[0]
    assert (row["rule"], row["chain"], row["chosen"], row["backend"], row["failed"]) == (
        "think", ["dead", "paid"], "dead", "paid", ["dead"])
    assert row["outcome"] == "ok" and row["cost_usd"] == pytest.approx((10 + 20) / 1e6)
    assert row["features"]["task"] == "plan" and row["features"]["input_chars"] == len("plan my week")
    assert row["reasoning_applied"]["reasoning_effort"] == "high" and row["latency_ms"] > 0
    with pytest.raises(RoutingError):
        await Dispatcher(models(sampling={"*": "host"}), on_record=rows.append).generate(request, Features())
    assert rows[-1]["outcome"] == "error" and "offers no sampling" in rows[-1]["error"]


# ----------------------------------------------------------------------------- the `models` policy section


def test_shipped_policy_validates_and_builds() -> None:
    policies = load_policies(ROOT / "policies")
    assert not policies.errors and "models.yaml" in policies.files
    config = ModelsConfig.from_section(policies.sections["models"])
    assert config.backends["local"].base_url == "http://127.0.0.1:8766/v1" and config.sampling_mode("any") == "fallback"
    decision = Router(config).choose(Features(task="summarize", host_has_sampling=True))
    assert decision.chain == ("local", "host") and decision.reasoning.level == "off"


def test_check_names_the_key_of_each_error() -> None:
    section = {
        "backends": [
            {"name": "a", "kind": "openai", "model": "m"},
            {"name": "a", "kind": "openai", "base_url": "http://x/v1", "model": "m", "api_key_env": "sk-live-12345"},
            {"name": "h", "kind": "host", "base_url": "http://x/v1"},
            {"name": "k", "kind": "openai", "base_url": "http://x/v1", "model": "m",
             "api_key_env": "Zx81kQp2Lm93Vn47Tb66Wc05"},
        ],
        "default": "nope", "fallback": ["a", "gone"],
        "routes": [{"id": "r", "model": "missing", "fallback": ["h", "ghost"]}, {"id": "r", "model": "a"}],
    }
    errors = {(where, key) for where, key, _ in check(section)}
    assert errors == {
        ("models backend 'a'", "base_url"), ("models backend 'a'", "name"), ("models backend 'a'", "api_key_env"),
        ("models backend 'h'", "base_url"), ("models backend 'k'", "api_key_env"),
        ("models", "default"), ("models", "fallback.1"), ("models route 'r'", "model"),
        ("models route 'r'", "fallback.1"), ("models route 'r'", "id"),
    }
    messages = " ".join(message for *_, message in check(section))
    assert "sk-live-12345" not in messages and "Zx81kQp2" not in messages  # a pasted key is never echoed
    assert looks_like_key("sk-abc") and not looks_like_key("OPENAI_API_KEY") and not looks_like_key("my_key_var")
    # A file without backends refers to another file's: only the merged section can tell.
    assert check({"routes": [{"id": "x", "model": "elsewhere"}]}) == []
    with pytest.raises(ValueError, match="route 'x': model: no backend named 'elsewhere'"):
        ModelsConfig.from_section({"routes": [{"id": "x", "model": "elsewhere"}]})


def test_schema_errors_name_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "version: 1\nmodels:\n  backends:\n    - {name: x, kind: openai, base_url: ftp://x, model: m, speed: 2,"
        " api_key: sk-123}\n  sampling: {'*': sometimes}\n")
    errors = [str(e) for e in load_policies(tmp_path).errors]
    assert any("models" in e and "backends.0.base_url" in e for e in errors)
    assert any("backends.0.speed" in e for e in errors) and any("'api_key' was unexpected" in e for e in errors)
    assert any("sampling.*" in e for e in errors) and not any("sk-123" in e for e in errors)


def test_a_section_without_backends_gets_the_host() -> None:
    config = ModelsConfig.from_section(None)
    assert config.default == config.host == "host" and config.sampling_mode(None) == "fallback"
    assert Router(config).choose(Features(host_has_sampling=True)).chain == ("host",)
    with pytest.raises(RoutingError, match="no backend can serve"):
        Router(config).choose(Features())


# ----------------------------------------------------------------------------- the prompted knob


def test_prompted_knob_off_asks_for_the_answer_alone() -> None:
    body, record = apply("prompted", ReasoningSetting("off"), {**BODY, "messages": [{"role": "user", "content": "2+2?"}]})
    assert body["messages"][0] == {"role": "system", "content": record["instruction"]} and record["words"] == 0
    assert "only the final answer" in record["instruction"] and record["applied"]
    assert body["messages"][1]["content"] == "2+2?" and "reasoning_effort" not in body and BODY["messages"] == []


def test_prompted_knob_allowance_grows_per_level_and_joins_the_system_text() -> None:
    words = [apply("prompted", ReasoningSetting(level), BODY)[1]["words"] for level in ("low", "medium", "high")]
    assert words == [30, 80, 200]
    system = {**BODY, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}]}
    body, record = apply("prompted", ReasoningSetting("medium"), system)
    assert len(body["messages"]) == 2 and body["messages"][0]["content"] == "Be brief.\n\n" + record["instruction"]
    assert "at most 80 words" in record["instruction"] and "Answer:" in record["instruction"]


def test_prompted_knob_clamps_to_max_tokens_and_reads_token_budgets() -> None:
    assert apply("prompted", ReasoningSetting("high"), {**BODY, "max_tokens": 96})[1]["words"] == 60  # (96 - 16) * 3/4
    assert apply("prompted", ReasoningSetting("low"), {**BODY, "max_tokens": 10})[1]["words"] == 0  # no room: directly
    assert apply("prompted", ReasoningSetting(budget_tokens=100), BODY)[1]["words"] == 75
    assert "only the final answer" in apply("prompted", ReasoningSetting(budget_tokens=0), BODY)[1]["instruction"]


async def test_local_model_takes_the_prompted_knob(local_model: str) -> None:
    backend = OpenAIBackend(spec(base_url=local_model, knob="prompted"))
    request = GenerationRequest.prompt("What is 2 + 3?", max_tokens=48, temperature=0, reasoning=ReasoningSetting("low"))
    try:
        generation = await backend.generate(request)
    finally:
        await backend.aclose()
    assert generation.text.strip() and generation.reasoning_applied["knob"] == "prompted"
    assert generation.reasoning_applied["words"] == 24 and generation.usage.input_tokens > 30  # the instruction went
