"""Serving: /metrics, a landing page at /, and /-/healthy, on one asyncio loop thread.

Built to hold under the shipped unit's limits (TasksMax, MemoryMax, LimitNOFILE) against clients that
connect and stay silent, or trickle a request byte by byte (slowloris):

- One event-loop thread owns every connection; an idle connection costs a descriptor and a few KB,
  never a thread. Rendering (and the landing page) runs off the loop in a small bounded pool, bcrypt
  in one more thread; so the exporter's thread count does not grow with its clients. A scrape of a
  state already rendered (`App.cached`, which never blocks) is answered on the loop itself.
- The bytes out: each connection is its own non-blocking socket on the loop's selector (no asyncio
  transport or task per connection or request). A request answered without waiting (a cached
  scrape, /-/healthy, a refusal) is answered in the callback that read it, right after the accept
  when the request is already there, headers and body in one sendmsg; what the kernel does not
  take waits as views of the response's own bytes (a cached body is never copied), and a pipelined
  request is read only once the answer before it is out (a client that never reads holds one).
- Deadlines: the TLS handshake and a whole request's headers must each complete within their own
  deadline (not a timeout per read), a kept-alive connection may idle for `idle_timeout`, and a
  response the client does not read is dropped after `write_timeout`.
- Authentication is checked as soon as the headers are complete, before anything is rendered; a
  refused request closes its connection, so a client without credentials never keeps a slot.
- At most `max_connections` (and fewer than the descriptor limit allows): when full, a new connection
  evicts the oldest one that has not completed a request, then the longest-idle kept-alive one. A
  real scraper, whose request completes in milliseconds, is never the oldest: it still gets in.
- TLS runs on memory BIOs (ssl.SSLObject) inside the loop. Each new connection asks `web()` for the
  current web config (TLS context), and so does each request (users, headers), so a re-read config
  applies without a restart: rotated certificates to new handshakes, changed users to the next
  request, as exporter-toolkit does.
- Client misbehaviour (reset, bad handshake, garbage) is logged at debug level, one logfmt line each
  and rate-limited; it never produces a traceback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import errno
import gzip
import itertools
import logging
import resource
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from ka_exporter.logs import Throttle
from ka_exporter.settings import default

# The logger= name operators' log filters know, kept when the module moved to outputs/.
log = logging.getLogger("ka_exporter.http")

Authorizer = Callable[[str | None], bool]  # Authorization header -> allowed?
# The render contract: (Accept, Accept-Encoding) -> (body, content type, content encoding or None).
Render = Callable[[str, str], tuple[bytes, str, str | None]]
# The same answer if it is already made and still current, else None; never blocks (Renderer.cached).
Cached = Callable[[str, str], tuple[bytes, str, str | None] | None]

FD_RESERVE = 256  # descriptors kept for the sources, dumps, hooks and accept batches
RECV_SIZE = 65536
# Output the kernel has not taken beyond which a client counts as not reading (and its write
# deadline runs), and below which it reads again: asyncio's transports' defaults.
WRITE_HIGH = 65536
WRITE_LOW = 16384


class ServeError(Exception):
    """The server cannot start (port in use, bad address); the message is one line."""


class Guard(Protocol):
    """What the server needs from a web config for one connection (webconfig.WebConfig is one)."""

    @property
    def headers(self) -> dict[str, str]: ...

    def ssl_context(self) -> ssl.SSLContext | None: ...

    def quick_authorize(self, header: str | None) -> bool | None:
        """True/False when decided without bcrypt (cache hit, no users, malformed), else None."""

    def authorize(self, header: str | None) -> bool: ...


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = default("web_max_connections")
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    idle_timeout: float = 300.0
    write_timeout: float = 30.0
    max_header_bytes: int = 16384
    render_workers: int = 2
    max_renders: int = 16  # distinct renders queued or running; beyond that, 503
    max_auth_pending: int = 32  # bcrypt checks queued; beyond that, 429
    max_stalled: int = 32  # clients not reading a response (each holds up to one body in memory)


def registry_render(registry: CollectorRegistry) -> Render:
    """The default render: the registry through prometheus_client's encoder, gzip level 1 if asked."""

    def render(accept: str, accept_encoding: str) -> tuple[bytes, str, str | None]:
        encoder, content_type = choose_encoder(accept)
        body = encoder(registry)
        if "gzip" in accept_encoding:
            return gzip.compress(body, compresslevel=1), content_type, "gzip"
        return body, content_type, None

    return render


class App:
    """What the server serves; filled in by the daemon."""

    def __init__(  # noqa: PLR0917 - the daemon's call, kept positional
        self,
        registry: CollectorRegistry | None = None,
        telemetry_path: str = "/metrics",
        landing: Callable[[], str] | None = None,
        authorize: Authorizer | None = None,
        headers: Mapping[str, str] | None = None,
        render: Render | None = None,
        cached: Cached | None = None,
    ) -> None:
        if render is None:
            if registry is None:
                raise ValueError("App needs a registry or a render function")
            render = registry_render(registry)
        self.registry = registry
        self.render = render
        self.cached = cached  # called on the event loop: a hit is served without a render thread
        self.headers = dict(headers or {})
        self.telemetry_path = telemetry_path
        self.landing = landing
        self.authorize = authorize


class _StaticGuard:
    """A Guard from an App's fixed settings (no --web.config.file, or tests)."""

    def __init__(self, app: App, tls: ssl.SSLContext | None) -> None:
        self.headers = app.headers
        self._tls = tls
        self._authorize = app.authorize

    def ssl_context(self) -> ssl.SSLContext | None:
        return self._tls

    def quick_authorize(self, header: str | None) -> bool | None:  # noqa: ARG002 - Guard's signature
        return True if self._authorize is None else None

    def authorize(self, header: str | None) -> bool:
        return True if self._authorize is None else self._authorize(header)


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    encoding: str | None = None
    close: bool = False
    extra: tuple[tuple[str, str], ...] = ()


REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

# Connection states
HANDSHAKE, HEADERS, BUSY, IDLE, CLOSED = range(5)


def _text(status: int, close: bool = False, extra: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _Response(status, f"{REASONS[status]}\n".encode(), close=close, extra=extra)


def parse_request(head: bytes) -> _Request | int:
    """The request line and headers (without the blank line) -> a request, or the status to refuse."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
        return 400
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[1] or any(not p for p in parts):
        return 400
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        return 505 if version.startswith("HTTP/") else 400
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[:1] in (" ", "\t"):
            return 400  # no obs-fold, no space before the colon
        headers.setdefault(name.lower(), value.strip(" \t"))
    return _Request(method, target, version, headers)


class _Conn:
    """One client connection on its own non-blocking socket, driven by the loop's selector (no
    asyncio transport): optional TLS on memory BIOs, HTTP/1.1 keep-alive, deadlines.

    A request answered without waiting (a cached scrape, /-/healthy, a refusal) is answered in the
    same loop callback that read it, headers and body in one sendmsg; only a render, the landing page
    or a bcrypt check goes through a task. Output the kernel does not take at once waits as views of
    the response's own bytes (a cached body is never copied), and the next pipelined request is read
    only once it is out, so a client that asks and never reads holds at most one response.
    """

    __slots__ = (
        "_buf",
        "_closing",
        "_in",
        "_out",
        "_paused_writing",
        "_pending",
        "_reading",
        "_timer",
        "_tls",
        "_tls_out",
        "_writing",
        "completed",
        "fd",
        "guard",
        "loop",
        "peer",
        "server",
        "sock",
        "state",
    )

    def __init__(self, server: _AsyncServer, sock: socket.socket, peer: str, guard: Guard) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.guard = guard
        self.state = HANDSHAKE
        self.completed = False  # has served at least one authorized request
        self.peer = peer
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLObject | None = None
        self._in: ssl.MemoryBIO | None = None
        self._tls_out: ssl.MemoryBIO | None = None
        self._out: deque[memoryview] = deque()  # what the kernel has not taken yet
        self._pending = 0  # its bytes
        self._paused_writing = False
        self._reading = False
        self._writing = False
        self._closing = False  # closed: the socket goes once the output is out

    def start(self) -> None:
        self.server.register(self)
        ctx = self.guard.ssl_context()
        if ctx is not None:
            self._in, self._tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self._tls = ctx.wrap_bio(self._in, self._tls_out, server_side=True)
            self._arm(self.server.limits.handshake_timeout)
        else:
            self.state = HEADERS
            self._arm(self.server.limits.header_timeout)
            # A scraper sends its request right after connecting: it is often there already, and
            # reading it now saves a turn of the loop (a recv that finds nothing costs less).
            self._readable()
        if self.state in (HANDSHAKE, HEADERS) or (self.state == IDLE and not self._out):
            self._resume_reading()

    # -- the socket

    def _resume_reading(self) -> None:
        if not self._reading and self.state != CLOSED:
            self.loop.add_reader(self.fd, self._readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.fd)
            self._reading = False

    def _readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.server.client_error("connection lost", self.peer, exc)
            self.abort()
            return
        if not data:
            self.close()  # the client's end: close ours too, after what is still to go out
            return
        self.data_received(data)

    def _write(self, parts: list[bytes]) -> None:
        """Send `parts` (in one sendmsg); keep views of what the kernel did not take."""
        if self._closing or self.fd < 0:
            return
        if self._out:
            for part in parts:
                self._queue(memoryview(part))
            return
        sent = self._sendmsg(parts)
        if sent is None:
            return
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            self._queue(memoryview(part)[sent:])
            sent = 0
        if self._out and not self._writing:
            self.loop.add_writer(self.fd, self._writable)
            self._writing = True

    def _sendmsg(self, parts: list[bytes] | list[memoryview]) -> int | None:
        """What the kernel took of `parts` (0: nothing now); None: the connection is gone."""
        try:
            return self.sock.sendmsg(parts) if len(parts) > 1 else self.sock.send(parts[0])
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self.server.client_error("connection lost", self.peer, exc)
            self.abort()
            return None

    def _queue(self, view: memoryview) -> None:
        self._out.append(view)
        self._pending += len(view)
        if not self._paused_writing and self._pending > WRITE_HIGH:
            self._paused_writing = True
            self._arm(self.server.limits.write_timeout)
            self.server.stalled_writer(self)

    def _writable(self) -> None:
        out = self._out
        sent = self._sendmsg(list(itertools.islice(out, 64)))
        if sent is None:
            return
        self._pending -= sent
        while sent:
            head = out[0]
            if sent >= len(head):
                sent -= len(head)
                out.popleft()
            else:
                out[0] = head[sent:]
                sent = 0
        if self._paused_writing and self._pending <= WRITE_LOW:
            self._resume_writing()
        if out:
            return
        self.loop.remove_writer(self.fd)
        self._writing = False
        if self._closing:
            self._finish()
        elif self.state == IDLE:
            self._resume_reading()  # the next request of a pipelining client, now that this one is out
            if self._buf:
                self._plain(b"")

    def _resume_writing(self) -> None:
        self._paused_writing = False
        self.server.stalled.pop(self, None)
        if self.state == IDLE:
            self._arm(self.server.limits.idle_timeout)
        elif self.state == BUSY:
            self._disarm()

    # -- TLS

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        tls = self._tls
        if tls is None:
            self._plain(data)
            return
        assert self._in is not None  # noqa: S101 - set with _tls
        self._in.write(data)
        if self.state == HANDSHAKE:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, OSError, ValueError) as exc:
                self._flush()
                self.server.client_error("TLS handshake failed", self.peer, exc)
                self.abort()
                return
            self._flush()
            check = getattr(tls.context, "check_peer", None)  # webconfig.ServerContext
            problem = check(tls.getpeercert()) if callable(check) else None
            if problem:
                self.server.client_error("TLS client refused", self.peer, problem)
                self.abort()
                return
            self.state = HEADERS
            self._arm(self.server.limits.header_timeout)
        chunks = []
        while True:
            try:
                chunk = tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._flush()
                self.close()
                return
            except (ssl.SSLError, OSError) as exc:
                self.server.client_error("TLS error", self.peer, exc)
                self.abort()
                return
            if not chunk:
                break
            chunks.append(chunk)
        self._flush()
        if chunks:
            self._plain(b"".join(chunks))

    def _flush(self) -> None:
        if self._tls_out is not None and self._tls_out.pending:
            self._write([self._tls_out.read()])

    def _send(self, parts: list[bytes]) -> None:
        if self.state == CLOSED:
            return
        if self._tls is None:
            self._write(parts)
            return
        try:
            for part in parts:
                self._tls.write(part)
        except (ssl.SSLError, OSError) as exc:
            self.server.client_error("TLS error", self.peer, exc)
            self.abort()
            return
        self._flush()

    # -- HTTP

    def _plain(self, data: bytes) -> None:
        self._buf += data
        limit = self.server.limits.max_header_bytes
        while True:
            if self.state == BUSY:
                if len(self._buf) > limit:
                    self.abort()  # pipelining without reading the answers
                return
            if self.state == IDLE:
                if not self._buf.strip(b"\r\n"):
                    self._buf.clear()
                    return
                if self._out:
                    self._pause_reading()  # the last answer is not out yet: this one waits for it
                    return
                self.state = HEADERS
                self._arm(self.server.limits.header_timeout)
            if self.state != HEADERS or not self._next_request():
                return

    def _next_request(self) -> bool:
        """Take one request off the buffer and answer it (or start to); False: its headers are not
        all there yet, or the connection is done."""
        buf = self._buf
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        sep = 4
        if end < 0:
            end = buf.find(b"\n\n")
            sep = 2
        limit = self.server.limits.max_header_bytes
        if end < 0 or end > limit:
            if len(buf) > limit or end > limit:
                self._respond_now(_text(431, close=True))
            return False
        head = bytes(buf[:end])
        del buf[: end + sep]
        self.state = BUSY
        parsed = parse_request(head)
        if isinstance(parsed, int):
            self._respond_now(_text(parsed, close=True))
            return False
        # Users and headers as the web config says now (re-read), as exporter-toolkit checks them
        # per request; the TLS context stays the one this connection was made with.
        try:
            self.guard = guard = self.server.guard()
            resp = self.server.refuse(parsed)
            allowed = None
            if resp is None:
                allowed = guard.quick_authorize(parsed.headers.get("authorization"))
                if allowed is not None:
                    resp = self.server.route_now(parsed, allowed)
        except Exception:
            log.exception("serving %s failed", parsed.target[:200])
            resp = _text(500, close=True)
        if resp is None:  # a render, the landing page or a bcrypt check: off the loop
            self._disarm()
            self._pause_reading()
            if allowed is None:
                self.loop.create_task(self._authorize(parsed))
            else:
                self.server.render_for(self, parsed)
            return False
        self._answer(parsed, resp)
        return self.state == IDLE

    async def _authorize(self, req: _Request) -> None:
        """bcrypt off the loop, then the request is answered as any other."""
        try:
            resp = await self.server.authorize(req, self.guard)
            if resp is None:
                self.server.render_for(self, req)
                return
        except Exception:
            log.exception("serving %s failed", req.target[:200])
            resp = _text(500, close=True)
        self.answered(req, resp)

    def answered(self, req: _Request, resp: _Response) -> None:
        """The answer to a request that waited (a render, bcrypt), when it is there."""
        if self.state == CLOSED:
            return
        self._answer(req, resp)
        if self.state == IDLE and not self._out:
            self._resume_reading()
            if self._buf:
                self._plain(b"")

    def _answer(self, req: _Request, resp: _Response) -> None:
        # The response may be shared (one render answers every scrape that waited for it): this
        # request's own framing is decided here, never written into the shared response.
        close = resp.close or wants_close(req)
        if resp.status == 200:
            self.completed = True
            self.server.touch(self)
        self._send(_encode(resp, self.guard.headers, head_only=req.method == "HEAD", close=close))
        if self.state == CLOSED:
            return  # the send failed
        if close:
            self.close()
            return
        self.state = IDLE
        limits = self.server.limits
        self._arm(limits.write_timeout if self._paused_writing else limits.idle_timeout)

    def _respond_now(self, resp: _Response) -> None:
        self.state = BUSY
        self._disarm()
        self._send(_encode(resp, self.guard.headers, head_only=False))
        self.close()

    # -- closing

    def close(self) -> None:
        """Close after what was written has been sent (TLS: with a close_notify)."""
        if self.state == CLOSED:
            return
        if self._tls is not None and self.state != HANDSHAKE:
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                self._tls.unwrap()
            self._flush()
        self.state = CLOSED
        self._disarm()
        self._pause_reading()
        if not self._out:
            self._finish()
            return
        self._closing = True
        self._arm_abort(self.server.limits.write_timeout)

    def abort(self) -> None:
        self.state = CLOSED
        self._finish()

    def _finish(self) -> None:
        """The socket goes, now (what was not sent with it)."""
        self._disarm()
        if self.fd >= 0:
            self._pause_reading()
            if self._writing:
                self.loop.remove_writer(self.fd)
                self._writing = False
            self.sock.close()
            self.fd = -1
            self._out.clear()
            self.server.unregister(self)

    # -- deadlines

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _arm_abort(self, seconds: float) -> None:
        self._timer = self.loop.call_later(seconds, self.abort)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._paused_writing:
            self.server.client_error("client does not read its response", self.peer, "dropped")
            self.abort()
        elif self.state == HANDSHAKE:
            self.server.client_error("TLS handshake deadline passed", self.peer, "dropped")
            self.abort()
        elif self.state == HEADERS:
            self.server.client_error("request headers deadline passed", self.peer, "dropped")
            if self._tls is None and self._buf:
                self._respond_now(_text(408, close=True))
            else:
                self.abort()
        elif self.state == IDLE:
            self.close()


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


def _path(target: str) -> str:
    """The path of a request target (an origin-form target without a query is its own path)."""
    if "?" not in target and "#" not in target and target[:1] == "/":
        return target
    return urlsplit(target).path


def wants_close(req: _Request) -> bool:
    """Whether the client asked to close after this response (`Connection` tokens; HTTP/1.0 closes
    unless it asks for keep-alive)."""
    tokens = {t.strip() for t in req.headers.get("connection", "").lower().split(",")}
    return "close" in tokens or (req.version == "HTTP/1.0" and "keep-alive" not in tokens)


def _encode(
    resp: _Response, headers: Mapping[str, str], head_only: bool, close: bool | None = None
) -> list[bytes]:
    """The response as [head, body] (or [head]): written with one sendmsg, the body never copied."""
    lines = [
        f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}",
        "Server: ka-exporter",
        f"Date: {_http_date()}",
        *(f"{name}: {value}" for name, value in headers.items()),
        *(f"{name}: {value}" for name, value in resp.extra),
        f"Content-Type: {resp.content_type}",
        f"Content-Length: {len(resp.body)}",
    ]
    if resp.encoding:
        lines.append(f"Content-Encoding: {resp.encoding}")
    if resp.close if close is None else close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return [head] if head_only or not resp.body else [head, resp.body]


class _AsyncServer:
    """The loop-side state: connections by age, the pools, the accept loop."""

    def __init__(self, sock: socket.socket, app: App, guard: Callable[[], Guard], limits: Limits) -> None:
        self.sock = sock
        self.app = app
        self.guard = guard
        self.limits = limits
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        room = soft - FD_RESERVE if soft != resource.RLIM_INFINITY else limits.max_connections
        self.max_connections = max(16, min(limits.max_connections, room))
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self.fresh: OrderedDict[_Conn, None] = OrderedDict()  # no request completed yet, oldest first
        self.kept: OrderedDict[_Conn, None] = OrderedDict()  # completed one, least recently used first
        self.stalled: OrderedDict[_Conn, None] = OrderedDict()  # not reading their response
        self.evicted = 0
        self.render_pool = concurrent.futures.ThreadPoolExecutor(
            limits.render_workers, thread_name_prefix="http-render"
        )
        self.auth_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="http-auth")
        # Renders running, by what they render: the requests waiting for each.
        self.renders: dict[tuple[str, str, str], list[tuple[_Conn, _Request]]] = {}
        self.auth_pending = 0
        self.throttle = Throttle(per_second=2.0, burst=20)
        self._accepting = False

    # -- connections

    @property
    def connections(self) -> int:
        return len(self.fresh) + len(self.kept)

    def register(self, conn: _Conn) -> None:
        self.fresh[conn] = None

    def unregister(self, conn: _Conn) -> None:
        self.fresh.pop(conn, None)
        self.kept.pop(conn, None)
        self.stalled.pop(conn, None)

    def stalled_writer(self, conn: _Conn) -> None:
        """A client is not reading its response: its transport holds the rest of the body in memory.

        At most `max_stalled` such clients: the longest-stalled one beyond that is dropped, so clients
        that ask for /metrics and never read cannot add up to more memory than MemoryMax allows.
        """
        self.stalled[conn] = None
        while len(self.stalled) > self.limits.max_stalled:
            oldest = next(iter(self.stalled))
            self.stalled.pop(oldest)
            self.client_error("client does not read its response", oldest.peer, "dropped (too many such)")
            oldest.abort()

    def touch(self, conn: _Conn) -> None:
        self.fresh.pop(conn, None)
        self.kept[conn] = None
        self.kept.move_to_end(conn)

    def _evict(self, table: OrderedDict[_Conn, None]) -> bool:
        for conn in table:
            if conn.state != BUSY:
                table.pop(conn)
                conn.abort()
                self.evicted += 1
                return True
        return False

    def _make_room(self) -> bool:
        """True: there is room (maybe after evicting the oldest unfinished, else the least recently
        used kept-alive connection); False: every connection is busy."""
        if self.connections < self.max_connections:
            return True
        return self._evict(self.fresh) or self._evict(self.kept)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                # EMFILE/ENFILE/ENOBUFS: back off briefly instead of spinning on a ready socket.
                self.client_error("accept failed", "-", exc)
                self._pause_accepting(0.1)
                return
            if not self._make_room():
                sock.close()
                self.client_error("connection refused", "-", "every connection is busy")
                continue
            try:
                sock.setblocking(False)
                # No Nagle: TLS writes its session tickets and then the response as two small
                # segments, and the second would wait for the client's delayed ACK (40 ms).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else "?"
                _Conn(self, sock, peer, self.guard()).start()
            except OSError as exc:
                self.client_error("connection lost", "-", exc)
                sock.close()
            except Exception:
                log.exception("cannot serve a new connection")
                sock.close()

    def _pause_accepting(self, seconds: float) -> None:
        if self._accepting:
            self.loop.remove_reader(self.sock.fileno())
            self._accepting = False
        self.loop.call_later(seconds, self.start_accepting)

    def start_accepting(self) -> None:
        if not self._accepting and self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self._accepting = True

    # -- requests

    def refuse(self, req: _Request) -> _Response | None:
        """The answer to a request no path serves (method, body), else None."""
        if req.method not in ("GET", "HEAD"):
            return _text(405, extra=(("Allow", "GET, HEAD"),))
        if req.headers.get("transfer-encoding") or req.headers.get("content-length", "0") != "0":
            return _text(400, close=True)  # GET with a body: nothing to read it for
        return None

    def route_now(self, req: _Request, allowed: bool) -> _Response | None:
        """The answer if it is there without waiting (a cached scrape, /-/healthy, 401, 404); None: a
        render or the landing page is needed (`respond`). Called on the loop: never blocks."""
        if not allowed:
            self.client_error("unauthorized", "-", req.target[:100])
            return _text(401, close=True, extra=(("WWW-Authenticate", 'Basic realm="ka-exporter"'),))
        path = _path(req.target)
        if path == self.app.telemetry_path:
            if self.app.cached is not None:
                # A body already made for a state that has not moved: the bytes, straight from the
                # loop (a hand-off to a render thread and back costs more than the scrape itself).
                hit = self.app.cached(req.headers.get("accept", ""), req.headers.get("accept-encoding", ""))
                if hit is not None:
                    return _Response(200, hit[0], hit[1], hit[2])
            return None
        if path == "/":
            return None
        if path in ("/-/healthy", "/-/ready"):
            return _Response(200, b"OK\n")
        return _text(404)

    async def authorize(self, req: _Request, guard: Guard) -> _Response | None:
        """The bcrypt check (one at a time, at most `max_auth_pending` waiting), then `route_now`."""
        if self.auth_pending >= self.limits.max_auth_pending:
            return _text(429, close=True, extra=(("Retry-After", "1"),))
        self.auth_pending += 1
        try:
            header = req.headers.get("authorization")
            allowed = await self.loop.run_in_executor(self.auth_pool, guard.authorize, header)
        finally:
            self.auth_pending -= 1
        return self.route_now(req, allowed)

    def render_for(self, conn: _Conn, req: _Request) -> None:
        """What `route_now` could not give (a render of /metrics, the landing page), made in the pool
        and handed to `conn` when done. Requests that arrive while the same render is running share
        it: one loop callback answers them all."""
        if _path(req.target) == self.app.telemetry_path:
            accept, accept_encoding = req.headers.get("accept", ""), req.headers.get("accept-encoding", "")
            key = ("m", accept, accept_encoding)

            def job() -> _Response:
                body, content_type, encoding = self.app.render(accept, accept_encoding)
                return _Response(200, body, content_type, encoding)

        else:
            key, job = ("/", "", ""), self._landing
        waiting = self.renders.get(key)
        if waiting is None:
            if len(self.renders) >= self.limits.max_renders:
                conn.answered(req, _text(503, extra=(("Retry-After", "1"),)))
                return
            waiting = self.renders[key] = []
            self.render_pool.submit(job).add_done_callback(lambda done: self._posted(key, done))
        waiting.append((conn, req))

    def _posted(self, key: tuple[str, str, str], done: concurrent.futures.Future[_Response]) -> None:
        """In the render thread: the loop takes it from here (nothing when it has stopped)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._rendered, key, done)

    def _rendered(self, key: tuple[str, str, str], done: concurrent.futures.Future[_Response]) -> None:
        waiting = self.renders.pop(key, [])
        try:
            resp = done.result()
        except Exception:
            log.exception("serving %s failed", "/metrics" if key[0] == "m" else "/")
            resp = _text(500, close=True)
        for conn, req in waiting:
            conn.answered(req, resp)

    def _landing(self) -> _Response:
        page = self.app.landing() if self.app.landing else "<html><body>ka-exporter</body></html>"
        return _Response(200, page.encode(), "text/html; charset=utf-8")

    # -- logging

    def client_error(self, what: str, peer: str, detail: object) -> None:
        """Debug level, one line, at most a few per second (and a count of what was left out)."""
        if not log.isEnabledFor(logging.DEBUG):
            return
        allowed, skipped = self.throttle.hit()
        if allowed:
            more = f" ({skipped} similar lines suppressed)" if skipped else ""
            log.debug("%s: client=%s %s%s", what, peer, str(detail).replace("\n", " ")[:200], more)

    def _loop_error(self, _loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        if isinstance(exc, ConnectionError | ssl.SSLError | TimeoutError):
            self.client_error(str(context.get("message", "connection error")), "-", exc)
            return
        allowed, _ = self.throttle.hit()
        if allowed:
            log.error("serving: %s: %s", context.get("message", "error"), exc if exc is not None else "")

    # -- life

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.start_accepting()
        try:
            self.loop.run_forever()
        finally:
            for conn in list(self.fresh) + list(self.kept):
                conn.abort()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    def stop(self) -> None:
        if self._accepting:
            self.loop.remove_reader(self.sock.fileno())
            self._accepting = False
        self.loop.stop()


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host or host == "" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # ":9774" means every address, IPv4 included.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "" else 1)
        sock.bind((host or "::", port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpServer:
    """Binds at construction (so the daemon can bind before entering another namespace).

    `web`, when given, is called for each new connection and returns the web config it gets (TLS
    context, users, headers): see webconfig.WebConfigReloader. Otherwise `tls` and the App's
    `authorize`/`headers` apply to every connection.
    """

    def __init__(
        self,
        host: str,
        port: int,
        app: App,
        tls: ssl.SSLContext | None = None,
        *,
        web: Callable[[], Guard] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.limits = limits or Limits()
        try:
            sock = _listen(host, port, backlog=1024)
        except OSError as exc:
            where = f"{host or '*'}:{port}"
            if exc.errno == errno.EADDRINUSE:
                raise ServeError(f"cannot listen on {where}: address already in use") from None
            raise ServeError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        static = _StaticGuard(app, tls)
        self._server = _AsyncServer(sock, app, web or (lambda: static), self.limits)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.sock.getsockname()[1])

    @property
    def max_connections(self) -> int:
        return self._server.max_connections

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._server.loop.call_soon_threadsafe(self._server.stop)
            self._thread.join(timeout=5)
        self._server.render_pool.shutdown(wait=False, cancel_futures=True)
        self._server.auth_pool.shutdown(wait=False, cancel_futures=True)
        self._server.sock.close()
