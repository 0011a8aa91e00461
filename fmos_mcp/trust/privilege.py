"""Privilege classes of tools, inferred from annotations, names, descriptions and input schemas.

Inference is conservative: a class is added whenever any signal points to it, annotations can add classes
but never remove what the name or schema says (a server may lie about `readOnlyHint`), and a tool is
`read` only when nothing else was found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Privilege(StrEnum):
    # Least to most privileged: a tool's primary class is the last of its classes in this order.
    READ = "read"
    WRITE = "write"
    NETWORK = "network"
    DESTRUCTIVE = "destructive"
    CREDENTIAL = "credential"
    EXEC = "exec"


SENSITIVE = frozenset({Privilege.EXEC, Privilege.CREDENTIAL, Privilege.DESTRUCTIVE})
ORDER = list(Privilege)


def _vocab(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words of a tool's name (and of its description's first words) that signal a class.
_WORDS: dict[Privilege, frozenset[str]] = {
    Privilege.EXEC: _vocab("exec execute run shell command cmd eval script spawn invoke bash sh powershell ssh"),
    Privilege.DESTRUCTIVE: _vocab("delete remove rm drop destroy purge kill terminate wipe drain evict reset truncate erase revoke uninstall "
        "shutdown reboot restart stop disable deprovision cordon format overwrite"),
    Privilege.CREDENTIAL: _vocab("credential credentials secret secrets password passwords token tokens apikey rotate vault login "
        "authenticate oauth certificate sudo privilege privileges grant iam permission permissions"),
    Privilege.NETWORK: _vocab("fetch http https url request download upload send email mail post webhook curl wget browse navigate "
        "notify slack publish forward"),
    Privilege.WRITE: _vocab("write create update set put edit move rename deploy scale provision install patch apply add insert "
        "save store modify change configure enable commit push merge upsert append copy mkdir touch assign "
        "schedule submit start trigger"),
}
# Input properties whose presence signals a class.
_PROPS: dict[Privilege, re.Pattern[str]] = {
    Privilege.EXEC: re.compile(r"^(command|cmd|script|shell|code|exec|argv|commandline)$", re.I),
    Privilege.NETWORK: re.compile(r"^(url|uri|endpoint|webhook|href|recipient|to|email)$", re.I),
    Privilege.CREDENTIAL: re.compile(r"(password|passwd|secret|token|api_?key|private_?key|credential)", re.I),
}
_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


@dataclass(frozen=True, slots=True)
class Classification:
    classes: frozenset[Privilege]
    reasons: tuple[str, ...]

    @property
    def primary(self) -> Privilege:
        return max(self.classes, key=ORDER.index)

    @property
    def sensitive(self) -> bool:
        return bool(self.classes & SENSITIVE)

    def as_json(self) -> dict[str, Any]:
        return {"class": self.primary.value, "classes": sorted(c.value for c in self.classes), "reasons": list(self.reasons)}


def words(text: str) -> list[str]:
    return [w.lower() for w in _SPLIT.split(text) if w]


def classify(name: str, description: str | None, input_schema: dict[str, Any] | None, annotations: Any) -> Classification:
    found: dict[Privilege, str] = {}

    def add(cls: Privilege, why: str) -> None:
        found.setdefault(cls, why)

    _from_annotations(annotations, add)
    name_words = words(name)
    for cls, vocab in _WORDS.items():
        hit = next((w for w in name_words if w in vocab), None)
        if hit:
            add(cls, f"name word '{hit}'")
    lead = words(_first_sentence(description or ""))[:1]  # the imperative: "Deletes ...", "Run a shell command ..."
    for cls in (Privilege.EXEC, Privilege.DESTRUCTIVE, Privilege.CREDENTIAL):
        hit = next((w for w in lead if w in _WORDS[cls] or w.rstrip("s") in _WORDS[cls]), None)
        if hit:
            add(cls, f"description begins with '{hit}'")
    for prop in ((input_schema or {}).get("properties") or {}):
        for cls, pattern in _PROPS.items():
            if pattern.search(prop):
                add(cls, f"input '{prop}'")
    if not found:
        add(Privilege.READ, "no write, exec, network or credential signal")
    return Classification(frozenset(found), tuple(f"{c.value}: {why}" for c, why in found.items()))


def _from_annotations(annotations: Any, add: Any) -> None:
    if annotations is None:
        return
    get = (lambda k: annotations.get(k)) if isinstance(annotations, dict) else (lambda k: getattr(annotations, k, None))
    read_only = get("read_only_hint") if not isinstance(annotations, dict) else get("readOnlyHint")
    destructive = get("destructive_hint") if not isinstance(annotations, dict) else get("destructiveHint")
    open_world = get("open_world_hint") if not isinstance(annotations, dict) else get("openWorldHint")
    if read_only is False:
        add(Privilege.WRITE, "annotation readOnlyHint=false")
        if destructive is not False:  # the spec's default for a tool that writes is destructive
            add(Privilege.DESTRUCTIVE, "annotation destructiveHint" + ("=true" if destructive else " (default true)"))
    elif destructive is True:
        add(Privilege.DESTRUCTIVE, "annotation destructiveHint=true")
    if open_world is True:
        add(Privilege.NETWORK, "annotation openWorldHint=true")


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0]


def override(base: Classification, classes: list[str], source: str) -> Classification:
    """A policy's classes for a tool. Callers check that no sensitive class is dropped without justification."""
    chosen = frozenset(Privilege(c) for c in classes)
    return Classification(chosen, (f"set by {source}",) + base.reasons)
