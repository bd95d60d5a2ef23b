"""OData URL pieces: path segments, key segments, the `$filter` subset the project uses, `$select`, `$orderby`.

`$filter` supports eq/ne/gt/ge/lt/le, and/or/not, parentheses, contains/startswith/endswith,
Microsoft.Dynamics.CRM.In, null/true/false, numbers, strings ('' escapes), GUIDs and `a/b` paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulator.errors import ApiError, bad_request

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def split_outside(text: str, sep: str) -> list[str]:
    """Split on `sep` outside single quotes and parentheses."""
    parts, depth, quote, cur = [], 0, False, []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            if quote and i + 1 < len(text) and text[i + 1] == "'":
                cur.append("''")
                i += 2
                continue
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == sep and not quote and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def parse_segment(seg: str) -> tuple[str, str | None]:
    """`name(keys)` -> ("name", "keys"); `name` -> ("name", None)."""
    if seg.endswith(")") and "(" in seg:
        i = seg.index("(")
        return seg[:i], seg[i + 1:-1]
    return seg, None


def parse_literal(text: str) -> Any:
    text = text.strip()
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1].replace("''", "'")
    if GUID_RE.match(text):
        return text.lower()
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError as exc:
        # The literal itself stays out of the message: it may be a patient's value.
        raise bad_request("Invalid literal in the request URI (expected a quoted string, number, GUID, "
                          "true, false or null).") from exc


def parse_key(text: str) -> dict[str, Any]:
    """Key segment content -> {"id": guid} or {name: value, …} for alternate/metadata keys."""
    text = text.strip()
    if GUID_RE.match(text):
        return {"id": text.lower()}
    out: dict[str, Any] = {}
    for part in split_outside(text, ","):
        if "=" not in part:
            raise bad_request("Bad Request - Error in query syntax.")
        name, value = part.split("=", 1)
        out[name.strip()] = parse_literal(value)
    return out


# ---------------- $filter ----------------
_TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|([()\[\],=])|([A-Za-z_][A-Za-z0-9_./@]*)|"
                    r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|([0-9a-fA-F-]{36}))")


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        guid = re.match(r"\s*([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})", text[pos:])
        if guid:
            tokens.append(guid.group(1))
            pos += guid.end()
            continue
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise bad_request("Syntax error in $filter.")
        tokens.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


Predicate = Callable[[dict[str, Any]], bool]
_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}


@dataclass(frozen=True)
class KeyHint:
    """Every row the filter can match has `prop` equal to one of `values` (strings lower-cased; never null).

    `eq` and `Microsoft.Dynamics.CRM.In` on a property give one; `and` keeps both sides' hints, `or` only
    the unions of hints that name the same property on both sides. The emulator answers such a filter
    from an alternate-key index instead of testing every row, as Dataverse's SQL indexes do.
    """
    prop: str
    values: frozenset[Any]


class Filter:
    """A compiled `$filter`: call it on an output-shaped row; each of `hints` narrows the rows worth testing."""

    def __init__(self, pred: Predicate, hints: tuple[KeyHint, ...]) -> None:
        self._pred = pred
        self.hints = hints

    def __call__(self, row: dict[str, Any]) -> bool:
        return self._pred(row)


_Node = tuple[Predicate, tuple[KeyHint, ...]]


def _norm(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


def _get(row: dict[str, Any], path: str) -> Any:
    cur: Any = row
    for part in path.split("/"):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _compare(op: str, a: Any, b: Any) -> bool:
    a, b = _norm(a), _norm(b)
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if a is None or b is None:
        return False
    try:
        return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op]
    except TypeError:
        return False


def _union(a: tuple[KeyHint, ...], b: tuple[KeyHint, ...]) -> tuple[KeyHint, ...]:
    """The hints of `a or b`: a row matching either side has the property in the union of both sides' values."""
    return tuple(KeyHint(x.prop, x.values | y.values) for x in a for y in b if x.prop == y.prop)


class _Parser:
    def __init__(self, tokens: list[str], check: Callable[[str], None]) -> None:
        self.t = tokens
        self.i = 0
        self.check = check

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise bad_request("Syntax error in $filter.")
        self.i += 1
        return tok

    def expr(self) -> _Node:
        left, hint = self.and_expr()
        while self.peek() == "or":
            self.take()
            right, right_hint = self.and_expr()
            left = (lambda a, b: lambda row: a(row) or b(row))(left, right)
            hint = _union(hint, right_hint)
        return left, hint

    def and_expr(self) -> _Node:
        left, hint = self.not_expr()
        while self.peek() == "and":
            self.take()
            right, right_hint = self.not_expr()
            left = (lambda a, b: lambda row: a(row) and b(row))(left, right)
            hint = hint + right_hint  # a row matching both sides matches each
        return left, hint

    def not_expr(self) -> _Node:
        if self.peek() == "not":
            self.take()
            inner, _ = self.not_expr()
            return (lambda row: not inner(row)), ()
        return self.primary()

    def operand(self) -> tuple[Callable[[dict[str, Any]], Any], str | None, Any]:
        """The operand's getter, and either the property it names or the literal it is."""
        tok = self.take()
        if tok.startswith("'") or GUID_RE.match(tok) or tok in ("null", "true", "false") or \
                re.match(r"^-?\d", tok):
            value = parse_literal(tok)
            return (lambda row: value), None, value
        self.check(tok)
        return (lambda row: _get(row, tok)), tok, None

    def primary(self) -> _Node:
        tok = self.peek()
        if tok == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if tok in ("contains", "startswith", "endswith"):
            self.take()
            self.take("(")
            prop, _, _ = self.operand()
            self.take(",")
            val, _, _ = self.operand()
            self.take(")")
            fn = {"contains": lambda a, b: b in a, "startswith": lambda a, b: a.startswith(b),
                  "endswith": lambda a, b: a.endswith(b)}[tok]
            return (lambda row: isinstance(prop(row), str) and isinstance(val(row), str) and
                    fn(prop(row).lower(), val(row).lower())), ()
        if tok == "Microsoft.Dynamics.CRM.In":
            self.take()
            self.take("(")
            args: dict[str, Any] = {}
            while self.peek() != ")":
                name = self.take()
                self.take("=")
                if self.peek() == "[":
                    self.take()
                    values = []
                    while self.peek() != "]":
                        values.append(parse_literal(self.take()))
                        if self.peek() == ",":
                            self.take()
                    self.take("]")
                    args[name] = values
                else:
                    args[name] = parse_literal(self.take())
                if self.peek() == ",":
                    self.take()
            self.take(")")
            prop_name = str(args.get("PropertyName", ""))
            self.check(prop_name)
            wanted = frozenset(_norm(v) for v in args.get("PropertyValues", []))
            # A null among the values matches rows without the value, which no key index holds.
            hints = () if None in wanted else (KeyHint(prop_name, wanted),)
            return (lambda row: _norm(_get(row, prop_name)) in wanted), hints
        left, left_prop, left_value = self.operand()
        op = self.take()
        if op not in _OPS:
            raise bad_request("Syntax error in $filter: expected eq, ne, gt, ge, lt or le after a property.")
        right, right_prop, right_value = self.operand()
        hint: tuple[KeyHint, ...] = ()
        if op == "eq" and (left_prop is None) != (right_prop is None):
            prop, value = (left_prop, right_value) if left_prop is not None else (right_prop, left_value)
            # `prop eq null` matches rows without the value, which no key index holds.
            hint = (KeyHint(prop, frozenset({_norm(value)})),) if value is not None else ()
        return (lambda row: _compare(op, left(row), right(row))), hint


def parse_filter(text: str, check: Callable[[str], None]) -> Filter:
    """Compile `$filter` into a predicate over output-shaped rows; `check` raises for unknown properties."""
    tokens = _tokenize(text)
    parser = _Parser(tokens, check)
    pred, hints = parser.expr()
    if parser.peek() is not None:
        raise bad_request("Syntax error in $filter.")
    return Filter(pred, hints)


def parse_select(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_orderby(text: str | None) -> list[tuple[str, bool]]:
    out = []
    for part in (text or "").split(","):
        bits = part.strip().split()
        if bits:
            out.append((bits[0], len(bits) > 1 and bits[1].lower() == "desc"))
    return out


def require_int(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise ApiError(400, "0x80060888", f"Invalid value for {name}.") from exc
