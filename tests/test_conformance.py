"""The official MCP conformance suite (server scenarios), run over streamable HTTP against fmos-mcp fronting
tests/servers/conformance_fixture.py (`"prefix": false`), once with the fixture in each protocol era.

The suite's client speaks the handshake era (initialize, 2025-11-25). With the fixture on the modern era
the gateway bridges: the fixture's sampling and elicitation arrive as InputRequiredResults and reach the
suite as pushed requests; its logs are opted in per request; subscriptions ride its listen stream.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import PY, ROOT, HttpGateway, node22, npm_bin, write_servers

FIXTURE = ROOT / "tests" / "servers" / "conformance_fixture.py"
ACTIVE_SCENARIOS = 30  # @modelcontextprotocol/conformance 0.1.16, `server` suite "active"


def scenario_checks(results: Path) -> dict[str, list[dict]]:
    found = {}
    for checks in results.rglob("checks.json"):
        found[checks.parent.name] = json.loads(checks.read_text())
    return found


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_every_active_conformance_scenario_passes_through_the_gateway(tmp_path: Path, era: str) -> None:
    servers = write_servers(tmp_path / "servers.d", {
        "conformance": {"command": PY, "args": [str(FIXTURE)], "prefix": False, "era": era},
    })
    probe = subprocess.run([PY, "-m", "fmos_mcp", "servers", "--json", "--servers-dir", str(servers),
                            "--state-dir", str(tmp_path / "probe")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    [fixture] = json.loads(probe.stdout)["servers"]
    assert fixture["era"] == ("2025-11-25" if era == "legacy" else "2026-07-28")  # the era under test

    gateway = HttpGateway(servers, tmp_path / "state")
    try:
        run = subprocess.run(
            [node22(), str(npm_bin("@modelcontextprotocol/conformance")), "server",
             "--url", f"{gateway.url}/mcp", "-o", str(tmp_path / "results")],
            capture_output=True, text=True, timeout=900,
        )
    finally:
        gateway.stop()
    scenarios = scenario_checks(tmp_path / "results")
    failed = {name: [c.get("name") or c.get("id") for c in checks if c.get("status") == "FAILURE"]
              for name, checks in scenarios.items()}
    failed = {name: checks for name, checks in failed.items() if checks}
    summary = run.stdout[-3000:] + run.stderr[-2000:]
    assert len(scenarios) >= ACTIVE_SCENARIOS, summary
    assert not failed, f"failing scenarios: {failed}\n{summary}"
    assert run.returncode == 0, summary
