"""The data plane assembled: the context policy, the artifact store, paging, tool search, skills, memory."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from pathlib import Path

import anyio
import anyio.abc
import numpy as np
import anyio.to_thread

from fmos_mcp import logs
from fmos_mcp.context.artifacts import ArtifactStore
from fmos_mcp.context.config import ContextConfig
from fmos_mcp.context.embeddings import MODEL_NAME, load_embedder, model_dir, semantic_enabled
from fmos_mcp.context.memory import MemoryStore
from fmos_mcp.context.paging import Paging
from fmos_mcp.context.service import ContextService
from fmos_mcp.context.skills import load_skill_dirs
from fmos_mcp.context.tools import ContextTools
from fmos_mcp.context.toolsearch import ToolSearch
from fmos_mcp.gateway.catalog import ServerListing
from fmos_mcp.gateway.own import OWN_SERVER, OwnServices
from fmos_mcp.state.db import StateDB

log = logs.get("fmos.context")
PURGE_EVERY = 600.0  # seconds between sweeps of expired artifacts


class LazyEmbedder:
    """The embedding model, loaded on first use: loading takes seconds, and a stdio host is waiting for
    `initialize` at start-up. Only offered when the extra is installed (checked without importing it)."""

    model = MODEL_NAME
    dim = 384

    @classmethod
    def if_available(cls) -> LazyEmbedder | None:
        if not semantic_enabled() or importlib.util.find_spec("sentence_transformers") is None or model_dir() is None:
            return None
        return cls()

    def embed(self, texts: list[str]) -> np.ndarray:
        embedder = load_embedder()
        if embedder is None:  # installed but broken (logged once): semantic ranks contribute nothing
            return np.zeros((len(texts), self.dim), dtype=np.float32)
        return embedder.embed(texts)


@dataclass
class DataPlane:
    config: ContextConfig
    store: ArtifactStore
    service: ContextService
    tools: ContextTools

    @classmethod
    def build(cls, section: dict | None, db: StateDB, policies_dir: Path | None, own: OwnServices,
              skills_dir: Path | None = None) -> DataPlane:
        """`skills_dir`: where the active skills version lives, in place of `skills/` beside the policies."""
        config = ContextConfig.from_section(section)
        store = ArtifactStore(db, config.retention)
        embedder = LazyEmbedder.if_available()
        base = policies_dir.parent if policies_dir else Path.cwd()  # skills/ sits beside policies/
        dirs = [p if p.is_absolute() else base / p for p in map(Path, config.skill_paths)]
        if skills_dir is not None:
            dirs = [skills_dir if d == base / "skills" else d for d in dirs]
        skills = load_skill_dirs(dirs)
        service = ContextService(config, store, Paging(config.max_active_tools), set())
        tools = ContextTools(service, store, ToolSearch(embedder, db), MemoryStore(db, embedder), skills,
                             config.skills_from_prompts)
        own.add(tools.own_tools(), tools.own_resources())
        service.meta_tools = own.meta_tools
        log.info("data plane ready", exposure=config.exposure, skills=len(skills), semantic=embedder is not None)
        return cls(config, store, service, tools)

    def strip_output_schemas(self, listings: list[ServerListing]) -> list[ServerListing]:
        """A catalog transform: a tool whose result may be offloaded is listed without its outputSchema, since
        the pointer that replaces a large structuredContent cannot conform to it (clients validate)."""
        out = []
        for listing in listings:
            tools = [t.model_copy(update={"output_schema": None})
                     if t.output_schema is not None and self.config.threshold_for(listing.server, t.name) is not None
                     else t for t in listing.tools]
            out.append(listing if listing.server == OWN_SERVER else dc_replace(listing, tools=tools))
        return out

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Retention: expired artifacts are deleted (reading one says it expired until then)."""
        task_status.started()
        while True:
            removed = await anyio.to_thread.run_sync(self.store.purge_expired)
            if removed:
                log.info("expired artifacts purged", count=removed)
            await anyio.sleep(PURGE_EVERY)
