"""The trust service: the pipeline's interceptor for privilege boundaries (paper, section 4: Infra-Sentinel).

Order of evaluation for `tools/call` (README, "Trust plane", says the same):
 1. quarantine: a tool held back by the detectors or a changed definition is refused by name;
 2. argument detectors (command injection, path traversal, secrets), on every call: cheap, CPU only;
 3. the fast path: a read-class tool that no rule, judge or limit names is forwarded now (outputs are still
    screened); everything else traps to the slow path:
 4. size caps, then deterministic rules (deny > require_approval > allow > log; redact adds), then the
    defaults per privilege class when no rule decided;
 5. natural-language judges in scope, for privileged calls not already decided by a rule; when a learned trap
    model is active, a call no rule, detector or class default decided, in no sensitive class, goes to the
    judges only when the model says it needs them (a share of the rest still does, for fresh labels);
 6. rate and concurrency limits; require_approval asks the user (elicitation);
 7. the call; its result is screened (credentials, instructions aimed at the model, policy redactions);
 8. the audit trail gets one hash-chained row per slow-path decision, and one per fast-path call a detector flagged.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST

from fmos_mcp import logs
from fmos_mcp.evolve.features import SessionHistory, call_features
from fmos_mcp.evolve.trapmodel import TrapModel
from fmos_mcp.state.audit import AuditLog
from fmos_mcp.traps.pipeline import CallNext
from fmos_mcp.traps.request import Direction, MediatedRequest
from fmos_mcp.traps.sizes import content_bytes, json_bytes
from fmos_mcp.traps.trap import TrapKind, TrapRecord
from fmos_mcp.trust.approval import Approvals
from fmos_mcp.trust.decision import DECISION_META, Decision, blocked, stricter
from fmos_mcp.trust.detectors import Finding, arguments, outputs, secrets
from fmos_mcp.trust.judge import JudgeService
from fmos_mcp.trust.limits import Limiter
from fmos_mcp.trust.match import CallFacts
from fmos_mcp.trust.outputs_screen import Screening, screen_result
from fmos_mcp.trust.policy import PolicySet, Rule
from fmos_mcp.trust.privilege import ORDER, Privilege
from fmos_mcp.trust.vetting import ToolProfile, Vetting

log = logs.get("fmos.trust")
_ARG_DETECTORS = {"command-injection": "command_injection", "path-traversal": "path_traversal",
                  "secret": "secrets_in_arguments"}


class TrustService:
    name = "trust"

    def __init__(self, policies: PolicySet, vetting: Vetting, audit: AuditLog, *,
                 judges: JudgeService | None = None, clock: Callable[[], datetime] | None = None,
                 key: bytes = b"") -> None:
        self.policies = policies
        self.vetting = vetting
        self.audit = audit
        self.judges = judges or JudgeService()
        self.limiter = Limiter()
        self.approvals = Approvals()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.detectors = policies.detectors
        self.key = key  # pseudonyms of argument values in trace features
        self.history = SessionHistory()
        self.trap_model: TrapModel | None = None
        self.trap_version: int | None = None
        self._audit_draw = random.Random()

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any:
        if request.direction is Direction.TO_HOST:
            if request.method == "sampling/createMessage" and self.detectors["sampling_injection"] != "off":
                self._check_sampling(request)
            return await call_next(request)
        if request.method == "tools/call":
            return await self._tool_call(request, call_next)
        if request.method in ("resources/read", "prompts/get"):
            return self._screen(request, await call_next(request), None, None)
        return await call_next(request)

    # ----------------------------------------------------------------- tools/call

    async def _tool_call(self, request: MediatedRequest, call_next: CallNext) -> Any:
        profile = self.vetting.profiles.get((request.server, request.target)) if request.server else None
        if profile is None:
            quarantined = self.vetting.quarantined.get(request.name or "")
            if quarantined is None:
                return await call_next(request)  # unknown: the router says so
            decision = Decision("deny", "quarantine", f"the tool is quarantined ({quarantined.reason}); an operator can "
                                f"release it with `fmos-mcp tools approve {quarantined.exposed}`",
                                findings=list(quarantined.findings))
            return self._refuse(request, None, decision)
        self.history.bump(request.host.session_id, "calls")
        size = json_bytes(dict(request.arguments)) if request.arguments else 0
        # Size caps come before the detectors: scanning a megabyte of arguments is itself a denial of service.
        # The default cap always applies, so arguments over it are refused unread (on the slow path).
        within = size <= self.policies.max_argument_bytes
        findings = self._argument_findings(profile, request.arguments) if within else []
        if profile.fast and within and not findings:
            return self._screen(request, await call_next(request), profile, None)
        return await self._slow(request, call_next, profile, findings, size)

    async def _slow(self, request: MediatedRequest, call_next: CallNext, profile: ToolProfile, findings: list[Finding],
                    size: int) -> Any:
        facts = CallFacts(profile.server, profile.tool, profile.exposed, profile.classes, request.host.tenant,
                          frozenset(request.host.roles), request.arguments, self.clock())
        matched = [r for r in profile.rules if r.match.matches(facts)]
        decision = self._static(profile, facts, findings, matched, size)
        decision.features = call_features(
            server=profile.server, tool=profile.tool, classes=profile.classes, roles=facts.roles, at=facts.now,
            arguments=request.arguments, findings=_finding_kinds(decision.findings),
            session=self.history.of(request.host.session_id), key=self.key)
        if decision.action != "deny" and not any(r.effect in ("allow", "deny") for r in matched):
            decision.undecided = self._undecided(profile, decision, findings, matched)
            if not (decision.undecided and self._learned_pass(decision)):
                decision = await self._judged(request, profile, facts, decision)
        entered = []
        try:
            if decision.action != "deny":
                decision, entered = self._limits(profile, facts, decision)
            if decision.action == "require_approval":
                decision = await self._approve(request, profile, decision)
            if decision.action == "deny":
                return self._refuse(request, profile, decision)
            outcome, result = "error", None
            try:
                result = await call_next(request)
                outcome = "tool_error" if getattr(result, "is_error", False) else "ok"
            finally:
                if result is None:
                    self._record(request, profile, decision, outcome)
            redact = [r for r in matched if r.effect == "redact"]
            result = self._screen(request, result, profile, decision, redact)
            if decision.action != "deny":  # screening may have withheld the result already
                result = self._cap_result(request, profile, facts, decision, result)
            self._record(request, profile, decision, outcome if decision.action != "deny" else "blocked")
            return result
        finally:
            for limit in entered:
                self.limiter.leave(limit, facts.tenant, profile.exposed)

    def _undecided(self, profile: ToolProfile, decision: Decision, findings: list[Finding], matched: list[Rule]) -> bool:
        """No rule, detector or class default decided this call, and it is in no sensitive class: the only calls
        a learned trap may take off the slow path."""
        return (decision.action == "allow" and not findings and not profile.inferred_sensitive
                and not profile.classification.sensitive
                and not any(r.effect in ("deny", "require_approval", "allow") for r in matched))

    def _learned_pass(self, decision: Decision) -> bool:
        """Whether the learned trap lets this undecided call skip the judges."""
        model = self.trap_model
        if model is None:
            return False
        slow, p = model.needs_slow(decision.features or {})
        audited = not slow and self._audit_draw.random() < model.audit_share
        decision.learned = {"version": self.trap_version, "p": round(p, 4), "slow": slow, "audited": audited}
        if slow or audited:
            return False
        decision.path = "fast"
        return True

    def _argument_findings(self, profile: ToolProfile, args: Any) -> list[Finding]:
        if not args:
            return []
        detectors, found = self.detectors, []
        if detectors["command_injection"] != "off":
            found += arguments.command_injection(args, Privilege.EXEC in profile.classification.classes)
        if detectors["path_traversal"] != "off":
            found += arguments.path_traversal(args)
        if detectors["secrets_in_arguments"] != "off":
            found += arguments.secrets_in(args)
        return found

    def _static(self, profile: ToolProfile, facts: CallFacts, findings: list[Finding], matched: list[Rule],
                size: int) -> Decision:
        as_json = [f.as_json() for f in findings]
        cap, cap_rule = self.policies.max_argument_bytes, "default:max_argument_bytes"
        for limit in profile.limits:
            if limit.max_argument_bytes and limit.max_argument_bytes < cap and limit.match.matches(facts):
                cap, cap_rule = limit.max_argument_bytes, f"limit:{limit.id}"
        if size > cap:
            return Decision("deny", cap_rule, f"the arguments are {size} bytes, over the {cap}-byte cap", findings=as_json)
        waived = {d for r in matched if r.effect == "allow" for d in r.waive}
        for finding in findings:
            if finding.detector not in waived and self.detectors[_ARG_DETECTORS[finding.detector]] == "deny":
                return Decision("deny", f"detector:{finding.detector}", finding.describe(), findings=as_json)
        for effect in ("deny", "require_approval", "allow"):
            rule = next((r for r in matched if r.effect == effect), None)
            if rule is not None:
                return Decision(effect, rule.id, rule.reason or f"rule '{rule.id}' ({rule.source})", findings=as_json,
                                approval_ttl=rule.approval_ttl, approval_scope=rule.approval_scope)
        effect, source = "allow", "read"
        for cls in sorted(profile.classification.classes, key=ORDER.index):
            candidate = self.policies.effects[cls.value]
            if stricter(candidate, effect):
                effect, source = candidate, cls.value
        logged = next((r for r in matched if r.effect == "log"), None)
        rule = logged.id if logged and effect in ("allow", "log") else f"default:{source}"
        return Decision(effect if effect != "log" else "allow", rule, f"default for {source}-class tools: {effect}",
                        findings=as_json)

    async def _judged(self, request: MediatedRequest, profile: ToolProfile, facts: CallFacts, decision: Decision) -> Decision:
        if profile.classification.classes == {Privilege.READ}:
            return decision  # judges are spent on privileged calls only
        for judge in profile.judges:
            if not judge.match.matches(facts):
                continue
            verdict = await self.judges.judge(judge, facts, request)
            decision.judge = {"id": judge.id, **verdict.as_json()}
            if verdict.verdict == "deny":
                self.history.bump(request.host.session_id, "judge_denies")
                denied = decision.became("deny", verdict.reason)
                denied.rule = f"judge:{judge.id}"
                return denied
        return decision

    def _limits(self, profile: ToolProfile, facts: CallFacts, decision: Decision) -> tuple[Decision, list[Any]]:
        entered = []
        for limit in profile.limits:
            if not limit.match.matches(facts):
                continue
            why = self.limiter.take(limit, facts.tenant, profile.exposed) or self.limiter.enter(limit, facts.tenant, profile.exposed)
            if why:
                for done in entered:
                    self.limiter.leave(done, facts.tenant, profile.exposed)
                return Decision("deny", f"limit:{limit.id}", why, findings=decision.findings), []
            if limit.concurrency:
                entered.append(limit)
        return decision, entered

    async def _approve(self, request: MediatedRequest, profile: ToolProfile, decision: Decision) -> Decision:
        digest = _digest(request.arguments) if decision.approval_scope == "call" else "*"
        key = (request.host.tenant, decision.rule, profile.exposed, digest)
        if self.approvals.remembered(key):
            return Decision("allow", decision.rule, "approved earlier (remembered)", findings=decision.findings,
                            judge=decision.judge)
        message = (f"fmos-mcp: '{profile.exposed}' ({profile.classification.primary.value}) needs your approval "
                   f"under rule '{decision.rule}': {decision.reason}\nArguments: {_preview(request.arguments)}")
        self.history.bump(request.host.session_id, "approvals")
        answer, detail = await self.approvals.ask(request, message)
        decision.approval = answer
        if answer == "approved":
            self.approvals.remember(key, decision.approval_ttl if decision.approval_ttl is not None else self.policies.approval_ttl)
            return decision.became("allow", f"approved by the user ({decision.reason})")
        self.history.bump(request.host.session_id, "refusals")
        return decision.became("deny", f"{decision.reason}; approval required, but {detail}")

    # ----------------------------------------------------------------- results

    def _screen(self, request: MediatedRequest, result: Any, profile: ToolProfile | None, decision: Decision | None,
                redact: list[Rule] | None = None) -> Any:
        screening = Screening(self.detectors["output_credentials"], self.detectors["output_injection"])
        if redact:
            screening.patterns = tuple(p for r in redact for p in r.redact_output)
            screening.values = tuple(str(request.arguments[a]) for r in redact for a in r.redact_arguments
                                     if a in request.arguments and len(str(request.arguments[a])) >= 4)
        if result is None or not screening.active:
            return result
        screened = screen_result(result, screening)
        if not screening.found:
            return screened
        rule = "detector:" + screening.found[0]["detector"]
        if screening.block:
            refusal = decision or Decision("deny", rule, "", path="fast")
            refusal.action, refusal.rule = "deny", rule
            refusal.reason = ("the result carried content this gateway does not pass on "
                              f"({', '.join(sorted({f['kind'] for f in screening.found}))})")
            refusal.findings += screening.found
            if decision is None:  # the slow path records its one audit row when the call is done
                self._record(request, profile, refusal, "blocked")
            return self._withhold(request, profile, refusal)
        note = Decision("redact", rule, f"{len(screening.found)} finding(s) removed from the result",
                        path="fast" if decision is None else "slow", findings=screening.found)
        request.trail.append(_trap(note, profile))
        if decision is None and profile is not None:  # the fast path audits only what it changed
            self._record(request, profile, note, "ok")
        elif decision is not None:
            decision.findings += screening.found
        return _with_meta(screened, note)

    def _cap_result(self, request: MediatedRequest, profile: ToolProfile, facts: CallFacts, decision: Decision,
                    result: Any) -> Any:
        caps = [(l.max_result_bytes, l.id) for l in profile.limits if l.max_result_bytes and l.match.matches(facts)]  # noqa: E741
        if self.policies.max_result_bytes:
            caps.append((self.policies.max_result_bytes, "default"))
        if not caps or result is None:
            return result
        cap, ident = min(caps)
        size = content_bytes(result)
        if size <= cap:
            return result
        decision.action, decision.rule = "deny", f"limit:{ident}"
        decision.reason = f"the result is {size} bytes, over the {cap}-byte cap"
        return self._withhold(request, profile, decision)

    # ----------------------------------------------------------------- requests to the host

    def _check_sampling(self, request: MediatedRequest) -> None:
        texts = [getattr(m.content, "text", "") for m in getattr(request.params, "messages", [])
                 if not isinstance(m.content, list)]
        texts.append(getattr(request.params, "system_prompt", None) or "")
        found = [f for text in texts if text for f in outputs.injection(text)]
        if not found:
            return
        decision = Decision("deny" if self.detectors["sampling_injection"] == "deny" else "log",
                            "detector:sampling-injection", "the server's request tries to instruct the host's model: "
                            + found[0].describe(), findings=[f.as_json() for f in found])
        request.trail.append(_trap(decision, None))
        self._record(request, None, decision, "blocked" if decision.action == "deny" else "ok")
        if decision.action == "deny":
            raise MCPError(code=INVALID_REQUEST, message=f"fmos-mcp refused this sampling request: {decision.reason}")

    # ----------------------------------------------------------------- decisions

    def _refuse(self, request: MediatedRequest, profile: ToolProfile | None, decision: Decision) -> Any:
        """Before the call: it does not run."""
        decision.action = "deny"
        request.trail.append(_trap(decision, profile))
        self._record(request, profile, decision, "blocked")
        log.info("call blocked", tool=request.name, rule=decision.rule, tenant=request.host.tenant)
        return blocked(decision, request.name or "")

    def _withhold(self, request: MediatedRequest, profile: ToolProfile | None, decision: Decision) -> Any:
        """After the call: its result is not passed on (a tool gets the refusal as its result, a resource read
        or prompt an error); the caller records the audit row."""
        request.trail.append(_trap(decision, profile))
        log.info("result withheld", name=request.name, rule=decision.rule, tenant=request.host.tenant)
        if request.method != "tools/call":
            raise MCPError(code=INTERNAL_ERROR, message=f"fmos-mcp withheld this result: {decision.reason} "
                                                        f"(rule {decision.rule})")
        return blocked(decision, request.name or "")

    def _record(self, request: MediatedRequest, profile: ToolProfile | None, decision: Decision, outcome: str) -> None:
        if decision.action != "deny" and not any(t.service == self.name for t in request.trail):
            request.trail.append(_trap(decision, profile))
        host = request.host
        if decision.action == "deny":
            self.history.bump(host.session_id, "denies")
        self.audit.record(
            tenant=host.tenant, session=host.session_id, transport=host.transport, roles=list(host.roles),
            method=request.method, server=request.server, tool=request.name, target=request.target,
            classes=sorted(profile.classes) if profile else None, path=decision.path, action=decision.action,
            rule=decision.rule, reason=decision.reason, findings=decision.findings, judge=decision.judge,
            arguments_sha256=_digest(request.arguments), argument_keys=sorted(request.arguments), outcome=outcome,
        )


def _trap(decision: Decision, profile: ToolProfile | None) -> TrapRecord:
    snapshot: dict[str, Any] = {"path": decision.path, "rule": decision.rule}
    if profile is not None:
        snapshot["classes"] = sorted(profile.classes)
    if decision.findings:
        snapshot["findings"] = _finding_kinds(decision.findings)
    if decision.judge:
        snapshot["judge"] = {k: decision.judge[k] for k in ("id", "verdict", "confidence") if k in decision.judge}
    for name in ("features", "undecided", "learned", "approval"):
        if getattr(decision, name) is not None:
            snapshot[name] = getattr(decision, name)
    return TrapRecord(TrapKind.TRUST, "trust", decision.action, decision.reason[:200], snapshot)


def _with_meta(result: Any, decision: Decision) -> Any:
    meta = dict(getattr(result, "meta", None) or {})
    meta[DECISION_META] = decision.meta()
    return result.model_copy(update={"meta": meta})


def _finding_kinds(findings: list[dict[str, Any]]) -> list[str]:
    return sorted({f"{f['detector']}/{f['kind']}" for f in findings})


def _digest(arguments: Any) -> str:
    return hashlib.sha256(json.dumps(dict(arguments or {}), sort_keys=True, default=str).encode()).hexdigest()


def _preview(arguments: Any) -> str:
    return secrets.redacted_json(dict(arguments or {}), 400)


