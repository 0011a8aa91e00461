"""Where fmos-mcp keeps its configuration and state when no directory is given."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "fmos-mcp"


def user_config_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / APP
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / APP


def user_state_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / APP / "state"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP / "state"
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / APP


def default_dir(local: str, fallback: Path) -> Path:
    """`./local` when it exists in the working directory, else the user's directory."""
    here = Path.cwd() / local
    return here if here.is_dir() else fallback / local
