"""Learned routing and reasoning budgets: learning a route table from routing records, its bounded exploration,
its JSON form, and the router and model plane that use it without leaving the operator's rules."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from fmos_mcp.evolve.routes import RouteTable, learn, wilson
from fmos_mcp.models.budget_config import BudgetConfig
from fmos_mcp.models.budgets import BudgetBook
from fmos_mcp.models.config import ModelsConfig
from fmos_mcp.models.plane import ModelPlane
from fmos_mcp.models.reasoning import ReasoningSetting
from fmos_mcp.models.routing import Features, Router, RoutingError, record


def rows(level: str, n: int, wins: int, tokens: int, *, task: str | None = "math", backend: str = "local",
         explored: bool = False, graded: bool = True) -> list[dict[str, Any]]:
    """`n` routing records of one arm, the first `wins` of them successes."""
    out = []
    for i in range(n):
        row: dict[str, Any] = {"features": {"task": task}, "chosen": backend, "backend": backend, "reasoning": level,
                               "outcome": "ok", "input_tokens": tokens // 2, "output_tokens": tokens - tokens // 2,
                               "cost_usd": tokens * 1e-6, "explored": explored}
        if graded:
            row["success"] = i < wins
        else:
            row["outcome"] = "ok" if i < wins else "truncated"
        out.append(row)
    return out


def models(**section: Any) -> ModelsConfig:
    base: dict[str, Any] = {
        "backends": [{"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                      "knob": "prompted"},
                     {"name": "big", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "g"},
                     {"name": "host", "kind": "host"}],
        "default": "local", "fallback": ["big"],
    }
    return ModelsConfig.from_section({**base, **section})


def test_converges_to_the_cheapest_arm_that_keeps_success() -> None:
    # More reasoning is not always better: high costs most and does worse; off is cheapest and fails often;
    # low is as good as medium within the tolerance and cheaper.
    records = (rows("off", 200, 110, 40) + rows("low", 200, 176, 70) + rows("medium", 200, 180, 100)
               + rows("high", 200, 150, 300))
    table = learn(records, tolerance=0.05, min_samples=20)
    assert table.tasks["math"].chosen == ("local", "low")
    # With no tolerance, the best (medium) stands; success falls back on the outcome when no grader said.
    assert learn(records, tolerance=0.0).tasks["math"].chosen == ("local", "medium")
    ungraded = rows("off", 100, 95, 40, graded=False) + rows("medium", 100, 96, 100, graded=False)
    assert learn(ungraded, tolerance=0.02).tasks["math"].chosen == ("local", "off")


def test_an_arm_with_too_few_samples_is_explored_not_chosen() -> None:
    records = rows("medium", 100, 80, 100) + rows("off", 5, 5, 20)  # cheap and perfect, but only 5 times
    entry = learn(records, min_samples=20).tasks["math"]
    assert entry.chosen == ("local", "medium") and ("local", "off") in entry.explore_arms and entry.explore == 0.05
    # The same rate on 20 samples as on 300: the lower bounds keep it out until it has shown more.
    records = rows("medium", 300, 270, 100) + rows("off", 20, 18, 20)
    assert learn(records, min_samples=20, tolerance=0.02).tasks["math"].chosen == ("local", "medium")
    assert wilson(18, 20, 1.64)[0] < wilson(270, 300, 1.64)[0] - 0.02
    records = rows("medium", 300, 270, 100) + rows("off", 300, 269, 20)
    assert learn(records, min_samples=20, tolerance=0.02).tasks["math"].chosen == ("local", "off")
    # Nothing with enough samples: no choice (the operator's rules), exploring the rest.
    entry = learn(rows("low", 3, 3, 50), min_samples=20).tasks["math"]
    assert entry.chosen is None and len(entry.explore_arms) == 4


def test_exploration_share_stays_under_the_bound() -> None:
    table = learn(rows("medium", 50, 40, 100), min_samples=20, explore=0.1)
    rng = random.Random(12345)
    picks = [table.pick("math", rng) for _ in range(20_000)]
    explored = [p for p in picks if p is not None and p[3]]
    assert 0.09 < len(explored) / len(picks) < 0.105  # the bound in expectation; 3.5 sigma above it fails
    assert {p[2] for p in explored} == {"explore:math"} and {p[2] for p in picks if not p[3]} == {"learned:math"}
    assert {p[1].level for p in explored} == {"off", "low", "high"}  # never the chosen, never outside the levels
    # Once every arm has had its share (max_explore) or its cost cap, the task stops exploring.
    spent = rows("medium", 50, 40, 100) + [r for lvl in ("off", "low", "high") for r in rows(lvl, 8, 2, 100, explored=True)]
    assert learn(spent, min_samples=20, max_explore=8).tasks["math"].explore == 0.0
    capped = learn(spent, min_samples=20, max_explore_tokens=800).tasks["math"]
    assert capped.explore_arms == () and learn(spent, min_samples=20, max_explore_cost=0.01).tasks["math"].explore
    assert learn(spent, min_samples=20, explore=0.0).tasks["math"].explore == 0.0


def test_exploration_stays_within_what_the_operator_allows() -> None:
    config = models(routes=[{"id": "math", "match": {"tasks": ["math"]}, "model": "local", "fallback": []}])
    records = rows("medium", 50, 45, 100) + rows("medium", 50, 50, 100, backend="big")
    entry = learn(records, config=config, levels=("off", "medium")).tasks["math"]
    assert entry.chosen == ("local", "medium") and entry.explore_arms == (("local", "off"),)
    assert {a.backend for a in entry.arms} == {"local", "big"}  # reported, never chosen nor explored


def test_json_round_trip_is_exact_and_deterministic() -> None:
    records = (rows("off", 30, 12, 40) + rows("medium", 60, 50, 100, task=None)
               + rows("high", 7, 6, 333, explored=True) + rows("low", 25, 20, 70, task="b"))
    table = learn(records, min_samples=10, max_explore_cost=0.5)
    text = table.to_json()
    again = RouteTable.from_json(text)
    assert again == table and again.to_json() == text
    assert learn(list(reversed(records)), min_samples=10, max_explore_cost=0.5).to_json() == text
    assert set(table.tasks) == {"math", "default", "b"}
    with pytest.raises(ValueError, match="format"):
        RouteTable.from_json('{"format": 99, "tasks": {}}')
    with pytest.raises(ValueError, match="reasoning level"):  # fails on loading, not when routing
        RouteTable.from_json(text.replace('"chosen": ["local", "off"]', '"chosen": ["local", "extreme"]'))


def test_router_uses_the_table_inside_the_operator_rules() -> None:
    config = models(routes=[{"id": "math", "match": {"tasks": ["math"]}, "model": "big", "reasoning": "high",
                             "fallback": ["local"]}])
    table = learn(rows("off", 40, 38, 30) + rows("high", 40, 38, 300, backend="big"), config=config, explore=0.0)
    router = Router(config, table, random.Random(1))
    decision = router.choose(Features(task="math"))
    assert (decision.model, decision.chain, decision.reasoning) == ("local", ("local", "big"), ReasoningSetting("off"))
    assert decision.rule == "learned:math" and not decision.explored and "operator's rule 'math'" in decision.why
    row = record(Features(task="math"), decision)
    assert (row["rule"], row["explored"], row["reasoning"]) == ("learned:math", False, "off")
    # Another task: the operator's rules; a table naming a backend the rule does not name: ignored.
    assert router.choose(Features(task="other")).rule == "default"
    router.learned = learn(rows("off", 40, 40, 30, task="other", backend="big"), explore=0.0)
    assert router.choose(Features(task="other", host_has_sampling=True)).chain == ("host",)  # fallback mode: host
    assert router.choose(Features(task="other", host_has_sampling=True)).rule == "sampling:fallback"


def test_a_learned_choice_never_bypasses_host_sampling_constraints() -> None:
    config = models(sampling={"*": "fallback", "files": "host", "infra": "model"},
                    routes=[{"id": "r", "match": {"tasks": ["math"]}, "model": "host", "fallback": ["local"]}])
    table = learn(rows("low", 40, 40, 30, backend="host") + rows("off", 40, 40, 20), explore=0.0, config=config)
    assert table.tasks["math"].chosen == ("local", "off")
    router = Router(config, table, random.Random(1))
    # Mode host: the host and nothing else, table or not; without host sampling, still refused.
    decision = router.choose(Features(server="files", task="math", host_has_sampling=True))
    assert (decision.rule, decision.chain) == ("sampling:host", ("host",))
    with pytest.raises(RoutingError, match="offers no sampling"):
        router.choose(Features(server="files", task="math"))
    # A table choosing the host: never when the host has no sampling, nor under mode model.
    router.learned = learn(rows("low", 40, 40, 10, backend="host") + rows("off", 40, 30, 30), explore=0.0)
    assert router.learned.tasks["math"].chosen == ("host", "low")
    for features in (Features(task="math"), Features(server="infra", task="math", host_has_sampling=True)):
        decision = router.choose(features)
        assert decision.chain == ("local",) and decision.rule == "r"
    assert router.choose(Features(task="math", host_has_sampling=True)).rule == "learned:math"


def test_explored_requests_are_recorded_as_such() -> None:
    table = learn(rows("medium", 40, 30, 100), min_samples=20, explore=0.5)
    router = Router(models(), table, random.Random(7))
    decisions = [router.choose(Features(task="math")) for _ in range(400)]
    rules = Counter(d.rule for d in decisions)
    assert set(rules) == {"learned:math", "explore:math"} and 150 < rules["explore:math"] < 250
    assert all(d.explored == (d.rule == "explore:math") for d in decisions)
    assert all(record(Features(task="math"), d)["explored"] == d.explored for d in decisions)


def test_the_router_caps_the_explored_share_at_every_point() -> None:
    table = learn(rows("medium", 40, 30, 100), min_samples=20, explore=0.2)
    router = Router(models(), table, random.Random(99))
    explored = 0
    for n in range(1, 3001):
        explored += router.choose(Features(task="math")).explored
        assert explored <= 0.2 * n
    assert explored > 0.17 * 3000  # a cap, not a stop


def test_model_plane_swaps_the_table_at_run_time() -> None:
    plane = ModelPlane(models(), BudgetBook(None, BudgetConfig()), backends={})
    assert plane.route(Features(task="math")).rule == "default"
    plane.set_learned(learn(rows("low", 30, 30, 40), min_samples=10, explore=0.0))
    decision = plane.route(Features(task="math"))
    assert (decision.rule, decision.reasoning.level) == ("learned:math", "low")
    plane.set_learned(None)
    assert plane.route(Features(task="math")).rule == "default"
