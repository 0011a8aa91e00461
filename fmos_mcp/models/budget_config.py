"""The `budgets` policy section (placeholder until the model plane lands)."""

from typing import Any

SCHEMA: dict[str, Any] = {"type": "object"}


def check(section: dict[str, Any]) -> list[tuple[str, str, str]]:
    return []
