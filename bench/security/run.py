"""fmos-mcp security bench: tool-definition attacks, malicious vs benign infrastructure calls through the
real gateway, and what the trust plane adds to a fast-path call. See bench/security/README.md.

    .venv/bin/python bench/security/run.py [--only definitions|calls|latency] [--calls 2000] [--rounds 20]

Prints tables and writes bench/security/results.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402

from bench.security import calls as part2  # noqa: E402
from bench.security import definitions as part1  # noqa: E402
from bench.security import latency as part3  # noqa: E402
from bench.security.common import DATA, POLICIES, Rate, have_data, list_live_tools, reference_servers, table  # noqa: E402

RESULTS = Path(__file__).with_name("results.json")


def _json(value: Any) -> Any:
    if isinstance(value, Rate):
        return value.as_json()
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


# ----------------------------------------------------------------------------- part 1

def run_definitions(tmp: Path, data: bool) -> dict[str, Any]:
    live = anyio.run(list_live_tools, reference_servers(tmp / "files-root"))
    result = part1.evaluate(tmp / "part1", POLICIES, live, data)
    summary = part1.summarize(result)
    print("\n== 1. Tool definitions: poisoning, shadowing, rug pulls (real Vetting, StateDB and PinStore) ==")
    print(f"live reference definitions: {', '.join(f'{s} {len(t)}' for s, t in live.items())}")
    print("\nbenign tools flagged (quarantined), target <= 2% on the brief's set:")
    print(table(["benign set", "flagged [95% CI]"], [[name, str(r)] for name, r in summary["benign_fp"].items()]))
    if data:
        print("\npoisoned definitions quarantined, target >= 95%:")
        d = summary["detection"]
        rows = [[attack, *(str(d[s]["by_attack"][attack]) for s in (*part1.SPLITS, "all"))] for attack in part1.ATTACKS]
        rows.append(["all attacks", *(str(d[s]["overall"]) for s in (*part1.SPLITS, "all"))])
        print(table(["attack class", "dev", "held-out", "test", "final", "all"], rows))
        print("\nby injection way (rug pulls excluded):")
        rows = [[way, *(str(d[s]["by_way"][way]) for s in (*part1.SPLITS, "all"))] for way in part1.CLASS_OF_WAY]
        print(table(["way", "dev", "held-out", "test", "final", "all"], rows))
        print("\nby phrasing family (the family's own split in brackets; dev families also carry held-out/test goals):")
        rows = [[f"{name} [{summary['family_split'][name]}]", *(str(r[s]) for s in part1.SPLITS)]
                for name, r in summary["by_family"].items()]
        print(table(["family", "dev", "held-out", "test", "final"], rows))
        print(f"\nharmless changes to an approved definition held for re-approval (by design): {summary['benign_updates_held']}")
        for miss in summary["misses"]:
            print(f"  missed [{miss['split']}] {miss['id']}: {miss['added_text'][:140]!r}")
    for fp in summary["false_positives"][:12]:
        print(f"  false positive [{fp['set']}] {fp['server']}/{fp['tool']}: {', '.join(fp['findings'])}")
    return summary


# ----------------------------------------------------------------------------- part 2

def run_calls(tmp: Path) -> dict[str, Any]:
    dev, test, final = part2.cases(), part2.test_cases(), part2.final_cases()
    seconds = anyio.run(part2.run_all, tmp / "part2", dev + test + final)
    print("\n== 2. Infrastructure calls through the real gateway (examples/infra_server.py, policies/infra.yaml) ==")
    print("a declining host answers approval requests; 'held' = refused for want of approval, counted apart")
    out: dict[str, Any] = {"seconds": seconds, "cases": dev + test + final}
    for name, chosen in (("dev", dev), ("test", test), ("final", final), ("all", dev + test + final)):
        summary = part2.summarize(chosen)
        out[name] = summary
        print(f"\n-- {name} set: malicious stopped (target >= 95%), benign blocked (target <= 2%)")
        rows = []
        for klass, row in summary["by_class"].items():
            rows.append([klass, str(row["stopped"]), row["malicious_held"], str(row["false_blocks"]), row["benign_held"]])
        rows.append(["all classes", str(summary["overall"]["malicious"]), sum(r["malicious_held"] for r in summary["by_class"].values()),
                     str(summary["overall"]["benign"]), sum(r["benign_held"] for r in summary["by_class"].values())])
        print(table(["class", "malicious stopped", "held", "benign blocked", "held"], rows))
        for case in summary["misses"]:
            print(f"  missed: {case.klass}: {case.what} -> {case.outcome} {case.rule} {case.detail[:100]!r}")
        for case in summary["false_blocks"]:
            print(f"  false block: {case.klass}: {case.what} -> {case.outcome} {case.rule}")
        for case in summary["info"]:
            print(f"  info: {case.what}: {case.detail}")
    return out


def _calls_json(out: dict[str, Any]) -> dict[str, Any]:
    def case(c: part2.Case) -> dict[str, Any]:
        args = {k: (v if len(json.dumps(v)) < 300 else f"<{len(json.dumps(v))} bytes>") for k, v in c.arguments.items()}
        return {"class": c.klass, "label": c.label, "split": c.split, "tool": c.tool, "arguments": args, "what": c.what,
                "expect": c.expect, "outcome": c.outcome, "rule": c.rule, "correct": c.correct}

    result: dict[str, Any] = {"seconds": out["seconds"]}
    for name in ("dev", "test", "final", "all"):
        s = out[name]
        result[name] = {"overall": s["overall"], "by_class": s["by_class"], "misses": [case(c) for c in s["misses"]],
                        "false_blocks": [case(c) for c in s["false_blocks"]], "info": [case(c) | {"detail": c.detail} for c in s["info"]]}
    result["cases"] = [case(c) for c in out["cases"]]
    return result


# ----------------------------------------------------------------------------- part 3

def run_latency(tmp: Path, calls: int, rounds: int, profile: bool) -> dict[str, Any]:
    report = anyio.run(part3.measure, tmp / "part3", calls, rounds, profile)
    print(f"\n== 3. Fast-path added time: trust plane on vs off ({calls} calls per path per tool, {rounds} interleaved rounds) ==")
    rows = []
    sections = [("two_gateways", "AppConfig trust on/off", "trust on", "trust off"),
                ("one_gateway_toggled", "same gateway, service toggled", "trust on", "trust off")]
    for section, label, on, off in sections:
        for tool, r in report[section].items():
            paired = r["paired_round_diff_ms"]
            rows.append([label, tool, f"{r[on]['p50']:.3f}", f"{r[off]['p50']:.3f}", f"{r['added_p50_ms']:+.3f}",
                         f"{paired['median']:+.3f} [{paired['q1']:+.3f},{paired['q3']:+.3f}]",
                         f"{r[on]['p99']:.3f}", f"{r[off]['p99']:.3f}", f"{r['added_p99_ms']:+.3f}", f"{r['added_cpu_ms']:+.3f}"])
    aa = report["noise_floor_a_a"]
    rows.append(["noise floor: A/A, trust on twice", "infra__get_node", f"{aa['trust on']['p50']:.3f}",
                 f"{aa['trust on (again)']['p50']:.3f}", f"{aa['added_p50_ms']:+.3f}",
                 f"{aa['paired_round_diff_ms']['median']:+.3f} [{aa['paired_round_diff_ms']['q1']:+.3f},"
                 f"{aa['paired_round_diff_ms']['q3']:+.3f}]", f"{aa['trust on']['p99']:.3f}",
                 f"{aa['trust on (again)']['p99']:.3f}", f"{aa['added_p99_ms']:+.3f}", f"{aa['added_cpu_ms']:+.3f}"])
    print(table(["measurement", "tool", "on p50", "off p50", "added p50", "paired median [IQR]", "on p99", "off p99",
                 "added p99", "added CPU"], rows))
    print("(ms per call, end to end over stdio to the server; paired = median over rounds of (round p50 on - round p50 off);"
          " added CPU = this process's CPU time per call, on minus off)")
    for tool, r in report["own_time_in_situ"].items():
        print(f"trust service's own time in real calls, {tool}: p50 {r['p50_us']:.1f} us, p90 {r['p90_us']:.1f} us, "
              f"p99 {r['p99_us']:.1f} us, mean {r['mean_us']:.1f} us (target: < 200 us p50)")
    for tool, r in report["interceptor_alone"].items():
        print(f"trust service alone in a tight loop (warm caches, stubbed chain), {tool}: p50 {r['p50_us']:.1f} us, "
              f"p99 {r['p99_us']:.1f} us")
    if profile and report.get("profile"):
        print(report["profile"])
    return report


def _prefilter_texts(data: bool) -> list[str]:
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            texts.append(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                texts.append(str(key))
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for _, _, d in part1.supplementary_benign():
        walk(d)
    for case in part2.cases() + part2.test_cases() + part2.final_cases():
        walk(case.arguments)
    if data:
        for d in json.loads((DATA / "metatool" / "plugin_des.json").read_text()).values():
            walk(d)
    return [t for t in texts if len(t) < 100_000]


# ----------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("definitions", "calls", "latency"), action="append")
    parser.add_argument("--calls", type=int, default=2000, help="part 3: calls per path per tool (default 2000)")
    parser.add_argument("--rounds", type=int, default=20, help="part 3: interleaved rounds (default 20)")
    parser.add_argument("--profile", action="store_true", help="part 3: print a cProfile of the trust plane")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    parts = args.only or ["definitions", "calls", "latency"]

    from fmos_mcp import logs

    logs.configure("error")
    data = have_data()
    if not data:
        print(f"NOTE: the shared data sets are absent ({DATA} not found). Part 1 needs them for its malicious cases and "
              "for the MetaTool benign set: only the benign sets that do not (reference servers, real-world, hand-written) "
              "are checked there. Parts 2 and 3 do not need them and run in full.")
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": str(DATA) if data else None,
                               "python": platform.python_version(), "machine": platform.machine(), "timings_s": {}}
    with tempfile.TemporaryDirectory(prefix="fmos-security-") as tmp_name:
        tmp = Path(tmp_name)
        if "definitions" in parts:
            start = time.perf_counter()
            results["definitions"] = _json(run_definitions(tmp, data))
            results["timings_s"]["definitions"] = round(time.perf_counter() - start, 1)
        if "calls" in parts:
            start = time.perf_counter()
            results["calls"] = _json(_calls_json(run_calls(tmp)))
            results["timings_s"]["calls"] = round(time.perf_counter() - start, 1)
        if "latency" in parts:
            start = time.perf_counter()
            report = part3.prefilter_agreement(_prefilter_texts(data))
            latency = run_latency(tmp, args.calls, args.rounds, args.profile) | {"prefilter_agreement": report}
            print(f"pre-filter check: {report['texts']} texts, disagreements: injection {report['injection']}, "
                  f"secrets {report['secrets']}")
            results["latency"] = _json(latency)
            results["timings_s"]["latency"] = round(time.perf_counter() - start, 1)
    results["timings_s"]["total"] = round(sum(results["timings_s"].values()), 1)
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nwrote {args.out} ({', '.join(f'{k} {v} s' for k, v in results['timings_s'].items())})")


if __name__ == "__main__":
    main()
