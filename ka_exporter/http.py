"""Serving: /metrics, a landing page at /, and /-/healthy, on a threaded HTTP server."""

from __future__ import annotations

import errno
import gzip
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("ka_exporter.http")

Authorizer = Callable[[str | None], bool]  # Authorization header -> allowed?
# (Accept, Accept-Encoding) -> (body, content type, content encoding or None)
Render = Callable[[str, str], tuple[bytes, str, str | None]]


class ServeError(Exception):
    """The server cannot start (port in use, bad address); the message is one line."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    tls_handshake_timeout = 10.0

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host or host == "" else socket.AF_INET
        super().__init__((host or "::", port), handler, bind_and_activate=False)
        if self.address_family == socket.AF_INET6:
            # ":9774" means every address, IPv4 included.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "" else 1)
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        # TLS: the handshake runs here, in the connection's own thread, never in accept() on the
        # serving thread, where a client that connects and stays silent would stall everyone.
        if isinstance(request, ssl.SSLSocket) and not _tls_handshake(request, self.tls_handshake_timeout):
            return
        super().finish_request(request, client_address)


def _tls_handshake(sock: ssl.SSLSocket, timeout: float) -> bool:
    """Complete the handshake (bounded by timeout) and the context's peer check; False: drop it."""
    try:
        sock.settimeout(timeout)
        sock.do_handshake()
        check = getattr(sock.context, "check_peer", None)  # webconfig.ServerContext: client_allowed_sans
        problem = check(sock.getpeercert()) if callable(check) else None
        if problem:
            log.debug("TLS client refused: %s", problem)
            return False
        sock.settimeout(None)
    except (OSError, ValueError) as exc:
        log.debug("TLS handshake failed: %s", exc)
        return False
    return True


class App:
    """What the handler serves; filled in by the daemon."""

    def __init__(
        self,
        registry: CollectorRegistry,
        telemetry_path: str = "/metrics",
        landing: Callable[[], str] | None = None,
        authorize: Authorizer | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        render: Render | None = None,
    ) -> None:
        self.registry = registry
        self.render = render
        self.headers = dict(headers or {})
        self.telemetry_path = telemetry_path
        self.landing = landing
        self.authorize = authorize
        self.render_lock = threading.Lock()


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ka-exporter"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        timeout = 30  # a client that connects and sends nothing does not hold its thread forever

        def send_response(self, code: int, message: str | None = None) -> None:
            super().send_response(code, message)
            for name, value in app.headers.items():
                self.send_header(name, value)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            if app.authorize is not None and not app.authorize(self.headers.get("Authorization")):
                body = b"Unauthorized\n"
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="ka-exporter"')
                self._finish(body, "text/plain; charset=utf-8")
                return
            path = urlsplit(self.path).path
            try:
                if path == app.telemetry_path:
                    self._metrics()
                elif path == "/":
                    page = app.landing() if app.landing else "<html><body>ka-exporter</body></html>"
                    self.send_response(200)
                    self._finish(page.encode(), "text/html; charset=utf-8")
                elif path in ("/-/healthy", "/-/ready"):
                    self.send_response(200)
                    self._finish(b"OK\n", "text/plain; charset=utf-8")
                else:
                    self.send_response(404)
                    self._finish(b"Not Found\n", "text/plain; charset=utf-8")
            except (BrokenPipeError, ConnectionResetError):
                return

        def _metrics(self) -> None:
            if app.render is not None:
                body, ctype, encoding = app.render(
                    self.headers.get("Accept") or "", self.headers.get("Accept-Encoding") or ""
                )
                self.send_response(200)
                if encoding is not None:
                    self.send_header("Content-Encoding", encoding)
                self._finish(body, ctype)
                return
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(app.registry)
            self.send_response(200)
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                body = gzip.compress(body, compresslevel=1)
                self.send_header("Content-Encoding", "gzip")
            self._finish(body, content_type)

        def _finish(self, body: bytes, content_type: str) -> None:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class HttpServer:
    """Binds at construction (so the daemon can bind before entering another namespace)."""

    def __init__(self, host: str, port: int, app: App, tls: ssl.SSLContext | None = None) -> None:
        try:
            self._server = _Server(host, port, make_handler(app))
        except OSError as exc:
            where = f"{host or '*'}:{port}"
            if exc.errno == errno.EADDRINUSE:
                raise ServeError(f"cannot listen on {where}: address already in use") from None
            raise ServeError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        if tls is not None:
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
