"""Budgets: limits per tenant, server and model, reservations, windows, persistence, shared prices."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from fmos_mcp.models.budget_commands import budget_show
from fmos_mcp.durations import duration
from fmos_mcp.models.budget_config import BudgetConfig, Degrade, check
from fmos_mcp.models.budgets import BudgetBook, Charge, Usage
from fmos_mcp.models.pricing import DualPrice
from fmos_mcp.state.db import StateDB
from fmos_mcp.traps.trap import TrapKind
from fmos_mcp.trust.policy import load_policies

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000.0  # a multiple of 60 and of 86400: windows start here


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(*limits: dict[str, Any], pricing: dict[str, Any] | None = None,
           weights: dict[str, float] | None = None) -> BudgetConfig:
    section: dict[str, Any] = {"limits": list(limits)}
    if pricing:
        section["pricing"] = pricing
    if weights:
        section["weights"] = weights
    assert check(section) == []
    return BudgetConfig.from_section(section)


def tokens(n: float) -> Usage:
    return Usage(tokens_in=n, tokens_out=0)


def call(tenant: str = "alice", server: str = "infra", n: float = 1) -> Charge:
    return Charge(tenant, Usage(tool_calls=n, requests=1), server=server)


def model_call(n: float, tenant: str = "alice", model: str = "big", degraded: bool = False) -> Charge:
    return Charge(tenant, tokens(n), model=model, degraded=degraded)


# ----------------------------------------------------------------------------- limits


def test_deny_after_the_limit_with_the_decision_meta() -> None:
    book = BudgetBook(None, config({"id": "calls", "resource": "tool_calls", "limit": 3, "window": "1m"}),
                      clock=Clock())
    for _ in range(3):
        verdict = book.check(call())
        assert verdict.allowed
        book.commit(verdict, Usage(tool_calls=1))
    verdict = book.check(call())
    assert verdict.action == "deny" and verdict.ticket is None
    assert verdict.meta() == {"action": "deny", "trap": "budget", "rule": "budget:calls", "reason": verdict.reason}
    assert "0 of 3 tool calls left in this 1m window" in verdict.reason
    trap = verdict.trap()
    assert trap is not None and trap.kind is TrapKind.BUDGET and trap.decision == "deny"
    assert trap.snapshot["remaining"] == {"calls": 0}


def test_reservations_hold_headroom_until_commit_or_release() -> None:
    book = BudgetBook(None, config({"id": "t", "resource": "tokens", "limit": 1000, "window": "1h"}), clock=Clock())
    first = book.check(model_call(600))
    assert first.allowed and first.remaining == {"t": 400}
    assert book.check(model_call(600)).action == "deny"  # the first one's reservation counts
    book.release(first)
    second = book.check(model_call(600))
    assert second.allowed
    book.commit(second, tokens(100))  # settles to the actual, not the estimate
    book.commit(second, tokens(100))  # a second commit of the same ticket is ignored
    assert book.snapshot()["usage"][0]["used"] == 100
    assert book.check(model_call(900)).allowed


def test_degrade_returns_the_target_and_a_degraded_call_that_still_crosses_is_denied() -> None:
    book = BudgetBook(None, config(
        {"id": "big-tokens", "resource": "tokens", "limit": 1000, "window": "1d", "scope": {"models": "big"},
         "on_exceed": "degrade", "degrade": {"model": "local", "reasoning": False}},
        {"id": "think-less", "resource": "tokens", "limit": 500, "window": "1d", "scope": {"models": "mid"},
         "on_exceed": "degrade", "degrade": {"reasoning": "low"}},
    ), clock=Clock())
    verdict = book.check(model_call(1500))
    assert verdict.action == "degrade" and verdict.budget == "big-tokens"
    assert verdict.degrade == Degrade("local", "off")
    assert verdict.meta()["degrade"] == {"model": "local", "reasoning": "off"}
    cheaper = model_call(1500).degraded_to(verdict.degrade)
    assert cheaper.model == "local" and cheaper.degraded and book.check(cheaper).allowed
    # A lower reasoning level on the same model: the re-estimated call fits, a call that still crosses is denied.
    verdict = book.check(model_call(800, model="mid"))
    assert verdict.action == "degrade" and verdict.degrade == Degrade(None, "low")
    assert book.check(model_call(800, model="mid").degraded_to(verdict.degrade)).action == "deny"
    assert book.check(model_call(800, model="mid").degraded_to(verdict.degrade, tokens(300))).allowed


def test_commit_settles_what_actual_leaves_out_at_the_estimate() -> None:
    clock = Clock()
    book = BudgetBook(None, config({"id": "rpm", "resource": "requests", "limit": 2, "window": "1m"},
                                   {"id": "t", "resource": "tokens", "limit": 1000, "window": "1m"}), clock=clock)
    charge = Charge("alice", Usage(tokens_in=100, tokens_out=400, requests=1), model="big")
    book.commit(book.check(charge), Usage(tokens_in=120, tokens_out=30))  # requests: as estimated
    book.commit(book.check(charge))  # everything as estimated
    used = {r["budget"]: r["used"] for r in book.snapshot()["usage"]}
    assert used == {"rpm": 2, "t": 650}
    clock.now += 60
    assert book.forget_finished() == 2 and book.snapshot()["usage"][0]["subject"] is None


def test_deny_wins_over_degrade_when_both_budgets_refuse() -> None:
    book = BudgetBook(None, config(
        {"id": "soft", "resource": "tokens", "limit": 10, "window": "1h", "on_exceed": "degrade",
         "degrade": {"model": "local"}},
        {"id": "hard", "resource": "tokens", "limit": 10, "window": "1h"},
    ), clock=Clock())
    verdict = book.check(model_call(50))
    assert (verdict.action, verdict.budget) == ("deny", "hard")
    assert set(verdict.remaining) == {"soft", "hard"}


def test_window_rollover_and_late_commits_stay_in_their_window() -> None:
    clock = Clock(T0 + 10)
    book = BudgetBook(None, config({"id": "rpm", "resource": "requests", "limit": 2, "window": "1m"}), clock=clock)
    book.commit(book.check(call()), Usage(requests=1))
    late = book.check(call())
    assert late.allowed and book.check(call()).action == "deny"
    clock.now = T0 + 60  # the next minute
    fresh = book.check(call())
    assert fresh.allowed and fresh.remaining == {"rpm": 1}
    book.commit(late, Usage(requests=1))  # reserved last minute: does not count in this one
    assert book.check(call()).allowed
    assert book.check(call()).action == "deny"
    clock.now = T0 + 59.999 + 60
    assert book.check(call()).action == "deny"  # still the same fixed window
    clock.now = T0 + 120
    assert book.check(call()).allowed


def test_tenants_servers_and_models_are_counted_apart() -> None:
    book = BudgetBook(None, config(
        {"id": "per-tenant", "resource": "tokens", "limit": 100, "window": "1d", "per": "tenant"},
        {"id": "per-pair", "resource": "tool_calls", "limit": 1, "window": "1d", "per": "tenant_server"},
        {"id": "local-rpm", "resource": "requests", "limit": 1, "window": "1m", "per": "model",
         "scope": {"models": "local", "tenants": ["team-*"]}},
    ), clock=Clock())
    book.commit(book.check(model_call(100, tenant="alice")), tokens(100))
    assert book.check(model_call(1, tenant="alice")).action == "deny"
    assert book.check(model_call(100, tenant="bob")).allowed
    book.commit(book.check(call("alice", "infra")), Usage(tool_calls=1))
    assert book.check(call("alice", "infra")).action == "deny"
    assert book.check(call("alice", "files")).allowed and book.check(call("bob", "infra")).allowed
    # Scope: only team-* tenants, only the local model; a tool call (no model) is never counted.
    local = Charge("team-a", Usage(requests=1), model="local")
    book.commit(book.check(local), Usage(requests=1))
    assert book.check(local).action == "deny"
    assert book.check(Charge("team-b", Usage(requests=1), model="local")).action == "deny"  # one counter per model
    assert book.check(Charge("alice", Usage(requests=1), model="local")).allowed
    assert book.check(Charge("team-a", Usage(requests=1), model="big")).allowed
    assert book.check(Charge("team-a", Usage(requests=1), server="infra")).allowed


def test_scope_exclusions_and_untouched_resources() -> None:
    book = BudgetBook(None, config(
        {"id": "paid", "resource": "tokens", "limit": 10, "window": "1d", "per": "shared",
         "scope": {"models": ["!local"]}},
        {"id": "bytes", "resource": "bytes", "limit": 100, "window": "1d"},
    ), clock=Clock())
    assert book.check(model_call(50, model="local")).allowed
    assert book.check(model_call(50, model="big")).action == "deny"
    # Bytes: a call that may move bytes (estimate 0, result size unknown) is refused once the budget is spent;
    # a call that moves none (bytes=None) is not its business.
    verdict = book.check(Charge("alice", Usage(bytes=0), server="files"))
    book.commit(verdict, Usage(bytes=150))
    assert book.check(Charge("alice", Usage(bytes=0), server="files")).action == "deny"
    assert book.check(Charge("alice", Usage(tool_calls=1), server="files")).allowed


# ----------------------------------------------------------------------------- persistence


async def test_usage_and_prices_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock(T0 + 100)
    cfg = config({"id": "daily", "resource": "tokens", "limit": 1000, "window": "1d"},
                 {"id": "pool", "resource": "tokens", "limit": 6000, "window": "1m", "per": "shared"},
                 pricing={"interval": 1}, weights={"alice": 10})
    db = StateDB(tmp_path)
    book = BudgetBook(db, cfg, clock=clock)
    for n in (300, 400):
        book.commit(book.check(model_call(n)), tokens(n))
    for _ in range(5):
        book.commit(book.check(model_call(100, tenant="bob")), tokens(100))
    clock.now += 1  # a step with 5x the pace: the pool's price rises
    book.check(model_call(1, tenant="carol"))
    price = book.snapshot()["prices"][0]["price"]
    assert price > 0
    async with anyio.create_task_group() as tg:  # the write-behind task flushes when cancelled
        await tg.start(book.run)
        tg.cancel_scope.cancel()
    db.close()

    db = StateDB(tmp_path)
    again = BudgetBook(db, cfg, clock=clock)
    usage = {(r["budget"], json.dumps(r["subject"])): r["used"] for r in again.snapshot()["usage"]}
    assert usage[("daily", '{"tenant": "alice"}')] == 700
    assert usage[("daily", '{"tenant": "bob"}')] == 500
    assert usage[("pool", "{}")] == 1200
    assert again.check(model_call(301)).action == "deny" and again.check(model_call(300)).allowed
    assert again.snapshot()["prices"][0]["price"] == pytest.approx(price)
    clock.now = T0 + 86400  # the next day: a fresh window
    assert BudgetBook(db, cfg, clock=clock).check(model_call(1000)).allowed
    db.close()


# ----------------------------------------------------------------------------- concurrency


async def _hammer(book: BudgetBook, clock: Clock, sessions: int, over: float, seed: int) -> dict[str, Any]:
    """`sessions` tasks loop check -> await -> commit with random sizes; actual = estimate x U(0.5, over).
    The clock moves 10 ms per check, so a shared budget's price moves while they run."""
    rng = random.Random(seed)
    stats: dict[str, Any] = {"committed": 0.0, "excess": [0.0] * sessions, "after_crossing": 0, "allowed": 0}
    limit = book.config.budgets[0].limit

    async def session(index: int) -> None:
        for _ in range(60):
            estimate = rng.randint(20, 400)
            clock.now += 0.01
            verdict = book.check(model_call(estimate, tenant=f"t{index % 7}"))
            if not verdict.allowed:
                await asyncio.sleep(0)
                continue
            if stats["committed"] >= limit:
                stats["after_crossing"] += 1
            stats["allowed"] += 1
            await asyncio.sleep(rng.random() * 0.002)  # the request runs; others check meanwhile
            if rng.random() < 0.1:
                book.release(verdict)  # it failed
                continue
            actual = round(estimate * rng.uniform(0.5, over))
            book.commit(verdict, tokens(actual))
            stats["committed"] += actual
            stats["excess"][index] = max(stats["excess"][index], actual - estimate)

    await asyncio.gather(*(session(i) for i in range(sessions)))
    return stats


@pytest.mark.parametrize("per", ["shared", "model"])
async def test_fifty_sessions_never_cross_the_limit_with_honest_estimates(per: str) -> None:
    clock = Clock()
    limit = 15_000 if per == "model" else 8_000  # shared: the first second's burst, at price 0, meets the cap
    book = BudgetBook(None, config({"id": "pool", "resource": "tokens", "limit": limit, "window": "1m", "per": per},
                                   pricing={"interval": 1}), clock=clock)
    stats = await _hammer(book, clock, sessions=50, over=1.0, seed=7)
    assert stats["committed"] <= limit
    [row] = book.snapshot()["usage"]
    assert row["used"] == stats["committed"] and row["reserved"] == 0  # every reservation was settled
    assert stats["after_crossing"] == 0
    assert stats["committed"] >= limit * 0.8  # the sessions did fill it (the cap, not luck, stopped them)
    if per == "shared":
        assert book.snapshot()["prices"][0]["steps"] >= 25


async def test_fifty_sessions_overshoot_at_most_one_request_each_when_estimates_are_low() -> None:
    clock = Clock()
    limit = 15_000
    book = BudgetBook(None, config({"id": "pool", "resource": "tokens", "limit": limit, "window": "1m",
                                    "per": "model"}), clock=clock)
    stats = await _hammer(book, clock, sessions=50, over=2.0, seed=11)
    assert stats["committed"] > limit  # the workload really overspends its estimates
    # Settle-up overshoot: only what requests in flight at the crossing spent beyond their estimates,
    # at most one request per session; after the crossing nothing more is admitted.
    assert stats["committed"] - limit <= sum(stats["excess"])
    assert stats["after_crossing"] == 0
    assert book.check(model_call(1)).action == "deny"


# ----------------------------------------------------------------------------- prices


def test_dual_ascent_price_rises_under_excess_demand_and_falls_after() -> None:
    clock = Clock()
    book = BudgetBook(None, config(
        {"id": "pool", "resource": "tokens", "limit": 600_000, "window": "1h", "per": "shared",
         "on_exceed": "degrade", "degrade": {"model": "local"}},
        pricing={"interval": 1, "step": 0.1}, weights={"vip": 4, "v*": 0.5}), clock=clock)
    unit = 600_000 / 3600  # the even pace per second: a request of this size costs 1

    def price_after_a_second() -> float:
        clock.now += 1
        book.check(Charge("probe", tokens(0), model="big"))  # any check moves the price
        return book.snapshot()["prices"][0]["price"]

    rising = []
    for _ in range(6):  # each second ten tenants ask 5 x 100 tokens: 30x the pace
        for tenant in [*"abcdefghi", "vip"]:
            for _ in range(5):
                verdict = book.check(model_call(100, tenant=tenant))
                if verdict.allowed:
                    book.commit(verdict, tokens(100))
        rising.append(price_after_a_second())
    assert all(b > a for a, b in zip(rising, rising[1:], strict=False)), rising
    price = rising[-1]
    verdict = book.check(model_call(100, tenant="a"))  # 1 < price x 100 / unit
    assert verdict.action == "degrade" and "in demand" in verdict.reason and verdict.price == pytest.approx(price)
    assert 1 < price * 100 / unit < 4
    assert book.check(model_call(100, tenant="vip")).allowed  # worth more: still served
    assert book.check(model_call(100, tenant="vendor")).action == "degrade"  # v* weighs 0.5
    falling = [price_after_a_second() for _ in range(8)]  # demand stops
    assert all(b < a for a, b in zip(falling, falling[1:], strict=False)) and falling[0] < price, falling
    clock.now += 60
    assert book.snapshot()["prices"][0]["price"] == 0
    assert book.check(model_call(100, tenant="a")).allowed


def test_price_settles_near_capacity() -> None:
    """Under constant excess demand, the demand the price admits averages out near the capacity."""
    price = DualPrice(limit=3600.0 * 1000, window=3600.0, interval=1.0, eta=0.2)  # pace: 1000 per step
    rng = random.Random(3)
    admitted_per_step = []
    for step in range(400):
        now = T0 + step
        price.advance(now, remaining=1000 * (3600 - step))  # on pace: capacity stays 1000
        admitted = 0.0
        for _ in range(40):  # 40 requests of 1..200: about 4x the capacity
            amount = rng.uniform(1, 200)
            if price.admits(1.0, amount):
                price.admitted(amount)
                admitted += amount
        admitted_per_step.append(admitted)
    assert price.capacity == pytest.approx(1000)
    tail = admitted_per_step[100:]
    assert 0.8 < sum(tail) / len(tail) / 1000 < 1.2
    assert 5 < price.price < 20  # equilibrium: requests up to ~100 pass, 1 >= price x 100 / 1000


# ----------------------------------------------------------------------------- configuration


def _errors(tmp_path: Path, section: dict[str, Any]) -> list[tuple[str, str, str]]:
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"budgets": section}))
    return [(e.where, e.key, e.message) for e in load_policies(tmp_path).errors]


def test_config_errors_name_the_budget_and_key(tmp_path: Path) -> None:
    base = {"resource": "tokens", "limit": 10, "window": "1h"}
    errors = _errors(tmp_path, {"limits": [
        {"id": "a", **base}, {"id": "a", **base},
        {"id": "b", **base, "window": "1w"},
        {"id": "c", **base, "on_exceed": "degrade"},
        {"id": "d", **base, "degrade": {"model": "local"}},
        {"id": "e", **base, "resource": "tool_calls", "on_exceed": "degrade", "degrade": {"model": "x"}},
        {"id": "f", **base, "window": 0},
    ]})
    keys = {(where, key) for where, key, _ in errors}
    assert keys == {("budget 'a'", "id"), ("budget 'b'", "window"), ("budget 'c'", "degrade"),
                    ("budget 'd'", "degrade"), ("budget 'e'", "on_exceed"), ("budget 'f'", "window")}
    assert any("'1w' is not a duration" in m for _, _, m in errors)
    errors = _errors(tmp_path, {"limits": [{"id": "s", **base, "window": "1m", "per": "shared"}],
                                "pricing": {"interval": "2m"}})
    assert [(w, k) for w, k, _ in errors] == [("budgets", "pricing.interval")]
    errors = _errors(tmp_path, {"limits": [{"id": "x", **base, "limt": 3}]})
    assert len(errors) == 1 and "unknown key" in errors[0][2] and "limt" in errors[0][2]
    errors = _errors(tmp_path, {"limits": [{"id": "x", **base, "per": "team"}]})
    assert len(errors) == 1 and "limits.0.per" in errors[0][1]
    assert _errors(tmp_path, {"limits": [{"id": "ok", **base}]}) == []


def test_later_files_add_budgets_and_replace_same_ids(tmp_path: Path) -> None:
    base = {"resource": "tokens", "window": "1h"}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"budgets": {"limits": [{"id": "x", "limit": 1, **base}],
                                                                 "weights": {"a": 2}}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"budgets": {"limits": [{"id": "x", "limit": 5, **base},
                                                                            {"id": "y", "limit": 9, **base}],
                                                                 "weights": {"b": 3}}}))
    policies = load_policies(tmp_path)
    assert policies.errors == []
    cfg = BudgetConfig.from_section(policies.sections["budgets"])
    assert [(b.id, b.limit) for b in cfg.budgets] == [("x", 5), ("y", 9)]
    assert (cfg.pricing.weight("a"), cfg.pricing.weight("b"), cfg.pricing.weight("c")) == (2, 3, 1)
    assert (duration("90"), duration(90), duration("1.5h"), duration("30d")) == (90, 90, 5400, 2592000)


def test_the_shipped_example_validates() -> None:
    policies = load_policies(ROOT / "policies")
    assert [e for e in policies.errors if e.file == "budgets.yaml"] == []
    assert "budgets.yaml" in policies.files
    cfg = BudgetConfig.from_section(policies.sections["budgets"])
    shared = next(b for b in cfg.budgets if b.shared)
    assert shared.degrade == Degrade("local", "off") and not shared.scopes("t", None, "local")


def test_reconfigure_keeps_counters_of_unchanged_budgets() -> None:
    clock = Clock()
    limits = {"id": "t", "resource": "tokens", "limit": 100, "window": "1h"}
    book = BudgetBook(None, config(limits), clock=clock)
    book.commit(book.check(model_call(80)), tokens(80))
    book.configure(config({**limits, "limit": 200}))
    assert book.snapshot()["usage"][0]["used"] == 80 and book.check(model_call(120)).allowed
    book.configure(config({**limits, "window": "2h"}))  # counted differently: starts over (no database)
    assert book.snapshot()["usage"][0]["used"] == 0


# ----------------------------------------------------------------------------- the command


async def test_budget_show_prints_usage_and_prices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies, state = tmp_path / "policies", tmp_path / "state"
    policies.mkdir()
    (policies / "b.yaml").write_text(yaml.safe_dump({"budgets": {"limits": [
        {"id": "daily", "resource": "tokens", "limit": 1000, "window": "1d"},
        {"id": "pool", "resource": "tokens", "limit": 5000, "window": "1h", "per": "shared"},
    ]}}))
    assert budget_show(state, policies, as_json=False) == 0
    out = capsys.readouterr().out
    assert "daily" in out and "no state database" in out
    db = StateDB(state)
    book = BudgetBook(db, BudgetConfig.from_section(load_policies(policies).sections["budgets"]))
    book.commit(book.check(model_call(250)), tokens(250))
    await book.flush()
    db.close()
    assert budget_show(state, policies, as_json=False) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("daily"))
    assert "tenant=alice" in line and "250" in line and "750" in line and "1d" in line
    assert "PRICE" in out and "shared" in out
    assert budget_show(state, policies, as_json=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["budget"]: r["used"] for r in data["usage"]} == {"daily": 250, "pool": 250}
