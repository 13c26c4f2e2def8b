"""keepalived.conf reader: what *should* exist, as `model.KeepalivedConfig`.

Pure parsing plus the file reads that `include` needs; no logging, no prometheus_client.

Reading follows keepalived 2.x's own parser (lib/parser.c) where it matters for the result:

* Comments start at an unquoted `!` or `#` anywhere on a line (`\\#` / `\\!` escape them).
* Every unquoted `{` and `}` is a line of its own, so `vrrp_instance X {`, `{` on the next line and
  `virtual_ipaddress { 10.0.0.1/24 }` all work. Words are split on blanks; `"..."` / `'...'` quote
  (with the man page's escapes), so `script "/bin/check --x"` is one word.
* `include PATTERN` (and 2.x's `includer/m/w/b/a` variants): glob with `{a,b}` braces, sorted,
  relative to the *including* file's directory; directories are skipped, and so are executable files
  (keepalived refuses them: reported as a problem). A plain path that does not exist is a problem; a
  wildcard that matches nothing is not (an empty conf.d is normal). Include loops, nesting deeper
  than `MAX_INCLUDE_DEPTH` and more than `MAX_FILES` files are reported and cut off.
* keepalived 2.x macros: `@id` / `@^id` conditional lines are kept when `id` matches (resp. does not
  match) `config_id`, which defaults, as in keepalived, to the first label of `uname -n` (pass the
  `-i` value of the running keepalived if it uses one). `$NAME=value` definitions (also multi-line
  with trailing `\\`), `$NAME` / `${NAME}` substitution (recursive, bounded), the predefined
  `${_PWD}`, `${_INSTANCE}`, `${_HASH}`, `${_BANG}` and `${_RANDOM}` (which yields its minimum, so
  a parse is deterministic), `~SEQ(...)`, `~SEQx(...)` and `~LST(...)` line repetition (bounded by
  `MAX_LINES`).

Errors: bad *content* never raises. Everything the reader cannot use becomes a `ConfigProblem`
(file, line, one-line message; line 0 = the file as a whole) in `.problems` and the rest of the
file is still used. Only a main
file that cannot be opened at all raises `ConfigError` (one-line message, e.g. "keepalived config
/etc/keepalived/keepalived.conf not found"); the caller decides whether to keep an older config.

Unknown keywords and blocks are ignored silently: keepalived has hundreds, the exporter needs few.

Secrets: the value of every `auth_pass` line is dropped when the line is read, wherever it appears
(even outside an `authentication` block), and scrubbed out of every problem message; no record, repr
or message carries it.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from ka_exporter.model import (
    ConfigProblem,
    ConfInstance,
    ConfNotifyFifo,
    ConfRealServer,
    ConfScript,
    ConfVip,
    ConfVirtualServer,
    KeepalivedConfig,
    lvs_key,
)

__all__ = [
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_INCLUDE_DEPTH",
    "MAX_LINES",
    "MAX_PROBLEMS",
    "ConfigError",
    "FileStamp",
    "ReadResult",
    "default_config_id",
    "file_stamp",
    "load_config",
    "parse_text",
    "read_config",
]

MAX_FILE_BYTES = 16 * 1024 * 1024  # a single config file larger than this is refused
MAX_INCLUDE_DEPTH = 16
MAX_FILES = 512  # files read for one config, includes included
MAX_LINES = 1_000_000  # logical lines, after ~SEQ/~LST and multi-line definitions are expanded
MAX_PROBLEMS = 200  # further problems are counted in one last summary problem
_MAX_SUBST = 1000  # parameter replacements on one line
_MAX_LINE_CHARS = 1 << 20  # a substituted line may not grow beyond this
_MAX_EXPAND_DEPTH = 32  # nesting of multi-line definitions and ~SEQ/~LST

FileStamp = tuple[int, int, int]
"""(st_mtime_ns, st_size, st_ino): a change in any means the file must be read again."""


class ConfigError(Exception):
    """The main config file could not be read at all (missing, unreadable, not a file): one line."""


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A parsed config plus what to watch to know when it must be read again.

    `watched` lists every file read (stamped from the very descriptor that was read) and every
    directory an include pattern searched (a new file there changes the directory's stamp), with
    `None` for a path that did not exist.
    """

    config: KeepalivedConfig
    watched: tuple[tuple[str, FileStamp | None], ...] = ()


def default_config_id() -> str:
    """keepalived's default config-id: the node name up to the first dot."""
    return os.uname().nodename.split(".", 1)[0]


def file_stamp(path: str | Path) -> FileStamp | None:
    """The stamp of `path` (following symlinks), or None if it cannot be stat()ed."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read_config(path: Path, *, config_id: str | None = None) -> KeepalivedConfig:
    """Read keepalived.conf at `path` with its includes. Raises only ConfigError (see module doc)."""
    return load_config(path, config_id=config_id).config


def load_config(path: Path, *, config_id: str | None = None) -> ReadResult:
    """Like `read_config`, also returning the files and directories to watch for changes."""
    reader = _Reader(default_config_id() if config_id is None else config_id)
    nodes = reader.read_main(str(path))
    return ReadResult(reader.finish(nodes), tuple(reader.watched.items()))


def parse_text(text: str, filename: str = "<text>", *, config_id: str | None = None) -> KeepalivedConfig:
    """Parse config text as if read from `filename` (relative includes resolve next to it).

    Never raises: every problem, including a missing included file, ends up in `.problems`.
    """
    reader = _Reader(default_config_id() if config_id is None else config_id)
    reader.files.append(filename)
    reader.open_files.append(os.path.realpath(filename))
    ctx = _FileCtx(filename, os.path.dirname(os.path.abspath(filename)), 0)
    nodes = reader.parse_source(text, ctx)
    return reader.finish(nodes)


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


class _Reader:
    """One read of a config: shared macro definitions, problems, files, watched paths, secrets."""

    def __init__(self, config_id: str) -> None:
        self.config_id = config_id
        self.defs: dict[str, _Def] = {}
        self.problems: list[ConfigProblem] = []
        self.dropped_problems = 0
        self.files: list[str] = []
        self.watched: dict[str, FileStamp | None] = {}
        self.secrets: set[str] = set()
        self.open_files: list[str] = []  # real paths being read (include loop guard)
        self.lines = 0
        self.line_budget_reported = False
        self.multiline: _Def | None = None  # a multi-line definition being collected

    # -- problems ---------------------------------------------------------------------------------

    def problem(self, file: str, line: int, message: str) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.dropped_problems += 1
            return
        p = ConfigProblem(file, line, message)
        if p not in self.problems:
            self.problems.append(p)

    # -- files ------------------------------------------------------------------------------------

    def read_main(self, path: str) -> list[_Node]:
        """Read the main file; a main file that cannot be read raises ConfigError."""
        try:
            data, st = self._read_bytes(path)
        except FileNotFoundError:
            raise ConfigError(f"keepalived config {path} not found") from None
        except _NotRegularError:
            raise ConfigError(f"keepalived config {path} is not a regular file") from None
        except _TooLargeError as exc:
            raise ConfigError(f"keepalived config {path} is too large ({exc} bytes)") from None
        except OSError as exc:
            raise ConfigError(f"keepalived config {path}: {exc.strerror or type(exc).__name__}") from None
        self.files.append(path)
        self.open_files.append(os.path.realpath(path))
        self.watched[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
        if st.st_mode & 0o111:
            self.problem(path, 0, "file is executable: keepalived refuses to read an executable config")
        return self._parse_bytes(data, _FileCtx(path, os.path.dirname(os.path.abspath(path)), 0))

    def _read_bytes(self, path: str) -> tuple[bytes, os.stat_result]:
        # O_NONBLOCK: a FIFO named in a glob must not hang the reader (it is refused below anyway).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _NotRegularError
            if st.st_size > MAX_FILE_BYTES:
                raise _TooLargeError(str(st.st_size))
            chunks: list[bytes] = []
            total = 0
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                total += len(chunk)
                if total > MAX_FILE_BYTES:
                    raise _TooLargeError(f"more than {MAX_FILE_BYTES}")
                chunks.append(chunk)
            return b"".join(chunks), st
        finally:
            os.close(fd)

    def _parse_bytes(self, data: bytes, ctx: _FileCtx) -> list[_Node]:
        nul = data.find(b"\0")
        if nul >= 0:
            line = data.count(b"\n", 0, nul) + 1
            self.problem(ctx.name, line, "binary data (NUL byte): not a config file, ignored")
            return []
        return self.parse_source(data.decode("utf-8", errors="replace"), ctx)

    def _include(self, inc: _Include, ctx: _FileCtx) -> list[_Node]:
        if ctx.depth + 1 > MAX_INCLUDE_DEPTH:
            self.problem(inc.file, inc.line, f"includes nested deeper than {MAX_INCLUDE_DEPTH}: not followed")
            return []
        nodes: list[_Node] = []
        pattern = inc.pattern if os.path.isabs(inc.pattern) else os.path.join(ctx.dir, inc.pattern)
        for pat in _expand_braces(pattern):
            if glob.has_magic(pat):
                root = _glob_root(pat)
                self.watched.setdefault(root, file_stamp(root))
                matches = sorted(glob.glob(pat))
            else:
                if not os.path.lexists(pat):
                    parent = os.path.dirname(pat) or "."
                    self.watched.setdefault(parent, file_stamp(parent))
                    self.watched.setdefault(pat, None)
                    self.problem(inc.file, inc.line, f"include {_show(inc.pattern)}: no such file")
                    continue
                matches = [pat]
            for match in matches:
                nodes.extend(self._include_one(match, inc, ctx))
        return nodes

    def _include_one(self, path: str, inc: _Include, ctx: _FileCtx) -> list[_Node]:
        if os.path.isdir(path):
            return []  # glob(GLOB_MARK) marks directories and keepalived skips them
        real = os.path.realpath(path)
        if real in self.open_files:
            self.problem(inc.file, inc.line, f"include loop: {_show(path, 200)} is already being read")
            return []
        if len(self.files) >= MAX_FILES:
            self.problem(
                inc.file, inc.line, f"more than {MAX_FILES} config files: {_show(path, 200)} skipped"
            )
            return []
        try:
            data, st = self._read_bytes(path)
        except _NotRegularError:
            self.problem(inc.file, inc.line, f"include {_show(path, 200)} is not a regular file: skipped")
            return []
        except _TooLargeError:
            self.problem(inc.file, inc.line, f"include {_show(path, 200)} is too large: skipped")
            return []
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            self.problem(inc.file, inc.line, f"include {_show(path, 200)}: {why}")
            return []
        self.watched[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
        parent = os.path.dirname(path) or "."
        self.watched.setdefault(parent, file_stamp(parent))
        if st.st_mode & 0o111:
            self.problem(inc.file, inc.line, f"include {_show(path, 200)} is executable: keepalived skips it")
            return []
        if path not in self.files:
            self.files.append(path)
        self.open_files.append(real)
        saved_multiline = self.multiline
        self.multiline = None
        try:
            sub = _FileCtx(path, os.path.dirname(os.path.abspath(path)), ctx.depth + 1)
            return self._parse_bytes(data, sub)
        finally:
            self.multiline = saved_multiline
            self.open_files.pop()

    # -- one file's text -> nodes -----------------------------------------------------------------

    def parse_source(self, text: str, ctx: _FileCtx) -> list[_Node]:
        """Turn one file's text into a list of statements (blocks nested), includes spliced in."""
        root: list[_Node] = []
        # (children, owner node or None for a stray '{', line where the block opened)
        stack: list[tuple[list[_Node], _Node | None, int]] = [(root, None, 0)]
        last: _Node | None = None
        for item in self._logical_lines(text, ctx):
            if isinstance(item, _Include):
                stack[-1][0].extend(self._include(item, ctx))
                last = None
                continue
            words = item.words
            if words == ["{"]:
                if last is not None and last.block is None:
                    last.block = []
                    stack.append((last.block, last, item.line))
                else:
                    self.problem(item.file, item.line, "unexpected '{' (no keyword before it): block ignored")
                    stack.append(([], None, item.line))
                last = None
            elif words == ["}"]:
                if len(stack) > 1:
                    stack.pop()
                else:
                    self.problem(item.file, item.line, "unexpected '}' (no block is open)")
                last = None
            else:
                node = _Node(words[0], words[1:], item.file, item.line)
                if node.key == "auth_pass":
                    self._forget_secret(node)
                stack[-1][0].append(node)
                last = node
        if len(stack) > 1:
            _, owner, line = stack[1]
            what = _describe(owner) if owner is not None else "'{'"
            missing = len(stack) - 1
            self.problem(
                ctx.name, line, f"{what} opened here is not closed at end of file ({missing} '}}' missing)"
            )
        return root

    def _forget_secret(self, node: _Node) -> None:
        for word in node.args:
            if word:
                self.secrets.add(word)
        if node.args:
            whole = " ".join(node.args)
            self.secrets.add(whole)
            if len(whole) > 8:  # VRRP PASS carries 8 bytes; keepalived truncates (and says so)
                self.problem(node.file, node.line, "auth_pass is longer than 8 characters: only 8 are used")
        node.args = ["<hidden>"] if node.args else []

    def _logical_lines(self, text: str, ctx: _FileCtx) -> Iterator[_Line | _Include]:
        for lineno, physical in enumerate(text.split("\n"), start=1):
            raw = physical.rstrip("\r")
            if not raw:
                if self.multiline is not None:
                    self._end_multiline()
                continue
            line, cont, open_quote = _decomment(raw)
            if open_quote:
                self.problem(ctx.name, lineno, "unterminated quote")
            if self.multiline is not None:
                self._continue_multiline(line, cont)
                continue
            if not line:
                continue
            yield from self._process(line, ctx, lineno, 0)

    def _end_multiline(self) -> None:
        d = self.multiline
        if d is not None:
            d.value = d.value.rstrip("\n")
            if not d.value:
                d.multiline = False
        self.multiline = None

    def _continue_multiline(self, line: str, cont: bool) -> None:
        d = self.multiline
        if d is None:
            return
        if cont:
            body = line[:-1].rstrip(_BLANK)
            if body:
                d.value += body + "\n"
        else:
            d.value += line
            self._end_multiline()

    def _process(self, text: str, ctx: _FileCtx, lineno: int, depth: int) -> Iterator[_Line | _Include]:
        """keepalived's read_line() for one decommented line: macros, include, brace split."""
        if depth > _MAX_EXPAND_DEPTH:
            self.problem(ctx.name, lineno, "definitions/~SEQ nested too deeply: line ignored")
            return
        for _ in range(_MAX_SUBST):
            if text.startswith("@"):
                neg = text.startswith("@^")
                ofs = 2 if neg else 1
                m = re.search(r"[ \t]", text[ofs:])
                if m is None:
                    return
                word = text[ofs : ofs + m.start()]
                if (word == self.config_id and bool(self.config_id)) == neg:
                    return
                text = text[ofs + m.start() :].lstrip(_BLANK)
                if not text:
                    return
            if text.startswith("$"):
                dm = _DEF_RE.match(text)
                if dm is not None:
                    self._define(dm.group(1), dm.group(2))
                    return
            if text.startswith("~SEQ"):
                yield from self._seq(text, ctx, lineno, depth)
                return
            if text.startswith("~LST"):
                yield from self._lst(text, ctx, lineno, depth)
                return
            if text.startswith("~"):
                break
            if "$" not in text:
                break
            new, lines = self._substitute(text, ctx, lineno)
            if lines is not None:
                for sub in lines:
                    sub_text = sub.strip(_BLANK)
                    if sub_text:
                        yield from self._process(sub_text, ctx, lineno, depth + 1)
                return
            if new == text:
                break
            text = new
            if not (text.startswith("@") or "$" in text):
                break
        else:
            self.problem(ctx.name, lineno, "parameter substitution does not terminate: line ignored")
            return
        if text.startswith("include"):
            words, _ = _words(text)
            if len(words) == 2 and words[0] in _INCLUDE_WORDS:
                yield _Include(ctx.name, lineno, words[1])
                return
        for part in _split_braces(text):
            if not self._count_line(ctx, lineno):
                return
            if part in ("{", "}"):
                yield _Line(ctx.name, lineno, [part])
                continue
            pw, _ = _words(part)
            if pw:
                yield _Line(ctx.name, lineno, pw)

    def _count_line(self, ctx: _FileCtx, lineno: int) -> bool:
        self.lines += 1
        if self.lines <= MAX_LINES:
            return True
        if not self.line_budget_reported:
            self.line_budget_reported = True
            self.problem(
                ctx.name, lineno, f"more than {MAX_LINES} config lines after expansion: rest ignored"
            )
        return False

    def _define(self, name: str, value: str) -> None:
        value = value.strip(_BLANK)
        if value.endswith("\\"):
            body = value[:-1].rstrip(_BLANK)
            d = _Def(body + "\n" if body else "", multiline=True)
            self.defs[name] = d
            self.multiline = d
        else:
            self.defs[name] = _Def(value)

    def _lookup(self, name: str, params: str, ctx: _FileCtx) -> str | None:
        d = self.defs.get(name)
        if d is not None:
            return d.value
        if name == "_PWD":
            return ctx.dir
        if name == "_INSTANCE":
            return self.config_id
        if name == "_HASH":
            return "#"
        if name == "_BANG":
            return "!"
        if name == "_RANDOM":
            nums = params.split()
            return nums[0] if nums else "0"  # deterministic: the minimum of the range
        return None

    def _substitute(self, text: str, ctx: _FileCtx, lineno: int) -> tuple[str, list[str] | None]:
        """Replace defined $NAME / ${NAME} (recursively). A line that is only a multi-line
        definition's name expands to that definition's lines (returned as the second item)."""
        whole = _REF_RE.fullmatch(text)
        if whole is not None:
            name = whole.group("bname") or whole.group("name") or ""
            d = self.defs.get(name)
            if d is not None and d.multiline:
                return text, d.value.split("\n")
        pos = 0
        count = 0
        while True:
            m = _REF_RE.search(text, pos)
            if m is None:
                return text, None
            name = m.group("bname") or m.group("name") or ""
            d = self.defs.get(name)
            value = (
                None if d is not None and d.multiline else self._lookup(name, m.group("params") or "", ctx)
            )
            if value is None:
                pos = m.start() + 1
                continue
            count += 1
            text = text[: m.start()] + value + text[m.end() :]
            if count > _MAX_SUBST or len(text) > _MAX_LINE_CHARS:
                self.problem(ctx.name, lineno, "parameter substitution does not terminate: line ignored")
                return "", None
            pos = m.start()  # rescan: replacement is recursive
            if value.lstrip(_BLANK).startswith("~"):
                return text, None

    def _seq(self, text: str, ctx: _FileCtx, lineno: int, depth: int) -> Iterator[_Line | _Include]:
        m = _SEQ_RE.match(text)
        if m is None:
            self.problem(ctx.name, lineno, "invalid ~SEQ definition: line ignored")
            return
        hexa, params, rest = m.group(1) == "x", m.group(2), m.group(3)
        head = params.split(",", 1)
        var = head[0].strip(_BLANK)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var) or len(head) < 2:
            self.problem(ctx.name, lineno, "invalid ~SEQ definition: line ignored")
            return
        sub, _ = self._substitute(head[1], ctx, lineno)
        nums = [x.strip(_BLANK) for x in sub.split(",")]
        if not 1 <= len(nums) <= 3 or not all(_CINT_RE.fullmatch(x) for x in nums):
            self.problem(ctx.name, lineno, "invalid ~SEQ values: line ignored")
            return
        vals = [int(x, 0) for x in nums]
        if len(vals) == 1:
            end = vals[0]
            start, step = (-1 if end < 0 else 1), (-1 if end < 1 else 1)
        elif len(vals) == 2:
            start, end = vals
            step = 1 if start <= end else -1
        else:
            start, step, end = vals
            if step == 0 or (start < end and step < 0) or (start > end and step > 0):
                self.problem(ctx.name, lineno, "invalid ~SEQ values: line ignored")
                return
        if hexa and (start < 0 or end < 0):
            self.problem(ctx.name, lineno, "~SEQx is only valid for positive numbers: line ignored")
            return
        value = start
        while (step > 0 and value <= end) or (step < 0 and value >= end):
            if self.lines > MAX_LINES:
                self._count_line(ctx, lineno)
                return
            self.defs[var] = _Def(format(value, "x") if hexa else str(value))
            yield from self._process(rest, ctx, lineno, depth + 1)
            value += step

    def _lst(self, text: str, ctx: _FileCtx, lineno: int, depth: int) -> Iterator[_Line | _Include]:
        m = re.match(r"~LST[ \t]*\((.*)", text, re.DOTALL)
        close = _matching_paren(text, text.find("(")) if m else -1
        if m is None or close < 0:
            self.problem(ctx.name, lineno, "invalid ~LST definition: line ignored")
            return
        inside, rest = text[text.find("(") + 1 : close], text[close + 1 :].lstrip(_BLANK)
        items = _split_top(inside)
        if len(items) < 2:
            self.problem(ctx.name, lineno, "invalid ~LST definition: line ignored")
            return
        names = [n.strip(_BLANK) for n in _unbrace(items[0]).split(",")]
        if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names):
            self.problem(ctx.name, lineno, "invalid ~LST definition: line ignored")
            return
        for item in items[1:]:
            if self.lines > MAX_LINES:
                self._count_line(ctx, lineno)
                return
            values = [v.strip(_BLANK) for v in _unbrace(item).split(",")]
            for i, n in enumerate(names):
                self.defs[n] = _Def(values[i] if i < len(values) else "")
            yield from self._process(rest, ctx, lineno, depth + 1)

    # -- nodes -> KeepalivedConfig ----------------------------------------------------------------

    def finish(self, nodes: list[_Node]) -> KeepalivedConfig:
        cfg = _Interpreter(self).run(nodes)
        order = {f: i for i, f in enumerate(self.files)}
        problems = sorted(self.problems, key=lambda p: (order.get(p.file, len(order)), p.line))
        if self.dropped_problems:
            last = problems[-1] if problems else ConfigProblem(self.files[0] if self.files else "", 0, "")
            problems.append(
                ConfigProblem(last.file, last.line, f"{self.dropped_problems} more problems not shown")
            )
        return KeepalivedConfig(
            instances=cfg.instances,
            scripts=cfg.scripts,
            sync_groups=cfg.sync_groups,
            router_id=cfg.router_id,
            vrrp_version=cfg.vrrp_version,
            enable_dbus=cfg.enable_dbus,
            notify_fifos=cfg.notify_fifos,
            files=tuple(self.files),
            virtual_servers=cfg.virtual_servers,
            problems=tuple(self._scrub(p) for p in problems),
        )

    def _scrub(self, p: ConfigProblem) -> ConfigProblem:
        msg = p.message
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret and secret in msg:
                msg = msg.replace(secret, "***")
        return p if msg == p.message else ConfigProblem(p.file, p.line, msg)


class _NotRegularError(OSError):
    pass


class _TooLargeError(OSError):
    pass


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


# --------------------------------------------------------------------------------------------------
# semantic level: statements -> records
# --------------------------------------------------------------------------------------------------

# Keywords that only make sense at the top level: seen inside another block, a '}' is missing.
# global_defs keys naming a FIFO keepalived writes its transitions to (keepalived.conf(5))
_FIFO_KEYS = frozenset({"notify_fifo", "vrrp_notify_fifo"})

_TOP_LEVEL = frozenset(
    {
        "global_defs",
        "vrrp_instance",
        "vrrp_script",
        "vrrp_sync_group",
        "virtual_server",
        "virtual_server_group",
        "static_ipaddress",
        "static_routes",
        "static_rules",
        "linkbeat_interfaces",
        "bfd_instance",
    }
)
_VIP_VALUE_OPTS = frozenset(
    {"brd", "broadcast", "dev", "scope", "label", "peer", "preferred_lft", "track_group", "valid_lft"}
)


@dataclass(slots=True)
class _Draft:
    """A vrrp_instance while it is being read."""

    name: str
    file: str
    line: int
    interface: str | None = None
    vrid: int | None = None
    vrid_bad: bool = False
    state: str | None = None
    priority: int = 100
    advert_int: float = 1.0
    nopreempt: bool = False
    version: int | None = None
    native_ipv6: bool = False
    vips: list[tuple[ConfVip, int, str, int]] = field(default_factory=list)  # vip, version, file, line
    evips: list[ConfVip] = field(default_factory=list)
    unicast_src_ip: str | None = None
    unicast_peers: list[str] = field(default_factory=list)
    track_scripts: list[tuple[str, str, int]] = field(default_factory=list)
    track_interfaces: list[str] = field(default_factory=list)
    auth_type: str | None = None


@dataclass(slots=True)
class _Result:
    instances: tuple[ConfInstance, ...] = ()
    scripts: tuple[ConfScript, ...] = ()
    sync_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    router_id: str | None = None
    vrrp_version: int | None = None
    enable_dbus: bool = False
    notify_fifos: tuple[ConfNotifyFifo, ...] = ()
    virtual_servers: tuple[ConfVirtualServer, ...] = ()


class _Interpreter:
    def __init__(self, reader: _Reader) -> None:
        self.r = reader
        self.router_id: str | None = None
        self.vrrp_version: int | None = None
        self.enable_dbus = False
        self.fifos: dict[str, str] = {}  # "notify_fifo" / "vrrp_notify_fifo" -> path
        self.fifo_scripts: set[str] = set()  # the kinds that also have a *_notify_fifo_script
        self.drafts: list[_Draft] = []
        self.names: set[str] = set()
        self.scripts: dict[str, ConfScript] = {}
        self.groups: list[tuple[str, list[str], _Node]] = []
        self.virtual_servers: list[ConfVirtualServer] = []

    def problem(self, node: _Node, message: str) -> None:
        self.r.problem(node.file, node.line, message)

    # -- helpers ----------------------------------------------------------------------------------

    def _arg(self, node: _Node) -> str | None:
        if not node.args or not node.args[0]:
            self.problem(node, f"{node.key} needs a value")
            return None
        return node.args[0]

    def _int(self, node: _Node, lo: int, hi: int) -> int | None:
        v = self._arg(node)
        if v is None:
            return None
        if _INT_RE.fullmatch(v) and lo <= int(v) <= hi:
            return int(v)
        self.problem(node, f"{node.key} {_show(v)} is not a whole number in {lo}..{hi}")
        return None

    def _float(self, node: _Node, lo: float, hi: float) -> float | None:
        v = self._arg(node)
        if v is None:
            return None
        if _FLOAT_RE.fullmatch(v):
            f = float(v)
            if lo <= f <= hi:
                return f
        self.problem(node, f"{node.key} {_show(v)} is not a number in {lo:g}..{hi:g}")
        return None

    def _block(self, node: _Node) -> list[_Node]:
        if node.block is None:
            self.problem(node, f"{_describe(node)} has no '{{ ... }}' block")
            return []
        return node.block

    def _no_block(self, node: _Node) -> None:
        if node.block is not None:
            self.problem(node, f"unexpected '{{ ... }}' after {_show(node.key)}: ignored")

    def _nested_top(self, node: _Node, parent: _Node) -> bool:
        if node.key in _TOP_LEVEL:
            self.problem(node, f"{node.key} inside {_describe(parent)}: is a '}}' missing above?")
            return True
        return False

    # -- top level --------------------------------------------------------------------------------

    def run(self, nodes: list[_Node]) -> _Result:
        for node in nodes:
            handler = self._top.get(node.key)
            if handler is not None:
                handler(self, node)
        return self._build()

    def _global_defs(self, node: _Node) -> None:
        for n in self._block(node):
            if self._nested_top(n, node):
                continue
            if n.key == "router_id":
                self._no_block(n)
                v = self._arg(n)
                if v is not None:
                    self.router_id = v
            elif n.key == "vrrp_version":
                self._no_block(n)
                ver = self._int(n, 2, 3)
                if ver is not None:
                    self.vrrp_version = ver
            elif n.key == "enable_dbus":
                self._no_block(n)
                self.enable_dbus = _bool_arg(n.args)
            elif n.key in _FIFO_KEYS:
                # `notify_fifo PATH [user [group]]`: where keepalived writes its transition lines
                self._no_block(n)
                v = self._arg(n)
                if v is not None:
                    self.fifos[n.key] = v
            elif n.key.endswith("_script") and n.key[: -len("_script")] in _FIFO_KEYS:
                self._no_block(n)
                self.fifo_scripts.add(n.key[: -len("_script")])

    def _vrrp_script(self, node: _Node) -> None:
        if not node.args:
            self.problem(node, "vrrp_script needs a name")
            return
        name = node.args[0]
        script: str | None = None
        interval, weight, fall, rise = 1.0, 0, 1, 1
        for n in self._block(node):
            if self._nested_top(n, node):
                continue
            if n.key == "script":
                self._no_block(n)
                if n.args and any(n.args):
                    script = " ".join(n.args)
                else:
                    self.problem(n, "script needs a value")
            elif n.key == "interval":
                self._no_block(n)
                f = self._float(n, 0.000001, 1e9)
                interval = interval if f is None else f
            elif n.key == "weight":
                self._no_block(n)
                w = self._int(n, -253, 253)
                weight = weight if w is None else w
            elif n.key == "fall":
                self._no_block(n)
                v = self._int(n, 1, 1 << 31)
                fall = fall if v is None else v
            elif n.key == "rise":
                self._no_block(n)
                v = self._int(n, 1, 1 << 31)
                rise = rise if v is None else v
        if node.block is None:
            return
        if script is None:
            self.problem(node, f"vrrp_script {_show(name)} has no script: keepalived ignores it")
            return
        self.scripts[name] = ConfScript(name, script, interval, weight, fall, rise)

    def _sync_group(self, node: _Node) -> None:
        if not node.args:
            self.problem(node, "vrrp_sync_group needs a name")
            return
        members: list[str] = []
        for n in self._block(node):
            if self._nested_top(n, node):
                continue
            if n.key == "group":
                for entry in self._block(n):
                    members.extend(w for w in [entry.key, *entry.args] if w and entry.key != "auth_pass")
        if node.block is not None:
            self.groups.append((node.args[0], members, node))

    def _instance(self, node: _Node) -> None:
        if not node.args:
            self.problem(node, "vrrp_instance needs a name")
            return
        name = node.args[0]
        if name in self.names:
            self.problem(node, f"vrrp_instance {_show(name)} is already defined: keepalived ignores this one")
            return
        if node.block is None:
            self._block(node)
            return
        d = _Draft(name, node.file, node.line)
        self.names.add(name)
        for n in node.block:
            if self._nested_top(n, node):
                continue
            handler = self._inst.get(n.key)
            if handler is not None:
                handler(self, d, n)
        self.drafts.append(d)

    def _virtual_server(self, node: _Node) -> None:
        """Only what the lvs source needs: the key, protocol, scheduler, quorum, real servers."""
        args = node.args
        if len(args) >= 2 and args[0] in ("fwmark", "group"):
            key = f"{args[0]}:{args[1]}"
        elif args and (addr := _address(args[0])) is not None:
            port = int(args[1]) if len(args) > 1 and args[1].isdigit() else 0
            key = lvs_key(addr, port)
        else:
            self.problem(node, "virtual_server needs IP PORT, fwmark N or group NAME")
            return
        vs = ConfVirtualServer(key=key)
        real: list[ConfRealServer] = []
        for n in self._block(node):
            if n.key == "protocol" and n.args:
                vs = replace(vs, protocol=n.args[0].upper())
            elif n.key in ("lb_algo", "lvs_sched") and n.args:
                vs = replace(vs, lb_algo=n.args[0])
            elif n.key == "quorum" and (q := self._int(n, 0, 2**31 - 1)) is not None:
                vs = replace(vs, quorum=q)
            elif n.key == "delay_loop" and (f := self._float(n, 0, 1e9)) is not None:
                vs = replace(vs, delay_loop=f)
            elif n.key == "sorry_server" and n.args and (a := _address(n.args[0])):
                vs = replace(vs, sorry_server=lvs_key(a, _port_arg(n.args, 0)))
            elif n.key == "real_server":
                a = _address(n.args[0]) if n.args else None
                if a is None:
                    self.problem(n, "real_server needs IP [PORT]")
                    continue
                vport = "0" if vs.key.startswith(("fwmark:", "group:")) else vs.key.rpartition(":")[2]
                rs = ConfRealServer(key=lvs_key(a, _port_arg(n.args, int(vport))))
                for m in n.block or []:
                    if m.key == "weight" and (w := self._int(m, 0, 2**31 - 1)) is not None:
                        rs = replace(rs, weight=w)
                    elif m.key == "inhibit_on_failure":
                        rs = replace(rs, inhibit_on_failure=_bool_arg(m.args))
                real.append(rs)
        self.virtual_servers.append(replace(vs, real_servers=tuple(real)))

    _top: ClassVar[dict[str, Callable[[_Interpreter, _Node], None]]] = {
        "global_defs": _global_defs,
        "vrrp_script": _vrrp_script,
        "vrrp_sync_group": _sync_group,
        "vrrp_instance": _instance,
        "virtual_server": _virtual_server,
    }

    # -- inside vrrp_instance ---------------------------------------------------------------------

    def _i_state(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._arg(n)
        if v is None:
            return
        if v in ("MASTER", "BACKUP"):
            d.state = v
        else:
            self.problem(n, f"unknown state {_show(v)}: keepalived uses BACKUP")
            d.state = "BACKUP"

    def _i_interface(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._arg(n)
        if v is not None:
            d.interface = v

    def _i_vrid(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._int(n, 1, 255)
        if v is None:
            d.vrid_bad = True
        else:
            d.vrid, d.vrid_bad = v, False

    def _i_priority(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._int(n, 1, 255)
        if v is not None:
            d.priority = v

    def _i_advert(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._float(n, 0.01, 255.0)
        if v is not None:
            d.advert_int = v

    def _i_nopreempt(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        d.nopreempt = True

    def _i_preempt(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        d.nopreempt = False

    def _i_version(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._int(n, 2, 3)
        if v is not None:
            d.version = v

    def _i_native_ipv6(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        d.native_ipv6 = True

    def _i_unicast_src(self, d: _Draft, n: _Node) -> None:
        self._no_block(n)
        v = self._arg(n)
        if v is None:
            return
        addr = _address(v)
        if addr is None:
            self.problem(n, f"unicast_src_ip {_show(v)} is not an IP address")
        else:
            d.unicast_src_ip = addr

    def _i_unicast_peer(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n):
                continue
            addr = _address(e.key)
            if addr is None:
                self.problem(e, f"unicast_peer {_show(e.key)} is not an IP address")
            elif addr not in d.unicast_peers:
                d.unicast_peers.append(addr)

    def _i_track_script(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n) or e.key == "auth_pass":
                continue
            if e.key not in (t[0] for t in d.track_scripts):
                d.track_scripts.append((e.key, e.file, e.line))

    def _i_track_interface(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n) or e.key == "auth_pass":
                continue
            if e.key not in d.track_interfaces:
                d.track_interfaces.append(e.key)

    def _i_auth(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n):
                continue
            if e.key == "auth_type":
                self._no_block(e)
                v = self._arg(e)
                if v in ("PASS", "AH"):
                    d.auth_type = v
                elif v is not None:
                    self.problem(e, f"unknown authentication type {_show(v)} (PASS or AH)")
            # auth_pass: its value was dropped when the line was read; nothing to keep

    def _i_vips(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n):
                continue
            vip = self._vip(e)
            if vip is not None:
                d.vips.append((vip, _family(vip.address), e.file, e.line))

    def _i_evips(self, d: _Draft, n: _Node) -> None:
        for e in self._block(n):
            if self._nested_top(e, n):
                continue
            vip = self._vip(e)
            if vip is not None:
                d.evips.append(vip)

    def _vip(self, e: _Node) -> ConfVip | None:
        if e.key == "auth_pass":
            self.problem(e, "auth_pass inside an address block")
            return None
        text = e.key
        host, slash, plen = text.partition("/")
        addr = _address(host)
        if addr is None:
            self.problem(e, f"{_show(text)} is not an IP address")
            return None
        prefix: int | None = None
        if slash:
            limit = 32 if ":" not in addr else 128
            if plen.isascii() and plen.isdigit() and int(plen) <= limit:
                prefix = int(plen)
            else:
                self.problem(e, f"prefix length {_show(plen)} of {addr} is not in 0..{limit}")
        dev: str | None = None
        label: str | None = None
        i = 0
        args = e.args
        while i < len(args):
            opt = args[i]
            if opt in _VIP_VALUE_OPTS:
                value = args[i + 1] if i + 1 < len(args) else None
                if value is None:
                    self.problem(e, f"{opt} needs a value")
                elif opt == "dev":
                    dev = value
                elif opt == "label":
                    label = value
                i += 2
            else:
                i += 1  # flags: home, -nodad, no_track, noprefixroute, autojoin, use_vmac, ...
        return ConfVip(addr, prefix, dev, label)

    _inst: ClassVar[dict[str, Callable[[_Interpreter, _Draft, _Node], None]]] = {
        "state": _i_state,
        "interface": _i_interface,
        "virtual_router_id": _i_vrid,
        "priority": _i_priority,
        "advert_int": _i_advert,
        "nopreempt": _i_nopreempt,
        "no_preempt": _i_nopreempt,
        "preempt": _i_preempt,
        "version": _i_version,
        "native_ipv6": _i_native_ipv6,
        "unicast_src_ip": _i_unicast_src,
        "unicast_peer": _i_unicast_peer,
        "track_script": _i_track_script,
        "track_interface": _i_track_interface,
        "authentication": _i_auth,
        "virtual_ipaddress": _i_vips,
        "virtual_ipaddress_excluded": _i_evips,
    }

    # -- cross references -------------------------------------------------------------------------

    def _build(self) -> _Result:
        member_of: dict[str, str] = {}
        names = {d.name for d in self.drafts}
        sync_groups: list[tuple[str, tuple[str, ...]]] = []
        for gname, members, gnode in self.groups:
            kept: list[str] = []
            for m in members:
                if m not in names:
                    self.problem(
                        gnode, f"vrrp_sync_group {_show(gname)} lists {_show(m)}, not a vrrp_instance"
                    )
                elif m in member_of:
                    self.problem(gnode, f"{_show(m)} is already in vrrp_sync_group {_show(member_of[m])}")
                else:
                    member_of[m] = gname
                    kept.append(m)
            sync_groups.append((gname, tuple(kept)))

        instances: list[ConfInstance] = []
        seen_vrid: dict[tuple[str, str, int], str] = {}
        for d in self.drafts:
            inst = self._instance_record(d, member_of.get(d.name))
            instances.append(inst)
            if inst.vrid is not None and inst.interface is not None and not inst.unicast_peers:
                key = (inst.interface, inst.family, inst.vrid)
                other = seen_vrid.get(key)
                if other is not None:
                    self.r.problem(
                        d.file,
                        d.line,
                        f"{_show(other)} and {_show(d.name)} both use VRID {inst.vrid} "
                        f"({inst.family}) on {_show(inst.interface)}",
                    )
                else:
                    seen_vrid[key] = d.name
        return _Result(
            instances=tuple(instances),
            scripts=tuple(self.scripts.values()),
            sync_groups=tuple(sync_groups),
            router_id=self.router_id,
            vrrp_version=self.vrrp_version,
            enable_dbus=self.enable_dbus,
            notify_fifos=tuple(
                ConfNotifyFifo(kind, path, kind in self.fifo_scripts)
                for kind, path in sorted(self.fifos.items())
            ),
            virtual_servers=tuple(self.virtual_servers),
        )

    def _instance_record(self, d: _Draft, group: str | None) -> ConfInstance:
        if d.vrid is None and not d.vrid_bad:
            self.r.problem(d.file, d.line, f"vrrp_instance {_show(d.name)} has no virtual_router_id")
        if d.interface is None and not d.unicast_peers:
            self.r.problem(d.file, d.line, f"vrrp_instance {_show(d.name)} has no interface")
        family = "inet6" if d.native_ipv6 or (d.vips and d.vips[0][1] == 6) else "inet"
        want = 6 if family == "inet6" else 4
        vips: list[ConfVip] = []
        for vip, ver, file, line in d.vips:
            if ver != want:
                self.r.problem(
                    file,
                    line,
                    f"{vip.address}: address family differs from the instance's ({family}), ignored",
                )
            else:
                vips.append(vip)
        vips.extend(v for v in d.evips if v not in vips)
        for sname, file, line in d.track_scripts:
            if sname not in self.scripts:
                self.r.problem(file, line, f"track_script {_show(sname)} is not a defined vrrp_script")
        return ConfInstance(
            name=d.name,
            interface=d.interface,
            vrid=d.vrid,
            state=d.state,
            priority=d.priority,
            advert_int=d.advert_int,
            nopreempt=d.nopreempt,
            version=d.version if d.version is not None else self.vrrp_version,
            family=family,
            vips=tuple(vips),
            unicast_src_ip=d.unicast_src_ip,
            unicast_peers=tuple(d.unicast_peers),
            track_scripts=tuple(t[0] for t in d.track_scripts),
            track_interfaces=tuple(d.track_interfaces),
            auth_type=d.auth_type,
            sync_group=group,
        )


def _address(text: str) -> str | None:
    """A normalised IP address, or None. A zone (`fe80::1%eth0`) is not accepted, as in keepalived."""
    if not text or len(text) > 45 or "%" in text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _port_arg(args: list[str], default: int) -> int:
    return int(args[1]) if len(args) > 1 and args[1].isdigit() else default


def _family(address: str) -> int:
    return 6 if ":" in address else 4


def _bool_arg(args: list[str]) -> bool:
    if not args:
        return True
    return args[0].lower() not in ("off", "false", "no", "0")
