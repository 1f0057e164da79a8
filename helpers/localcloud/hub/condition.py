"""A small parser and evaluator for IoT Hub deployment `targetCondition` expressions.

Grammar (keywords case-insensitive)::

    expr       := or_expr
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | primary
    primary    := "(" expr ")" | comparison
    comparison := path op literal | path "IN" "[" literal ("," literal)* "]"
    path       := name ("." name)*          e.g. tags.environment, deviceId, properties.reported.x
    op         := "=" | "!=" | "<>" | "<" | ">" | "<=" | ">="
    literal    := 'text' | "text" | number | true | false | null

`*` alone targets every device. Paths resolve over the device document
`{"deviceId", "tags", "properties": {"desired", "reported"}, "capabilities": {"iotEdge"}, "status"}`
(or a twin's JSON); a missing path compares unequal to everything (as in IoT Hub queries).
A segment may be bracketed, `configurations.[[my-deployment]].status`, for names with `-`;
the right side of a comparison may be another path (`properties.desired.$version =
properties.reported.lastDesiredVersion`); functions `IS_DEFINED(path)`, `IS_NULL(path)`,
`STARTSWITH(path, 'x')`, `ENDSWITH(path, 'x')`.

The IoT Hub query language on top (`parse_query`, `run_query`)::

    query  := SELECT items FROM (devices | devices.modules) [WHERE expr] [GROUP BY path]
    items  := "*" | item ("," item)*
    item   := COUNT() [AS name] | path [AS name]
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from helpers.errors import EdgeLoopError


class ConditionError(EdgeLoopError):
    """A targetCondition does not parse; the message shows where."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|<>|!=|=|<|>)
      | (?P<punct>[()\[\],*])
      | (?P<name>(?:[A-Za-z_$][A-Za-z0-9_$\-]*|\[\[[^\]]+\]\])(?:\.(?:[A-Za-z_$][A-Za-z0-9_$\-]*|\[\[[^\]]+\]\]))*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_FUNCTIONS = {"is_defined", "is_null", "startswith", "endswith"}
_MISSING = object()


@dataclass(frozen=True)
class _Tok:
    kind: str  # string number op punct name kw end
    value: Any
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ConditionError(f"targetCondition: unexpected character {text[pos:].lstrip()[:1]!r} at position {pos} in {text!r}")
        kind = m.lastgroup or ""
        raw = m.group(kind)
        start = m.start(kind)
        if kind == "string":
            quote = raw[0]
            inner = raw[1:-1].replace(quote * 2, quote) if quote == "'" else raw[1:-1]
            value: Any = re.sub(r"\\(.)", r"\1", inner)
        elif kind == "number":
            value = float(raw) if "." in raw else int(raw)
        elif kind == "name" and raw.lower() in _KEYWORDS:
            kind, value = "kw", raw.lower()
        else:
            value = raw
        toks.append(_Tok(kind, value, start))
        pos = m.end()
    toks.append(_Tok("end", None, len(text)))
    return toks


Predicate = Callable[[dict[str, Any]], bool]


def split_path(path: str) -> list[str]:
    """`a.[[b.c]].d` -> `["a", "b.c", "d"]`."""
    parts: list[str] = []
    for m in re.finditer(r"\[\[([^\]]+)\]\]|[^.]+", path):
        parts.append(m.group(1) if m.group(1) is not None else m.group(0))
    return parts


def _resolve(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for part in split_path(path):
        if isinstance(cur, dict):
            # IoT Hub property names are case-sensitive, but deviceId is often typed DeviceId.
            if part in cur:
                cur = cur[part]
                continue
            lowered = {k.lower(): k for k in cur}
            if part.lower() in lowered and cur is doc:
                cur = cur[lowered[part.lower()]]
                continue
        return _MISSING
    return cur


def _compare(left: Any, op: str, right: Any) -> bool:
    if left is _MISSING or right is _MISSING:
        return False
    if op in ("=", "!=", "<>"):
        if isinstance(left, bool) or isinstance(right, bool):
            equal = left is right
        else:
            equal = left == right
        return equal if op == "=" else not equal
    numeric = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return False
    if not (isinstance(left, numeric) and isinstance(right, numeric)) and not (isinstance(left, str) and isinstance(right, str)):
        return False
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    @property
    def cur(self) -> _Tok:
        return self.toks[self.i]

    def _err(self, what: str) -> ConditionError:
        tok = self.cur
        found = "end of condition" if tok.kind == "end" else repr(tok.value)
        return ConditionError(f"targetCondition: expected {what} at position {tok.pos}, found {found} in {self.text!r} (example: tags.environment='prod' AND tags.site='lab')")

    def _accept(self, kind: str, value: Any = None) -> _Tok | None:
        tok = self.cur
        if tok.kind == kind and (value is None or tok.value == value):
            self.i += 1
            return tok
        return None

    def parse(self) -> Predicate:
        if self.toks[0].kind == "punct" and self.toks[0].value == "*" and self.toks[1].kind == "end":
            return lambda doc: True
        if self.cur.kind == "end":
            raise self._err("a condition")
        pred = self._or()
        if self.cur.kind != "end":
            raise self._err("AND, OR or the end")
        return pred

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._accept("kw", "or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda doc, ps=tuple(parts): any(p(doc) for p in ps))

    def _and(self) -> Predicate:
        parts = [self._not()]
        while self._accept("kw", "and"):
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda doc, ps=tuple(parts): all(p(doc) for p in ps))

    def _not(self) -> Predicate:
        if self._accept("kw", "not"):
            inner = self._not()
            return lambda doc: not inner(doc)
        return self._primary()

    def _primary(self) -> Predicate:
        if self._accept("punct", "("):
            inner = self._or()
            if not self._accept("punct", ")"):
                raise self._err("')'")
            return inner
        name = self._accept("name")
        if not name:
            raise self._err("a property path such as tags.environment or deviceId")
        path = name.value
        if path.lower() in _FUNCTIONS and self._accept("punct", "("):
            return self._function(path.lower())
        if self._accept("kw", "in"):
            if not self._accept("punct", "["):
                raise self._err("'[' after IN")
            values = [self._literal()]
            while self._accept("punct", ","):
                values.append(self._literal())
            if not self._accept("punct", "]"):
                raise self._err("']'")
            return lambda doc: any(_compare(_resolve(doc, path), "=", v) for v in values)
        op = self._accept("op")
        if not op:
            raise self._err("a comparison operator (=, !=, <, >, <=, >=) or IN")
        other = self._accept("name")
        if other is not None:  # path = path
            return lambda doc: _compare(_resolve(doc, path), op.value, _resolve(doc, other.value))
        value = self._literal()
        return lambda doc: _compare(_resolve(doc, path), op.value, value)

    def _function(self, fn: str) -> Predicate:
        arg = self._accept("name")
        if not arg:
            raise self._err(f"a property path inside {fn.upper()}(...)")
        path = arg.value
        value: Any = None
        if fn in ("startswith", "endswith"):
            if not self._accept("punct", ","):
                raise self._err(f"',' and a string in {fn.upper()}(path, 'text')")
            value = self._literal()
        if not self._accept("punct", ")"):
            raise self._err("')'")
        if fn == "is_defined":
            return lambda doc: _resolve(doc, path) is not _MISSING
        if fn == "is_null":
            return lambda doc: _resolve(doc, path) is None
        if fn == "startswith":
            return lambda doc: isinstance(_resolve(doc, path), str) and _resolve(doc, path).startswith(str(value))
        return lambda doc: isinstance(_resolve(doc, path), str) and _resolve(doc, path).endswith(str(value))

    def _literal(self) -> Any:
        tok = self.cur
        if tok.kind in ("string", "number"):
            self.i += 1
            return tok.value
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            self.i += 1
            return {"true": True, "false": False, "null": None}[tok.value]
        raise self._err("a literal ('text', a number, true, false or null)")


def parse_condition(text: str) -> Predicate:
    """Compile a targetCondition into a predicate over a device document.

    Raises:
        ConditionError: the condition does not parse; the message shows the position.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("targetCondition is empty; use e.g. tags.environment='prod' (or '*' for every device)")
    return _Parser(text).parse()


def device_document(device_id: str, tags: dict[str, Any], desired: dict[str, Any], reported: dict[str, Any], edge: bool = True, status: str = "enabled") -> dict[str, Any]:
    """The document a condition's paths resolve against."""
    return {
        "deviceId": device_id,
        "tags": tags,
        "properties": {"desired": desired, "reported": reported},
        "capabilities": {"iotEdge": edge},
        "status": status,
    }


def matches(condition: str, doc: dict[str, Any]) -> bool:
    """True when `doc` satisfies `condition`."""
    return parse_condition(condition)(doc)


# ------------------------------------------------------------------ the query language
class QueryError(ConditionError):
    """A query does not parse or is not supported; the message shows where."""


@dataclass(frozen=True)
class Query:
    """A parsed IoT Hub query.

    Attributes:
        source: `devices` or `devices.modules`.
        items: `[]` for `SELECT *`, else `(kind, path_or_None, alias)` with kind `count` or `path`.
        where: the predicate (every document when there is no WHERE).
        group_by: the GROUP BY path, or None.
    """

    source: str
    items: tuple[tuple[str, str | None, str], ...]
    where: Predicate
    group_by: str | None

    @property
    def item_type(self) -> str:
        """What IoT Hub answers in `x-ms-item-type`: `twin`/`module...` for SELECT *, else `raw`."""
        return "raw" if self.items else "twin"


class _QueryParser(_Parser):
    def _err(self, what: str) -> QueryError:
        tok = self.cur
        found = "end of query" if tok.kind == "end" else repr(tok.value)
        return QueryError(f"query: expected {what} at position {tok.pos}, found {found} in {self.text!r} "
                          "(example: SELECT * FROM devices WHERE tags.site = 'lab')")

    def _word(self, word: str) -> bool:
        tok = self.cur
        if tok.kind == "name" and str(tok.value).lower() == word:
            self.i += 1
            return True
        return False

    def parse_query(self) -> Query:
        if not self._word("select"):
            raise self._err("SELECT")
        items: list[tuple[str, str | None, str]] = []
        if not self._accept("punct", "*"):
            while True:
                tok = self._accept("name")
                if tok is None:
                    raise self._err("*, COUNT() or a property path")
                if str(tok.value).lower() == "count" and self._accept("punct", "("):
                    if not self._accept("punct", ")"):
                        raise self._err("')' (COUNT takes no argument)")
                    kind, path, alias = "count", None, "$1"
                else:
                    kind, path, alias = "path", tok.value, split_path(tok.value)[-1]
                if self._word("as"):
                    name = self._accept("name")
                    if name is None:
                        raise self._err("a name after AS")
                    alias = name.value
                items.append((kind, path, alias))
                if not self._accept("punct", ","):
                    break
        if not self._word("from"):
            raise self._err("FROM")
        if self.cur.kind != "name" or str(self.cur.value).lower() not in ("devices", "devices.modules"):
            raise self._err("devices or devices.modules (jobs are not mirrored)")
        src = self._accept("name")
        source = str(src.value).lower()
        where: Predicate = lambda doc: True  # noqa: E731
        if self._word("where"):
            where = self._or()
        group_by = None
        if self._word("group"):
            if not self._word("by"):
                raise self._err("BY after GROUP")
            g = self._accept("name")
            if g is None:
                raise self._err("a property path after GROUP BY")
            group_by = g.value
        if self.cur.kind != "end":
            raise self._err("WHERE, GROUP BY or the end")
        if group_by and any(k == "path" and p != group_by for k, p, _ in items):
            raise QueryError(f"query: with GROUP BY {group_by} select only {group_by} and COUNT() in {self.text!r}")
        if any(k == "count" for k, _, _ in items) and not group_by and any(k == "path" for k, _, _ in items):
            raise QueryError(f"query: COUNT() without GROUP BY cannot be combined with properties in {self.text!r}")
        return Query(source, tuple(items), where, group_by)


def parse_query(text: str) -> Query:
    """Parse an IoT Hub query (`SELECT ... FROM devices[.modules] [WHERE ...] [GROUP BY ...]`).

    Raises:
        QueryError: it does not parse; the message shows the position.
    """
    if not isinstance(text, str) or not text.strip():
        raise QueryError("query is empty; use e.g. SELECT * FROM devices WHERE tags.site = 'lab'")
    try:
        return _QueryParser(text).parse_query()
    except QueryError:
        raise
    except ConditionError as exc:
        raise QueryError(str(exc).replace("targetCondition:", "query:", 1)) from None


def _jsonable(value: Any) -> Any:
    return None if value is _MISSING else value


def run_query(query: Query, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The result items of `query` over `docs` (twin documents), in IoT Hub's item shapes."""
    matched = [d for d in docs if query.where(d)]
    if not query.items:
        return matched
    if query.group_by:
        groups: dict[str, tuple[Any, int]] = {}
        for d in matched:
            key_value = _jsonable(_resolve(d, query.group_by))
            key = repr(key_value)
            prev = groups.get(key, (key_value, 0))
            groups[key] = (prev[0], prev[1] + 1)
        out = []
        for value, count in groups.values():
            row = {}
            for kind, _path, alias in query.items:
                row[alias] = count if kind == "count" else value
            out.append(row)
        return out
    if all(k == "count" for k, _, _ in query.items):
        return [{alias: len(matched) for _, _, alias in query.items}]
    out = []
    for d in matched:
        row = {}
        for _, path, alias in query.items:
            value = _resolve(d, path or "")
            if value is not _MISSING:
                row[alias] = value
        out.append(row)
    return out
