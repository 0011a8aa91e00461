"""Tool search quality and speed: fmos_mcp.context.search.HybridIndex on MetaTool, and latency on larger
synthetic catalogs.

Quality: the 199 MetaTool tools (plugin_des.json, name -> description) are the catalog; every (query, tool)
pair of all_clean_data.csv is a single-tool query. The pairs are split once into two fixed random halves
(seed 7): "dev" is the half the fusion weights were tuned on, "held-out" the other. Methods:
  bm25      FTS5 BM25 alone (name splitting, stopwords, field weights), as with FMOS_SEMANTIC=0
  minilm    plain MiniLM cosine with the whole description (no views, no prior, no BM25)
  semantic  the index's semantic score alone (whole + clauses + name, breadth prior), no BM25
  hybrid    the index as shipped (semantic + BM25)
plus ablations of the hybrid (one mechanism off at a time) on both halves.

Speed: catalogs of 50, 500 and 5,000 tools. 50 is a random subset of the MetaTool tools; 500 and 5,000 add
synthetic tools: each MetaTool tool becomes a server (`name__operation`) whose operations are made from
common MCP verbs (list, get, search, create, update, delete, export, ...) and phrases of its own description,
so distractors are close to the real tools, plus, when bench/security/data/realworld_tools.json is present,
the real tool definitions of github-mcp-server and playwright-mcp. Measured: build time cold (empty vector
cache) and warm (a new index over the same state DB: nothing re-embedded), search latency p50/p95 for
queries already embedded (LRU hit) and for new queries (embedding included), BM25 alone, and on the 5,000
catalog the rank of each query's real tool (tool hit@5) and server (server hit@5, by `groups`).

    .venv/bin/python bench/context/search_quality.py [--sample N] [--latency-queries N] [--skip-5000]

--sample N evaluates a fixed random sample of N pairs per half instead of all (all by default: embedding
20,614 queries takes a few minutes on 2 cores). Writes bench/context/search_results.json and
bench/context/SEARCH.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fmos_mcp.context.embeddings import EmbeddingCache, load_embedder  # noqa: E402
from fmos_mcp.context.search import STOPWORDS, Doc, HybridIndex, Weights, clauses, words  # noqa: E402
from fmos_mcp.state.db import StateDB  # noqa: E402

DATA = Path(os.environ.get("FMOS_BENCH_DATA") or ROOT.parent / "shared" / "data").resolve() / "metatool"
OUT_JSON = Path(__file__).with_name("search_results.json")
OUT_MD = Path(__file__).with_name("SEARCH.md")
REALWORLD = ROOT / "bench" / "security" / "data" / "realworld_tools.json"
SPLIT_SEED = 7


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Pair:
    query: str
    tool: str


def have_data() -> bool:
    return (DATA / "plugin_des.json").is_file() and (DATA / "all_clean_data.csv").is_file()


def load_tools() -> dict[str, str]:
    return json.loads((DATA / "plugin_des.json").read_text())


def load_pairs() -> list[Pair]:
    with (DATA / "all_clean_data.csv").open(newline="") as f:
        return [Pair(r["Query"].strip(), r["Tool"]) for r in csv.DictReader(f) if r["Query"].strip()]


def split(pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """Two fixed random halves: dev (tuned on) and held-out."""
    order = list(range(len(pairs)))
    random.Random(SPLIT_SEED).shuffle(order)
    half = len(order) // 2
    return [pairs[i] for i in sorted(order[:half])], [pairs[i] for i in sorted(order[half:])]


def sample(pairs: list[Pair], n: int | None) -> list[Pair]:
    if n is None or n >= len(pairs):
        return pairs
    return random.Random(SPLIT_SEED + 1).sample(pairs, n)


def metatool_docs(tools: dict[str, str]) -> list[Doc]:
    return [Doc(name, description) for name, description in tools.items()]


# ----------------------------------------------------------------------------- quality


def evaluate(index: HybridIndex, pairs: list[Pair], k: int = 5) -> dict[str, Any]:
    hit1 = hit5 = 0
    rr = 0.0
    for pair in pairs:
        ids = [h.id for h in index.search(pair.query, k=10)]
        if pair.tool in ids:
            rank = ids.index(pair.tool) + 1
            hit1 += rank == 1
            hit5 += rank <= k
            rr += 1.0 / rank
    n = len(pairs)
    return {"n": n, "hit@1": round(hit1 / n, 4), "hit@5": round(hit5 / n, 4), "mrr@10": round(rr / n, 4)}


METHODS: dict[str, Weights] = {
    "minilm": Weights(clause=0.0, name=0.0, bm25=0.0, prior=0.0),
    "semantic": replace(Weights(), bm25=0.0),
    "hybrid": Weights(),
}
ABLATIONS: dict[str, Weights] = {
    "hybrid - clauses": replace(Weights(), clause=0.0),
    "hybrid - name view": replace(Weights(), name=0.0),
    "hybrid - breadth prior": replace(Weights(), prior=0.0),
    "hybrid - bm25": replace(Weights(), bm25=0.0),
}


def quality(embedder: Any, halves: dict[str, list[Pair]], tools: dict[str, str]) -> dict[str, Any]:
    docs = metatool_docs(tools)
    results: dict[str, Any] = {}
    bm25 = HybridIndex(None)
    bm25.replace(docs)
    results["bm25"] = {name: evaluate(bm25, pairs) for name, pairs in halves.items()}
    _report("bm25", results["bm25"])
    if embedder is None:
        return results
    cache = EmbeddingCache(embedder)
    queries = EmbeddingCache(embedder, None, max_memory=sum(len(p) for p in halves.values()) + 16, shared=False)
    t0 = time.perf_counter()
    for pairs in halves.values():
        HybridIndex(cache=cache, queries=queries).warm([p.query for p in pairs])
    print(f"  (embedded {queries.computed} queries in {time.perf_counter() - t0:.0f} s)", flush=True)
    for name, weights in {**METHODS, **ABLATIONS}.items():
        index = HybridIndex(cache=cache, queries=queries, weights=weights)
        index.replace(docs)
        results[name] = {half: evaluate(index, pairs) for half, pairs in halves.items()}
        _report(name, results[name])
    return results


def _report(name: str, by_half: dict[str, dict[str, Any]]) -> None:
    cells = "  ".join(
        f"{half}: hit@1 {r['hit@1']:.3f} hit@5 {r['hit@5']:.3f} mrr {r['mrr@10']:.3f}" for half, r in by_half.items()
    )
    print(f"  {name:24s} {cells}", flush=True)


# ----------------------------------------------------------------------------- synthetic catalogs

VERBS = [
    ("list", "List {nouns} available in {server}, newest first, with pagination."),
    ("get", "Get the details of one {noun} by its id."),
    ("search", "Search {nouns} by keyword, with filters for date and category."),
    ("create", "Create a new {noun}. Returns the id of the created item."),
    ("update", "Update fields of an existing {noun}."),
    ("delete", "Delete a {noun} permanently. This cannot be undone."),
    ("export", "Export {nouns} as CSV or JSON for download."),
    ("subscribe", "Subscribe to notifications when {nouns} change."),
    ("summarize", "Summarize recent {nouns} in a short report."),
    ("compare", "Compare two {nouns} side by side and highlight differences."),
    ("history", "Show the change history of a {noun}."),
    ("stats", "Return usage statistics and counts for {nouns}."),
]


def _phrases(description: str) -> list[str]:
    """Noun-ish phrases of a description: runs of one or two content words."""
    tokens = [w.lower() for w in re.findall(r"[A-Za-z]+", description)]
    content = [w for w in tokens if w not in STOPWORDS and len(w) > 3]
    pairs = [f"{a} {b}" for a, b in zip(content, content[1:], strict=False)]
    return list(dict.fromkeys(pairs + content)) or ["items"]


def synthetic_catalog(tools: dict[str, str], size: int, seed: int = 11) -> tuple[list[Doc], dict[str, str]]:
    """A catalog of `size` tools in which every MetaTool tool is present as `server__tool`; returns the docs
    and the map from MetaTool name to its id in the catalog."""
    rng = random.Random(seed)
    names = list(tools)
    if size <= len(names):
        chosen = rng.sample(names, size)
        return [Doc(n, tools[n]) for n in chosen], {n: n for n in chosen}
    docs: list[Doc] = []
    gold: dict[str, str] = {}
    for name in names:
        server = "_".join(words(name)).lower()
        gold[name] = f"{server}__{server}"
        docs.append(Doc(gold[name], tools[name], group=server))
    docs.extend(_realworld())
    servers = {n: "_".join(words(n)).lower() for n in names}
    seen = {d.id for d in docs}
    made = 0
    while len(docs) < size and made < 50 * size:  # bounded: a tiny description has few phrases
        name = names[made % len(names)]
        verb, template = VERBS[(made // len(names)) % len(VERBS)]
        made += 1
        phrase = rng.choice(_phrases(tools[name]))
        tool_id = f"{servers[name]}__{verb}_{'_'.join(phrase.split())}"[:128]
        if tool_id in seen:  # the same verb and phrase drawn twice: draw again
            continue
        seen.add(tool_id)
        text = template.format(nouns=phrase, noun=phrase.split()[-1], server=" ".join(words(name)))
        first = clauses(tools[name], 1)
        text = f"{text} {first[0]}." if first and rng.random() < 0.5 else text
        docs.append(Doc(tool_id, text, group=servers[name]))
    return docs, gold


def _realworld() -> list[Doc]:
    if not REALWORLD.is_file():
        return []
    data = json.loads(REALWORLD.read_text())
    out = []
    for server, defs in data.get("tools", {}).items():
        for d in defs:
            title = (d.get("annotations") or {}).get("title") or d.get("title") or ""
            out.append(Doc(f"{server}__{d['name']}", d.get("description") or "", group=server, title=title))
    return out


# ----------------------------------------------------------------------------- speed


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(p(0.50), 2), "p95_ms": round(p(0.95), 2), "max_ms": round(ordered[-1], 2),
            "mean_ms": round(statistics.fmean(ordered), 2), "n": len(ordered)}


def timed_searches(index: HybridIndex, queries: list[str], k: int = 10) -> dict[str, float]:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q, k=k)
        times.append((time.perf_counter() - t0) * 1000)
    return percentiles(times)


def speed(embedder: Any, tools: dict[str, str], pairs: list[Pair], sizes: list[int],
          n_queries: int) -> dict[str, Any]:
    rng = random.Random(3)
    picked = rng.sample(pairs, 3 * n_queries)
    warm_q, cold_q, bm_q = ([p.query for p in picked[i * n_queries:(i + 1) * n_queries]] for i in range(3))
    results: dict[str, Any] = {}
    for size in sizes:
        docs, gold = synthetic_catalog(tools, size)
        row: dict[str, Any] = {"tools": len(docs), "groups": len({d.group for d in docs}),
                               "loadavg_1min": round(os.getloadavg()[0], 2)}
        bm = HybridIndex(None)
        t0 = time.perf_counter()
        bm.replace(docs)
        row["bm25_build_s"] = round(time.perf_counter() - t0, 3)
        row["bm25_search"] = timed_searches(bm, bm_q)
        if embedder is not None:
            row.update(_semantic_speed(embedder, docs, gold, pairs, warm_q, cold_q))
        results[str(size)] = row
        print(f"  {size:5d} tools: {json.dumps(row)}", flush=True)
    return results


def _semantic_speed(embedder: Any, docs: list[Doc], gold: dict[str, str], pairs: list[Pair],
                    warm_q: list[str], cold_q: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = StateDB(Path(tmp))
        # Private memory tiers: the process-wide one already holds the MetaTool vectors from the quality part.
        index = HybridIndex(cache=EmbeddingCache(embedder, db, shared=False))
        t0 = time.perf_counter()
        index.replace(docs)
        row["build_cold_s"] = round(time.perf_counter() - t0, 2)
        row["texts_embedded_cold"] = index.embedded
        again = HybridIndex(cache=EmbeddingCache(embedder, db, shared=False))
        t0 = time.perf_counter()
        again.replace(docs)
        row["build_warm_db_s"] = round(time.perf_counter() - t0, 2)
        row["texts_embedded_warm"] = again.embedded
        t0 = time.perf_counter()
        index.replace(docs)
        row["rebuild_same_index_s"] = round(time.perf_counter() - t0, 2)
        db.close()
    index.warm(warm_q)
    row["search_cached_query"] = timed_searches(index, warm_q)
    row["search_new_query"] = timed_searches(index, cold_q)
    if len(docs) > len(gold) or len(docs) >= 1000:
        row["at_scale"] = _at_scale(index, gold, pairs)
    return row


def _at_scale(index: HybridIndex, gold: dict[str, str], pairs: list[Pair], n: int = 500) -> dict[str, Any]:
    """Can the real tool still be found among synthetic near-duplicates? Tool and server hit@5."""
    chosen = random.Random(5).sample([p for p in pairs if p.tool in gold], n)
    index.warm([p.query for p in chosen])
    tool5 = server5 = server_via_tools = 0
    for p in chosen:
        target = gold[p.tool]
        hits = index.search(p.query, k=5)
        tool5 += target in [h.id for h in hits]
        server = target.split("__")[0]
        server_via_tools += server in [h.group for h in hits]
        server5 += server in [g.group for g in index.groups(p.query, k=5)]
    return {"n": n, "tool_hit@5": round(tool5 / n, 4), "server_in_top5_tools": round(server_via_tools / n, 4),
            "server_hit@5_by_groups": round(server5 / n, 4)}


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=None, help="pairs per half (default: all)")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--skip-5000", action="store_true", help="latency on 50 and 500 tools only")
    parser.add_argument("--only", choices=["quality", "speed"],
                        help="run one part; the other is kept from an existing search_results.json")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the results files alone")
    args = parser.parse_args()
    if not have_data():
        print(f"MetaTool data not found at {DATA} (expected plugin_des.json and all_clean_data.csv); "
              "nothing to measure. Set FMOS_BENCH_DATA to the folder holding metatool/ to run.")
        return 0
    tools, pairs = load_tools(), load_pairs()
    dev, held = split(pairs)
    halves = {"dev": sample(dev, args.sample), "held-out": sample(held, args.sample)}
    if args.only == "speed":
        halves = {}
    t0 = time.perf_counter()
    embedder = load_embedder()
    load_s = round(time.perf_counter() - t0, 2)
    counted = ", ".join(f"{h} {len(p)}" for h, p in halves.items()) or "none (speed only)"
    print(f"embedder: {embedder.model if embedder else 'none (BM25 only)'} (load {load_s} s); "
          f"pairs: {counted}{' (sampled)' if args.sample else ''}", flush=True)
    previous = json.loads(OUT_JSON.read_text()) if args.only and OUT_JSON.is_file() else {}
    previous.pop("machine", None)  # an older format
    results: dict[str, Any] = previous | {
        "model": embedder.model if embedder else None, "model_load_s": load_s,
        "pairs": {"total": len(pairs), "dev": len(dev), "held_out": len(held)},
        "weights": Weights().__dict__ | {"fields": list(Weights().fields)},
        "cpus": os.cpu_count(),
    }
    if args.only != "speed":
        print("quality (MetaTool, 199 tools):", flush=True)
        results["evaluated"] = {h: len(p) for h, p in halves.items()}
        results["sampled"] = args.sample is not None
        results["quality"] = quality(embedder, halves, tools)
    if args.only != "quality":
        print("speed:", flush=True)
        sizes = [50, 500] if args.skip_5000 else [50, 500, 5000]
        results["speed"] = speed(embedder, tools, pairs, sizes, args.latency_queries)
    if not args.no_write:
        OUT_JSON.write_text(json.dumps(results, indent=1) + "\n")
        OUT_MD.write_text(markdown(results))
        print(f"wrote {OUT_JSON.relative_to(ROOT)} and {OUT_MD.relative_to(ROOT)}")
    return 0


# ----------------------------------------------------------------------------- summary


NOTES = """\
## How to read this

- Catalog for quality: the 199 MetaTool tools (`plugin_des.json`), id = tool name, text = description.
  Queries: every (query, tool) pair of `all_clean_data.csv` (single-tool queries), split once into two random
  halves (seed 7). The fusion weights (`Weights` in `fmos_mcp/context/search.py`) were tuned on **dev** only;
  **held-out** was looked at for the report, not for choosing.
- `bm25`: FTS5 BM25 alone (what runs with `FMOS_SEMANTIC=0` or without the model). `minilm`: plain cosine with
  the whole description. `semantic`: the index's semantic score without BM25. `hybrid`: as shipped.
- Ablations remove one mechanism from the hybrid. One standard error of a hit@5 near 0.8 at n = 10,307 is
  about 0.004 (differences between methods on the same queries are paired, so somewhat more precise).
- Speed catalogs: 50 = random MetaTool tools; 500 and 5,000 = every MetaTool tool as a server `name__name` plus
  synthetic operations per server (`list_`, `get_`, `search_`, `create_`, ... over phrases of its description;
  half of them also carry its first clause), plus the real github-mcp-server and playwright-mcp definitions when
  `bench/security/data/realworld_tools.json` exists. Cold build = empty vector cache; warm = a new index over the
  same state DB (vectors read back, none embedded). "new query" latency includes embedding the query;
  "cached query" is an LRU hit (the query was seen before), the pure search cost.
- At scale (500 and 5,000 tools), 500 MetaTool queries: tool hit@5 of the real tool among its synthetic
  siblings (low at 5,000 by construction: `finance_tool__search_stocks` is a fair answer to a stock question,
  but it is not the labelled tool), and server hit@5: the servers of the top-5 tools, and `groups()` (two-stage,
  servers ranked by their best tool), which finds the right server more often.

## Known weaknesses

- MetaTool's labels are coarse: many queries name a facet that a narrower tool in the catalog also covers
  (NFT collections -> FinanceTool vs ArtCollection; "buy a gaming console" -> ProductSearch vs GameTool), several
  tools are near-duplicates (six web-search tools, StrologyTool vs Horoscopes), and some queries cannot be
  resolved from the descriptions at all ("Can you translate this sentence?" labelled as a web search). Every
  mechanism tried beyond the ones shipped (centering vectors on the catalog mean, stopword-stripped or
  entity-stripped query views, clause-split queries, pseudo-relevance feedback, request-style document templates,
  late interaction on token vectors, hubness correction, neighbour smoothing, MMR, vocabulary expansion for
  BM25, a learned linear blend of nine features) stayed within about one point of the shipped hybrid: the
  plateau is the model and the labels, not the fusion.
- The breadth prior helps MetaTool, whose queries mostly target broad merged tools; on a catalog of
  narrow tools it is a small bias toward tools near the catalog's centre.
- A new query costs one MiniLM call (~15 ms on 2 idle cores, 20-30 ms with the machine loaded by other work):
  the 20 ms p95 budget holds for the search itself and for repeated (cached) queries, not for new queries
  under load. Building 5,000 tools from scratch embeds ~19,000 texts (whole, clauses, name) and takes minutes;
  the state DB's vector cache makes every later build (or restart) a matter of a second.
- BM25 statistics (IDF) of memory recall are computed over all tenants' memories (one FTS table): ranks
  within a tenant are unaffected by others' rows only up to those statistics.
"""


def _fmt(r: dict[str, Any]) -> str:
    return f"{r['hit@1']:.3f} / {r['hit@5']:.3f} / {r['mrr@10']:.3f}"


TARGET_HIT5 = 0.85


def _verdict(q: dict[str, Any]) -> str:
    if "hybrid" not in q:
        return "No embedder: only BM25 was measured."
    held = q["hybrid"]["held-out"]["hit@5"]
    met = "meets" if held >= TARGET_HIT5 else "does not meet"
    return (f"Hybrid held-out hit@5 is {held:.3f}: it {met} the target of {TARGET_HIT5} "
            f"(plain MiniLM {q['minilm']['held-out']['hit@5']:.3f}, BM25 {q['bm25']['held-out']['hit@5']:.3f}).")


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Tool search: quality and speed",
        "",
        "Generated by `.venv/bin/python bench/context/search_quality.py` "
        f"(model {results['model'] or 'none'}, loaded in {results['model_load_s']} s; {results['cpus']} CPUs, shared "
        "with other work: the 1-minute load average at the start of each catalog's timing is in the speed table).",
    ]
    if "quality" in results:
        q, n = results["quality"], results["evaluated"]
        lines += [
            "",
            f"## Quality on MetaTool (199 tools; {'sampled' if results['sampled'] else 'all'} pairs: dev {n['dev']}, "
            f"held-out {n['held-out']}): hit@1 / hit@5 / MRR@10",
            "",
            _verdict(q),
            "",
            "| method | dev | held-out |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {_fmt(r['dev'])} | {_fmt(r['held-out'])} |" for name, r in q.items()]
    if "speed" not in results:
        return "\n".join(lines) + "\n\n" + NOTES
    lines += ["", "## Speed", "", "| tools | servers | load avg | build cold | texts embedded | build warm (DB) | "
              "search, cached query p50 / p95 | search, new query p50 / p95 | BM25 only p50 / p95 |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in results["speed"].values():
        def lat(key: str, row: dict[str, Any] = row) -> str:
            r = row.get(key)
            return f"{r['p50_ms']} / {r['p95_ms']} ms" if r else "-"
        cold = f"{row['build_cold_s']} s" if "build_cold_s" in row else "-"
        warm = f"{row['build_warm_db_s']} s ({row['texts_embedded_warm']} embedded)" if "build_warm_db_s" in row else "-"
        lines.append(f"| {row['tools']} | {row['groups']} | {row.get('loadavg_1min', '-')} | {cold} | "
                     f"{row.get('texts_embedded_cold', '-')} | {warm} | "
                     f"{lat('search_cached_query')} | {lat('search_new_query')} | {lat('bm25_search')} |")
    for size, row in results["speed"].items():
        if "at_scale" in row:
            a = row["at_scale"]
            lines.append(f"\nAt {size} tools ({a['n']} queries): tool hit@5 {a['tool_hit@5']:.3f}; server among the "
                         f"top-5 tools' servers {a['server_in_top5_tools']:.3f}; server hit@5 by `groups()` "
                         f"{a['server_hit@5_by_groups']:.3f}.")
    return "\n".join(lines) + "\n\n" + NOTES


if __name__ == "__main__":
    raise SystemExit(main())
