"""The data plane's offload store and read-back library, at unit level on a real SQLite database."""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from fmos_mcp.context import readers
from fmos_mcp.context.artifacts import ArtifactExpired, ArtifactNotFound, ArtifactStore, parse_uri
from fmos_mcp.context.offload import artifact_resource, offload_result
from fmos_mcp.context.readers import ParsedJSON, char_start, format_jq, format_path, grep, query, query_located, read
from fmos_mcp.context.shape import describe, fit_shape, json_shape, preview
from fmos_mcp.state.db import StateDB

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> ArtifactStore:
    db = StateDB(tmp_path / "state")
    yield ArtifactStore(db, retention=7 * DAY, clock=clock)
    db.close()


def rows(store: ArtifactStore) -> list[tuple[Any, ...]]:
    with store.db.locked() as d:
        return d.execute("SELECT tenant, id, bytes, length(data), expires FROM artifacts ORDER BY tenant").fetchall()


# ----------------------------------------------------------------- the store


def test_content_addressed_once_per_tenant_and_reput_refreshes_expiry(store: ArtifactStore, clock: Clock) -> None:
    data = "payload é 😀".encode()
    first = store.put("t1", data, "text", "text/plain", "srv__tool")
    assert first.id == first.sha256[:32] and len(first.id) == 32
    assert first.uri == f"fmos://artifacts/{first.id}" and first.bytes == len(data)
    clock.now += DAY
    again = store.put("t1", data, "text", "text/plain", "srv__tool")
    assert again.id == first.id and again.expires == first.expires + DAY
    store.put("t2", data, "text")
    assert [(r[0], r[1]) for r in rows(store)] == [("t1", first.id), ("t2", first.id)]
    other = store.put("t1", data + b"!", "text")
    assert other.id != first.id
    got = store.get("t1", first.uri)
    assert got.data == data and got.kind == "text" and got.mime == "text/plain" and got.origin == "srv__tool"
    assert store.get("t1", first.id).data == data  # a bare id works too


def test_foreign_and_absent_artifacts_look_the_same(store: ArtifactStore) -> None:
    mine = store.put("alice", b"alice's secret" * 10, "text")
    absent = "0" * 32
    with pytest.raises(ArtifactNotFound) as foreign:
        store.get("bob", mine.uri)
    with pytest.raises(ArtifactNotFound) as unknown:
        store.get("bob", absent)
    assert str(foreign.value).replace(mine.id, "ID") == str(unknown.value).replace(absent, "ID")
    assert "alice" not in str(foreign.value)
    assert store.get("alice", mine.uri).data == b"alice's secret" * 10


def test_expiry_purge_tombstone_and_reput(store: ArtifactStore, clock: Clock) -> None:
    art = store.put("t", b"x" * 100, "text", origin="files__read_file")
    clock.now += 7 * DAY - 1
    assert store.get("t", art.uri).data == b"x" * 100
    clock.now += 1
    with pytest.raises(ArtifactExpired) as expired:
        store.get("t", art.uri)
    message = str(expired.value)
    assert art.uri in message and "expired at 2023-11-21T22:13:20Z" in message
    assert "re-run files__read_file" in message and "7d" in message
    assert store.purge_expired() == 1
    assert rows(store)[0][3] == 0  # the bytes are gone, the row stays as a tombstone
    with pytest.raises(ArtifactExpired):
        store.get("t", art.uri)  # an old pointer still says "expired", not "unknown"
    assert store.purge_expired() == 0
    clock.now += 7 * DAY
    store.purge_expired()
    assert rows(store) == []
    with pytest.raises(ArtifactNotFound):
        store.get("t", art.uri)
    back = store.put("t", b"x" * 100, "text")  # running the tool again brings it back
    assert back.id == art.id and store.get("t", art.uri).data == b"x" * 100


def test_reput_after_purge_restores_the_bytes(store: ArtifactStore, clock: Clock) -> None:
    art = store.put("t", b"abc" * 50, "text")
    clock.now += 8 * DAY
    store.purge_expired()
    store.put("t", b"abc" * 50, "text")
    assert store.get("t", art.id).data == b"abc" * 50


@pytest.mark.parametrize("bad", ["fmos://artifacts/xyz", "file:///etc/passwd", "fmos://artifacts/" + "A" * 32, ""])
def test_bad_uris_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match="not an artifact URI") as exc:
        parse_uri(bad)
    assert repr(bad) in str(exc.value)


# ----------------------------------------------------------------- byte ranges

MIXED = "a\né中😀\r\nb" + "ß" * 3 + "\U0010ffff" + "z\ud800q"  # 1 to 4 byte characters and a lone surrogate


def test_reads_at_every_offset_never_split_a_character() -> None:
    data = MIXED.encode("utf-8", "surrogatepass")
    for offset in range(len(data) + 1):
        for limit in (1, 2, 3, 5, 64):
            text, next_offset, total = read(data, offset, limit)
            start, end = char_start(data, offset), next_offset if next_offset is not None else len(data)
            assert total == len(data) and offset - 3 <= start <= offset
            assert text.encode("utf-8", "surrogatepass") == data[start:end]
            if offset < len(data):
                assert end > offset and end - start <= max(limit, 4)  # progress, even below one character
    for limit in (1, 2, 3, 4, 7):
        assert _read_all(data, limit) == MIXED


def _read_all(data: bytes, limit: int, binary: bool = False) -> str:
    parts, offset = [], 0
    while offset is not None:
        text, offset, _ = read(data, offset, limit, binary=binary)
        parts.append(text)
    return "".join(parts)


def test_binary_reads_are_base64_slices_that_concatenate() -> None:
    data = random.Random(1).randbytes(1000)
    for limit in (1, 4, 100, 999, 5000):
        assert base64.b64decode(_read_all(data, limit, binary=True)) == data
    assert read(data, 2000, 10).next_offset is None and read(data, 2000, 10).text == ""
    with pytest.raises(ValueError):
        read(data, -1, 10)


# ----------------------------------------------------------------- grep

LOG = "\n".join(f"{i:04d} {'ERROR disk full' if i % 10 == 7 else 'INFO ok'}" for i in range(1, 101)).encode()


def test_grep_lines_and_context() -> None:
    result = grep(LOG, r"ERROR\s+disk", context=2, max_matches=3)
    assert [m.line for m in result.matches] == [7, 17, 27] and result.more
    first = result.matches[0]
    assert first.content == "0007 ERROR disk full" and first.column == 6
    assert first.before == [(5, "0005 INFO ok"), (6, "0006 INFO ok")]
    assert first.after == [(8, "0008 INFO ok"), (9, "0009 INFO ok")]
    assert first.text() == "5-0005 INFO ok\n6-0006 INFO ok\n7:0007 ERROR disk full\n8-0008 INFO ok\n9-0009 INFO ok"
    assert result.text().count("\n--\n") == 3 and list(result) == result.matches and len(result) == 3
    assert first.as_json()["before"] == [[5, "0005 INFO ok"], [6, "0006 INFO ok"]]
    everything = grep(LOG, "error", context=0, max_matches=100, ignore_case=True)
    assert len(everything.matches) == 10 and not everything.more
    assert grep(LOG, "^0100", context=5).matches[0].after == []
    assert grep(LOG, "nothing here").text() == "(no match)" and not grep(LOG, "nothing here")


def test_grep_refuses_bad_and_runaway_patterns() -> None:
    with pytest.raises(ValueError, match=r"bad regex '\(unclosed'"):
        grep(LOG, "(unclosed")
    start = time.monotonic()
    with pytest.raises(ValueError, match="(a|aa)"):
        grep(b"a" * 5000 + b"!", "(a|aa)+$", seconds=0.5)
    assert time.monotonic() - start < 3


def test_grep_without_the_regex_module_refuses_nested_quantifiers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "_regex", None)
    with pytest.raises(ValueError, match=r"regex '\(a\|aa\)\+\$' refused"):
        grep(b"aaa", "(a|aa)+$")
    assert [m.line for m in grep(LOG, r"ERROR\s+disk", 0).matches][:2] == [7, 17]
    with pytest.raises(ValueError, match="bad regex"):
        grep(LOG, "[z-a]")


def test_grep_cuts_long_lines_around_the_match() -> None:
    line = ("x" * 10_000 + "needle" + "y" * 10_000).encode()
    match = grep(line, "needle").matches[0]
    assert "needle" in match.content and len(match.content) < 500 and match.column == 10_001


# ----------------------------------------------------------------- query

DOC = {"items": [{"id": 1, "name": "a", "tags": ["x"]}, {"id": 2, "name": "b", "sub": {"id": 3}}],
       "a b": {"x.y": 1}, "ü": [True, None], "q\"u'o": 2}


@pytest.mark.parametrize(("path", "expected"), [
    ("$.items[0].name", ["a"]), (".items[0].name", ["a"]), ("items[1].sub.id", [3]),
    ("$..id", [1, 2, 3]), ("..id", [1, 2, 3]), ("$.items[*].id", [1, 2]), (".items[].id", [1, 2]),
    (".items | .[1] | .name", ["b"]), ("$.items[-1].name", ["b"]), ("$.items[0:1].id", [1]),
    ("$['a b']['x.y']", [1]), ('."a b"."x.y"', [1]), ('$["q\\"u\'o"]', [2]), ("$.ü[0]", [True]),
    ("$.items[0]['id','name']", [1, "a"]), ("$.items[?(@.id > 1)].name", ["b"]), (".items[?(@.id < 2)].id", [1]),
    ("$.missing", []), ("$.items[5]", []), (".", [DOC]),
])
def test_query_jsonpath_and_jq_forms(path: str, expected: list[Any]) -> None:
    assert query(json.dumps(DOC).encode(), path) == expected


def test_query_errors_name_the_path_and_why() -> None:
    with pytest.raises(ValueError, match=r"bad path '\$\.items\[0'.*expected '\]'"):
        query(b"{}", "$.items[0")
    with pytest.raises(ValueError, match=r"'\$\.a'.*not JSON"):
        query(b"plain text", "$.a")
    assert query_located(DOC, "$..id")[2] == ("$.items[1].sub.id", 3)


def test_parsed_json_cache_is_bounded_and_answers_like_query() -> None:
    cache = ParsedJSON(max_bytes=100)
    small, other = json.dumps(DOC).encode(), b'{"a": [1, 2]}'
    assert cache.query("k1", small, "$..id") == [1, 2, 3]
    assert cache.query("k2", other, "$.a[1]") == [2]
    assert cache.query("k2", b"ignored: the key says it is parsed", "$.a[0]") == [1]
    assert "k1" not in cache._docs  # too big for the bound: never kept
    with pytest.raises(ValueError, match="bad path"):
        cache.query("k3", b"not json", "$.a[")


KEYS = ["id", "a b", "x.y", 'q"u', "s'q", "ü", "😀", "back\\slash", "", "0", "-1", "$ref", "new\nline", "[*]",
        "..", "@", "*", " lead", "tab\t", "中文", "\\u0041", "]", "a'b\"c"]


def random_doc(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth >= 5 or roll < 0.3:
        return rng.choice([None, True, False, 0, -7, 3.5, 1e300, "", "s", "é😀", "x" * rng.randrange(40), [], {}])
    if roll < 0.6:
        return [random_doc(rng, depth + 1) for _ in range(rng.randrange(1, 6))]
    return {k: random_doc(rng, depth + 1) for k in rng.sample(KEYS, rng.randrange(1, 7))}


def leaves(value: Any, keys: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in leaves(v, keys + (k,))]
    if isinstance(value, list) and value:
        return [leaf for i, v in enumerate(value) for leaf in leaves(v, keys + (i,))]
    return [(keys, value)]


def test_every_leaf_of_random_documents_is_recoverable_by_a_generated_path() -> None:
    rng = random.Random(20240601)
    checked = 0
    for _ in range(40):
        doc = {"root": random_doc(rng)}
        data = json.dumps(doc, ensure_ascii=False).encode()
        for keys, value in leaves(doc):
            for path in (format_path(keys), format_jq(keys)):
                assert query(data, path) == [value], path
            assert query_located(doc, format_path(keys)) == [(format_path(keys), value)]
            checked += 1
    assert checked > 500


# ----------------------------------------------------------------- shape, preview, pointer text


def test_shape_has_types_lengths_and_merged_items() -> None:
    records = [{"id": i, "v": i / 2 if i % 2 else i, "tags": ["t"] * (i % 3), **({"note": "n"} if i % 5 == 0 else {}),
                "maybe": None if i % 2 else "s"} for i in range(1000)]
    shape = json_shape({"records": records, "empty": []})
    rec = shape["properties"]["records"]
    assert rec["type"] == "array" and rec["length"] == 1000
    item = rec["items"]
    assert item["properties"]["id"] == {"type": "integer"} and item["properties"]["v"] == {"type": "number"}
    assert item["properties"]["tags"]["length"] == [0, 2] and item["optional"] == ["note"]
    assert sorted(item["properties"]["maybe"]["type"]) == ["null", "string"]
    assert shape["properties"]["empty"] == {"type": "array", "length": 0}
    wide = json_shape({str(i): i for i in range(100)}, max_keys=10)
    assert len(wide["properties"]) == 10 and wide["moreKeys"] == 90
    deep = {f"k{i}": {f"j{j}": {"z": [1, 2]} for j in range(40)} for i in range(40)}
    assert len(json.dumps(fit_shape(deep, 900))) <= 900


def test_preview_keeps_head_and_tail_within_budget_on_character_boundaries() -> None:
    text = "\n".join(f"line {i} é😀" for i in range(2000))
    short = preview(text, 400)
    assert len(short.encode()) <= 400 and short.startswith("line 0 é😀\n") and short.endswith("line 1999 é😀")
    assert "bytes omitted" in short
    head, tail = short.split("… ")[0], short.split(" …\n")[1]
    assert head.endswith("\n") and tail.startswith("line ")  # cut on lines
    omitted = int(short.split("… ")[1].split(" ")[0])
    assert len(head.encode()) + omitted + len(tail.encode()) == len(text.encode())  # nothing lost unannounced
    emoji = preview("😀" * 1000, 100)
    assert len(emoji.encode()) <= 100 and "\ufffd" not in emoji
    assert preview("short", 100) == "short"


# ----------------------------------------------------------------- the offload step


def put_into(store: ArtifactStore, tenant: str = "t") -> Any:
    return lambda data, kind, mime: store.put(tenant, data, kind, mime, "srv__tool")


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "host": f"web-{i % 7}", "message": f"request {i} served in {i % 97} ms", "ok": i % 3 > 0}
            for i in range(n)]


def test_offload_leaves_small_blocks_and_small_images_as_they_came(store: ArtifactStore) -> None:
    image = types.ImageContent(type="image", data=base64.b64encode(b"\x89PNG" + bytes(500)).decode(),
                               mime_type="image/png")
    result = types.CallToolResult(content=[types.TextContent(type="text", text="small"), image],
                                  structured_content={"a": 1}, meta={"keep": True})
    new, made = offload_result(result, 20480, 1024, "shape", put_into(store))
    assert new is result and made == [] and rows(store) == []


def test_threshold_counts_utf8_bytes_and_is_exclusive(store: ArtifactStore) -> None:
    at = types.TextContent(type="text", text="é" * 512)  # 1024 bytes, 512 characters
    above = types.TextContent(type="text", text="é" * 512 + "!")
    new, made = offload_result(types.CallToolResult(content=[at, above]), 1024, 100, "shape", put_into(store))
    assert new.content[0] is at and len(made) == 1 and made[0].bytes == 1025
    assert artifact_resource(store.get("t", made[0].uri)).contents[0].text == above.text


def test_offload_one_json_block_pointer_and_meta(store: ArtifactStore) -> None:
    text = json.dumps(records(2000), indent=1)
    small = types.TextContent(type="text", text="header")
    result = types.CallToolResult(content=[small, types.TextContent(type="text", text=text)], meta={"keep": 1})
    new, made = offload_result(result, 20480, 1024, "shape", put_into(store))
    (art,) = made
    assert new.content[0] is small and art.kind == "json" and art.bytes == len(text.encode())
    assert new.meta == {"keep": 1, "fmos/offload": {"uri": art.uri, "bytes": art.bytes, "sha256": art.sha256}}
    pointer = new.content[1].text
    assert len(pointer.encode()) < 1536 and art.uri in pointer and '"length":2000' in pointer
    assert "fmos_query" in pointer and "fmos_grep" in pointer and "fmos_read" in pointer
    assert new.content[1].meta == {"fmos/offload": art.pointer()}
    example = json.loads(pointer.split('"path": ')[1].split("}")[0])  # the example path really works
    assert query(store.get("t", art.uri).data, example) == [0]
    back = artifact_resource(store.get("t", art.uri))
    assert back.contents[0].text == text and back.contents[0].mime_type == "application/json"


def test_offload_several_parts_text_image_structured(store: ArtifactStore) -> None:
    log = "\n".join(f"2024-06-01T00:00:{i % 60:02d} INFO é 😀 request {i}" for i in range(2000)) + "\ud800"
    png = random.Random(2).randbytes(30000)
    image = types.ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png")
    blob = types.EmbeddedResource(type="resource", resource=types.BlobResourceContents(
        uri="file:///x.bin", mime_type="application/pdf", blob=base64.b64encode(png[::-1]).decode()))
    structured = {"records": records(1000), "note": "ünïcode"}
    result = types.CallToolResult(content=[types.TextContent(type="text", text=log), image, blob],
                                  structured_content=structured)
    new, made = offload_result(result, 20480, 512, "shape", put_into(store))
    assert [a.kind for a in made] == ["text", "blob", "blob", "json"]
    assert new.meta == {"fmos/offload": made[0].pointer(), "fmos/offloads": [a.pointer() for a in made]}
    assert all(isinstance(b, types.TextContent) for b in new.content) and len(new.content) == 3
    assert "bytes omitted" in new.content[0].text  # a text payload gets a preview
    assert new.structured_content["offloaded"] == made[3].pointer()
    assert new.structured_content["shape"]["properties"]["records"]["length"] == 1000
    text_back, png_back, pdf_back, json_back = (artifact_resource(store.get("t", a.uri)).contents[0] for a in made)
    assert text_back.text == log
    assert base64.b64decode(png_back.blob) == png and png_back.mime_type == "image/png"
    assert png_back.blob == image.data
    assert base64.b64decode(pdf_back.blob) == png[::-1] and pdf_back.mime_type == "application/pdf"
    assert json_back.text == json.dumps(structured, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(json_back.text) == structured


def test_offload_summary_modes_and_resource_results(store: ArtifactStore) -> None:
    text = json.dumps(records(1000))
    result = types.CallToolResult(content=[types.TextContent(type="text", text=text)])
    preview_mode, _ = offload_result(result, 20480, 300, "preview", put_into(store))
    assert "bytes omitted" in preview_mode.content[0].text and "Shape:" not in preview_mode.content[0].text
    bare, _ = offload_result(result, 20480, 300, "none", put_into(store))
    assert "bytes omitted" not in bare.content[0].text and "Shape:" not in bare.content[0].text
    with pytest.raises(ValueError, match="summary"):
        offload_result(result, 20480, 300, "everything", put_into(store))
    resource = types.ReadResourceResult(contents=[types.TextResourceContents(uri="file:///big.json", text=text)])
    new, (art,) = offload_result(resource, 20480, 300, "shape", put_into(store))
    assert new.contents[0].uri == "file:///big.json" and art.uri in new.contents[0].text
    assert new.meta["fmos/offload"]["uri"] == art.uri and len(rows(store)) == 1  # the same bytes: stored once
    read_back = artifact_resource(store.get("t", art.uri))  # reading an artifact is never offloaded again
    again, more = offload_result(read_back, 20480, 300, "shape", put_into(store))
    assert again is read_back and more == [] and read_back.contents[0].text == text


def test_describe_blob_says_how_to_read_it(store: ArtifactStore) -> None:
    art = store.put("t", b"\x00" * 100, "blob", "audio/wav")
    text = describe(art, "audio/wav audio")
    assert "resources/read" in text and "base64" in text and "fmos_query" not in text
