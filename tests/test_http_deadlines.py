"""The HTTP server's deadlines and framing, on real loopback sockets (short deadlines to keep it quick).

A deadline is for a whole phase (the TLS handshake, a request's headers), never per read: a client
that trickles a byte at a time is still dropped when the phase's time is up.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge

from ka_exporter.outputs.http import App, HttpServer, Limits, parse_request
from tests.conftest import free_port, wait_until
from tests.test_serving_attacks import Certs, certs, unformatted  # noqa: F401 - certs is a fixture
from tests.test_webconfig import web_exporter_argv, write_config

SHORT = Limits(handshake_timeout=1.0, header_timeout=1.0, idle_timeout=1.5, max_header_bytes=4096)


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Gauge("ka_test_value", "A value.", registry=reg).set(7)
    return reg


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[HttpServer]:
    srv = HttpServer("127.0.0.1", 0, App(registry), limits=SHORT)
    srv.start()
    yield srv
    srv.stop()


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes, float]:
    """Send `trickle` a byte every 0.2 s until the server closes (True) or `seconds` pass (False)."""
    sock.settimeout(0.2)
    got = b""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds:
        if i < len(trickle):
            try:
                sock.send(trickle[i : i + 1])
            except OSError:
                return True, got, time.monotonic() - t0
            i += 1
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return True, got, time.monotonic() - t0
        if not data:
            return True, got, time.monotonic() - t0
        got += data
    return False, got, time.monotonic() - t0


def test_headers_trickled_a_byte_at_a_time_are_dropped_at_the_deadline(server: HttpServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        closed, got, took = closed_within(s, 5.0, b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 100)
    assert closed
    assert got.startswith(b"HTTP/1.1 408 ")
    assert took < 3.0  # 1 s deadline for the whole headers, though a byte came every 0.2 s


def test_silent_client_is_dropped_and_a_kept_alive_one_after_idling(server: HttpServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        closed, got, _ = closed_within(s, 5.0)
    assert closed
    assert got == b""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200
    assert "ka_test_value 7.0" in resp.read().decode()
    sock = conn.sock
    assert sock is not None
    closed, _, took = closed_within(sock, 5.0)
    assert closed
    assert took > 1.0  # the idle deadline (1.5 s), not the header deadline
    conn.close()


def test_pipelined_requests_keep_alive_and_http10(server: HttpServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200 OK") < 2:
            chunk = s.recv(4096)
            assert chunk
            data += chunk
        assert b"OK\n" in data
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in data  # then closed


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"GET /metrics HTTP/2.0\r\n\r\n", b"505"),
        (b"garbage\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b"400"),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", b"431"),
        (b"GET /nope HTTP/1.1\r\n\r\n", b"404"),
    ],
)
def test_malformed_requests_get_their_status(server: HttpServer, request_bytes: bytes, status: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(request_bytes)
        data = s.recv(4096)
    assert data.split(b" ")[1] == status


def test_parse_request_refuses_folded_and_spaced_headers() -> None:
    assert parse_request(b"GET / HTTP/1.1\r\nA: b\r\n c") == 400
    assert parse_request(b"GET / HTTP/1.1\r\nA : b") == 400
    req = parse_request(b"GET /m?x=1 HTTP/1.1\r\nAuthorization: Basic x\r\nauthorization: second")
    assert not isinstance(req, int)
    assert req.headers["authorization"] == "Basic x"  # the first one, as Go's server does


def test_tls_handshake_deadline_drops_a_half_hello(registry: CollectorRegistry, certs: Certs) -> None:  # noqa: F811
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    srv = HttpServer("127.0.0.1", 0, App(registry), tls=ctx, limits=SHORT)
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            # The first bytes of a ClientHello record, a byte at a time, never the rest.
            closed, _, took = closed_within(
                s, 5.0, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40
            )
        assert closed
        assert took < 3.0
        client = ssl.create_default_context(cafile=str(certs.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=client, timeout=5)
        conn.request("GET", "/metrics")
        assert "ka_test_value 7.0" in conn.getresponse().read().decode()
        conn.close()
    finally:
        srv.stop()


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_tls_clients_that_reset_leave_at_most_one_line_each_never_a_traceback(
    tmp_path: Path,
    certs: Certs,  # noqa: F811
    log_format: str,
) -> None:
    cfg = write_config(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n",
    )
    port = free_port()
    log = tmp_path / "exporter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            web_exporter_argv(
                port,
                cfg,
                "--log.format",
                log_format,
                "--no-collector.wire",
                "--no-collector.l2",
                "--no-collector.dbus",
                "--no-collector.dumps",
            ),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    client = ssl.create_default_context(cafile=str(certs.ca))
    try:
        assert wait_until(lambda: "listening on" in log.read_text(errors="replace"), 20)
        for _ in range(10):
            # Reset in the middle of the handshake,
            s = socket.create_connection(("127.0.0.1", port))
            s.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 20)
            _reset(s)
            # after it, in the middle of a request,
            t = client.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
            t.send(b"GET /metrics HTTP/1.1\r\nHo")
            _reset(t)
            # and right after asking for a response it does not read; then plain HTTP on the TLS port.
            u = client.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
            u.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            _reset(u)
            with socket.create_connection(("127.0.0.1", port)) as v:
                v.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
                v.settimeout(5)
                try:
                    answer = v.recv(4096)
                except ConnectionResetError:
                    answer = b""
                assert not answer.startswith(b"HTTP")
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=client, timeout=5)
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        proc.wait(15)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text
    if log_format == "logfmt":
        assert unformatted(text) == []
    else:
        for line in text.splitlines():
            assert isinstance(json.loads(line), dict), line
    assert len(text.splitlines()) < 60  # one debug line per client error at most, rate-limited


def test_clients_that_never_read_their_response_are_bounded(tmp_path: Path) -> None:
    """Each one holds the unsent rest of a body in memory: beyond max_stalled, the oldest is dropped."""
    reg = CollectorRegistry()
    big = Gauge("ka_test_big", "Large labels.", ["blob"], registry=reg)
    for i in range(1500):
        big.labels(f"{i:06d}" + "x" * 4000).set(i)  # a ~6 MB body: more than loopback buffers take
    srv = HttpServer("127.0.0.1", 0, App(reg), limits=Limits(max_stalled=4, write_timeout=30.0))
    srv.start()
    stalled = []
    try:
        for _ in range(12):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(s)
            time.sleep(0.1)

        gone: set[int] = set()

        def dropped() -> int:
            for i, s in enumerate(stalled):
                if i in gone:
                    continue
                try:
                    s.setblocking(False)
                    while s.recv(1 << 20):
                        pass
                    gone.add(i)  # EOF
                except BlockingIOError:
                    pass
                except OSError:
                    gone.add(i)
            return len(gone)

        # 12 clients that read nothing, at most 4 allowed to stall: 8 dropped, whatever the order.
        assert wait_until(lambda: dropped() >= 8, 10)
        assert srv._server.connections <= 4
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
        assert len(body) > 5_000_000
        conn.close()
    finally:
        for s in stalled:
            s.close()
        srv.stop()


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP response off `sock`: (head, body), by its Content-Length; nothing past it is read."""
    reader = sock.makefile("rb", buffering=0)
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = reader.read(1)
        assert byte, f"closed before a response: {head!r}"
        head += byte
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
    )
    body = b""
    while len(body) < length:
        chunk = reader.read(length - len(body))
        assert chunk, "closed in the middle of a body"
        body += chunk
    return head.removesuffix(b"\r\n\r\n"), body


def test_a_shared_render_answers_each_request_with_its_own_connection_header() -> None:
    """Scrapers waiting on one render each get their own framing: one asking `Connection: close` is
    closed, the kept-alive one beside it is not (it once got the other's `Connection: close`)."""
    release = threading.Event()
    entered = threading.Event()
    renders: list[int] = []
    looked_up: list[int] = []

    def render(_accept: str, _encoding: str) -> tuple[bytes, str, str | None]:
        renders.append(1)
        entered.set()
        assert release.wait(10)
        return b"ka_test_value 7.0\n", "text/plain; version=0.0.4; charset=utf-8", None

    def cached(_accept: str, _encoding: str) -> None:
        looked_up.append(1)  # called on the loop just before a scrape joins (or starts) a render

    srv = HttpServer("127.0.0.1", 0, App(render=render, cached=cached), limits=SHORT)
    srv.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", srv.port), timeout=5) as closing,
            socket.create_connection(("127.0.0.1", srv.port), timeout=5) as kept,
        ):
            closing.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert entered.wait(5)
            kept.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert wait_until(lambda: len(looked_up) == 2, 5)  # the second joined the running render
            release.set()
            head_c, body_c = _read_response(closing)
            head_k, body_k = _read_response(kept)
            assert body_c == body_k == b"ka_test_value 7.0\n"
            assert len(renders) == 1  # one render answered both
            assert b"Connection: close" in head_c
            assert closing.recv(1) == b""  # and it was closed
            assert b"Connection: close" not in head_k
            # The kept-alive connection still serves: a second request on it is answered.
            kept.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = _read_response(kept)
            assert head.startswith(b"HTTP/1.1 200 ") and body == b"OK\n"
    finally:
        release.set()
        srv.stop()


def test_a_pipelining_client_that_does_not_read_holds_at_most_one_response() -> None:
    """50 pipelined scrapes of a 1 MB body, none read: the server answers the next one only once the
    last is out, so it holds one response for that client (not 50 MB), and all 50 come once it reads."""
    body = b"x" * 1_000_000
    answer = (body, "text/plain; version=0.0.4; charset=utf-8", None)
    srv = HttpServer(
        "127.0.0.1", 0, App(render=lambda _a, _e: answer, cached=lambda _a, _e: answer), limits=SHORT
    )
    srv.start()

    def held() -> int:
        return sum(c._pending for c in list(srv._server.fresh) + list(srv._server.kept))

    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
            assert wait_until(lambda: held() > 0, 5)  # the first answer is waiting for the client
            assert not wait_until(lambda: held() > len(body) + 1024, 1.0)
            s.settimeout(10)
            for _ in range(50):
                head, got = _read_response(s)
                assert head.startswith(b"HTTP/1.1 200 ") and got == body
    finally:
        srv.stop()


def test_tls_bodies_larger_than_the_socket_buffers_arrive_whole_on_a_kept_alive_connection(
    certs: Certs,  # noqa: F811
) -> None:
    """A 6 MB body goes out over several writes (what the kernel takes, then the rest as it reads),
    twice on one kept-alive TLS connection, intact both times."""
    body = bytes(range(256)) * 24_000
    answer = (body, "text/plain; version=0.0.4; charset=utf-8", None)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    app = App(render=lambda _a, _e: answer, cached=lambda _a, _e: answer)
    srv = HttpServer("127.0.0.1", 0, app, tls=ctx, limits=SHORT)
    srv.start()
    try:
        client = ssl.create_default_context(cafile=str(certs.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=client, timeout=10)
        for _ in range(2):
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Connection") is None
            assert resp.read() == body
        conn.close()
    finally:
        srv.stop()


def test_the_landing_page_is_made_off_the_loop_and_served_on_a_kept_alive_connection(
    registry: CollectorRegistry,
) -> None:
    made: list[str] = []

    def landing() -> str:
        made.append(threading.current_thread().name)
        return "<html><body>the page</body></html>"

    srv = HttpServer("127.0.0.1", 0, App(registry, landing=landing), limits=SHORT)
    srv.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        for _ in range(2):
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Content-Type") == "text/html; charset=utf-8"
            assert resp.read() == b"<html><body>the page</body></html>"
        conn.close()
        assert len(made) == 2 and all(name.startswith("http-render") for name in made)
    finally:
        srv.stop()
