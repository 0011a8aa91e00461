"""`fmos-mcp trace export` and `fmos-mcp evolve train|propose|eval|canary|promote|rollback|log`."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio

from fmos_mcp.config import ServersConfig, load_servers_dir
from fmos_mcp.evolve import evaluate as ev
from fmos_mcp.evolve.config import EvolveConfig
from fmos_mcp.evolve.export import export_row
from fmos_mcp.evolve.replay import EvalSetError, listings_from_pins, load_evalset
from fmos_mcp.evolve.runtime import read_files
from fmos_mcp.evolve.train import examples, trace_calls, train_report
from fmos_mcp.evolve.trapmodel import TrapModel, fit
from fmos_mcp.evolve.versions import Version, VersionError, VersionStore
from fmos_mcp.state.db import DB_FILE, StateDB
from fmos_mcp.state.traces import TraceStore
from fmos_mcp.trust.policy import load_bundle, read_bundle

ACTOR = "cli"


class CommandError(Exception):
    pass


@dataclass
class Context:
    db: StateDB
    store: VersionStore
    policies_dir: Path | None
    servers: ServersConfig

    @classmethod
    def open(cls, state_dir: Path, policies_dir: Path | None, servers_dir: Path | None) -> Context:
        if not (state_dir / DB_FILE).exists():
            raise CommandError(f"no state database in {state_dir} yet: run `fmos-mcp serve` first")
        db = StateDB(state_dir)
        # Only a starting gateway records the policy files as a version: a CLI run from another directory
        # must not make its own idea of "the policies" active under a running gateway.
        return cls(db, VersionStore(db), policies_dir, load_servers_dir(servers_dir) if servers_dir else ServersConfig())

    def config(self) -> EvolveConfig:
        active = self.store.active("policies")
        bundle = json.loads(active.body) if active else read_bundle(self.policies_dir)
        return EvolveConfig.from_section(load_bundle(bundle).sections.get("evolve"))

    def rows(self) -> list[dict[str, Any]]:
        return TraceStore(self.db).recent(None)

    def default_evalsets(self) -> list[Path]:
        base = self.policies_dir.parent / "evalsets" if self.policies_dir else None
        return sorted(base.glob("*.jsonl")) if base and base.is_dir() else []


# ----------------------------------------------------------------------------- trace export

def trace_export(ctx: Context, out: TextIO, *, last: int | None, tenant: str | None) -> int:
    key = ctx.db.secret("features").encode()
    rows = ctx.rows()
    if tenant is not None:
        rows = [r for r in rows if r["tenant"] == tenant]
    if last is not None:
        rows = rows[-last:]
    for row in rows:
        out.write(json.dumps(export_row(row, key), sort_keys=True) + "\n")
    print(f"{len(rows)} trace row(s) exported", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- train, propose

def train(ctx: Context, *, holdout: float, out: Path | None, as_json: bool) -> int:
    calls = trace_calls(ctx.rows())
    try:
        model, report = train_report(calls, holdout=holdout)
    except ValueError as exc:
        raise CommandError(f"cannot train a trap model: {exc}") from None
    if out is not None:
        out.write_text(model.to_json())
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    held = report["held_back"]
    print(f"trained on {model.trained['examples']} judged undecided calls ({model.trained['caught']} caught); "
          f"held back {report['sessions_held_back']} later sessions, {held['calls']} tool calls, {held['caught']} caught")
    _print_table([("slow-path invocations", str(held["static"]["slow"]), str(held["learned"]["slow"])),
                  ("recall on slow-path catches", f"{held['static']['recall']:.1%}", f"{held['learned']['recall']:.1%}")],
                 ("held-back traces", "static rules", "static + learned"))
    print(f"slow-path invocations {held['slow_reduction']:.1%} fewer; threshold {model.threshold:.4f}")
    return 0


def propose(ctx: Context, kind: str, source: Path | None, note: str | None) -> int:
    if kind == "trap-model":
        body, provenance = _trap_candidate(ctx, source)
    elif kind == "routing":
        body, provenance = _routing_candidate(ctx, source)
    elif kind in ("policies", "skills"):
        directory = source or (ctx.policies_dir if kind == "policies" else
                               (ctx.policies_dir.parent / "skills" if ctx.policies_dir else None))
        if directory is None or not directory.is_dir():
            raise CommandError(f"give the {kind} directory to propose: --from DIR")
        body = json.dumps(read_bundle(directory) if kind == "policies" else read_files(directory), sort_keys=True)
        provenance = {"origin": "directory", "directory": str(directory)}
    else:
        raise CommandError(f"unknown kind {kind!r}")
    provenance.update({"proposer": ACTOR, **({"note": note} if note else {})})
    version = ctx.store.propose(kind, body, provenance, actor=ACTOR)
    print(f"proposed {version.label} (candidate); next: fmos-mcp evolve eval {version.id}")
    return 0


def _trap_candidate(ctx: Context, source: Path | None) -> tuple[str, dict[str, Any]]:
    if source is not None:
        model = _from_file(TrapModel.from_json, source, "trap model")
        return model.to_json(), {"origin": "file", "file": str(source)}
    rows = ctx.rows()
    calls = trace_calls(rows)
    try:
        model = fit(examples(calls), audit_share=ctx.config().trap_audit_share)
    except ValueError as exc:
        raise CommandError(f"cannot train a trap model: {exc}") from None
    ids = [c.id for c in calls]
    return model.to_json(), {"origin": "evolve train", "traces": {"first_id": min(ids), "last_id": max(ids),
                                                                  "tool_calls": len(calls), **model.trained}}


def _from_file(parse: Any, source: Path, what: str) -> Any:
    try:
        return parse(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(f"{source}: not a {what} ({type(exc).__name__}: {exc})") from None


def _routing_candidate(ctx: Context, source: Path | None) -> tuple[str, dict[str, Any]]:
    from fmos_mcp.evolve.routes import RouteTable, learn
    if source is not None:
        table = _from_file(RouteTable.from_json, source, "routing table")
        return table.to_json(), {"origin": "file", "file": str(source)}
    records = [t["snapshot"] for r in ctx.rows() for t in r["traps"] if t.get("kind") == "model" and t.get("snapshot")]
    if not records:
        raise CommandError("no model requests in the traces to learn routes from")
    return learn(records).to_json(), {"origin": "model traces", "records": len(records)}


# ----------------------------------------------------------------------------- eval

def evaluate(ctx: Context, ref: str, evalsets: list[Path], *, as_json: bool) -> int:
    version = ctx.store.get(ref)
    report = anyio.run(_evaluate, ctx, version, evalsets or ctx.default_evalsets())
    refusals = ev.gate(report, ctx.config().gate)
    report["gate"] = {"passed": not refusals, "why": refusals}
    ctx.store.evaluated(version.id, report, refused=bool(refusals), actor=ACTOR)
    if as_json:
        print(ev.dumps(report))
    else:
        print(f"{version.label} against the active version")
        _print_table(ev.table(report), ("", "current", "candidate"))
        for change in (report.get("evalset") or {}).get("changed", [])[:10]:
            print(f"  changed: {change['tool']} ({change['label']}): {change['before']} -> {change['after']}")
        print("gate: passed" if not refusals else "gate: REFUSED\n  " + "\n  ".join(refusals))
    return 0 if not refusals else 1


async def _evaluate(ctx: Context, version: Version, evalsets: list[Path]) -> dict[str, Any]:
    report: dict[str, Any] = {"candidate": version.label, "evalsets": [str(p) for p in evalsets]}
    rows = ctx.rows()
    policies = ctx.store.active("policies")
    bundle = json.loads(policies.body) if policies else {}
    model_version = ctx.store.active("trap-model")
    model = TrapModel.from_json(model_version.body) if model_version else None
    if version.kind == "trap-model":
        candidate = TrapModel.from_json(version.body)
        report["traces"] = ev.trace_part(model, candidate, trace_calls(rows))
        current, proposed = (bundle, model), (bundle, candidate)
    elif version.kind == "policies":
        current, proposed = (bundle, model), (json.loads(version.body), model)
    else:
        report["note"] = f"{version.kind} versions are not replayed; the gate passes on provenance alone"
        return report
    calls = [c for path in evalsets for c in _load(path)]
    if calls:
        listings = listings_from_pins(ctx.db, ctx.servers)
        try:
            before, after = await ev.replay_pair(current, proposed, listings, calls)
        except EvalSetError as exc:
            raise CommandError(str(exc)) from None
        report["evalset"] = {"current": ev.outcome_metrics(before), "candidate": ev.outcome_metrics(after),
                             "changed": ev.changed(before, after),
                             "sensitive_loosened": ev.loosened_sensitive(before, after)}
        _judge_costs(rows, report, before, after)
    return report


def _judge_costs(rows: list[dict[str, Any]], report: dict[str, Any], before: list[Any], after: list[Any]) -> None:
    judged = [t["snapshot"] for r in rows for t in r["traps"]
              if t.get("kind") == "model" and ((t.get("snapshot") or {}).get("features") or {}).get("task") == "judge"]
    if not judged:
        return
    tokens = sum((j.get("input_tokens") or 0) + (j.get("output_tokens") or 0) for j in judged) / len(judged)
    ms = sum(j.get("latency_ms") or 0 for j in judged) / len(judged)
    for key, per in (("judge_tokens", tokens), ("judge_ms", ms)):
        report[key] = {"current": round(per * sum(o.slow for o in before)), "candidate": round(per * sum(o.slow for o in after))}


def _load(path: Path) -> list[Any]:
    try:
        return load_evalset(path)
    except (OSError, EvalSetError) as exc:
        raise CommandError(str(exc)) from None


# ----------------------------------------------------------------------------- canary, promote, rollback, log

def canary(ctx: Context, ref: str, share: float) -> int:
    version = _gated(ctx, ref)
    version = ctx.store.start_canary(version.id, share, actor=ACTOR)
    print(f"{version.label} serves {share:g}% of sessions; a running gateway picks it up within a second and "
          "rolls it back by itself past the canary limits")
    return 0


def promote(ctx: Context, ref: str) -> int:
    version = ctx.store.promote(_gated(ctx, ref).id, actor=ACTOR)
    print(f"{version.label} is active")
    return 0


def rollback(ctx: Context, ref: str | None, kind: str | None) -> int:
    if ref is not None:
        kind = ctx.store.get(ref).kind
    kind = kind or _last_changed_kind(ctx)
    version = ctx.store.rollback(kind, ref, actor=ACTOR, why="operator")
    print(f"{kind}: {version.label} is active")
    return 0


def _last_changed_kind(ctx: Context) -> str:
    for event in reversed(ctx.store.history(200)):
        if event["action"] in ("promote", "canary", "rollback"):
            return event["kind"]
    raise CommandError("nothing to roll back: no version was promoted or served in canary")


def _gated(ctx: Context, ref: str) -> Version:
    version = ctx.store.get(ref)
    if version.kind in ("trap-model", "policies") and version.evaluation is None:
        raise CommandError(f"{version.label} has not been evaluated: run `fmos-mcp evolve eval {version.id}` first")
    return version


def log(ctx: Context, last: int, as_json: bool) -> int:
    events, versions = ctx.store.history(last), ctx.store.all()
    if as_json:
        print(json.dumps({"versions": [_version_json(v) for v in versions], "events": events}, indent=2))
        return 0
    _print_table([(v.label, v.status, (f"{v.share:g}%" if v.share else ""), _provenance(v)) for v in versions],
                 ("version", "status", "share", "provenance"))
    print()
    for e in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"]))
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items() if k in ("why", "share", "gate", "id", "origin"))
        print(f"{when}  {e['kind']} v{e['version']}  {e['action']:<8} by {e['actor']}  {detail}")
    return 0


def _version_json(v: Version) -> dict[str, Any]:
    return {"id": v.id, "kind": v.kind, "version": v.version, "status": v.status, "sha256": v.sha256,
            "provenance": v.provenance, "parent": v.parent, "share": v.share, "created": v.created,
            "gate": (v.evaluation or {}).get("gate")}


def _provenance(v: Version) -> str:
    p = v.provenance
    return ", ".join(f"{k}: {p[k]}" for k in ("origin", "proposer", "directory", "file", "note") if k in p)


def _print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def run(handler: Any, *args: Any, **kwargs: Any) -> int:
    try:
        return handler(*args, **kwargs)
    except (CommandError, VersionError) as exc:
        print(f"fmos-mcp: {exc}", file=sys.stderr)
        return 1
