"""bench/evolve/routing: learned routing and reasoning budgets against a static rule, on a real local model.

SmolLM2-135M-Instruct served by llama.cpp (xllamacpp) on localhost, backend `local` with the `prompted`
reasoning knob (off: answer directly; low/medium/high: reason step by step in at most 30/80/200 words, then a
line `Answer: ...`). Requests go through the model plane (`ModelPlane.generate`: route, budget, chain, routing
record), temperature 0, max_tokens 192. Three task classes with exact graders:
- `arith`: "What is A + B?" (A, B in 1..9): the last integer of the answer (after `Answer:` when there is one);
- `yesno`: simple yes/no facts, half yes, half no: the first yes or no of the answer;
- `capital`: "What is the capital of C?": the city's name in the answer.

Baseline: the static route `static-medium` (every task at reasoning medium, a typical hand-written rule), run
once over every item. Learned: start from the baseline's graded routing records; each round learns a table
(`fmos_mcp.evolve.routes.learn`), swaps it into the plane (`set_learned`), serves `--per-round` requests per
task (items drawn with the seed) with exploration, grades them and adds their records. The final table is then
run once over every item with exploration off, the same items as the baseline.

Run: .venv/bin/python bench/evolve/routing.py [--rounds 6] [--per-round 40] [--explore 0.4] [--sweep]
(about 7 minutes on 2 cores; --sweep adds every level over every item, about 3 more); writes
bench/evolve/routing_results.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fmos_mcp.evolve.routes import RouteTable, learn  # noqa: E402
from fmos_mcp.models.backends import GenerationRequest  # noqa: E402
from fmos_mcp.models.localmodel import MODEL_NAME, LocalModelServer  # noqa: E402
from fmos_mcp.models.plane import ModelPlane  # noqa: E402
from fmos_mcp.models.reasoning import LEVELS  # noqa: E402
from fmos_mcp.models.routing import Features  # noqa: E402

MAX_TOKENS = 192
BASELINE = "medium"
Item = tuple[str, str]  # prompt, expected answer

YESNO = [("Is a dog an animal?", "yes"), ("Is the sun cold?", "no"), ("Is water wet?", "yes"), ("Is ice hot?", "no"),
         ("Can birds fly?", "yes"), ("Is a cat a plant?", "no"), ("Is snow white?", "yes"), ("Is grass blue?", "no"),
         ("Is a car a vehicle?", "yes"), ("Do fish live in water?", "yes"), ("Is the moon made of cheese?", "no"),
         ("Is a rose a flower?", "yes"), ("Is fire cold?", "no"), ("Is an apple a fruit?", "yes"),
         ("Is a rock alive?", "no"), ("Is a whale a fish?", "no"), ("Is milk white?", "yes"),
         ("Can a fish walk?", "no"), ("Is the sky blue?", "yes"), ("Is a banana a vegetable?", "no"),
         ("Do cows eat grass?", "yes"), ("Is a spoon alive?", "no"), ("Is Paris in France?", "yes"),
         ("Is a triangle round?", "no")]
CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Germany", "Berlin"), ("Spain", "Madrid"),
            ("Egypt", "Cairo"), ("Russia", "Moscow"), ("Greece", "Athens"), ("China", "Beijing"),
            ("Canada", "Ottawa"), ("Portugal", "Lisbon"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
            ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Peru", "Lima"), ("Sweden", "Stockholm"),
            ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Hungary", "Budapest"), ("Belgium", "Brussels"),
            ("Thailand", "Bangkok"), ("Kenya", "Nairobi"), ("Cuba", "Havana"), ("Chile", "Santiago"),
            ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("India", "New Delhi"),
            ("South Korea", "Seoul"), ("Turkey", "Ankara")]


def tasks(seed: int) -> dict[str, list[Item]]:
    rng = random.Random(seed)
    pairs = rng.sample([(a, b) for a in range(1, 10) for b in range(1, 10)], 30)
    return {
        "arith": [(f"What is {a} + {b}?", str(a + b)) for a, b in pairs],
        "yesno": [(f"{q} Answer yes or no.", a) for q, a in YESNO],
        "capital": [(f"What is the capital of {c}?", city) for c, city in CAPITALS],
    }


# ----------------------------------------------------------------------------- exact graders


def answer_part(text: str) -> str:
    """What follows the last `Answer:` when the model wrote one, else the whole text."""
    at = text.lower().rfind("answer:")
    return text[at + len("answer:"):] if at >= 0 else text


def grade_arith(text: str, expected: str) -> bool:
    numbers = re.findall(r"-?\d+", answer_part(text))
    return bool(numbers) and numbers[-1] == expected


def grade_yesno(text: str, expected: str) -> bool:
    found = re.search(r"\b(yes|no)\b", answer_part(text).lower())
    return found is not None and found.group(1) == expected


def grade_capital(text: str, expected: str) -> bool:
    return re.search(rf"\b{re.escape(expected.lower())}\b", answer_part(text).lower()) is not None


GRADERS: dict[str, Callable[[str, str], bool]] = {"arith": grade_arith, "yesno": grade_yesno, "capital": grade_capital}


# ----------------------------------------------------------------------------- serving through the model plane


def models_section(base_url: str) -> dict[str, Any]:
    """The operator's configuration: one local backend and the static rule (the baseline)."""
    return {
        "backends": [{"name": "local", "kind": "openai", "base_url": base_url, "model": MODEL_NAME,
                      "knob": "prompted", "timeout": 120, "retries": 0, "context_window": 2048}],
        "default": "local",
        "routes": [{"id": "static-medium", "match": {"tasks": ["*"]}, "model": "local", "reasoning": BASELINE,
                    "fallback": []}],
    }


async def serve(plane: ModelPlane, task: str, item: Item) -> dict[str, Any]:
    """One graded request: its routing record with `success` set by the grader."""
    prompt, expected = item
    request = GenerationRequest.prompt(prompt, max_tokens=MAX_TOKENS, temperature=0)
    trail: list[Any] = []
    served = await plane.generate(request, Features.of(request, task=task), trail)
    row = dict(trail[-1].snapshot)
    row["success"] = GRADERS[task](served.generation.text, expected)
    return row


async def run_all(plane: ModelPlane, items: dict[str, list[Item]]) -> list[dict[str, Any]]:
    return [await serve(plane, task, item) for task, task_items in items.items() for item in task_items]


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for task in sorted({r["features"]["task"] for r in rows}):
        mine = [r for r in rows if r["features"]["task"] == task]
        arms = Counter(f"{r['backend']}/{r['reasoning']}" for r in mine)
        out[task] = {"n": len(mine), "success": round(sum(r["success"] for r in mine) / len(mine), 4),
                     "tokens_per_request": round(sum(r["input_tokens"] + r["output_tokens"] for r in mine) / len(mine), 1),
                     "output_tokens_per_request": round(sum(r["output_tokens"] for r in mine) / len(mine), 1),
                     "arms": dict(sorted(arms.items()))}
    return out


# ----------------------------------------------------------------------------- the learning loop


async def evolve(plane: ModelPlane, items: dict[str, list[Item]], records: list[dict[str, Any]],
                 args: argparse.Namespace, params: dict[str, Any]) -> tuple[RouteTable, list[dict[str, Any]]]:
    rng = random.Random(args.seed)
    rounds = []
    for number in range(1, args.rounds + 1):
        table = learn(records, config=plane.config, **params)
        plane.set_learned(table)
        served = [await serve(plane, task, rng.choice(task_items))
                  for task, task_items in items.items() for _ in range(args.per_round)]
        records += served
        rounds.append({"round": number, "table": {t: _arm(e.chosen) for t, e in table.tasks.items()},
                       "explore_arms": {t: ["/".join(a) for a in e.explore_arms] for t, e in table.tasks.items()},
                       "explored": dict(Counter(r["features"]["task"] for r in served if r["explored"])),
                       "served": summary(served)})
        print(f"round {number}: " + "; ".join(f"{t} {_arm(e.chosen)} (+{len(e.explore_arms)} exploring)"
                                               for t, e in table.tasks.items()), flush=True)
    return learn(records, config=plane.config, **params), rounds


def _arm(arm: tuple[str, str] | None) -> str | None:
    return "/".join(arm) if arm else None


async def sweep(plane: ModelPlane, items: dict[str, list[Item]]) -> dict[str, Any]:
    """Every level over every item (exploration off): the ground truth the learned table should find."""
    out = {}
    for level in LEVELS:
        plane.set_learned(_fixed(items, level))
        out[level] = summary(await run_all(plane, items))
    return out


def _fixed(items: dict[str, list[Item]], level: str) -> RouteTable:
    records = [{"features": {"task": t}, "backend": "local", "reasoning": level, "success": True, "outcome": "ok"}
               for t in items]
    return learn(records, min_samples=1, explore=0.0, levels=(level,))


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'task':8} {'baseline (medium)':>22} {'learned':>30}  explored/served (bound)")
    for task, base in results["baseline"].items():
        new = results["learned"][task]
        share = results["exploration"][task]
        print(f"{task:8} {base['success']:>9.2f} {base['tokens_per_request']:>7.1f} tok   "
              f"{results['final_table'][task]:>13} {new['success']:>5.2f} {new['tokens_per_request']:>7.1f} tok  "
              f"{share['explored']}/{share['served']} = {share['share']:.2f} ({results['params']['explore']})")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=40, help="requests per task and round")
    parser.add_argument("--explore", type=float, default=0.4, help="the exploration share's bound per task")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--min-samples", type=int, default=10)
    parser.add_argument("--max-explore", type=int, default=60, help="explored requests per arm, at most")
    parser.add_argument("--z", type=float, default=1.0, help="Wilson bounds' z")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sweep", action="store_true", help="also run every level over every item")
    args = parser.parse_args()
    params = {"tolerance": args.tolerance, "min_samples": args.min_samples, "explore": args.explore,
              "max_explore": args.max_explore, "z": args.z}
    items = tasks(args.seed)
    started = time.perf_counter()
    async with LocalModelServer(ctx=2048) as server:
        plane = ModelPlane.build(models_section(server.base_url), None, None)
        plane.router.rng.seed(args.seed)
        try:
            baseline = await run_all(plane, items)  # the static rule: no table yet
            final, rounds = await evolve(plane, items, list(baseline), args, params)
            plane.set_learned(without_exploring(final))
            learned = await run_all(plane, items)
            truth = await sweep(plane, items) if args.sweep else None
        finally:
            for backend in plane.backends.values():
                if hasattr(backend, "aclose"):
                    await backend.aclose()
    results = report(args, params, items, baseline, learned, final, rounds, truth)
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(__file__).with_name("routing_results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\n{results['seconds']} s; {out.relative_to(ROOT)}")


def without_exploring(table: RouteTable) -> RouteTable:
    return RouteTable({t: replace(e, explore=0.0, explore_arms=()) for t, e in table.tasks.items()}, table.params)


def report(args: argparse.Namespace, params: dict[str, Any], items: dict[str, list[Item]],
           baseline: list[dict[str, Any]], learned: list[dict[str, Any]], final: RouteTable,
           rounds: list[dict[str, Any]], truth: dict[str, Any] | None) -> dict[str, Any]:
    exploration = {}
    for task in items:
        served = sum(r["served"][task]["n"] for r in rounds)
        explored = sum(r["explored"].get(task, 0) for r in rounds)
        exploration[task] = {"served": served, "explored": explored, "share": round(explored / served, 4)}
    return {
        "model": MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0, "seed": args.seed,
        "params": params, "rounds": args.rounds, "per_round": args.per_round,
        "items": {t: len(v) for t, v in items.items()},
        "baseline": summary(baseline), "learned": summary(learned),
        "final_table": {t: _arm(e.chosen) for t, e in final.tasks.items()},
        "exploration": exploration, "round_log": rounds, "sweep": truth,
        "table": json.loads(final.to_json()),
    }


if __name__ == "__main__":
    anyio.run(main)
