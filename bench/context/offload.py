"""bench/context/offload: the offload store and read-back library on payloads from 1 KB to 20 MB.

Per payload (JSON arrays of realistic records as a text block, the same records as structured content, and
plain-text logs): offload time (store included), bytes the host sees against the original, read-back
times, and recoverability: every leaf of every offloaded JSON payload through `query` with a generated
JSONPath (every 10th also in the jq form), a byte-exact `artifact_resource` round trip, and for every
payload a full sequential `read` that must rebuild it. Library level; the end-to-end bench goes through the
gateway. Exits non-zero when anything is not recoverable.

    .venv/bin/python bench/context/offload.py [--sizes 1024,20481,...] [--out bench/context/offload_results.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp_types as types

from fmos_mcp.context.artifacts import ArtifactStore
from fmos_mcp.context.offload import artifact_resource, offload_result
from fmos_mcp.context.readers import format_jq, format_path, grep, load_json, query, query_doc, read
from fmos_mcp.state.db import StateDB
from fmos_mcp.traps.sizes import content_bytes

HERE = Path(__file__).resolve().parent
SIZES = [1024, 20 * 1024 + 1, 100 * 1024, 1024**2, 5 * 1024**2, 20 * 1024**2]
THRESHOLD, PREVIEW = 20 * 1024, 1024
NAMES = ["Zoë Ångström", "李雷", "Olúwásẹ̀gun", "Ivan Petrov", "Renée O'Brien", "Jürgen \"JJ\" Klein"]
PATHS = ["/api/v1/items/{}", "/api/v1/users/{}/orders", "/healthz", "/static/app.{}.js"]


# ----------------------------------------------------------------- payloads of an exact size


def record(rng: random.Random, i: int) -> dict[str, Any]:
    status = rng.choice([200, 200, 200, 201, 304, 404, 500])
    return {
        "id": i, "ts": f"2024-06-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{rng.randrange(1000):03d}Z",
        "service": rng.choice(["api", "auth", "billing"]), "level": "ERROR" if status >= 500 else "INFO",
        "message": f"{rng.choice(['GET', 'POST'])} {rng.choice(PATHS).format(rng.randrange(10**5))} -> {status}",
        "latency_ms": round(rng.lognormvariate(3, 1), 3), "ok": status < 400,
        "user": {"id": f"u-{rng.randrange(10**6)}", "name": rng.choice(NAMES), "roles": rng.sample(["admin", "dev", "ops"], rng.randrange(3))},
        "http": {"status": status, "user agent": "Mozilla/5.0 (X11; Linux x86_64)", "bytes": rng.randrange(10**6)},
        "meta.version": "1.4.2", "trace": None if rng.random() < 0.5 else f"{rng.getrandbits(64):016x}",
    }


def json_payload(size: int, seed: int = 7) -> str:
    """A JSON array of records, the last one padded (its `note`) to make exactly `size` UTF-8 bytes."""
    rng = random.Random(seed)
    items: list[str] = []
    used = 2  # the brackets
    while True:
        last = record(rng, len(items))
        item = json.dumps(last, ensure_ascii=False)
        if used + 2 * (len(item.encode()) + 2) + 20 > size:
            break
        items.append(item)
        used += len(item.encode()) + 2
    frame = len(json.dumps({**last, "note": ""}, ensure_ascii=False).encode())
    pad = size - used - frame
    if pad < 0:
        raise ValueError(f"size {size} too small for a JSON payload")
    text = "[" + ", ".join([*items, json.dumps({**last, "note": "x" * pad}, ensure_ascii=False)]) + "]"
    assert len(text.encode()) == size, (len(text.encode()), size)
    return text


def log_payload(size: int, seed: int = 11) -> str:
    rng = random.Random(seed)
    lines, used = [], 0
    while used < size:
        r = record(rng, len(lines))
        line = (f"{r['ts']} {r['level']:<5} {r['service']}[{rng.randrange(1, 9999)}]: {r['message']} "
                f"{r['latency_ms']}ms user={r['user']['name']} trace={r['trace']}")
        lines.append(line)
        used += len(line.encode()) + 1
    data = "\n".join(lines).encode()[:size]
    while True:  # cut on a character, then pad with ASCII to the exact size
        try:
            text = data.decode()
            break
        except UnicodeDecodeError:
            data = data[:-1]
    return text + "." * (size - len(data))


# ----------------------------------------------------------------- one row


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1000


def leaves(value: Any, keys: tuple[Any, ...] = ()) -> Any:
    stack = [(keys, value)]
    while stack:
        here, node = stack.pop()
        if isinstance(node, dict) and node:
            stack += [(here + (k,), v) for k, v in reversed(node.items())]
        elif isinstance(node, list) and node:
            stack += [(here + (i,), v) for i, v in reversed(list(enumerate(node)))]
        else:
            yield here, node


def check_leaves(data: bytes, original: Any) -> tuple[int, int, float, float]:
    """(leaves checked, failures, ms per full `query` on the bytes, total ms) for one JSON artifact."""
    start = time.perf_counter()
    doc = load_json(data)
    checked = failed = 0
    sample: list[tuple[str, Any]] = []
    for n, (keys, value) in enumerate(leaves(original)):
        path = format_path(keys)
        paths = (path, format_jq(keys)) if n % 10 == 0 else (path,)
        for p in paths:
            checked += 1
            failed += query_doc(doc, p) != [value]
        if n % 997 == 0 and len(sample) < 5:
            sample.append((path, value))
    total = (time.perf_counter() - start) * 1000
    per_query = []
    for path, value in sample:  # the tool's real cost: parse the whole payload, then select
        got, ms = timed(lambda path=path: query(data, path))
        failed += got != [value]
        per_query.append(ms)
    return checked, failed, sum(per_query) / max(1, len(per_query)), total


def make_result(kind: str, size: int) -> tuple[types.CallToolResult, Any]:
    if kind == "log":
        return types.CallToolResult(content=[types.TextContent(type="text", text=log_payload(size))]), None
    text = json_payload(size)
    doc = json.loads(text)
    if kind == "json":
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)]), doc
    # structured: an object (as MCP requires) around the records, with a one-line text block beside it
    structured = {"records": doc}
    return types.CallToolResult(content=[types.TextContent(type="text", text=f"{len(doc)} records")],
                                structured_content=structured), structured


def originals(result: types.CallToolResult) -> list[bytes]:
    """What each offloadable part would be stored as, in the order the offload step stores them."""
    parts = [b.text.encode("utf-8", "surrogatepass") for b in result.content if isinstance(b, types.TextContent)]
    if result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, separators=(",", ":")).encode())
    return [p for p in parts if len(p) > THRESHOLD]


def frame(result: Any) -> int:
    return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())


def run_one(store: ArtifactStore, kind: str, size: int) -> dict[str, Any]:
    result, doc = make_result(kind, size)
    wanted = originals(result)
    put = lambda data, k, mime: store.put("bench", data, k, mime, "bench__payload")  # noqa: E731
    (new, made), offload_ms = timed(lambda: offload_result(result, THRESHOLD, PREVIEW, "shape", put))
    row: dict[str, Any] = {
        "kind": kind, "bytes": content_bytes(result), "offloaded": len(made), "frame_bytes": frame(result),
        "host_bytes": frame(new), "offload_ms": round(offload_ms, 2), "problems": [], "checks": 1, "failed": 0,
    }
    row["saved_pct"] = round(100 * (1 - row["host_bytes"] / row["frame_bytes"]), 2)
    if not made:
        if new is not result:
            row["problems"].append("a result under the threshold was changed")
            row["failed"] = 1
        return row
    if [a.bytes for a in made] != [len(w) for w in wanted]:
        row["failed"] += 1
        row["problems"].append(f"made {[a.bytes for a in made]} for parts {[len(w) for w in wanted]}")
    get_ms = exact_ms = read_ms = 0.0
    for artifact, original in zip(made, wanted, strict=False):
        got, ms = timed(lambda artifact=artifact: store.get("bench", artifact.uri))
        get_ms += ms
        resource, ms = timed(lambda got=got: artifact_resource(got))
        exact_ms += ms
        text, ms = timed(lambda got=got: read_all(got.data))
        read_ms += ms
        for ok, problem in ((resource.contents[0].text.encode("utf-8", "surrogatepass") == original,
                             "resources/read is not byte-exact"),
                            (text.encode("utf-8", "surrogatepass") == original, "sequential fmos_read does not rebuild it")):
            row["checks"] += 1
            if not ok:
                row["failed"] += 1
                row["problems"].append(f"{artifact.uri}: {problem}")
        if artifact.kind == "json":
            checked, failed, query_ms, leaves_ms = check_leaves(got.data, doc)
            row.update(leaves=checked, query_ms=round(query_ms, 2), leaves_ms=round(leaves_ms))
            row["checks"] += checked
            row["failed"] += failed
            if failed:
                row["problems"].append(f"{failed} of {checked} leaves not recoverable")
    _, grep_ms = timed(lambda: grep(store.get("bench", made[0].uri).data, r"-> 5\d\d", context=1, max_matches=20))
    row.update(get_ms=round(get_ms, 2), resource_ms=round(exact_ms, 2), read_all_ms=round(read_ms, 1),
               grep_ms=round(grep_ms, 2), pointer_bytes=max(len(b.text.encode()) for b in new.content))
    return row


def read_all(data: bytes, limit: int = 16384) -> str:
    parts, offset = [], 0
    while offset is not None:
        text, offset, _ = read(data, offset, limit)
        parts.append(text)
    return "".join(parts)


# ----------------------------------------------------------------- the table


COLUMNS = [("kind", 10), ("bytes", 10), ("offloaded", 4), ("host_bytes", 10), ("saved_pct", 7), ("offload_ms", 10),
           ("get_ms", 8), ("resource_ms", 11), ("read_all_ms", 11), ("grep_ms", 8), ("query_ms", 8),
           ("leaves", 8), ("leaves_ms", 9), ("ok", 4)]


def print_table(rows: list[dict[str, Any]]) -> None:
    print(" ".join(f"{name:>{width}}" for name, width in COLUMNS))
    for row in rows:
        row = {**row, "ok": "yes" if not row["problems"] else "NO"}
        print(" ".join(f"{_cell(row.get(name, '')):>{width}}" for name, width in COLUMNS))


def _cell(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--kinds", default="json,structured,log")
    parser.add_argument("--out", type=Path, default=HERE / "offload_results.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = StateDB(Path(tmp))
        store = ArtifactStore(db, retention=7 * 86400)
        for size in map(int, args.sizes.split(",")):
            for kind in args.kinds.split(","):
                row = run_one(store, kind, size)
                rows.append(row)
                print(f"  {kind} {size:,}: {'ok' if not row['problems'] else row['problems']}", file=sys.stderr)
        db.close()
        db_bytes = sum(f.stat().st_size for f in Path(tmp).glob("fmos.sqlite3*"))
    print_table(rows)
    leaves_total = sum(r.get("leaves", 0) for r in rows)
    checks = sum(r["checks"] for r in rows)
    failed = sum(r["failed"] for r in rows)
    failures = [p for r in rows for p in r["problems"]]
    recoverable = round(100 * (checks - failed) / max(1, checks), 4) if not failures or failed else 0.0
    print(f"\nchecks: {checks:,} (leaves {leaves_total:,}); recoverability: {recoverable}%; "
          f"database: {db_bytes:,} bytes")
    summary = {"threshold_bytes": THRESHOLD, "preview_bytes": PREVIEW, "rows": rows, "leaves_checked": leaves_total,
               "checks": checks, "recoverability_pct": recoverable, "database_bytes": db_bytes,
               "python": sys.version.split()[0]}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    for problem in failures:
        print("NOT RECOVERABLE:", problem, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
