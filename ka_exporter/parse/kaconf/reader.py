"""keepalived.conf, the reader: files, includes and macros -> a list of statements (`_Node`).

Opens the main file and what it includes (globs, braces, loops and limits), keeps `@id` lines for this
config-id, expands `$NAME` definitions and `~SEQ`/`~LST`, drops `auth_pass` values as it reads, and
collects every problem; `finish` hands the statements to the interpreter and scrubs the secrets out of
the messages.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ka_exporter.model import ConfigProblem, KeepalivedConfig
from ka_exporter.parse.kaconf.interpreter import _Interpreter
from ka_exporter.parse.kaconf.lexer import (
    _BLANK,
    _CINT_RE,
    _DEF_RE,
    _INCLUDE_WORDS,
    _REF_RE,
    _SEQ_RE,
    _decomment,
    _Def,
    _describe,
    _expand_braces,
    _FileCtx,
    _glob_root,
    _Include,
    _Line,
    _matching_paren,
    _Node,
    _show,
    _split_braces,
    _split_top,
    _unbrace,
    _words,
)

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


def file_stamp(path: str | Path) -> FileStamp | None:
    """The stamp of `path` (following symlinks), or None if it cannot be stat()ed."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


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
        return replace(cfg, files=tuple(self.files), problems=tuple(self._scrub(p) for p in problems))

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
