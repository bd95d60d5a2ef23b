"""Reads Bicep and azd files as text for the invariant tests, since no Bicep compiler runs here.

It knows just enough Bicep to be trustworthy for that job: single-quoted strings with `\\'` escapes
and `${...}` interpolation (which may itself hold quoted strings), `'''` multi-line strings, `//` and
`/* */` comments, and braces. Anything subtler is left to `az bicep build` (see infra/README.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"


def bicep_files() -> list[Path]:
    """Every Bicep file under infra/, sorted so failures read the same on every run."""
    return sorted(INFRA.rglob("*.bicep"))


def strip_comments(text: str) -> str:
    """`text` with every comment blanked out (same length and line breaks), strings untouched."""
    out = list(text)
    i, n = 0, len(text)
    # Each frame is ("code", brace_depth) or ("str", 0); "code" inside a string is an interpolation.
    stack: list[list] = [["code", 0]]
    while i < n:
        kind = stack[-1][0]
        ch = text[i]
        if kind == "str":
            if ch == "\\":
                i += 2
                continue
            if ch == "'":
                stack.pop()
            elif text.startswith("${", i):
                stack.append(["code", 0])
                i += 2
                continue
            i += 1
            continue
        # code (top level or inside an interpolation)
        if text.startswith("'''", i):
            end = text.find("'''", i + 3)
            i = n if end < 0 else end + 3
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            for j in range(i, end):
                out[j] = " "
            i = end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            for j in range(i, end):
                if out[j] != "\n":
                    out[j] = " "
            i = end
            continue
        if ch == "'":
            stack.append(["str", 0])
        elif ch == "{":
            stack[-1][1] += 1
        elif ch == "}":
            if len(stack) > 1 and stack[-1][1] == 0:
                stack.pop()  # end of an interpolation: back inside the string
            else:
                stack[-1][1] -= 1
        i += 1
    return "".join(out)


def matching_brace(code: str, open_at: int) -> int:
    """Index of the `}` closing the `{` at `open_at` in comment-free `code`, skipping strings."""
    if code[open_at] != "{":
        raise ValueError(f"no opening brace at {open_at}")
    depth = 0
    i, n = open_at, len(code)
    in_string = False
    interp_depths: list[int] = []
    while i < n:
        ch = code[i]
        if in_string:
            if ch == "\\":
                i += 2
                continue
            if ch == "'":
                in_string = False
            elif code.startswith("${", i):
                interp_depths.append(0)
                in_string = False
                i += 2
                continue
            i += 1
            continue
        if ch == "'":
            in_string = True
        elif ch == "{":
            if interp_depths:
                interp_depths[-1] += 1
            else:
                depth += 1
        elif ch == "}":
            if interp_depths:
                if interp_depths[-1] == 0:
                    interp_depths.pop()
                    in_string = True
                else:
                    interp_depths[-1] -= 1
            else:
                depth -= 1
                if depth == 0:
                    return i
        i += 1
    raise ValueError(f"unbalanced brace opened at {open_at}")


@dataclass(frozen=True)
class Declaration:
    """One `module` or `resource` declaration: its symbol, the quoted reference and its body."""

    keyword: str
    symbol: str
    reference: str
    condition: str
    body: str
    path: Path


_DECLARATION = re.compile(
    r"^(?P<keyword>module|resource)\s+(?P<symbol>\w+)\s+'(?P<reference>[^']+)'"
    r"(?:\s+existing)?\s*=\s*(?P<rest>[^\n]*)",
    re.MULTILINE,
)


def declarations(path: Path) -> list[Declaration]:
    """Every top-level module and resource declaration in one Bicep file, with its body."""
    code = strip_comments(path.read_text(encoding="utf-8"))
    found: list[Declaration] = []
    for match in _DECLARATION.finditer(code):
        open_at = code.find("{", match.start("rest"))
        close_at = matching_brace(code, open_at)
        header = code[match.start("rest") : open_at]
        condition = ""
        if_match = re.search(r"\bif\s*\((.*)\)", header)
        if if_match:
            condition = if_match.group(1).strip()
        found.append(
            Declaration(
                keyword=match.group("keyword"),
                symbol=match.group("symbol"),
                reference=match.group("reference"),
                condition=condition,
                body=code[open_at : close_at + 1],
                path=path,
            )
        )
    return found


def all_declarations() -> list[Declaration]:
    """Declarations across every Bicep file under infra/."""
    return [d for path in bicep_files() for d in declarations(path)]


_PARAM = re.compile(r"^param\s+(?P<name>\w+)\s+(?P<type>\w+)(?P<default>\s*=.*)?$", re.MULTILINE)


def parameters(path: Path) -> dict[str, bool]:
    """Parameter name -> whether it has a default, for one Bicep file."""
    code = strip_comments(path.read_text(encoding="utf-8"))
    return {m.group("name"): bool(m.group("default")) for m in _PARAM.finditer(code)}


_OUTPUT = re.compile(r"^output\s+(?P<name>\w+)\s+\w+\s*=\s*(?P<value>.*)$", re.MULTILINE)


def outputs(path: Path) -> dict[str, str]:
    """Output name -> its value expression (first line), for one Bicep file."""
    code = strip_comments(path.read_text(encoding="utf-8"))
    return {m.group("name"): m.group("value").strip() for m in _OUTPUT.finditer(code)}


def simple_yaml(text: str) -> dict:
    """A nested dict from block-style YAML made of `key: value` lines (all azure.yaml uses)."""
    root: dict = {}
    stack: list[tuple[int, dict]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, value = line.strip().partition(":")
        if not sep:
            raise ValueError(f"unsupported YAML line: {raw!r}")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        value = value.strip()
        if value:
            parent[key] = value.strip("'\"")
        else:
            child: dict = {}
            parent[key] = child
            stack.append((indent, child))
    return root
