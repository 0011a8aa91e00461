"""Agent Skills: directories with a `SKILL.md` (YAML front matter `name`, `description`; a Markdown body) and
optional `scripts/`, `references/`, `assets/`. Only the header (name and description, about 100 tokens) is
in the host's context until the model loads a skill; its files are resources read on demand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fmos_mcp import logs

log = logs.get("fmos.skills")

SKILL_FILE = "SKILL.md"
SKILL_URI = "fmos://skills/"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n?(.*)\Z", re.S)
MAX_FILE = 1 << 20  # a skill file larger than this is listed but not served


class SkillError(ValueError):
    pass


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    body: str
    source: str  # a directory, or "prompt:SERVER__name"
    root: Path | None = None
    allowed_tools: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default=())  # relative paths under scripts/, references/, assets/

    def header(self) -> str:
        return f"{self.name}: {self.description}"

    def uri(self, path: str = SKILL_FILE) -> str:
        return f"{SKILL_URI}{self.name}/{path}"

    def read(self, path: str) -> bytes:
        """A file of this skill, by its path relative to the skill's directory (never outside it)."""
        if self.root is None:
            if path == SKILL_FILE:
                return self.body.encode()
            raise SkillError(f"skill '{self.name}' has no file '{path}'")
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root.resolve()) or not target.is_file():
            raise SkillError(f"skill '{self.name}' has no file '{path}'")
        if target.stat().st_size > MAX_FILE:
            raise SkillError(f"skill file '{path}' of '{self.name}' is larger than {MAX_FILE} bytes")
        return target.read_bytes()


def parse_skill(path: Path) -> Skill:
    """One skill directory; raises SkillError naming the file and key that are wrong."""
    file = path / SKILL_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SkillError(f"{file}: cannot read: {exc}") from None
    match = _FRONT.match(text)
    if match is None:
        raise SkillError(f"{file}: no YAML front matter (--- name/description ---) at the top")
    try:
        front = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise SkillError(f"{file}: front matter is not valid YAML: {exc}") from None
    if not isinstance(front, dict):
        raise SkillError(f"{file}: front matter must be a mapping")
    name, description = front.get("name"), front.get("description")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SkillError(f"{file}: key 'name' must be lowercase letters, digits and hyphens (got {name!r})")
    if not isinstance(description, str) or not description.strip():
        raise SkillError(f"{file}: key 'description' is required")
    allowed = front.get("allowed-tools") or ()
    if isinstance(allowed, str):
        allowed = allowed.split()
    files = tuple(
        str(p.relative_to(path)) for sub in ("scripts", "references", "assets") if (path / sub).is_dir()
        for p in sorted((path / sub).rglob("*")) if p.is_file()
    )
    return Skill(name, " ".join(description.split()), match.group(2).strip(), str(path), path,
                 tuple(str(t) for t in allowed), files)


def load_skill_dirs(paths: list[Path]) -> dict[str, Skill]:
    """Every skill under the given directories (a directory may be a skill itself, or hold skills).
    A broken skill is reported and skipped; the first of two with one name wins."""
    skills: dict[str, Skill] = {}
    for base in paths:
        if not base.is_dir():
            continue
        candidates = [base] if (base / SKILL_FILE).is_file() else sorted(p for p in base.iterdir() if (p / SKILL_FILE).is_file())
        for directory in candidates:
            try:
                skill = parse_skill(directory)
            except SkillError as exc:
                log.error("skill skipped", detail=str(exc))
                continue
            if skill.name in skills:
                log.warning("skill name taken; skipped", skill=skill.name, path=str(directory))
                continue
            skills[skill.name] = skill
    return skills


def prompt_skill(exposed_name: str, description: str | None) -> Skill:
    """A downstream prompt offered as a skill: its body is the prompt's messages, fetched when loaded."""
    name = re.sub(r"[^a-z0-9-]+", "-", exposed_name.lower()).strip("-")[:64] or "prompt"
    return Skill(name, " ".join((description or f"the prompt {exposed_name}").split()), "", f"prompt:{exposed_name}")
