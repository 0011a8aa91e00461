"""Part 3: what the trust plane adds to a small read-only call on its fast path.

Two gateways run side by side in this process, the same servers.d and policies, one with the trust plane and
one without (`AppConfig(trust=False)`). Rounds alternate between them (on, off, on, off, ...) so that drift
hits both alike. Per call: the time the SDK client waits for `tools/call`, end to end (stdio to the server).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bench.security.common import INFRA, gateway, write_servers

TOOLS = {"time__get_current_time": {"timezone": "UTC"}, "infra__get_node": {"name": "web-1"}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 0.5), "p90": percentile(values, 0.9), "p99": percentile(values, 0.99),
            "mean": statistics.fmean(values)}


async def _rounds(paths: dict[str, Any], tool: str, args: dict[str, Any], calls: int, rounds: int,
                  toggle: Any = None) -> dict[str, list[float]]:
    """Interleaved rounds: every round runs each path (alternating which goes first) for calls/rounds calls."""
    samples: dict[str, list[float]] = {p: [] for p in paths}
    cpu: dict[str, float] = dict.fromkeys(paths, 0.0)
    per_round = max(1, calls // rounds)
    round_p50: dict[str, list[float]] = {p: [] for p in paths}
    for r in range(rounds):
        order = list(paths.items()) if r % 2 == 0 else list(reversed(paths.items()))
        for name, client in order:
            if toggle is not None:
                toggle(name)
            cpu_start = time.process_time()
            this_round = []
            for _ in range(per_round):
                start = time.perf_counter()
                result = await client.call_tool(tool, args)
                this_round.append((time.perf_counter() - start) * 1000)
                assert not result.is_error, result
            cpu[name] += time.process_time() - cpu_start
            samples[name] += this_round
            round_p50[name].append(percentile(this_round, 0.5))
    for name in paths:  # this process's CPU time per call (client and gateway; the servers run elsewhere)
        samples[f"cpu:{name}"] = [cpu[name] / max(1, len(samples[name])) * 1000]
        samples[f"rounds:{name}"] = round_p50[name]
    return samples


def _row(samples: dict[str, list[float]], on: str, off: str) -> dict[str, Any]:
    row: dict[str, Any] = {name: stats(values) for name, values in samples.items() if ":" not in name}
    # Paired rounds: each round's p50 with the trust plane minus the same round's p50 without; the median of
    # these differences is robust to the drift and the bursts of a shared machine.
    diffs = sorted(a - b for a, b in zip(samples[f"rounds:{on}"], samples[f"rounds:{off}"], strict=True))
    row["paired_round_diff_ms"] = {"median": percentile(diffs, 0.5), "q1": percentile(diffs, 0.25),
                                   "q3": percentile(diffs, 0.75), "rounds": len(diffs)}
    row["cpu_per_call_ms"] = {on: samples[f"cpu:{on}"][0], off: samples[f"cpu:{off}"][0]}
    row["added_cpu_ms"] = samples[f"cpu:{on}"][0] - samples[f"cpu:{off}"][0]
    row["added_p50_ms"] = row[on]["p50"] - row[off]["p50"]
    row["added_p99_ms"] = row[on]["p99"] - row[off]["p99"]
    row["added_mean_ms"] = row[on]["mean"] - row[off]["mean"]
    return row


async def measure(tmp: Path, calls: int, rounds: int, profile: bool = False) -> dict[str, Any]:
    """A: two gateways, AppConfig(trust=True) and AppConfig(trust=False), interleaved; run twice with the
    creation order swapped (each gateway instance has its own downstream processes, whose speed differs a
    little), samples pooled. B: one gateway whose trust service is switched to a pass-through between rounds
    (same processes for both). C: the trust service's own time per call, the rest of the chain stubbed."""
    from fmos_mcp.trust.service import TrustService

    servers = write_servers(tmp / "servers.d", {
        "infra": {"command": sys.executable, "args": [str(INFRA)]},
        "time": {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]},
    })
    report: dict[str, Any] = {"calls_per_path": calls, "rounds": rounds}
    pooled: dict[str, dict[str, list[float]]] = {tool: {"trust on": [], "trust off": []} for tool in TOOLS}
    fast: dict[str, bool] = {}
    for order in ((True, False), (False, True)):
        async with AsyncExitStack() as stack:
            clients, apps = {}, {}
            for trust in order:
                app, client = await stack.enter_async_context(
                    gateway(servers, tmp / f"{'on' if trust else 'off'}-{order[0]}", trust=trust, expect_tools=17))
                name = "trust on" if trust else "trust off"
                clients[name], apps[name] = client, app
            for tool, args in TOOLS.items():
                profile_of = apps["trust on"].trust.vetting.profiles.get(tuple(tool.split("__", 1)))
                fast[tool] = bool(profile_of and profile_of.fast)
                for client in clients.values():  # warm up both
                    for _ in range(30):
                        await client.call_tool(tool, args)
                got = await _rounds(clients, tool, args, calls // 2, rounds // 2)
                for name, values in got.items():
                    if name.startswith("cpu:"):
                        pooled[tool].setdefault(name, [0.0])[0] += values[0] / 2
                    else:
                        pooled[tool].setdefault(name, [])
                        pooled[tool][name] += values
    report["two_gateways"] = {tool: {**_row(samples, "trust on", "trust off"), "fast_path": fast[tool]}
                              for tool, samples in pooled.items()}

    original = TrustService.__call__

    async def passthrough(self: Any, request: Any, call_next: Any) -> Any:
        return await call_next(request)

    def toggle(name: str) -> None:
        TrustService.__call__ = original if name == "trust on" else passthrough  # type: ignore[method-assign]

    async with AsyncExitStack() as stack:
        app, client = await stack.enter_async_context(gateway(servers, tmp / "toggle", expect_tools=17))
        try:
            report["one_gateway_toggled"] = {}
            for tool, args in TOOLS.items():
                for _ in range(30):
                    await client.call_tool(tool, args)
                got = await _rounds({"trust on": client, "trust off": client}, tool, args, calls, rounds, toggle)
                report["one_gateway_toggled"][tool] = _row(got, "trust on", "trust off")
        finally:
            TrustService.__call__ = original  # type: ignore[method-assign]
            # A/A: the same gateway against itself, trust on both times: how big a difference noise alone makes
            got = await _rounds({"trust on": client, "trust on (again)": client}, "infra__get_node", TOOLS["infra__get_node"],
                                calls // 2, rounds)
            report["noise_floor_a_a"] = _row(got, "trust on", "trust on (again)")
        report["interceptor_alone"] = await _interceptor_cost(app, client)
        report["own_time_in_situ"] = await _own_time(client, calls)
        if profile:
            report["profile"] = await _profile(client, "time__get_current_time", TOOLS["time__get_current_time"])
    return report


async def _own_time(client: Any, calls: int) -> dict[str, Any]:
    """The trust service's own time inside real calls: from entering it to leaving it, minus the time spent
    waiting for the rest of the chain (the downstream call). Unlike the stubbed measurement below, this runs
    with caches as cold as the rest of the stack leaves them, and catches the collections its allocations set off."""
    from fmos_mcp.trust.service import TrustService

    original = TrustService.__call__
    samples: list[float] = []

    async def timed(self: Any, request: Any, call_next: Any) -> Any:
        waited = 0.0

        async def next_(req: Any) -> Any:
            nonlocal waited
            start = time.perf_counter()
            try:
                return await call_next(req)
            finally:
                waited += time.perf_counter() - start

        start = time.perf_counter()
        result = await original(self, request, next_)
        samples.append((time.perf_counter() - start - waited) * 1e6)
        return result

    out = {}
    TrustService.__call__ = timed  # type: ignore[method-assign]
    try:
        for tool, args in TOOLS.items():
            for _ in range(100):
                await client.call_tool(tool, args)
            samples.clear()
            for _ in range(calls):
                await client.call_tool(tool, args)
            out[tool] = {"p50_us": percentile(samples, 0.5), "p90_us": percentile(samples, 0.9),
                         "p99_us": percentile(samples, 0.99), "mean_us": statistics.fmean(samples)}
    finally:
        TrustService.__call__ = original  # type: ignore[method-assign]
    return out


async def _interceptor_cost(app: Any, client: Any, n: int = 3000) -> dict[str, Any]:
    """The trust service alone: its own time per fast-path call, with the rest of the chain replaced by a stub
    that returns a recorded result (so only the trust plane's CPU is on the clock)."""
    from fmos_mcp.trust.service import TrustService

    service = app.trust.service
    recorded: dict[str, Any] = {}
    original = TrustService.__call__

    async def capture(self: Any, request: Any, call_next: Any) -> Any:
        result = await original(self, request, call_next)
        recorded.setdefault(request.name, (request, result))
        return result

    TrustService.__call__ = capture  # type: ignore[method-assign]
    try:
        for tool, args in TOOLS.items():
            await client.call_tool(tool, args)
    finally:
        TrustService.__call__ = original  # type: ignore[method-assign]
    out = {}
    for tool, (request, result) in recorded.items():

        async def stub(_request: Any, result: Any = result) -> Any:
            return result

        times = []
        for _ in range(n):
            start = time.perf_counter()
            await service(request, stub)
            times.append((time.perf_counter() - start) * 1e6)
        out[tool] = {"p50_us": percentile(times, 0.5), "p99_us": percentile(times, 0.99), "mean_us": statistics.fmean(times)}
    return out


async def _profile(client: Any, tool: str, args: dict[str, Any], n: int = 1000) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        await client.call_tool(tool, args)
    profiler.disable()
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats("fmos_mcp/trust", 25)
    return buffer.getvalue()


def prefilter_agreement(texts: list[str]) -> dict[str, int]:
    """The detectors skip text that cannot match (cheap pre-filters); check that skipping never changes an
    answer: every text is also run through every pattern without the pre-filter."""
    from fmos_mcp.trust.detectors import instructions as ins
    from fmos_mcp.trust.detectors import outputs, secrets

    if not hasattr(outputs, "_signals") or not hasattr(secrets, "possible"):
        return {"texts": 0, "injection": 0, "secrets": 0, "note": "these detectors have no pre-filters"}

    def signals_full(text: str) -> bool:
        return any(p.search(text) for kind, p in ins.DIRECTIVES if kind in outputs._STRONG) or any(
            p.search(text) for _, p in getattr(outputs, "RESULT_SIGNALS", ()))

    def secrets_full(text: str) -> bool:
        return any(p.search(text) for _, p in secrets._PATTERNS)

    disagree = {"injection": 0, "secrets": 0}
    for text in texts:
        if signals_full(text) != (next(outputs._signals(text), None) is not None):
            disagree["injection"] += 1
        full = secrets_full(text)
        if full and not secrets.possible(text):
            disagree["secrets"] += 1
    return {"texts": len(texts), **disagree}
