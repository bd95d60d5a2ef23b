"""OData URL pieces: path segments, key segments, the `$filter` subset the project uses, `$select`, `$orderby`.

`$filter` supports eq/ne/gt/ge/lt/le, and/or/not, parentheses, contains/startswith/endswith,
Microsoft.Dynamics.CRM.In, null/true/false, numbers, strings ('' escapes), GUIDs and `a/b` paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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

    def expr(self) -> Predicate:
        left = self.and_expr()
        while self.peek() == "or":
            self.take()
            right = self.and_expr()
            left = (lambda a, b: lambda row: a(row) or b(row))(left, right)
        return left

    def and_expr(self) -> Predicate:
        left = self.not_expr()
        while self.peek() == "and":
            self.take()
            right = self.not_expr()
            left = (lambda a, b: lambda row: a(row) and b(row))(left, right)
        return left

    def not_expr(self) -> Predicate:
        if self.peek() == "not":
            self.take()
            inner = self.not_expr()
            return lambda row: not inner(row)
        return self.primary()

    def operand(self) -> Callable[[dict[str, Any]], Any]:
        tok = self.take()
        if tok.startswith("'") or GUID_RE.match(tok) or tok in ("null", "true", "false") or \
                re.match(r"^-?\d", tok):
            value = parse_literal(tok)
            return lambda row: value
        self.check(tok)
        return lambda row: _get(row, tok)

    def primary(self) -> Predicate:
        tok = self.peek()
        if tok == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if tok in ("contains", "startswith", "endswith"):
            self.take()
            self.take("(")
            prop = self.operand()
            self.take(",")
            val = self.operand()
            self.take(")")
            fn = {"contains": lambda a, b: b in a, "startswith": lambda a, b: a.startswith(b),
                  "endswith": lambda a, b: a.endswith(b)}[tok]
            return lambda row: isinstance(prop(row), str) and isinstance(val(row), str) and \
                fn(prop(row).lower(), val(row).lower())
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
            wanted = {_norm(v) for v in args.get("PropertyValues", [])}
            return lambda row: _norm(_get(row, prop_name)) in wanted
        left = self.operand()
        op = self.take()
        if op not in _OPS:
            raise bad_request("Syntax error in $filter: expected eq, ne, gt, ge, lt or le after a property.")
        right = self.operand()
        return lambda row: _compare(op, left(row), right(row))


def parse_filter(text: str, check: Callable[[str], None]) -> Predicate:
    """Compile `$filter` into a predicate over output-shaped rows; `check` raises for unknown properties."""
    tokens = _tokenize(text)
    parser = _Parser(tokens, check)
    pred = parser.expr()
    if parser.peek() is not None:
        raise bad_request("Syntax error in $filter.")
    return pred


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
