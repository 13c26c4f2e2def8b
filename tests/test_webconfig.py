"""--web.config.file: TLS and basic auth with real certificates, real clients and the real exporter."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import logging
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ka_exporter.outputs.webconfig import WebConfigError, der_validity, load_web_config, parse_basic
from tests.conftest import EXPORTER, RunningExporter, free_port, start_exporter, stop_exporter

PASSWORD = "s3cret-Scrape!"
# Cost 4 keeps the tests quick; the format is what htpasswd -nBC writes ($2y$).
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
NO_SOURCES = (
    "--no-collector.wire",
    "--no-collector.l2",
    "--no-collector.dbus",
    "--no-collector.dumps",
    "--no-collector.config",
)
NOW = dt.datetime.now(dt.UTC)


# ------------------------------------------------------------------------------------------------ PKI


@dataclass
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path  # same CA, SAN not in client_allowed_sans
    other_client_key: Path
    rogue_cert: Path  # signed by a CA the server does not trust
    rogue_key: Path
    expired_cert: Path
    expired_key: Path
    wrong_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> Path:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    path.chmod(0o600)
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    cn: str,
    sans: list[x509.GeneralName],
    *,
    server: bool,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca[1], hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = _ca("ka-test CA")
    rogue_ca = _ca("rogue CA")
    server_sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = _leaf(ca, "localhost", server_sans, server=True)
    client = _leaf(ca, "prometheus", [x509.DNSName("prometheus.ka.test")], server=False)
    other = _leaf(ca, "intruder", [x509.DNSName("intruder.ka.test")], server=False)
    rogue = _leaf(rogue_ca, "prometheus", [x509.DNSName("prometheus.ka.test")], server=False)
    expired = _leaf(
        ca,
        "localhost",
        server_sans,
        server=True,
        not_before=NOW - dt.timedelta(days=60),
        not_after=NOW - dt.timedelta(days=2),
    )
    return Pki(
        dir=d,
        ca=_write_cert(d / "ca.crt", ca[0]),
        server_cert=_write_cert(d / "server.crt", server[0]),
        server_key=_write_key(d / "server.key", server[1]),
        client_cert=_write_cert(d / "client.crt", client[0]),
        client_key=_write_key(d / "client.key", client[1]),
        other_client_cert=_write_cert(d / "other.crt", other[0]),
        other_client_key=_write_key(d / "other.key", other[1]),
        rogue_cert=_write_cert(d / "rogue.crt", rogue[0]),
        rogue_key=_write_key(d / "rogue.key", rogue[1]),
        expired_cert=_write_cert(d / "expired.crt", expired[0]),
        expired_key=_write_key(d / "expired.key", expired[1]),
        wrong_key=_write_key(d / "wrong.key", ec.generate_private_key(ec.SECP256R1())),
    )


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tls_block(pki: Pki, *extra: str, cert: Path | None = None, key: Path | None = None) -> str:
    lines = [
        "tls_server_config:",
        f"  cert_file: {cert or pki.server_cert}",
        f"  key_file: {key or pki.server_key}",
        *(f"  {e}" for e in extra),
    ]
    return "\n".join(lines) + "\n"


def users_block(user: str = "prometheus", hashed: str = HASH) -> str:
    return f"basic_auth_users:\n  {user}: '{hashed}'\n"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ------------------------------------------------------------------------------ loading: refusals


def refused(path: Path) -> str:
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_typo_in_a_key_is_refused_naming_the_key(tmp_path, pki):
    cfg = write_config(tmp_path / "web.yml", tls_block(pki).replace("key_file", "key_flie"))
    assert "unknown setting tls_server_config.key_flie" in refused(cfg)
    cfg = write_config(tmp_path / "web2.yml", "basic_auth_user:\n  a: b\n")
    assert "unknown setting basic_auth_user" in refused(cfg)
    cfg = write_config(tmp_path / "web3.yml", "http_server_config:\n  headers:\n    X-Powered-By: me\n")
    assert "'X-Powered-By' can not be configured" in refused(cfg)


def test_bad_files_are_refused_with_what_is_wrong(tmp_path, pki):
    missing = tmp_path / "nope.crt"
    assert f"cert_file {missing}: no such file" in refused(
        write_config(tmp_path / "a.yml", tls_block(pki, cert=missing))
    )
    assert f"key_file {pki.wrong_key} does not match cert_file {pki.server_cert}" in refused(
        write_config(tmp_path / "b.yml", tls_block(pki, key=pki.wrong_key))
    )
    assert "holds no PEM certificate" in refused(
        write_config(tmp_path / "c.yml", tls_block(pki, cert=pki.server_key))
    )
    assert "missing one of key or key_file" in refused(
        write_config(tmp_path / "d.yml", f"tls_server_config:\n  cert_file: {pki.server_cert}\n")
    )
    # TLS settings without a certificate are an error, not plain HTTP.
    assert "missing one of cert or cert_file" in refused(
        write_config(tmp_path / "d2.yml", "tls_server_config:\n  min_version: TLS13\n")
    )
    assert "min_version 'TLS14' is not one of" in refused(
        write_config(tmp_path / "e.yml", tls_block(pki, "min_version: TLS14"))
    )
    assert "unknown cipher 'TLS_RSA_WITH_RC4_128_SHA'" in refused(
        write_config(tmp_path / "f.yml", tls_block(pki, "cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]"))
    )
    assert "client_ca_file" in refused(
        write_config(
            tmp_path / "g.yml",
            tls_block(pki, f"client_ca_file: {pki.ca}", "client_auth_type: NoClientCert"),
        )
    )
    assert "RequireAnyClientCert" in refused(
        write_config(tmp_path / "h.yml", tls_block(pki, "client_auth_type: RequireAnyClientCert"))
    )
    assert "duplicate key 'key_file'" in refused(
        write_config(tmp_path / "i.yml", tls_block(pki, f"key_file: {pki.server_key}"))
    )


def test_encrypted_key_is_refused_without_prompting(tmp_path, pki):
    key = ec.generate_private_key(ec.SECP256R1())
    enc = _write_key(tmp_path / "enc.key", key, password=b"pass-phrase")
    ca = _ca("enc CA")
    cert = x509.CertificateBuilder().subject_name(_name("x")).issuer_name(ca[0].subject)
    cert_obj = (
        cert.public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(ca[1], hashes.SHA256())
    )
    crt = _write_cert(tmp_path / "enc.crt", cert_obj)
    assert "is encrypted" in refused(write_config(tmp_path / "w.yml", tls_block(pki, cert=crt, key=enc)))


def test_secrets_in_a_bad_file_are_not_echoed(tmp_path, pki):
    # A plain password written where the hash belongs, and a YAML error on a line holding a secret.
    msg = refused(write_config(tmp_path / "a.yml", users_block(hashed="kaT3st01-plain")))
    assert "is not a bcrypt hash" in msg
    assert "kaT3st01" not in msg
    msg = refused(write_config(tmp_path / "b.yml", "basic_auth_users:\n  u: 'kaT3st01\n  v: x: y\n"))
    assert "not valid YAML at line" in msg
    assert "kaT3st01" not in msg


def test_relative_paths_are_from_the_config_file_directory(tmp_path, pki):
    d = tmp_path / "etc"
    d.mkdir()
    shutil.copy(pki.server_cert, d / "s.crt")
    shutil.copy(pki.server_key, d / "s.key")
    cfg = write_config(d / "web.yml", "tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n")
    assert load_web_config(cfg).ssl_context() is not None


def test_inline_certificate_and_key_work(tmp_path, pki):
    def indent(p: Path) -> str:
        return "\n".join("    " + line for line in p.read_text().splitlines())

    cfg = write_config(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert: |\n{indent(pki.server_cert)}\n  key: |\n{indent(pki.server_key)}\n",
    )
    assert load_web_config(cfg).ssl_context() is not None


def test_expired_certificate_loads_with_one_warning(tmp_path, pki, caplog):
    cfg = write_config(tmp_path / "web.yml", tls_block(pki, cert=pki.expired_cert, key=pki.expired_key))
    with caplog.at_level(logging.WARNING, logger="ka_exporter.webconfig"):
        web = load_web_config(cfg)
    assert web.ssl_context() is not None
    assert len(web.warnings) == 1
    assert "the server certificate expired on" in web.warnings[0]
    assert [r.getMessage() for r in caplog.records] == list(web.warnings)


def test_certificate_dates_are_read_from_der(pki):
    cert = x509.load_pem_x509_certificate(pki.expired_cert.read_bytes())
    v = der_validity(cert.public_bytes(serialization.Encoding.DER))
    assert v.not_after == cert.not_valid_after_utc.timestamp()
    assert v.not_before == cert.not_valid_before_utc.timestamp()


def test_empty_file_means_plain_http_and_no_auth(tmp_path):
    web = load_web_config(write_config(tmp_path / "web.yml", ""))
    assert web.ssl_context() is None
    assert web.authorize(None)


# --------------------------------------------------------------------------------- basic auth logic


def test_authorize_accepts_only_the_right_user_and_password(tmp_path):
    web = load_web_config(write_config(tmp_path / "web.yml", users_block()))
    assert web.authorize(basic("prometheus", PASSWORD))
    assert web.authorize("basic " + basic("prometheus", PASSWORD).split()[1])  # scheme is case-insensitive
    assert not web.authorize(basic("prometheus", PASSWORD + "x"))
    assert not web.authorize(basic("Prometheus", PASSWORD))
    assert not web.authorize(basic("nobody", PASSWORD))
    assert not web.authorize(None)
    assert not web.authorize("")
    assert not web.authorize("Bearer abc")
    assert not web.authorize("Basic !!!not-base64")
    assert not web.authorize("Basic " + base64.b64encode(b"no-colon").decode())
    # bcrypt only reads 72 bytes: a longer password that starts with the right one must not pass.
    long_hash = bcrypt.hashpw(b"a" * 72, bcrypt.gensalt(4)).decode()
    web2 = load_web_config(write_config(tmp_path / "web2.yml", users_block("u", long_hash)))
    assert web2.authorize(basic("u", "a" * 72))
    assert not web2.authorize(basic("u", "a" * 73))


def test_successful_checks_are_cached_failures_are_not(tmp_path):
    web = load_web_config(write_config(tmp_path / "web.yml", users_block()))
    good = basic("prometheus", PASSWORD)
    assert web.authorize(good)
    assert web.bcrypt_rounds == 1
    for _ in range(20):
        assert web.authorize(good)
    assert web.bcrypt_rounds == 1  # scrapes after the first cost no bcrypt round
    bad = basic("prometheus", "guess")
    for _ in range(3):
        assert not web.authorize(bad)
    assert web.bcrypt_rounds == 4  # every guess pays full price
    # An unknown user pays the same bcrypt round as a known one (no user enumeration by timing).
    assert not web.authorize(basic("admin", PASSWORD))
    assert web.bcrypt_rounds == 5


def test_parse_basic_keeps_colons_in_passwords():
    assert parse_basic(basic("u", "a:b:c")) == ("u", b"a:b:c")


# ------------------------------------------------------------------------------ the real exporter


def web_exporter_argv(port: int, config: Path, *args: str) -> list[str]:
    """The exporter on 127.0.0.1:port with --web.config.file, logging at debug level."""
    return [
        *EXPORTER,
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--web.config.file",
        str(config),
        "--log.level",
        "debug",
        *args,
    ]


def start_tls_exporter(tmp: Path, config: Path, *args: str) -> RunningExporter:
    """The real exporter serving with --web.config.file; ready when its port accepts connections."""
    port = free_port()
    argv = web_exporter_argv(port, config, *NO_SOURCES, *args)
    return start_exporter(tmp, argv=argv, port=port, ready="listening")


@pytest.fixture
def tls_exporter(tmp_path):
    started: list[RunningExporter] = []

    def factory(config: Path, *args: str) -> RunningExporter:
        exp = start_tls_exporter(tmp_path, config, *args)
        started.append(exp)
        return exp

    yield factory
    for exp in started:
        stop_exporter(exp)


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def get(url: str, ctx: ssl.SSLContext | None = None, auth: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def served(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        get(url, ctx)
    except (OSError, http.client.HTTPException):
        return False
    return True


def test_tls_and_basic_auth_with_curl_and_urllib(tmp_path, pki, tls_exporter):
    headers = (
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
    )
    cfg = write_config(tmp_path / "web.yml", tls_block(pki) + users_block() + headers)
    exp = tls_exporter(cfg)
    url = f"https://127.0.0.1:{exp.port}/metrics"
    curl = shutil.which("curl")
    assert curl is not None
    ok = subprocess.run(
        [
            curl,
            "-sS",
            "-D",
            "-",
            "--cacert",
            str(pki.ca),
            "-u",
            f"prometheus:{PASSWORD}",
            "-w",
            "%{http_code}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert ok.stdout.endswith("200"), ok.stderr
    assert "ka_exporter_build_info" in ok.stdout
    response_headers = ok.stdout.lower().split("\r\n\r\n", 1)[0]
    assert "x-frame-options: deny" in response_headers
    assert "x-content-type-options: nosniff" in response_headers
    wrong = subprocess.run(
        [
            curl,
            "-sS",
            "--cacert",
            str(pki.ca),
            "-u",
            "prometheus:wrong",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert wrong.stdout == "401"
    ctx = client_context(pki)
    assert get(url, ctx)[0] == 401  # no credentials
    assert get(url, ctx, basic("admin", PASSWORD))[0] == 401
    status, body = get(url, ctx, basic("prometheus", PASSWORD))
    assert status == 200
    assert "ka_exporter_build_info" in body
    # Plain HTTP on the TLS port gets nothing, and a client that does not trust the CA refuses.
    with pytest.raises((OSError, http.client.HTTPException)):
        get(f"http://127.0.0.1:{exp.port}/metrics", None, basic("prometheus", PASSWORD))
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(url, ssl.create_default_context(), basic("prometheus", PASSWORD))
    stop_exporter(exp)
    logs = exp.logs()
    assert PASSWORD not in logs
    assert "Traceback" not in logs


def test_client_certificates_sans_and_min_version(tmp_path, pki, tls_exporter):
    cfg = write_config(
        tmp_path / "web.yml",
        tls_block(
            pki,
            "client_auth_type: RequireAndVerifyClientCert",
            f"client_ca_file: {pki.ca}",
            "client_allowed_sans: [prometheus.ka.test]",
            "min_version: TLS13",
        ),
    )
    exp = tls_exporter(cfg)
    url = f"https://127.0.0.1:{exp.port}/metrics"
    status, body = get(url, client_context(pki, pki.client_cert, pki.client_key))
    assert status == 200
    assert "ka_exporter_build_info" in body
    refused_clients = {
        "no client certificate": client_context(pki),
        "certificate from an untrusted CA": client_context(pki, pki.rogue_cert, pki.rogue_key),
        "trusted certificate, SAN not allowed": client_context(
            pki, pki.other_client_cert, pki.other_client_key
        ),
    }
    tls12 = client_context(pki, pki.client_cert, pki.client_key)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    refused_clients["TLS 1.2 client"] = tls12
    assert [what for what, ctx in refused_clients.items() if served(url, ctx)] == []
    # The allowed client still works after the refusals.
    assert get(url, client_context(pki, pki.client_cert, pki.client_key))[0] == 200


def test_a_silent_client_does_not_stall_others(tmp_path, pki, tls_exporter):
    exp = tls_exporter(write_config(tmp_path / "web.yml", tls_block(pki)))
    silent = [socket.create_connection(("127.0.0.1", exp.port)) for _ in range(3)]
    try:
        # The handshake of each silent client would block accept() for 10 s if it ran there.
        for _ in range(3):
            assert get(f"https://127.0.0.1:{exp.port}/-/healthy", client_context(pki))[0] == 200
    finally:
        for s in silent:
            s.close()


def test_expired_certificate_warns_once_and_keeps_serving(tmp_path, pki, tls_exporter):
    cfg = write_config(tmp_path / "web.yml", tls_block(pki, cert=pki.expired_cert, key=pki.expired_key))
    exp = tls_exporter(cfg)
    url = f"https://127.0.0.1:{exp.port}/metrics"
    with pytest.raises(urllib.error.URLError, match="certificate has expired"):
        get(url, client_context(pki))
    lax = client_context(pki)
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    assert get(url, lax)[0] == 200
    warnings = [line for line in exp.logs().splitlines() if "level=warning" in line]
    assert len(warnings) == 1
    assert "the server certificate expired on" in warnings[0]


def test_bad_web_config_is_one_line_and_exit_2(tmp_path, pki):
    cfg = write_config(tmp_path / "web.yml", tls_block(pki, "client_auth_typ: NoClientCert"))
    r = subprocess.run(
        [
            *EXPORTER,
            "--web.listen-address",
            f"127.0.0.1:{free_port()}",
            "--web.config.file",
            str(cfg),
            *NO_SOURCES,
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "unknown setting tls_server_config.client_auth_typ" in lines[0]
    assert str(cfg) in lines[0]


def test_prometheus_scrapes_over_tls_with_basic_auth(tmp_path, pki, tls_exporter):
    from tests.prometheus_harness import prometheus

    exp = tls_exporter(write_config(tmp_path / "web.yml", tls_block(pki) + users_block()))
    target = f"127.0.0.1:{exp.port}"
    scrape = {
        "tls_config": {"ca_file": str(pki.ca)},
        "basic_auth": {"username": "prometheus", "password": PASSWORD},
    }
    with prometheus(tmp_path / "prom", [target], scheme="https", extra_scrape=scrape) as prom:
        deadline = time.monotonic() + 15
        while prom.targets_up().get(target) != "up" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert prom.targets_up().get(target) == "up"
        assert prom.query(f'ka_exporter_build_info{{instance="{target}"}}')
