"""bench/evolve/traps: a learned trap against the static rules alone, on a realistic mixed workload of the
example infrastructure server (bench/evolve/workload.py), through the real gateway.

1. Static run: every session of the workload, in time order, through the gateway in-process (the infra server
   a real process, the state a real SQLite), under bench/evolve/policies with no trap model. Each session is
   its own MCP client; its roles and the time of each call are set as a token and a clock would set them.
   Judges are answered by the workload's oracle (`reference_judge`: the judges' policies as code) in place of
   an LLM; approvals are given by the person behind benign sessions and refused for the others.
2. `evolve train` on those traces: the model is fitted on the earlier 70% of sessions, and reported on the
   later 30% (held back): slow-path invocations and recall on the calls the slow path caught.
3. `evolve propose` + `evolve eval` of that model, with the held-back sessions as an evaluation set.
4. Live: the held-back sessions again, through a fresh gateway with the model promoted, against the same
   sessions' static run: judge evaluations, judge model calls, and the caught calls that were caught again.

Run: .venv/bin/python bench/evolve/traps.py [--sessions 600] [--seed 7]; writes bench/evolve/traps_results_seed<SEED>.json.
The shipped evaluation set is the same generator at another seed:
    .venv/bin/python bench/evolve/traps.py --seed 11 --sessions 120 --write-evalset evalsets/infra.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import Client

os.environ.setdefault("FMOS_SEMANTIC", "0")  # tool search is not measured here; its index rebuilds cost CPU
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from conftest import fill_form, infra, write_servers  # noqa: E402
from workload import POLICY_DIR, Session, generate, oracle_verdict, reference_judge, server_tool  # noqa: E402

from fmos_mcp.app import AppConfig, build  # noqa: E402
from fmos_mcp.cli import main as cli  # noqa: E402
from fmos_mcp.evolve.train import compare, examples, split, trace_calls  # noqa: E402
from fmos_mcp.evolve.trapmodel import fit  # noqa: E402
from fmos_mcp.trust.policy import load_policies  # noqa: E402


class Driver:
    """Who is calling and when: what a per-session token and the clock give the gateway."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.at: datetime | None = None
        self.judges = {j.policy: j.id for j in load_policies(POLICY_DIR).judges}
        self.judge_calls = 0

    async def identity(self, request: Any, call_next: Any) -> Any:
        if self.session is not None:
            host = replace(request.host, roles=self.session.roles, tenant=self.session.tenant)
            request = request.evolve(host=host)
        return await call_next(request)

    def clock(self) -> datetime:
        assert self.at is not None
        return self.at

    async def judge(self, request: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        prompt = params.messages[0].content.text
        policy = prompt.split("\n\n", 1)[0].removeprefix("Policy: ")
        verdict, reason = reference_judge(self.judges[policy], request.target, dict(request.arguments),
                                          request.host.roles, self.clock())
        self.judge_calls += 1
        text = json.dumps({"verdict": verdict, "confidence": 0.95, "reason": reason})
        return types.CreateMessageResult(role="assistant", model="oracle", content=types.TextContent(type="text", text=text))

    async def sampling(self, ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        """A tool's own request for the host's model (summarize_incident): a short, fixed summary."""
        return types.CreateMessageResult(role="assistant", model="host",
                                         content=types.TextContent(type="text", text="No customer impact."))

    async def roots(self, ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///srv/workspace", name="workspace")])

    async def elicitation(self, ctx: Any, params: Any) -> types.ElicitResult:
        assert self.session is not None
        if self.session.kind != "benign":
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content=fill_form(getattr(params, "requested_schema", None) or {}))


async def run(sessions: list[Session], base: Path, state: Path, policies: Path) -> tuple[list[dict[str, Any]], int]:
    """Every session through one gateway; (trace rows of tool calls, judge model calls)."""
    servers = write_servers(base / "servers.d", {"infra": infra()})
    app = build(AppConfig(servers, policies, state))
    driver = Driver()
    app.gateway.interceptors.insert(0, driver.identity)
    app.trust_versions.active.clock = driver.clock
    app.trust_versions.active.judges.ask = driver.judge
    app.trust_versions.active._audit_draw.seed(0)
    async with anyio.create_task_group() as tasks:
        await tasks.start(app.background)
        await tasks.start(app.gateway.run)
        for session in sessions:
            driver.session = session
            async with Client(app.gateway.face.server, mode="legacy", elicitation_callback=driver.elicitation,
                              sampling_callback=driver.sampling, list_roots_callback=driver.roots) as client:
                for call in session.calls:
                    driver.at = call.at
                    await client.call_tool(call.tool, call.arguments)
        await app.traces.flush()
        tasks.cancel_scope.cancel()
    rows = [r for r in app.traces.recent(None) if r["method"] == "tools/call"]
    app.db.close()
    return rows, driver.judge_calls


def evalset(sessions: list[Session], path: Path) -> None:
    with path.open("w") as out:
        for session in sessions:
            for call in session.calls:
                verdict, _, _ = oracle_verdict(call.tool, call.arguments, session.roles, call.at)
                out.write(json.dumps({"session": session.id, "tenant": session.tenant, "roles": list(session.roles),
                                      "at": call.at.isoformat(), "server": "infra", "tool": server_tool(call.tool),
                                      "arguments": call.arguments, "label": call.label, "judge": verdict}) + "\n")


def live_compare(static: list[dict[str, Any]], learned: list[dict[str, Any]]) -> dict[str, Any]:
    before, after = trace_calls(static), trace_calls(learned)
    assert len(before) == len(after), "the two runs must see the same calls"
    caught = [i for i, c in enumerate(before) if c.caught]
    return {"calls": len(before), "slow_static": sum(c.slow for c in before), "slow_learned": sum(c.slow for c in after),
            "caught_static": len(caught), "caught_again": sum(after[i].caught for i in caught),
            "learned_fast": sum(1 for r in learned for t in r["traps"]
                                if (t.get("snapshot") or {}).get("learned", {}).get("slow") is False
                                and not t["snapshot"]["learned"].get("audited"))}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sessions = generate(args.seed, args.sessions)
    work = args.work or Path(tempfile.mkdtemp(prefix="fmos-bench-traps-"))
    try:
        policies = work / "policies"
        if args.reuse and (work / "state-static" / "fmos.sqlite3").exists():
            shutil.rmtree(work / "state-live", ignore_errors=True)
            rows, judge_calls = static_rows_of(work / "state-static"), -1
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(POLICY_DIR, policies)
            rows, judge_calls = await run(sessions, work, work / "state-static", policies)
        calls = trace_calls(rows)
        earlier, later = split(calls, 0.3)
        model = fit(examples(earlier))
        held_ids = {c.session for c in later}
        model_file = work / "model.json"
        model_file.write_text(model.to_json())
        report = {"workload": {"seed": args.seed, "sessions": len(sessions), "tool_calls": len(calls)},
                  "trained_on": model.trained, "threshold": model.threshold,
                  "held_back": compare(model, later), "judge_model_calls_static_all": judge_calls}
        (HERE / f"traps_results_seed{args.seed}.json").write_text(json.dumps(report, indent=2))  # offline part first

        # evolve propose + eval through the CLI, the held-back sessions as the evaluation set.
        held_sessions = [s for s in sessions if s.id in {_session_of(rows, i) for i in held_ids}]
        dirs = ["--servers-dir", str(work / "servers.d"), "--policies-dir", str(policies),
                "--state-dir", str(work / "state-static")]
        evalset(held_sessions, work / "held.jsonl")
        await command("evolve", "propose", "trap-model", "--from", str(model_file), *dirs)
        candidate = f"trap-model@{latest_version(work / 'state-static')}"
        code = await command("evolve", "eval", candidate, "--evalset", str(work / "held.jsonl"), *dirs)
        report["eval_gate_passed"] = code == 0
        if code != 0:
            return report  # a refused model is never served: nothing to measure live

        # Live: the held-back sessions with the model active, against their static run.
        live_state = work / "state-live"
        shutil.copytree(work / "state-static", live_state)
        await command("evolve", "promote", candidate, "--servers-dir", str(work / "servers.d"),
                      "--policies-dir", str(policies), "--state-dir", str(live_state))
        static_rows = [r for r in rows if r["session"] in held_ids]
        learned_rows, learned_judge_calls = await run(held_sessions, work / "live", live_state, policies)
        learned_rows = [r for r in learned_rows if r["id"] > max(r["id"] for r in rows)]
        report["live"] = live_compare(static_rows, learned_rows)
        report["live"]["judge_model_calls_learned"] = learned_judge_calls
        return report
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def latest_version(state: Path) -> int:
    from fmos_mcp.evolve.versions import VersionStore
    from fmos_mcp.state.db import StateDB
    db = StateDB(state)
    try:
        return VersionStore(db).all("trap-model")[-1].version
    finally:
        db.close()


def static_rows_of(state: Path) -> list[dict[str, Any]]:
    """A kept static run's tool-call rows (with --work DIR --reuse: tune the learner without rerunning)."""
    from fmos_mcp.state.db import StateDB
    from fmos_mcp.state.traces import TraceStore
    db = StateDB(state)
    try:
        return [r for r in TraceStore(db).recent(None) if r["method"] == "tools/call"]
    finally:
        db.close()


async def command(*args: str) -> int:
    """`fmos-mcp ARGS` (it runs its own event loop: on a worker thread)."""
    return await anyio.to_thread.run_sync(lambda: cli(list(args)))


def _session_of(rows: list[dict[str, Any]], gateway_session: str) -> str:
    """The workload session a gateway session ran (sessions run in order, one client each)."""
    order = list(dict.fromkeys(r["session"] for r in rows))
    return f"s{order.index(gateway_session):04d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, default=None, help="keep the runs' state here (default: a temporary dir)")
    parser.add_argument("--reuse", action="store_true", help="with --work: reuse its static run, retrain and rerun live")
    parser.add_argument("--write-evalset", type=Path, default=None,
                        help="only write the workload as an evaluation set (JSON Lines) here, and stop")
    args = parser.parse_args()
    if args.write_evalset:
        evalset(generate(args.seed, args.sessions), args.write_evalset)
        return
    report = anyio.run(main_async, args)
    (HERE / f"traps_results_seed{args.seed}.json").write_text(json.dumps(report, indent=2))
    held, live = report["held_back"], report.get("live")
    print(f"\nworkload: {report['workload']}")
    print(f"held-back traces ({held['calls']} tool calls, {held['caught']} caught by the slow path):")
    print(f"  slow-path invocations: static {held['static']['slow']}, learned {held['learned']['slow']} "
          f"({held['slow_reduction']:.1%} fewer); recall static 100%, learned {held['learned']['recall']:.1%}")
    if live:
        print(f"live rerun of the held-back sessions: slow path {live['slow_static']} -> {live['slow_learned']}, "
              f"caught {live['caught_again']}/{live['caught_static']}, judge model calls {live['judge_model_calls_learned']}")
    print(f"eval gate passed: {report['eval_gate_passed']}")


if __name__ == "__main__":
    main()
