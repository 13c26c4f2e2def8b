"""keepalived.conf reader: what *should* exist, as `model.KeepalivedConfig`.

Pure parsing plus the file reads that `include` needs; no logging, no prometheus_client.

Three parts, in the order a config goes through them: `lexer` (physical lines -> words), `reader`
(files, includes, macros -> statements, with the limits and ConfigError) and `interpreter` (statements
-> records). This module is the API; import from here.

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

import os
from dataclasses import dataclass
from pathlib import Path

from ka_exporter.model import KeepalivedConfig
from ka_exporter.parse.kaconf.lexer import _FileCtx
from ka_exporter.parse.kaconf.reader import (
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_INCLUDE_DEPTH,
    MAX_LINES,
    MAX_PROBLEMS,
    ConfigError,
    FileStamp,
    _Reader,
    file_stamp,
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
