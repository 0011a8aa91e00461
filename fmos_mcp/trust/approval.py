"""require_approval: ask the user through elicitation, and remember a yes per tenant for a while."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types

from fmos_mcp.traps.request import MediatedRequest

SCHEMA = {
    "type": "object",
    "properties": {"approve": {"type": "boolean", "title": "Approve this call?", "default": False}},
    "required": ["approve"],
}


@dataclass
class Approvals:
    _granted: dict[tuple[str, ...], float] = field(default_factory=dict)  # key -> expiry (monotonic)

    def remembered(self, key: tuple[str, ...]) -> bool:
        expiry = self._granted.get(key)
        if expiry is None:
            return False
        if expiry < time.monotonic():
            del self._granted[key]
            return False
        return True

    def remember(self, key: tuple[str, ...], ttl: float) -> None:
        if ttl > 0:
            if len(self._granted) > 10_000:
                now = time.monotonic()
                self._granted = {k: v for k, v in self._granted.items() if v >= now}
            self._granted[key] = time.monotonic() + ttl

    async def ask(self, request: MediatedRequest, message: str) -> tuple[str, str]:
        """('approved' | 'refused' | 'unavailable', detail)."""
        if request.channel is None or not request.host.capabilities.elicitation_form:
            return "unavailable", "this host cannot ask the user (it did not declare form elicitation)"
        params = types.ElicitRequestFormParams(message=message, requested_schema=SCHEMA)
        try:
            result: Any = await request.channel.request("elicitation/create", params)
        except Exception as exc:  # noqa: BLE001 - a host that fails to ask has not approved
            return "unavailable", f"asking the user failed: {exc}"
        if result.action == "accept" and (result.content or {}).get("approve") is True:
            return "approved", "the user approved"
        return "refused", f"the user {'declined' if result.action != 'accept' else 'did not approve'}"
