"""Reasoning levels: one abstract setting, mapped onto whatever knob a backend has.

An application (or a route) asks for `off | low | medium | high`, or for an explicit thinking budget in tokens.
Each backend declares its `knob` in the `models` policy section; `apply` writes that knob into the body of an
OpenAI-compatible chat completion request and returns a record of what it did (kept on the `Generation` and in
the routing record, so a later learned router sees the level that was really applied).

| asked    | `effort`: `reasoning_effort` | `budget_tokens`: `thinking`                   | `thinking_switch`: `enable_thinking` | `prompted`: system text            | `none` |
|----------|------------------------------|-----------------------------------------------|--------------------------------------|------------------------------------|--------|
| off      | `minimal`                    | `{"type": "disabled"}`                        | `false`                              | answer directly                    | -      |
| low      | `low`                        | `{"type": "enabled", "budget_tokens": 1024}`  | `true`                               | steps in at most 30 words          | -      |
| medium   | `medium`                     | `{"type": "enabled", "budget_tokens": 4096}`  | `true`                               | steps in at most 80 words          | -      |
| high     | `high`                       | `{"type": "enabled", "budget_tokens": 16384}` | `true`                               | steps in at most 200 words         | -      |
| N tokens | smallest level whose budget >= N (0: `minimal`) | `{"type": "enabled", "budget_tokens": N}` (0: disabled) | N > 0            | steps in at most 3N/4 words (0: directly) | - |

- `effort`: OpenAI reasoning models (o-series, gpt-5), vLLM and hosted APIs that take `reasoning_effort`. They
  cannot switch reasoning off, so `off` is `minimal`, the least there is. Those models refuse `max_tokens`, so
  the knob sends `max_completion_tokens` instead.
- `budget_tokens`: Anthropic-style extended thinking (its OpenAI-compatible endpoint takes `thinking`). The
  thinking counts against `max_tokens`, so the budget is clamped to `max_tokens - 1`, leaving room for an answer.
- `thinking_switch`: chat templates with a thinking switch (Qwen3, SmolLM3, ... on vLLM, llama.cpp, SGLang),
  sent as `chat_template_kwargs: {enable_thinking: ...}` (other template kwargs are kept).
- `prompted`: a model with no reasoning mode of its own (SmolLM2, most small local models) is told in the system
  text: `off` asks for the answer alone; the other levels ask it to reason step by step in at most so many
  words, then to end on a line `Answer: ...`. The allowance is clamped to what `max_tokens` leaves after the
  answer line (3 words per 4 tokens); clamped to nothing, it asks for the answer alone. The record keeps the
  words and the instruction sent.
- `none`: the backend has no knob, or it is left alone (MCP sampling to the host): nothing is sent and the record
  says `applied: false`.

With no level and no budget requested, nothing is sent: the backend's own default applies.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

LEVELS = ("off", "low", "medium", "high")
KNOBS = ("effort", "budget_tokens", "thinking_switch", "prompted", "none")

# The one table. A budget knob's budget per level doubles as the scale an explicit budget is read on.
TABLE: dict[str, dict[str, Any]] = {
    "effort": {"off": "minimal", "low": "low", "medium": "medium", "high": "high"},
    "budget_tokens": {"off": 0, "low": 1024, "medium": 4096, "high": 16384},
    "thinking_switch": {"off": False, "low": True, "medium": True, "high": True},
    "prompted": {"off": 0, "low": 30, "medium": 80, "high": 200},  # words of reasoning allowed
    "none": {},
}
DIRECT = "Answer directly: give only the final answer, with no explanation."
STEPS = ("Think step by step in at most {words} words, then write the final answer on its own last line "
         "as 'Answer: <answer>'.")
ANSWER_TOKENS = 16  # what a prompted allowance leaves of max_tokens for the final answer line


@dataclass(frozen=True, slots=True)
class ReasoningSetting:
    """What was asked for: a level, an explicit budget in tokens, or neither (the backend's default)."""

    level: str | None = None
    budget_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.level is not None and self.level not in LEVELS:
            raise ValueError(f"reasoning level must be one of {', '.join(LEVELS)}, not {self.level!r}")
        if self.budget_tokens is not None and self.budget_tokens < 0:
            raise ValueError(f"a reasoning budget can't be negative ({self.budget_tokens})")

    @classmethod
    def parse(cls, value: Any) -> ReasoningSetting:
        """From what a policy or a caller writes: `"high"`, `2048`, `None`, or `{level: ..., budget_tokens: ...}`.
        YAML reads a bare `off` as false, so `False` means off too."""
        if value is None or isinstance(value, ReasoningSetting):
            return value or cls()
        if value is False:
            return cls("off")
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(budget_tokens=value)
        if isinstance(value, str):
            text = value.strip().lower()
            return cls(budget_tokens=int(text)) if text.isdigit() else cls(text)
        if isinstance(value, dict):
            return cls(value.get("level"), value.get("budget_tokens"))
        raise ValueError(f"a reasoning setting is a level ({', '.join(LEVELS)}) or a token budget, not {value!r}")

    @property
    def requested(self) -> bool:
        return self.level is not None or self.budget_tokens is not None

    def effective_level(self) -> str | None:
        """The level, or the smallest one whose budget covers the explicit budget."""
        if self.budget_tokens is None:
            return self.level
        for level in LEVELS:
            if TABLE["budget_tokens"][level] >= self.budget_tokens:
                return level
        return "high"

    def label(self) -> str:
        return f"{self.budget_tokens} tokens" if self.budget_tokens is not None else (self.level or "default")


def apply(knob: str, setting: ReasoningSetting | None, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write `setting` into a copy of the chat completion `body` through `knob`; return (body, record)."""
    if knob not in KNOBS:
        raise ValueError(f"unknown reasoning knob {knob!r}; one of {', '.join(KNOBS)}")
    setting = setting or ReasoningSetting()
    record: dict[str, Any] = {"knob": knob, "requested": setting.label(), "applied": False}
    if not setting.requested or knob == "none":
        return body, record
    body = copy.deepcopy(body)
    record["applied"] = True
    if knob == "effort":
        record["reasoning_effort"] = body["reasoning_effort"] = TABLE["effort"][setting.effective_level() or "medium"]
        if "max_tokens" in body:
            body["max_completion_tokens"] = body.pop("max_tokens")
    elif knob == "budget_tokens":
        budget = _budget(setting, body.get("max_tokens"))
        body["thinking"] = {"type": "enabled", "budget_tokens": budget} if budget else {"type": "disabled"}
        record["budget_tokens"] = budget
    elif knob == "prompted":
        body, record["words"], record["instruction"] = _prompted(setting, body)
    else:  # thinking_switch
        on = setting.budget_tokens > 0 if setting.budget_tokens is not None else TABLE["thinking_switch"][setting.level]
        body["chat_template_kwargs"] = {**body.get("chat_template_kwargs", {}), "enable_thinking": on}
        record["enable_thinking"] = on
    return body, record


def _budget(setting: ReasoningSetting, max_tokens: int | None) -> int:
    budget = setting.budget_tokens if setting.budget_tokens is not None else TABLE["budget_tokens"][setting.level]
    if max_tokens is not None:
        budget = min(budget, max(max_tokens - 1, 0))
    return budget


def _prompted(setting: ReasoningSetting, body: dict[str, Any]) -> tuple[dict[str, Any], int, str]:
    """The instruction for a model without a reasoning mode, added to the system text (or as one)."""
    words = setting.budget_tokens * 3 // 4 if setting.budget_tokens is not None else TABLE["prompted"][setting.level]
    if body.get("max_tokens") is not None:
        words = min(words, max(body["max_tokens"] - ANSWER_TOKENS, 0) * 3 // 4)
    instruction = STEPS.format(words=words) if words else DIRECT
    messages = body.get("messages") or []
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = f"{messages[0]['content']}\n\n{instruction}"
    else:
        body["messages"] = [{"role": "system", "content": instruction}, *messages]
    return body, words, instruction
