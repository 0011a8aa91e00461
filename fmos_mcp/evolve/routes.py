"""Learned routing and reasoning budgets: from routing records, the cheapest (backend, reasoning level) per task
that keeps success, with a bounded share of requests exploring the other arms (paper, appendix C: more
reasoning is not always better).

- A record's task class is `features.task` (None: `default`); its arm is (the backend that answered, else the
  one chosen; the reasoning label routed). Success is `record["success"]` when a grader set it, else outcome
  `ok` (a truncated answer or an error is a failure). Cost is tokens in + out and `cost_usd`.
- Per arm: Wilson bounds on the success rate (`z`), mean tokens and cost. An arm with at least `min_samples`
  is eligible; the best is the eligible arm with the highest lower bound; the chosen is the cheapest eligible
  arm (cost, then tokens) whose lower bound is within `tolerance` of the best's. Both sides are judged by their
  lower bounds, so a cheap arm with a few lucky answers does not displace one known to be good.
- Exploration: the arms the operator allows for the task (backends its rules name, when `config` is given, or
  those seen; levels in `levels`) that could still change the choice: too few samples, or a cheaper arm whose
  upper bound reaches the best's lower bound - tolerance, or a dearer one whose upper bound exceeds the chosen's
  lower bound + tolerance. An arm leaves exploration after `max_explore` explored requests, or past
  `max_explore_tokens` / `max_explore_cost` spent exploring it. A task explores with probability `explore`
  per request, picking an exploration arm uniformly; the router caps the share it really explores at `explore`.

The router checks every pick again against the operator's rules for the actual request (tenant, server, host
sampling): a table never widens what the configuration allows.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fmos_mcp.models.config import ModelsConfig
from fmos_mcp.models.reasoning import LEVELS, ReasoningSetting
from fmos_mcp.models.routing import Features, Router, RoutingError

FORMAT = 1
DEFAULT_TASK = "default"
Pick = tuple[str, ReasoningSetting, str, bool]  # backend, reasoning, rule label, explored


@dataclass(frozen=True, slots=True)
class ArmStats:
    backend: str
    reasoning: str  # a reasoning label: off | low | medium | high | default | "N tokens"
    n: int
    successes: int
    rate: float
    lower: float  # Wilson bounds on the success rate
    upper: float
    mean_tokens: float
    mean_cost_usd: float
    explored: int = 0  # requests that came from exploration, and what they spent
    explored_tokens: int = 0
    explored_cost_usd: float = 0.0

    @property
    def arm(self) -> tuple[str, str]:
        return self.backend, self.reasoning


@dataclass(frozen=True, slots=True)
class TaskRoute:
    chosen: tuple[str, str] | None  # (backend, reasoning label); None: no arm has enough samples yet
    explore: float  # probability that a request of this task explores (0 when nothing is left to explore)
    explore_arms: tuple[tuple[str, str], ...]
    arms: tuple[ArmStats, ...]
    why: str


@dataclass(frozen=True)
class RouteTable:
    tasks: Mapping[str, TaskRoute]
    params: Mapping[str, Any] = field(default_factory=dict)

    def pick(self, task: str, rng: random.Random, *, may_explore: bool = True) -> Pick | None:
        """The arm for one request of `task`: exploration with the entry's probability (when `may_explore`: the
        router's cap on the share), else the chosen arm. None: no entry, or nothing chosen and not exploring
        (the operator's rules then)."""
        entry = self.tasks.get(task)
        if entry is None:
            return None
        if may_explore and entry.explore_arms and rng.random() < entry.explore:
            backend, label = rng.choice(entry.explore_arms)
            return backend, setting_of(label), f"explore:{task}", True
        if entry.chosen is None:
            return None
        backend, label = entry.chosen
        return backend, setting_of(label), f"learned:{task}", False

    def to_json(self) -> str:
        tasks = {name: _entry_json(entry) for name, entry in sorted(self.tasks.items())}
        return json.dumps({"format": FORMAT, "params": dict(self.params), "tasks": tasks}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RouteTable:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a route table of format {FORMAT}: {data.get('format')!r}")
        return cls({name: _entry_of(entry) for name, entry in data["tasks"].items()}, data.get("params", {}))


def setting_of(label: str) -> ReasoningSetting:
    """A routing record's reasoning label back to a setting: `default`, a level, or `N tokens`."""
    if label == "default":
        return ReasoningSetting()
    if label.endswith(" tokens"):
        return ReasoningSetting(budget_tokens=int(label.split()[0]))
    return ReasoningSetting(label)


def _entry_json(entry: TaskRoute) -> dict[str, Any]:
    return {"chosen": list(entry.chosen) if entry.chosen else None, "explore": entry.explore,
            "explore_arms": [list(a) for a in entry.explore_arms], "arms": [asdict(a) for a in entry.arms],
            "why": entry.why}


def _entry_of(data: dict[str, Any]) -> TaskRoute:
    """One task's entry, checked here so that a bad table fails when loaded, never when routing."""
    chosen = (data["chosen"][0], data["chosen"][1]) if data.get("chosen") else None
    entry = TaskRoute(chosen, data["explore"], tuple((b, r) for b, r in data["explore_arms"]),
                      tuple(ArmStats(**a) for a in data["arms"]), data.get("why", ""))
    if not 0 <= entry.explore <= 1:
        raise ValueError(f"an exploration share is in [0, 1], not {entry.explore!r}")
    for _, label in (*entry.explore_arms, *([chosen] if chosen else [])):
        setting_of(label)
    return entry


# ----------------------------------------------------------------------------- learning


def learn(records: Iterable[Mapping[str, Any]], *, tolerance: float = 0.02, min_samples: int = 20,
          explore: float = 0.05, max_explore: int = 200, z: float = 1.64, levels: Sequence[str] = LEVELS,
          config: ModelsConfig | None = None, max_explore_tokens: int | None = None,
          max_explore_cost: float | None = None) -> RouteTable:
    """A route table from routing records (see the module's docstring for the rules)."""
    if not 0 <= explore <= 1 or tolerance < 0 or min_samples < 1 or max_explore < 0 or z < 0:
        raise ValueError("learn: explore in [0, 1], tolerance >= 0, min_samples >= 1, max_explore >= 0, z >= 0")
    for label in levels:
        setting_of(label)  # ValueError on a level the router could not apply
    params = {"tolerance": float(tolerance), "min_samples": min_samples, "explore": float(explore),
              "max_explore": max_explore, "z": float(z), "levels": list(levels), "max_explore_tokens": max_explore_tokens,
              "max_explore_cost": float(max_explore_cost) if max_explore_cost is not None else None}
    tasks: dict[str, TaskRoute] = {}
    for task, rows in sorted(_by_task(records).items()):
        stats = {arm: _stats(arm, arm_rows, z) for arm, arm_rows in rows.items()}
        allowed = _allowed(task, stats, levels, config)
        tasks[task] = _route(stats, allowed, params)
    return RouteTable(tasks, params)


def _by_task(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[tuple[str, str], list[Mapping[str, Any]]]]:
    grouped: dict[str, dict[tuple[str, str], list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in records:
        backend = row.get("backend") or row.get("chosen")
        if not backend or ("success" not in row and "outcome" not in row):
            continue  # refused before any backend, or not a routing record (a relay to the host)
        task = (row.get("features") or {}).get("task") or DEFAULT_TASK
        grouped[task][(backend, row.get("reasoning") or "default")].append(row)
    return grouped


def _stats(arm: tuple[str, str], rows: list[Mapping[str, Any]], z: float) -> ArmStats:
    n = len(rows)
    wins = sum(1 for r in rows if _success(r))
    tokens = [(r.get("input_tokens") or 0) + (r.get("output_tokens") or 0) for r in rows]
    costs = [float(r.get("cost_usd") or 0.0) for r in rows]
    explored = [i for i, r in enumerate(rows) if r.get("explored")]
    lower, upper = wilson(wins, n, z)
    return ArmStats(arm[0], arm[1], n, wins, round(wins / n, 6), round(lower, 6), round(upper, 6),
                    round(sum(tokens) / n, 3), round(sum(costs) / n, 9), len(explored),
                    sum(tokens[i] for i in explored), round(sum((costs[i] for i in explored), 0.0), 9))


def _success(row: Mapping[str, Any]) -> bool:
    return bool(row["success"]) if row.get("success") is not None else row.get("outcome") == "ok"


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval: sound at small n and at rates near 0 or 1, where the normal one is not."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def _allowed(task: str, stats: Mapping[tuple[str, str], ArmStats], levels: Sequence[str],
             config: ModelsConfig | None) -> list[tuple[str, str]]:
    """The arms the operator allows for the task: its rules' backends (or those seen) x the allowed levels."""
    backends = operator_backends(config, task) if config is not None else sorted({b for b, _ in stats})
    return [(b, level) for b in backends for level in levels]


def operator_backends(config: ModelsConfig, task: str) -> list[str]:
    """Backends the operator's rules name for a request of `task` from the gateway itself, with the host
    offering sampling or not (the router checks each request's own rule again)."""
    router, names = Router(config), []
    for host in (False, True):
        try:
            names += router.rule_of(Features(task=None if task == DEFAULT_TASK else task, host_has_sampling=host)).names
        except RoutingError:
            continue
    return list(dict.fromkeys(names))


def _route(stats: Mapping[tuple[str, str], ArmStats], allowed: list[tuple[str, str]],
           params: Mapping[str, Any]) -> TaskRoute:
    tol, z = params["tolerance"], params["z"]
    order = {arm: i for i, arm in enumerate(allowed)}
    arms = [stats.get(arm) or _unseen(arm, z) for arm in allowed]
    eligible = [a for a in arms if a.n >= params["min_samples"]]
    best = max(eligible, key=lambda a: (a.lower, -order[a.arm]), default=None)
    good = [a for a in eligible if best is not None and a.lower >= best.lower - tol]
    chosen = min(good, key=lambda a: (a.mean_cost_usd, a.mean_tokens, order[a.arm]), default=None)
    candidates = tuple(a.arm for a in arms if a is not chosen and _worth_exploring(a, best, chosen, params))
    report = sorted({*stats.values(), *arms}, key=lambda a: (a.backend, _level_rank(a.reasoning), a.reasoning))
    return TaskRoute(chosen.arm if chosen else None, params["explore"] if candidates else 0.0, candidates,
                     tuple(report), _why(best, chosen, candidates, params))


def _unseen(arm: tuple[str, str], z: float) -> ArmStats:
    lower, upper = wilson(0, 0, z)
    return ArmStats(arm[0], arm[1], 0, 0, 0.0, lower, upper, 0.0, 0.0)


def _worth_exploring(arm: ArmStats, best: ArmStats | None, chosen: ArmStats | None,
                     params: Mapping[str, Any]) -> bool:
    if arm.explored >= params["max_explore"]:
        return False
    if params["max_explore_tokens"] is not None and arm.explored_tokens >= params["max_explore_tokens"]:
        return False
    if params["max_explore_cost"] is not None and arm.explored_cost_usd >= params["max_explore_cost"]:
        return False
    if arm.n < params["min_samples"] or best is None or chosen is None:
        return True
    cheaper = (arm.mean_cost_usd, arm.mean_tokens) < (chosen.mean_cost_usd, chosen.mean_tokens)
    if cheaper:  # could yet come within tolerance of the best
        return arm.upper >= best.lower - params["tolerance"]
    return arm.upper > chosen.lower + params["tolerance"]  # could yet become the best, out of the chosen's reach


def _level_rank(label: str) -> int:
    return LEVELS.index(label) if label in LEVELS else len(LEVELS)


def _why(best: ArmStats | None, chosen: ArmStats | None, candidates: tuple[tuple[str, str], ...],
         params: Mapping[str, Any]) -> str:
    if chosen is None or best is None:
        text = f"no arm has {params['min_samples']} samples yet"
    else:
        text = (f"{chosen.backend}/{chosen.reasoning}: success {chosen.rate:.2f} (lower {chosen.lower:.2f}, n {chosen.n}), "
                f"{chosen.mean_tokens:.1f} tokens; best {best.backend}/{best.reasoning} lower {best.lower:.2f}, "
                f"tolerance {params['tolerance']}")
    if candidates:
        text += f"; exploring {', '.join('/'.join(a) for a in candidates)} at {params['explore']}"
    return text
