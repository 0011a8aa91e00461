"""Policy files: schema validation, compiled matchers, errors that name file, rule and key; `policy check`."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import PY, ROOT
from fmos_mcp.trust.match import CallFacts
from fmos_mcp.trust.policy import load_policies


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def facts(**changes: object) -> CallFacts:
    base = dict(server="infra", tool="drain_node", exposed="infra__drain_node", classes=frozenset({"destructive"}),
                tenant="acme", roles=frozenset({"developer"}), arguments={"name": "web-1"},
                now=datetime(2026, 11, 23, 10, 30, tzinfo=UTC))  # a Monday
    base.update(changes)
    return CallFacts(**base)  # type: ignore[arg-type]


def test_shipped_policies_are_valid() -> None:
    policies = load_policies(ROOT / "policies")
    assert not policies.errors, policies.errors
    assert {r.id for r in policies.rules} >= {"no-exec-on-production", "approve-destructive-infra"}
    assert policies.judges and policies.limits and policies.roles == ("developer",)


def test_yaml_and_toml_merge_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "10-base.yaml", "rules:\n  - {id: a, effect: deny, match: {tools: exec_*}}\n"
                                    "defaults: {approval_ttl: 5, effects: {write: log}}\n")
    write(tmp_path, "20-more.toml", '[[rules]]\nid = "b"\neffect = "allow"\n[rules.match]\nservers = ["time"]\n'
                                    "[defaults]\napproval_ttl = 7\n")
    policies = load_policies(tmp_path)
    assert [r.id for r in policies.rules] == ["a", "b"] and not policies.errors
    assert policies.approval_ttl == 7 and policies.effects["write"] == "log" and policies.effects["exec"] == "log"
    assert policies.files == ["10-base.yaml", "20-more.toml"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules:\n  - {id: r1, effect: maybe}\n", "x.yaml: rule 'r1', key 'effect':"),
        ("rules:\n  - {id: r1, effect: deny, match: {tool: x}}\n", "x.yaml: rule 'r1', key 'match': unknown key ('tool' was unexpected)"),
        ("rules:\n  - {effect: deny}\n", "x.yaml: rules[0]: 'id' is a required property"),
        ("rules:\n  - {id: r1, effect: deny, match: {arguments: {patterns: {cmd: '(unclosed'}}}}\n",
         "x.yaml: rule 'r1', key 'match.arguments.patterns.cmd'"),
        ("rules:\n  - {id: r1, effect: deny, match: {time: {tz: Mars/Olympus}}}\n",
         "x.yaml: rule 'r1', key 'match.time.tz': unknown time zone 'Mars/Olympus'"),
        ("rules:\n  - {id: r1, effect: deny, match: {arguments: {schema: {type: 12}}}}\n",
         "x.yaml: rule 'r1', key 'match.arguments.schema': not a valid JSON Schema"),
        ("rules:\n  - {id: r1, effect: deny}\n  - {id: r1, effect: allow}\n", "x.yaml: rule 'r1', key 'id': defined twice"),
        ("classes:\n  - {server: infra, tool: exec_on_node, set: [read]}\n",
         "x.yaml: classes[0], key 'justification': an override to non-sensitive classes only needs a justification"),
        ("judges:\n  - {id: j, policy: short}\n", "x.yaml: judge 'j', key 'policy'"),
        ("limits:\n  - {id: l, rate: {calls: 0, per: 1}}\n", "x.yaml: limit 'l', key 'rate.calls'"),
        ("detectors: {poisoning: ignore}\n", "x.yaml: detectors, key 'poisoning'"),
        ("rules: [\n", "x.yaml: file: not valid YAML"),
        ("- just\n- a list\n", "x.yaml: file: the top level must be a mapping"),
        ("surprise: 1\n", "x.yaml: file: unknown key ('surprise' was unexpected)"),
    ],
)
def test_bad_policy_files_name_file_rule_and_key(tmp_path: Path, text: str, expected: str) -> None:
    write(tmp_path, "x.yaml", text)
    write(tmp_path, "ok.yaml", "rules:\n  - {id: fine, effect: log}\n")
    policies = load_policies(tmp_path)
    messages = [str(e) for e in policies.errors]
    assert any(m.startswith(expected) for m in messages), messages
    assert [r.id for r in policies.rules] == ["fine"]  # the broken file is skipped, the other applies


def test_bad_toml_and_duplicate_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "rules:\n  - {id: same, effect: deny}\n")
    write(tmp_path, "b.toml", '[[rules]]\nid = "same"\neffect = "allow"\n')
    write(tmp_path, "c.toml", "rules = [\n")
    messages = [str(e) for e in load_policies(tmp_path).errors]
    assert any(m.startswith("b.toml: 'same', key 'id': already defined in an earlier file") for m in messages), messages
    assert any(m.startswith("c.toml: file: not valid TOML") for m in messages), messages


def test_policy_check_command(tmp_path: Path) -> None:
    good = write(tmp_path / "good", "p.yaml", "rules:\n  - {id: a, effect: deny}\n")
    bad = write(tmp_path / "bad", "p.yaml", "rules:\n  - {id: a, effect: deny, match: {servers: []}}\n")
    ok = subprocess.run([PY, "-m", "fmos_mcp", "policy", "check", str(good)], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and "1 file(s) valid: 1 rules" in ok.stdout
    ko = subprocess.run([PY, "-m", "fmos_mcp", "policy", "check", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert ko.returncode == 1 and "error: p.yaml: rule 'a', key 'match.servers'" in ko.stdout
    assert "Traceback" not in ko.stdout + ko.stderr


def compiled(tmp_path: Path, match: str):  # type: ignore[no-untyped-def]
    write(tmp_path, "m.yaml", f"rules:\n  - id: r\n    effect: deny\n    match: {match}\n")
    policies = load_policies(tmp_path)
    assert not policies.errors, policies.errors
    return policies.rules[0].match


def test_match_globs_classes_tenants_roles(tmp_path: Path) -> None:
    match = compiled(tmp_path, "{servers: 'inf*', tools: [drain_*, delete_*], classes: [destructive], tenants: acme, "
                               "not_roles: [sre]}")
    assert match.matches(facts())
    assert not match.matches(facts(server="files"))
    assert not match.matches(facts(tool="get_node", exposed="infra__get_node"))
    assert not match.matches(facts(classes=frozenset({"read"})))
    assert not match.matches(facts(tenant="other"))
    assert not match.matches(facts(roles=frozenset({"developer", "sre"})))
    assert match.scope("infra", "delete_vm", "infra__delete_vm", frozenset({"destructive"}))


def test_match_time_window_in_a_zone(tmp_path: Path) -> None:
    match = compiled(tmp_path, "{time: {days: [mon, tue, wed, thu, fri], hours: '09:00-17:00', tz: Europe/Berlin}}")
    assert match.matches(facts())  # 11:30 in Berlin, Monday
    assert not match.matches(facts(now=datetime(2026, 11, 23, 16, 30, tzinfo=UTC)))  # 17:30 in Berlin
    assert not match.matches(facts(now=datetime(2026, 11, 22, 10, 30, tzinfo=UTC)))  # Sunday
    night = compiled(tmp_path, "{time: {hours: '22:00-06:00'}}")  # wraps midnight
    assert night.matches(facts(now=datetime(2026, 11, 23, 23, 0, tzinfo=UTC)))
    assert night.matches(facts(now=datetime(2026, 11, 23, 5, 0, tzinfo=UTC)))
    assert not night.matches(facts(now=datetime(2026, 11, 23, 12, 0, tzinfo=UTC)))


def test_match_argument_schema_and_patterns(tmp_path: Path) -> None:
    match = compiled(tmp_path, "{arguments: {schema: {properties: {replicas: {minimum: 21}}, required: [replicas]}, "
                               "patterns: {target.env: '^prod'}}}")
    assert match.matches(facts(arguments={"replicas": 50, "target": {"env": "production"}}))
    assert not match.matches(facts(arguments={"replicas": 5, "target": {"env": "production"}}))
    assert not match.matches(facts(arguments={"replicas": 50, "target": {"env": "staging"}}))
    assert not match.matches(facts(arguments={"replicas": 50}))  # absent: a pattern never matches


def test_policy_check_covers_the_data_and_model_planes(tmp_path: Path) -> None:
    """One command validates every plane's section, each error with file and key; the shipped files pass."""
    shipped = subprocess.run([PY, "-m", "fmos_mcp", "policy", "check", str(ROOT / "policies")],
                             capture_output=True, text=True, cwd=ROOT)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    bad = tmp_path / "bad"
    write(bad, "context.yaml", "context:\n  exposure: sideways\n  offload: {rules: [{tool: x, never: true, threshold_bytes: 4096}]}\n")
    write(bad, "models.yaml", "models:\n  backends: [{name: m, kind: openai, model: x}]\n  default: m\n")
    write(bad, "budgets.yaml", "budgets:\n  limits: [{id: b, resource: tokens, limit: 5, window: 1h, on_exceed: degrade}]\n")
    run = subprocess.run([PY, "-m", "fmos_mcp", "policy", "check", str(bad)], capture_output=True, text=True, cwd=ROOT)
    out = run.stdout
    assert run.returncode == 1 and "Traceback" not in out + run.stderr
    assert "context.yaml" in out and "exposure" in out  # schema: an unknown value, named by its key
    assert "models.yaml" in out and "base_url" in out  # an openai backend needs a base URL
    assert "budgets.yaml" in out and "degrade" in out  # degrade without a target
    merged = load_policies(ROOT / "policies")
    assert {"context", "models", "budgets"} <= set(merged.sections) and not merged.errors
