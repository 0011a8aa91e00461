"""The trust plane's catalog transform: classify every tool, scan its definition, pin it, and keep
quarantined tools out of what hosts see.

Runs when a pool rebuilds its catalog (a server came up or sent list_changed), never per call. Scans are
cached by definition hash; pins are read once and written only when something changed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fmos_mcp import logs
from fmos_mcp.gateway.catalog import ServerListing
from fmos_mcp.gateway.naming import exposed_name
from fmos_mcp.state.audit import AuditLog
from fmos_mcp.state.pins import Pin, PinStore
from fmos_mcp.trust.detectors import Finding
from fmos_mcp.trust.detectors import poisoning as scan
from fmos_mcp.trust.policy import Judge, Limit, PolicySet, Rule
from fmos_mcp.trust.privilege import Classification, Privilege, classify, override

log = logs.get("fmos.trust")


@dataclass(frozen=True)
class ToolProfile:
    """What the trust plane knows about one tool, computed when the catalog is built."""

    server: str
    tool: str
    exposed: str
    classification: Classification
    fast: bool  # read-only, inferred sensitive-free, and no rule, judge or limit names it
    rules: tuple[Rule, ...] = ()  # the rules, judges and limits whose static scope selects this tool
    judges: tuple[Judge, ...] = ()
    limits: tuple[Limit, ...] = ()
    inferred_sensitive: bool = False

    @property
    def classes(self) -> frozenset[str]:
        return frozenset(c.value for c in self.classification.classes)


@dataclass(frozen=True)
class Quarantine:
    server: str
    tool: str
    exposed: str
    reason: str  # "flagged" | "definition changed since approval"
    findings: tuple[dict[str, Any], ...]


@dataclass
class Vetting:
    policies: PolicySet
    pins: PinStore
    audit: AuditLog | None = None  # quarantines are decisions too
    profiles: dict[tuple[str, str], ToolProfile] = field(default_factory=dict)
    quarantined: dict[str, Quarantine] = field(default_factory=dict)  # exposed name -> why
    _scans: dict[str, list[Finding]] = field(default_factory=dict)
    _pins: dict[tuple[str, str], Pin] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reload_pins(self) -> None:
        """Called from a worker thread: never in the middle of a rebuild."""
        pins = self.pins.load()
        with self._lock:
            self._pins = pins

    def __call__(self, listings: Sequence[ServerListing]) -> list[ServerListing]:
        with self._lock:
            return self._vet(listings)

    def _vet(self, listings: Sequence[ServerListing]) -> list[ServerListing]:
        if self._pins is None:
            self._pins = self.pins.load()
        defs = [(listing, tool, _definition(tool)) for listing in listings for tool in listing.tools
                if listing.tool_allowed(tool.name)]
        index = scan.ShadowIndex([scan.ToolDef(listing.server, tool.name, d) for listing, tool, d in defs])
        changed: list[Pin] = []
        blocked: set[tuple[str, str]] = set()
        for listing, tool, definition in defs:
            key = (listing.server, tool.name)
            exposed = exposed_name(listing.prefix, tool.name)
            digest = _hash(definition)
            findings = self._findings(listing.server, tool.name, definition, digest, index)
            pin, why = self._pin(key, definition, digest, findings)
            if pin is not None:
                changed.append(pin)
                self._pins[key] = pin
            if why:
                blocked.add(key)
                self.quarantined[exposed] = Quarantine(listing.server, tool.name, exposed, why,
                                                       tuple(f.as_json() for f in findings))
            else:
                self.quarantined.pop(exposed, None)
            self.profiles[key] = self._profile(listing.server, tool, exposed)
        if changed:
            self.pins.save(*changed)
            for pin in changed:
                if pin.approved_hash != pin.seen_hash:
                    kinds = [f["detector"] + "/" + f["kind"] for f in pin.findings]
                    log.warning("tool quarantined", server=pin.server, tool=pin.tool, findings=kinds)
                    if self.audit is not None:
                        self.audit.record(method="tools/quarantine", server=pin.server, target=pin.tool,
                                          action="quarantine", rule="detector:" + (kinds[0] if kinds else "rug-pull"),
                                          reason=", ".join(kinds), definition_sha256=pin.seen_hash, findings=list(pin.findings))
        return [replace(listing, tools=[t for t in listing.tools if (listing.server, t.name) not in blocked])
                for listing in listings]

    def _findings(self, server: str, tool: str, definition: dict[str, Any], digest: str,
                  index: scan.ShadowIndex) -> list[Finding]:
        detectors = self.policies.detectors
        found = []
        if detectors["poisoning"] != "off":
            if digest not in self._scans:
                self._scans[digest] = scan.scan_definition(definition)
            found += self._scans[digest]
        if detectors["shadowing"] != "off":
            found += index.scan(scan.ToolDef(server, tool, definition))
        return found

    def _pin(self, key: tuple[str, str], definition: dict[str, Any], digest: str,
             findings: list[Finding]) -> tuple[Pin | None, str]:
        """(a pin to save, or None when nothing changed; why the tool is quarantined, or '')."""
        detectors = self.policies.detectors
        text = json.dumps(definition, sort_keys=True)
        old = (self._pins or {}).get(key)
        as_json = tuple(f.as_json() for f in findings)
        unchanged = old is not None and old.seen_hash == digest

        def seen(approved: str | None, by: str | None, extra: tuple[dict[str, Any], ...] = ()) -> Pin | None:
            pin = Pin(*key, digest, approved, extra + as_json, by, text)
            return None if unchanged and old == pin else pin

        if old is not None and old.approved_hash == digest:
            return (None if unchanged else seen(digest, old.approved_by)), ""
        if old is not None and old.approved_hash is not None:  # approved before, different now: a rug pull?
            rug = ({"detector": "rug-pull", "kind": "definition-changed", "where": "definition"},)
            if detectors["rug_pull"] == "quarantine":
                return seen(old.approved_hash, old.approved_by, rug), "definition changed since approval"
            return seen(digest, f"auto: rug_pull detector is {detectors['rug_pull']}", rug), ""
        flagged = [f for f in findings if detectors.get(f.detector) == "quarantine"]
        if scan.score(flagged) >= scan.THRESHOLD:
            return seen(None, None), "flagged by detectors"
        return seen(digest, "auto: first seen, nothing flagged"), ""

    def _profile(self, server: str, tool: Any, exposed: str) -> ToolProfile:
        annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None
        inferred = classify(tool.name, tool.description, tool.input_schema, annotations)
        classification = inferred
        for rule in self.policies.overrides:
            if fnmatch.fnmatchcase(server, rule.server) and (fnmatch.fnmatchcase(tool.name, rule.tool)
                                                             or fnmatch.fnmatchcase(exposed, rule.tool)):
                classification = override(inferred, list(rule.classes), rule.source)
        classes = frozenset(c.value for c in classification.classes)
        scoped = lambda items: tuple(i for i in items if i.match.scope(server, tool.name, exposed, classes))  # noqa: E731
        rules, judges, limits = scoped(self.policies.rules), scoped(self.policies.judges), scoped(self.policies.limits)
        fast = (classification.classes == {Privilege.READ} and not inferred.sensitive
                and not (rules or judges or limits))
        return ToolProfile(server, tool.name, exposed, classification, fast, rules, judges, limits, inferred.sensitive)


def _definition(tool: Any) -> dict[str, Any]:
    data = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
    data.pop("_meta", None)
    return data


def _hash(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
