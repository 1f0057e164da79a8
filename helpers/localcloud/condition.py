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
`{"deviceId", "tags", "properties": {"desired", "reported"}, "capabilities": {"iotEdge"}, "status"}`;
a missing path compares unequal to everything (as in IoT Hub queries).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from helpers.errors import EdgeLoopError


class ConditionError(EdgeLoopError):
    """A targetCondition does not parse; the message shows where."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|<>|!=|=|<|>)
      | (?P<punct>[()\[\],*])
      | (?P<name>[A-Za-z_$][A-Za-z0-9_$\-]*(?:\.[A-Za-z_$][A-Za-z0-9_$\-]*)*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
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


def _resolve(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for part in path.split("."):
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
    if left is _MISSING:
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
        value = self._literal()
        return lambda doc: _compare(_resolve(doc, path), op.value, value)

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
