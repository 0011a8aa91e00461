"""Names and the aggregated catalog: valid, deterministic, collision-free, routed by URI, paginated."""

from __future__ import annotations

import json
import random
import string

import mcp_types as types
import pytest

from fmos_mcp.gateway.catalog import InvalidCursor, ServerListing, build_catalog, decode_cursor, encode_cursor
from fmos_mcp.gateway.naming import VALID_NAME, exposed_name


def tool(name: str) -> types.Tool:
    return types.Tool(name=name, description=f"tool {name}", input_schema={"type": "object"})


def test_plain_names_are_prefixed_and_unchanged() -> None:
    assert exposed_name("github", "create_issue") == "github__create_issue"
    assert exposed_name(None, "create_issue") == "create_issue"


@pytest.mark.parametrize("prefix, name", [
    ("srv", "x" * 300),
    ("s" * 64, "t" * 100),
    ("srv", "has spaces/and:colons"),
    ("srv", "ünïcødé"),
    (None, ""),
    (None, "y" * 129),
])
def test_awkward_names_become_valid_and_stay_deterministic(prefix: str | None, name: str) -> None:
    exposed = exposed_name(prefix, name)
    assert VALID_NAME.match(exposed), exposed
    assert exposed == exposed_name(prefix, name)


def test_shortened_names_do_not_collide() -> None:
    rng = random.Random(7)
    base = "a" * 140
    names = {base + "".join(rng.choices(string.ascii_letters, k=8)) for _ in range(2000)}
    exposed = {exposed_name("server", n) for n in names}
    assert len(exposed) == len(names)
    assert all(VALID_NAME.match(e) for e in exposed)


def test_collisions_are_resolved_deterministically_and_reported() -> None:
    a = ServerListing(server="alpha", prefix=None, tools=[tool("search"), tool("only_a")])
    b = ServerListing(server="beta", prefix=None, tools=[tool("search")])
    first = build_catalog(1, [b, a])
    second = build_catalog(1, [a, b])
    assert [t.name for t in first.lists["tools"]] == [t.name for t in second.lists["tools"]]
    assert first.tools["search"].server == "alpha"  # server name order decides
    other = next(n for n, r in first.tools.items() if r.server == "beta")
    assert other.startswith("search-") and VALID_NAME.match(other)
    assert first.tools[other].target == "search"
    assert len(first.conflicts) == 1 and "beta" in first.conflicts[0]


def test_allow_and_deny_lists_filter_by_the_servers_own_names() -> None:
    listing = ServerListing(
        server="fs", prefix="fs", tools=[tool("read_file"), tool("write_file"), tool("read_secret")],
        allow=("read_*",), deny=("read_secret",),
    )
    catalog = build_catalog(1, [listing])
    assert list(catalog.tools) == ["fs__read_file"]
    assert sorted(catalog.filtered) == [("fs", "read_secret"), ("fs", "write_file")]


def test_resources_route_by_uri_and_templates() -> None:
    a = ServerListing(
        server="a", prefix="a",
        resources=[types.Resource(uri="mem://shared", name="shared"), types.Resource(uri="mem://a", name="a")],
        templates=[types.ResourceTemplate(uri_template="infra://nodes/{name}", name="node")],
    )
    b = ServerListing(
        server="b", prefix="b",
        resources=[types.Resource(uri="mem://shared", name="shared too")],
        templates=[types.ResourceTemplate(uri_template="file:///{+path}", name="file")],
    )
    catalog = build_catalog(1, [b, a])
    assert catalog.route_resource("mem://a") == "a"
    assert catalog.route_resource("mem://shared") == "a"  # deterministic winner
    assert any("mem://shared" in c for c in catalog.conflicts)
    assert catalog.route_resource("infra://nodes/web-1") == "a"
    assert catalog.route_resource("file:///etc/hosts") == "b"
    assert catalog.route_resource("unknown://x") is None
    assert catalog.template_owner("file:///{+path}") == "b"


def test_pages_walk_the_whole_list_and_reject_bad_cursors() -> None:
    listing = ServerListing(server="s", prefix="s", tools=[tool(f"t{i:03d}") for i in range(23)])
    catalog = build_catalog(1, [listing])
    seen, cursor = [], None
    while True:
        page = catalog.page("tools", cursor, 10)
        seen += [t["name"] for t in page["tools"]]
        cursor = page.get("nextCursor")
        if cursor is None:
            break
    assert seen == [f"s__t{i:03d}" for i in range(23)]
    assert decode_cursor(encode_cursor(40)) == 40
    for bad in ("not-base64!!", encode_cursor(0).upper(), "Zm1vczotMQ=="):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


def test_snapshot_tells_which_lists_changed() -> None:
    before = build_catalog(1, [ServerListing(server="s", prefix="s", tools=[tool("a")])])
    after = build_catalog(2, [ServerListing(server="s", prefix="s", tools=[tool("a"), tool("b")])])
    changed = {k for k in before.snapshot() if before.snapshot()[k] != after.snapshot()[k]}
    assert changed == {"tools"}


def test_a_cursor_past_the_end_is_refused_and_odd_offsets_are_not_cached() -> None:
    catalog = build_catalog(1, [ServerListing(server="s", prefix="s", tools=[tool(f"t{i}") for i in range(5)])])
    with pytest.raises(InvalidCursor, match="past the end"):
        catalog.page("tools", encode_cursor(6), 2)
    for offset in range(5):  # a client inventing cursors must not grow the cache
        catalog.page("tools", encode_cursor(offset), 2)
    assert len(catalog._pages) == 3  # offsets 0, 2 and 4 only
    page = catalog.page("tools", None, 2)
    assert page.wire_bytes == len(json.dumps(page["tools"], separators=(",", ":")).encode())
