"""Build bench/security/data/realworld_tools.json: tool definitions of two widely used MCP servers, a
supplementary benign set for part 1 (false positives on long, instruction-rich real descriptions).

- github/github-mcp-server: the tool snapshots its own tests keep (pkg/github/__toolsnaps__/*.snap), which
  are the definitions the server lists, verbatim (MIT license);
- microsoft/playwright-mcp: the tool reference its README generates from the code (update-readme.js):
  title, description, parameters and read-only flag, turned back into definitions (Apache-2.0 license).

Run with local git mirrors of both repositories (paths as arguments); the bench reads the JSON and skips this
set when it is absent (the root .gitignore currently leaves bench/security/data/ out of the repository):
    .venv/bin/python bench/security/build_realworld.py GITHUB_MCP_GIT_DIR PLAYWRIGHT_MCP_GIT_DIR
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("data") / "realworld_tools.json"


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, *args], check=True, capture_output=True, text=True).stdout


def github(repo: str) -> tuple[str, list[dict[str, Any]]]:
    commit = git(repo, "rev-parse", "HEAD").strip()
    names = [n for n in git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines() if "/__toolsnaps__/" in n]
    return commit, [json.loads(git(repo, "show", f"HEAD:{n}")) for n in sorted(names)]


_TYPES = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean", "array": "array",
          "object": "object"}


def playwright(repo: str) -> tuple[str, list[dict[str, Any]]]:
    commit = git(repo, "rev-parse", "HEAD").strip()
    readme = git(repo, "show", "HEAD:README.md")
    tools = []
    for block in re.split(r"\n- \*\*", readme)[1:]:
        name = block.split("**", 1)[0]
        title = re.search(r"\n  - Title: (.*)", block)
        desc = re.search(r"\n  - Description: (.*)", block)
        if not (title and desc and re.fullmatch(r"[a-z_]+", name)):
            continue
        props: dict[str, Any] = {}
        required = []
        for pname, ptype, optional, pdesc in re.findall(r"\n    - `(\w+)` \((\w+)(, optional)?\): (.*)", block):
            props[pname] = {"type": _TYPES.get(ptype, "string"), "description": pdesc}
            if not optional:
                required.append(pname)
        read_only = "Read-only: **true**" in block
        tool: dict[str, Any] = {"name": name, "title": title.group(1), "description": desc.group(1),
                                "inputSchema": {"type": "object", "properties": props},
                                "annotations": {"title": title.group(1), "readOnlyHint": read_only}}
        if required:
            tool["inputSchema"]["required"] = required
        tools.append(tool)
    return commit, tools


def main() -> None:
    gh_commit, gh_tools = github(sys.argv[1])
    pw_commit, pw_tools = playwright(sys.argv[2])
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({
        "sources": {
            "github": {"repo": "github/github-mcp-server", "commit": gh_commit, "license": "MIT",
                       "path": "pkg/github/__toolsnaps__/*.snap"},
            "playwright": {"repo": "microsoft/playwright-mcp", "commit": pw_commit, "license": "Apache-2.0",
                           "path": "README.md (generated tool reference)"},
        },
        "tools": {"github": gh_tools, "playwright": pw_tools},
    }, indent=1, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(gh_tools)} GitHub tools, {len(pw_tools)} Playwright tools")


if __name__ == "__main__":
    main()
