"""Reading an offloaded payload back: byte ranges, regex search, JSON selection. Pure functions on bytes.

Text is UTF-8 (lone surrogates survive as `surrogatepass` bytes, so a payload round-trips exactly). Paths
are JSONPath (`$.items[0].name`, `$..id`, `$.a[*].b`, `$['a b']`) or jq-like (`.items[0].name`, `.a[].b`,
`."a b"`, `.a | .b`); both compile to the same steps, evaluated here. Filters and other expressions
(`[?(@.x > 1)]`) go to jsonpath-ng's extended parser.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

try:  # `regex` can stop a runaway pattern; plain `re` cannot, so it gets a heuristic guard instead
    import regex as _regex
except ImportError:  # pragma: no cover - depends on the environment
    _regex = None

READ_LIMIT = 16384
GREP_SECONDS = 2.0
LONG_LINE = 400  # characters of a line shown around a match; longer lines are cut around it


# ----------------------------------------------------------------- UTF-8 boundaries and ranges


def char_start(data: bytes, index: int) -> int:
    """The start of the UTF-8 character that holds byte `index` (continuation bytes are 10xxxxxx)."""
    index = max(0, min(index, len(data)))
    floor = max(0, index - 3)
    while index > floor and index < len(data) and data[index] & 0xC0 == 0x80:
        index -= 1
    return index


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # not UTF-8 after all: show it, do not fail
        return data.decode("utf-8", "replace")


class Chunk(NamedTuple):
    text: str  # decoded text, or base64 of the byte slice for binary payloads
    next_offset: int | None  # None at the end
    total: int  # bytes in the payload


def read(data: bytes, offset: int = 0, limit: int = READ_LIMIT, *, binary: bool = False) -> Chunk:
    """Up to `limit` bytes from `offset`, never splitting a UTF-8 character (always at least one whole one).

    An offset inside a character reads from that character's start, `char_start(data, offset)`; the
    `next_offset` of a chunk is always on a character boundary. Binary payloads come as base64 of
    whole 3-byte groups (the limit is rounded down to one), so consecutive chunks concatenate."""
    total = len(data)
    if offset < 0 or limit < 1:
        raise ValueError(f"offset must be >= 0 and limit >= 1 (got offset={offset}, limit={limit})")
    if offset >= total:
        return Chunk("", None, total)
    if binary:
        end = min(total, offset + max(3, limit - limit % 3))
        return Chunk(base64.b64encode(data[offset:end]).decode("ascii"), end if end < total else None, total)
    start = char_start(data, offset)
    end = char_start(data, min(total, start + limit))
    if end <= start:  # the limit is shorter than this one character: take it whole
        end = start + 1
        while end < total and data[end] & 0xC0 == 0x80:
            end += 1
    return Chunk(decode(data[start:end]), end if end < total else None, total)


# ----------------------------------------------------------------- grep


@dataclass(frozen=True)
class GrepMatch:
    line: int  # 1-based
    column: int  # 1-based, in characters
    content: str  # the line (cut around the match when long)
    before: list[tuple[int, str]] = field(default_factory=list)  # (line number, line)
    after: list[tuple[int, str]] = field(default_factory=list)

    def text(self) -> str:
        """grep -n style: `12:hit` between `11-context` lines."""
        return "\n".join([f"{n}-{t}" for n, t in self.before] + [f"{self.line}:{self.content}"]
                         + [f"{n}-{t}" for n, t in self.after])

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "text": self.content,
                "before": [list(x) for x in self.before], "after": [list(x) for x in self.after]}


@dataclass(frozen=True)
class GrepResult:
    matches: list[GrepMatch]
    more: bool  # stopped at max_matches with more text left to search

    def __iter__(self) -> Iterator[GrepMatch]:
        return iter(self.matches)

    def __len__(self) -> int:
        return len(self.matches)

    def text(self) -> str:
        parts = [m.text() for m in self.matches] + (["(more matches not shown)"] if self.more else [])
        return "\n--\n".join(parts) if parts else "(no match)"


# Without `regex`: refuse a quantified group holding a quantifier or an alternation, the usual shapes of
# exponential backtracking ((a+)+, (a|aa)*, (\w+\s?){2,}); some harmless patterns are refused too.
_NESTED = re.compile(r"\((?:[^()\\]|\\.)*[+*}|](?:[^()\\]|\\.)*\)[+*{]")


def compile_pattern(pattern: str, ignore_case: bool = False) -> Any:
    flags = re.MULTILINE | (re.IGNORECASE if ignore_case else 0)
    try:
        if _regex is not None:
            return _regex.compile(pattern, flags)
        if _NESTED.search(pattern):
            raise ValueError("nested quantifiers can take exponential time")
        return re.compile(pattern, flags)
    except (re.error, getattr(_regex, "error", re.error)) as exc:
        raise ValueError(f"bad regex {pattern!r}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"regex {pattern!r} refused: {exc}") from None


def grep(data: bytes, pattern: str, context: int = 2, max_matches: int = 50, *, ignore_case: bool = False,
         seconds: float = GREP_SECONDS) -> GrepResult:
    """Lines matching `pattern` (one hit per line, like grep), with `context` lines either side."""
    compiled = compile_pattern(pattern, ignore_case)
    text = decode(data)
    context = max(0, min(context, 20))
    deadline = time.monotonic() + seconds
    matches: list[GrepMatch] = []
    pos, line_no, counted_to = 0, 1, 0
    while pos <= len(text):
        found = _search(compiled, text, pos, deadline, pattern)
        if found is None:
            return GrepResult(matches, False)
        if len(matches) == max_matches:
            return GrepResult(matches, True)
        line_no += text.count("\n", counted_to, found.start())
        counted_to = found.start()
        start = text.rfind("\n", 0, found.start()) + 1
        end = _line_end(text, found.start())
        matches.append(GrepMatch(line_no, found.start() - start + 1, _cut(text[start:end], found.start() - start),
                                 _before(text, start, line_no, context), _after(text, end, line_no, context)))
        pos = end + 1
    return GrepResult(matches, False)


def _search(compiled: Any, text: str, pos: int, deadline: float, pattern: str) -> Any:
    if _regex is None:
        return compiled.search(text, pos)
    remaining = deadline - time.monotonic()
    try:
        if remaining <= 0:
            raise TimeoutError
        return compiled.search(text, pos, timeout=remaining)
    except TimeoutError:
        raise ValueError(f"regex {pattern!r} took too long on this payload (catastrophic backtracking?); "
                         "simplify it or anchor it") from None


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _cut(line: str, at: int = 0) -> str:
    line = line.removesuffix("\r")
    if len(line) <= LONG_LINE:
        return line
    lo = max(0, at - LONG_LINE // 2)
    hi = min(len(line), lo + LONG_LINE)
    return ("…" if lo else "") + line[lo:hi] + ("…" if hi < len(line) else "")


def _before(text: str, start: int, line_no: int, count: int) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    end = start - 1
    while len(lines) < count and end >= 0:
        begin = text.rfind("\n", 0, end) + 1
        lines.append((line_no - len(lines) - 1, _cut(text[begin:end])))
        end = begin - 1
    return lines[::-1]


def _after(text: str, end: int, line_no: int, count: int) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    while len(lines) < count and end < len(text):
        begin, end = end + 1, _line_end(text, end + 1)
        lines.append((line_no + len(lines) + 1, _cut(text[begin:end])))
    return lines


# ----------------------------------------------------------------- paths


@dataclass(frozen=True)
class Step:
    op: str  # key | index | wild | slice | keys | indices
    arg: Any = None
    descend: bool = False  # `..`: apply to the node and every node below it


_WILD = Step("wild")


class _Delegate(Exception):
    """Syntax beyond the simple steps (filters, scripts): jsonpath-ng evaluates the whole path."""


_NAME = re.compile(r"[\w$-]+")
_INT = re.compile(r"\s*(-?\d+)?\s*")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def format_path(keys: tuple[str | int, ...] | list[str | int]) -> str:
    """The JSONPath of a location: `$.items[0]["a b"]`; keys that are not plain identifiers are quoted."""
    parts = ["$"]
    for key in keys:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif key.isascii() and key.isidentifier():
            parts.append(f".{key}")
        else:
            parts.append(f"[{json.dumps(key, ensure_ascii=False)}]")
    return "".join(parts)


def format_jq(keys: tuple[str | int, ...] | list[str | int]) -> str:
    """The same location in the jq form: `.items[0]["a b"]`."""
    path = format_path(keys)[1:]
    return path if path.startswith(".") else "." + path


@lru_cache(maxsize=512)
def compile_path(path: str) -> tuple[Step, ...] | None:
    """Steps of a JSONPath or jq-like path, or None when only jsonpath-ng can evaluate it (filters).

    A ValueError names the path, the position and the reason."""
    try:
        return tuple(_Parser(path).steps())
    except _Delegate:
        pass
    except _Syntax as exc:
        if "`" in path:  # jsonpath-ng's named extensions (`len`, `sorted`)
            with suppress(ValueError):
                _jsonpath_ng(path)
                return None
        raise ValueError(f"bad path {path!r}: {exc}. Use JSONPath like $.items[0].name, $..id, $['a b'] "
                         "or jq like .items[0].name, .items[].id, .\"a b\"") from None
    _jsonpath_ng(path)
    return None


class _Syntax(Exception):
    pass


class _Parser:
    def __init__(self, path: str) -> None:
        s = path.strip()
        if not s:
            raise _Syntax("empty path at position 0")
        self.s = s if s[0] in "$.[" else "." + s  # a bare `items[0]` is relative to the root
        self.i = 1 if s[0] == "$" else 0

    def fail(self, why: str) -> _Syntax:
        return _Syntax(f"{why} at position {self.i}")

    def peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.s[j] if j < len(self.s) else ""

    def steps(self) -> list[Step]:
        out: list[Step] = []
        while self.i < len(self.s):
            c = self.peek()
            if c.isspace() or c == "?":  # jq's `?` (ignore errors) changes nothing here
                self.i += 1
            elif c == "|":  # jq composition of paths: `.a | .b` is `.a.b`
                self.i += 1
                while self.peek().isspace():
                    self.i += 1
                if self.peek() not in (".", "["):
                    raise self.fail("expected a path after '|'")
            elif self.s.startswith("..", self.i):
                self.i += 2
                out.append(self.member(descend=True))
            elif c == ".":
                self.i += 1
                if self.peek() in ("", "|") or self.peek().isspace():
                    continue  # jq's `.`: the value itself
                out.append(self.member(descend=False))
            elif c == "[":
                out.append(self.bracket(descend=False))
            else:
                raise self.fail(f"unexpected {c!r}")
        return out

    def member(self, descend: bool) -> Step:
        c = self.peek()
        if c == "[":
            return self.bracket(descend)
        if c == "*":
            self.i += 1
            return Step("wild", None, descend)
        if c in ("'", "\""):
            return Step("key", self.quoted(), descend)
        if descend and (c in ("", "|") or c.isspace()):  # jq's bare `..`: everything below
            return Step("wild", None, True)
        m = _NAME.match(self.s, self.i)
        if not m:
            raise self.fail("expected a name, '*' or '['")
        self.i = m.end()
        return Step("key", m.group(), descend)

    def bracket(self, descend: bool) -> Step:
        self.i += 1  # '['
        self.skip_space()
        c = self.peek()
        if c in ("?", "("):
            raise _Delegate
        if c in ("]", "*"):
            self.i += c == "*"
            self.close()
            return Step("wild", None, descend)
        if c in ("'", "\""):
            keys = [self.quoted()]
            while self.comma():
                keys.append(self.quoted())
            self.close()
            return Step("key", keys[0], descend) if len(keys) == 1 else Step("keys", tuple(keys), descend)
        return self.numbers(descend)

    def numbers(self, descend: bool) -> Step:
        parts = [self.integer()]
        if self.peek() == ":":
            while self.peek() == ":" and len(parts) < 3:
                self.i += 1
                parts.append(self.integer())
            self.close()
            if parts[2:3] == [0]:
                raise self.fail("slice step must not be zero")
            return Step("slice", slice(*parts), descend)
        if parts[0] is None:
            raise self.fail("expected an index, a slice, '*' or a quoted key")
        indices = [parts[0]]
        while self.comma():
            value = self.integer()
            if value is None:
                raise self.fail("expected an index")
            indices.append(value)
        self.close()
        return Step("index", indices[0], descend) if len(indices) == 1 else Step("indices", tuple(indices), descend)

    def integer(self) -> int | None:
        m = _INT.match(self.s, self.i)
        self.i = m.end() if m else self.i
        return int(m.group(1)) if m and m.group(1) else None

    def skip_space(self) -> None:
        while self.peek().isspace():
            self.i += 1

    def comma(self) -> bool:
        self.skip_space()
        if self.peek() == ",":
            self.i += 1
            self.skip_space()
            return True
        return False

    def close(self) -> None:
        self.skip_space()
        if self.peek() != "]":
            raise self.fail("expected ']'")
        self.i += 1

    def quoted(self) -> str:
        quote, out = self.peek(), []
        if quote not in ("'", '"'):
            raise self.fail("expected a quoted key")
        self.i += 1
        while True:
            c = self.peek()
            if c == "":
                raise self.fail(f"unterminated {quote}-quoted key")
            self.i += 1
            if c == quote:
                break
            if c != "\\":
                out.append(c)
            elif self.peek() == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", self.s[self.i + 1:self.i + 5]):
                out.append(chr(int(self.s[self.i + 1:self.i + 5], 16)))
                self.i += 5
            elif self.peek() in _ESCAPES:
                out.append(_ESCAPES[self.peek()])
                self.i += 1
            else:
                raise self.fail(f"unknown escape \\{self.peek()}")
        # \ud83d\ude00 written as two escapes is one character, as in JSON
        return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")


def load_json(data: bytes, path: str = "") -> Any:
    try:
        return json.loads(data.decode("utf-8", "surrogatepass"))  # as json.loads(bytes) would, a bit faster
    except (ValueError, RecursionError) as exc:
        where = f"cannot query {path!r}: " if path else ""
        raise ValueError(f"{where}the payload is not JSON ({exc})") from None


def query(data: bytes, path: str) -> list[Any]:
    """Values at `path` in a JSON payload (an empty list when nothing is there)."""
    compile_path(path)  # a bad path is reported before a large payload is parsed
    return query_doc(load_json(data, path), path)


class ParsedJSON:
    """Recently queried payloads, parsed, keyed by their SHA-256: parsing 20 MB of JSON takes about a second,
    and a model exploring one payload queries it many times. Bounded by source bytes; a parsed document
    takes several times its source in memory. Thread-safe."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._docs: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def query(self, key: str, data: bytes, path: str) -> list[Any]:
        compile_path(path)
        return query_doc(self.load(key, data, path), path)

    def load(self, key: str, data: bytes, path: str = "") -> Any:
        with self._lock:
            if key in self._docs:
                self._docs.move_to_end(key)
                return self._docs[key][1]
        doc = load_json(data, path)
        if len(data) <= self.max_bytes:
            with self._lock:
                self._docs[key] = (len(data), doc)
                while sum(size for size, _ in self._docs.values()) > self.max_bytes:
                    self._docs.popitem(last=False)
        return doc


def query_doc(doc: Any, path: str) -> list[Any]:
    return [value for _, value in query_located(doc, path)]


def query_located(doc: Any, path: str) -> list[tuple[str, Any]]:
    """(JSONPath of the match, value) for each match, in document order."""
    steps = compile_path(path)
    if steps is None:
        return [(_ng_path(m.full_path), m.value) for m in _jsonpath_ng(path).find(doc)]
    nodes: list[tuple[tuple[str | int, ...], Any]] = [((), doc)]
    for step in steps:
        nodes = [hit for loc, value in nodes for hit in _apply(step, loc, value)]
    return [(format_path(loc), value) for loc, value in nodes]


def _apply(step: Step, loc: tuple[str | int, ...], value: Any) -> list[tuple[tuple[str | int, ...], Any]]:
    if not step.descend:
        return _children(step, loc, value)
    hits = []
    stack = [(loc, value)]
    while stack:  # pre-order, document order, no recursion limit
        here, node = stack.pop()
        hits += _children(step, here, node)
        below = _children(_WILD, here, node)
        stack += reversed(below)
    return hits


def _children(step: Step, loc: tuple[str | int, ...], value: Any) -> list[tuple[tuple[str | int, ...], Any]]:
    op, arg = step.op, step.arg
    if isinstance(value, dict):
        if op == "key":
            return [(loc + (arg,), value[arg])] if arg in value else []
        if op == "keys":
            return [(loc + (k,), value[k]) for k in arg if k in value]
        return [(loc + (k,), v) for k, v in value.items()] if op == "wild" else []
    if isinstance(value, list):
        n = len(value)
        if op == "index" or op == "indices":
            wanted = (arg,) if op == "index" else arg
            return [(loc + (i % n,), value[i]) for i in wanted if -n <= i < n]
        if op == "slice":
            return [(loc + (i,), value[i]) for i in range(*arg.indices(n))]
        return list(zip(((*loc, i) for i in range(n)), value, strict=True)) if op == "wild" else []
    return []


@lru_cache(maxsize=128)
def _jsonpath_ng(path: str) -> Any:
    from jsonpath_ng.ext import parse

    text = path.strip()
    text = "$" + text if text.startswith((".", "[")) else text
    try:
        return parse(text)
    except Exception as exc:  # its lexer and parser errors, and plain Exceptions for some inputs
        raise ValueError(f"bad path {path!r}: {exc}") from None


def _ng_path(full_path: Any) -> str:
    """jsonpath-ng's location as our JSONPath (Child, Fields and Index nodes), else its own rendering."""
    from jsonpath_ng.jsonpath import Child, Fields, Index, Root, This

    keys: list[str | int] = []
    pending = [full_path]
    while pending:
        node = pending.pop()
        if isinstance(node, Child):
            pending += [node.right, node.left]
        elif isinstance(node, Fields) and len(node.fields) == 1:
            keys.append(node.fields[0])
        elif isinstance(node, Index) and len(node.indices) == 1:
            keys.append(node.indices[0])
        elif not isinstance(node, Root | This):
            return str(full_path)
    return format_path(keys)
