"""keepalived.conf, lexical level: physical lines -> logical lines (comments, braces, words, quotes).

The pieces keepalived's lib/parser.c does before any keyword means anything; the package docstring
(`ka_exporter.parse.kaconf`) says what is followed and why.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------
# lexical level: physical lines -> logical lines (brace-split, tokenised) with macros expanded
# --------------------------------------------------------------------------------------------------

_INCLUDE_WORDS = frozenset({"include", "includer", "includem", "includew", "includeb", "includea"})
_BLANK = " \t"
_DECOMMENT_CHARS = frozenset('!#"\\')
_QUOTE_CHARS = frozenset("\"'\\")
_WHITE_RE = re.compile(r"[ \t\f\n\r\v]+")  # keepalived's WHITE_SPACE: not all of str.split()'s
_ESCAPES = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_DEF_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)=[ \t]*(.*)\Z", re.DOTALL)  # no blank before '='
_REF_RE = re.compile(
    r"\$(?:\{(?P<bname>[A-Za-z_][A-Za-z0-9_]*)(?P<params>(?: [0-9]+)*)\}"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?=[ \t,)]|\Z))"
)
_SEQ_RE = re.compile(r"~SEQ(x?)[ \t]*\(([^)]*)\)[ \t]*(.*)\Z", re.DOTALL)
_INT_RE = re.compile(r"[ \t]*[+-]?[0-9]+")
_CINT_RE = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+)")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _show(value: str, limit: int = 48) -> str:
    """A value as it may appear in a one-line message: quoted, control characters escaped, short."""
    if len(value) > limit:
        value = value[:limit] + "..."
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
    return f"'{out}'"


@dataclass(slots=True)
class _FileCtx:
    name: str  # as shown in problems
    dir: str  # for relative includes and ${_PWD}
    depth: int  # include depth (main file: 0)


@dataclass(slots=True)
class _Def:
    value: str
    multiline: bool = False


@dataclass(slots=True)
class _Line:
    """One logical line: `{`, `}` or a statement's words."""

    file: str
    line: int
    words: list[str]


@dataclass(slots=True)
class _Include:
    file: str
    line: int
    pattern: str


@dataclass(slots=True)
class _Node:
    key: str
    args: list[str]
    file: str
    line: int
    block: list[_Node] | None = None


def _decomment(raw: str) -> tuple[str, bool, bool]:
    """keepalived's decomment(): (text, ends with a continuation '\\', has an unterminated quote)."""
    s = raw.lstrip(_BLANK)
    if not _DECOMMENT_CHARS.intersection(s):  # the common line: nothing to look at
        return s.rstrip(_BLANK), False, False
    out: list[str] = []
    quote = False
    skip = False
    cont = False
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if i + 1 >= n:
                cont = True
                break
            if not skip:
                if not quote and s[i + 1] in "#!":
                    out.append(s[i + 1])
                else:
                    out.append(s[i : i + 2])
            i += 2
            continue
        if not skip:
            if c == '"':
                quote = not quote
            elif not quote and c in "#!":
                skip = True
                i += 1
                continue
            out.append(c)
        i += 1
    text = "".join(out).rstrip(_BLANK)
    return (text + "\\" if cont else text), cont, quote


def _split_braces(text: str) -> list[str]:
    """Split a line so that every `{` / `}` outside double quotes stands alone, like read_line()."""
    if "{" not in text and "}" not in text:
        return [text.rstrip(_BLANK)]
    parts: list[str] = []
    while text:
        if text[0] in "{}":
            parts.append(text[0])
            text = text[1:].lstrip(_BLANK)
            continue
        pos = -1
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c == '"':
                j = text.find('"', i + 1)
                if j < 0:
                    break
                i = j + 1
                continue
            if c in "{}":
                pos = i
                break
            i += 1
        if pos < 0:
            parts.append(text.rstrip(_BLANK))
            break
        head = text[:pos].rstrip(_BLANK)
        if head:
            parts.append(head)
        text = text[pos:]
    return parts


def _unescape(s: str, i: int, out: list[str]) -> int:
    """Decode the escape starting after the backslash at s[i]; append to out; return next index."""
    c = s[i]
    if c == "x" and i + 1 < len(s) and s[i + 1] in "0123456789abcdefABCDEF":
        j = i + 1
        val = 0
        while j < len(s) and s[j] in "0123456789abcdefABCDEF":
            val = (val * 16 + int(s[j], 16)) & 0xFF
            j += 1
        out.append(chr(val))
        return j
    if c == "c" and i + 1 < len(s):
        out.append(chr(ord(s[i + 1]) & 0x1F))
        return i + 2
    if c in "01234567":
        j = i
        val = 0
        while j < len(s) and j < i + 3 and s[j] in "01234567":
            val = val * 8 + int(s[j])
            j += 1
        out.append(chr(val & 0xFF))
        return j
    out.append(_ESCAPES.get(c, c))
    return i + 1


def _words(text: str) -> tuple[list[str], bool]:
    """Split a logical line into words (quotes removed, escapes decoded); also: quote left open."""
    if not _QUOTE_CHARS.intersection(text):
        return [w for w in _WHITE_RE.split(text) if w], False
    words: list[str] = []
    i, n = 0, len(text)
    unterminated = False
    while i < n:
        while i < n and text[i] in " \t\f\n\r\v":
            i += 1
        if i >= n:
            break
        cur: list[str] = []
        quote = ""
        while i < n:
            c = text[i]
            if quote:
                if c == quote:
                    quote = ""
                    i += 1
                elif c == "\\" and i + 1 < n:
                    i = _unescape(text, i + 1, cur)
                else:
                    cur.append(c)
                    i += 1
                continue
            if c in " \t\f\n\r\v":
                break
            if c in "\"'":
                quote = c
                i += 1
            elif c == "\\" and i + 1 < n:
                i = _unescape(text, i + 1, cur)
            else:
                cur.append(c)
                i += 1
        if quote:
            unterminated = True
        words.append("".join(cur))
    return words, unterminated


def _expand_braces(pattern: str, limit: int = 256) -> list[str]:
    """csh-style `{a,b}` expansion as glob(GLOB_BRACE) does it (bounded)."""
    depth = 0
    start = -1
    for i, c in enumerate(pattern):
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                inner = pattern[start + 1 : i]
                alts: list[str] = []
                d = 0
                last = 0
                for j, ch in enumerate(inner):
                    if ch == "{":
                        d += 1
                    elif ch == "}":
                        d -= 1
                    elif ch == "," and d == 0:
                        alts.append(inner[last:j])
                        last = j + 1
                alts.append(inner[last:])
                if len(alts) == 1:  # "{x}" is not a brace expression
                    continue
                out: list[str] = []
                for alt in alts:
                    out.extend(_expand_braces(pattern[:start] + alt + pattern[i + 1 :], limit))
                    if len(out) >= limit:
                        return out[:limit]
                return out
    return [pattern]


def _glob_root(pattern: str) -> str:
    """The deepest directory of `pattern` that contains no wildcard."""
    parts = pattern.split(os.sep)
    keep: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        keep.append(part)
    root = os.sep.join(keep)
    return root or (os.sep if pattern.startswith(os.sep) else ".")


def _matching_paren(text: str, start: int) -> int:
    if start < 0:
        return -1
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside {...}."""
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    for c in text:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            out.append("".join(cur).strip(_BLANK))
            cur = []
        else:
            cur.append(c)
    out.append("".join(cur).strip(_BLANK))
    return out


def _unbrace(text: str) -> str:
    text = text.strip(_BLANK)
    if text.startswith("{") and text.endswith("}"):
        return text[1:-1]
    return text


def _describe(node: _Node) -> str:
    label = " ".join([node.key, *node.args[:1]])
    return _show(label, 60)
