"""Certificate rotation without a restart: new TLS handshakes get the files as they are now.

exporter-toolkit re-reads the web config and the certificate for every handshake; ka-exporter
re-reads them when one of them changed (stat per new connection), and keeps the last good config
while the files are half-replaced.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import stop_exporter
from tests.test_webconfig import (
    PASSWORD,
    _ca,
    _leaf,
    _write_cert,
    _write_key,
    basic,
    start_tls_exporter,
    users_block,
    write_config,
)

CA = _ca("rotation CA")


def new_pair(d: Path, name: str) -> tuple[Path, Path, int]:
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert, key = _leaf(CA, "localhost", sans, server=True)
    return _write_cert(d / f"{name}.crt", cert), _write_key(d / f"{name}.key", key), cert.serial_number


def replace(src: Path, dst: Path) -> None:
    """As cert-manager or certbot do: write aside, then rename over (one atomic step per file)."""
    tmp = dst.with_suffix(".tmp")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def client(tmp_path: Path) -> ssl.SSLContext:
    ca = _write_cert(tmp_path / "ca.crt", CA[0])
    return ssl.create_default_context(cafile=str(ca))


def test_replaced_certificate_reaches_new_handshakes_without_restart(tmp_path, client):
    live = tmp_path / "live"
    live.mkdir()
    old_cert, old_key, old_serial = new_pair(tmp_path, "old")
    new_cert, new_key, new_serial = new_pair(tmp_path, "new")
    replace(old_cert, live / "server.crt")
    replace(old_key, live / "server.key")
    cfg = write_config(
        tmp_path / "web.yml",
        "tls_server_config:\n  cert_file: live/server.crt\n  key_file: live/server.key\n",
    )
    exp = start_tls_exporter(tmp_path, cfg)
    try:
        assert served_serial(exp.port, client) == old_serial
        kept = http.client.HTTPSConnection("127.0.0.1", exp.port, context=client, timeout=5)
        kept.request("GET", "/-/healthy")
        assert kept.getresponse().read() == b"OK\n"

        # Half-way: the new certificate with the old key does not load; the old pair stays in use.
        replace(new_cert, live / "server.crt")
        assert served_serial(exp.port, client) == old_serial
        replace(new_key, live / "server.key")
        assert served_serial(exp.port, client) == new_serial
        assert served_serial(exp.port, client) == new_serial
        # A connection made before the rotation keeps working.
        kept.request("GET", "/-/healthy")
        assert kept.getresponse().read() == b"OK\n"
        kept.close()
        pid = exp.proc.pid
        assert exp.proc.poll() is None

        # Users are re-read too, for every request: on a connection kept open across the change,
        # the request before needs no password and the one after does.
        kept = http.client.HTTPSConnection("127.0.0.1", exp.port, context=client, timeout=5)
        kept.request("GET", "/metrics")
        resp = kept.getresponse()
        assert resp.status == 200
        resp.read()
        cfg.write_text(cfg.read_text() + users_block())
        kept.request("GET", "/metrics")
        resp = kept.getresponse()
        assert resp.status == 401
        resp.read()
        kept.close()
        conn = http.client.HTTPSConnection("127.0.0.1", exp.port, context=client, timeout=5)
        conn.request("GET", "/metrics", headers={"Authorization": basic("prometheus", PASSWORD)})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        stop_exporter(exp)
    assert exp.proc.pid == pid
    logs = exp.logs()
    errors = [line for line in logs.splitlines() if "level=error" in line]
    assert len(errors) == 1, errors
    assert "still serving with the web config loaded before" in errors[0]
    assert logs.count("re-read: new connections use it") == 2
    assert "Traceback" not in logs
