"""tls_server_config -> an ssl.SSLContext (`ServerContext`, which also checks client_allowed_sans):
versions, ciphers, curves, client CAs, and the certificate/key pair read from files or inline PEM.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ka_exporter.outputs.webconfig.der import CertValidity, der_validity
from ka_exporter.outputs.webconfig.schema import (
    CIPHER_SUITES,
    CLIENT_AUTH_TYPES,
    CURVES,
    TLS13_SUITES,
    TLS_VERSIONS,
    _bool,
    _Errors,
    _resolve,
    _str,
    _str_list,
)


class ServerContext(ssl.SSLContext):
    """An SSLContext that also knows which client certificate SANs are allowed (client_allowed_sans).

    The HTTP server calls `check_peer(sock.getpeercert())` after the handshake; None means accepted,
    otherwise the reason the connection is closed.
    """

    allowed_sans: frozenset[str] = frozenset()
    allowed_ips: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset()

    def check_peer(self, cert: Mapping[str, Any] | None) -> str | None:
        if not self.allowed_sans and not self.allowed_ips:
            return None
        if not cert:
            return "client sent no certificate to match client_allowed_sans"
        for kind, value in cert.get("subjectAltName", ()):
            if kind == "IP Address":
                try:
                    if ipaddress.ip_address(str(value).strip()) in self.allowed_ips:
                        return None
                except ValueError:
                    continue
            elif str(value) in self.allowed_sans:
                return None
        return "client certificate has none of the client_allowed_sans"


def _build_context(
    err: _Errors, tls: Mapping[str, Any], base: Path, warnings: list[str]
) -> tuple[ServerContext, CertValidity]:
    p = "tls_server_config."
    cert_inline = _str(err, tls, "cert", p)
    key_inline = _str(err, tls, "key", p)
    ca_inline = _str(err, tls, "client_ca", p)
    cert_file = _str(err, tls, "cert_file", p)
    key_file = _str(err, tls, "key_file", p)
    ca_file = _str(err, tls, "client_ca_file", p)
    if cert_inline and cert_file:
        raise err("tls_server_config: set cert or cert_file, not both")
    if key_inline and key_file:
        raise err("tls_server_config: set key or key_file, not both")
    if ca_inline and ca_file:
        raise err("tls_server_config: set client_ca or client_ca_file, not both")
    if not cert_inline and not cert_file:
        raise err("tls_server_config: missing one of cert or cert_file")
    if not key_inline and not key_file:
        raise err("tls_server_config: missing one of key or key_file")

    ctx = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= ssl.OP_NO_COMPRESSION

    # Versions.
    versions = {}
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        name = _str(err, tls, key, p) or default
        if name not in TLS_VERSIONS:
            raise err(f"{p}{key} {name!r} is not one of {', '.join(TLS_VERSIONS)}")
        versions[key] = TLS_VERSIONS[name]
    if versions["min_version"] > versions["max_version"]:
        raise err(f"{p}min_version is above max_version")
    try:
        ctx.minimum_version = versions["min_version"]
        ctx.maximum_version = versions["max_version"]
    except (ValueError, ssl.SSLError) as exc:
        raise err(f"{p}min_version/max_version: {_ssl_reason(exc)}") from None

    # Certificate and key.
    cert_pem = _read_pem(err, _resolve(base, cert_file), "cert_file") if cert_file else cert_inline
    key_pem = _read_pem(err, _resolve(base, key_file), "key_file") if key_file else key_inline
    cert_what = f"cert_file {cert_file}" if cert_file else "cert"
    key_what = f"key_file {key_file}" if key_file else "key"
    validity = _first_cert_validity(cert_pem)
    if validity is None:
        raise err(f"{cert_what} holds no PEM certificate")
    _load_pair(err, ctx, (cert_pem, key_pem), (cert_what, key_what))

    # Client certificates.
    auth = _str(err, tls, "client_auth_type", p) or "NoClientCert"
    if auth == "RequireClientCert":  # exporter-toolkit keeps this old spelling
        auth = "RequireAnyClientCert"
    if auth not in CLIENT_AUTH_TYPES:
        raise err(f"{p}client_auth_type {auth!r} is not one of {', '.join(CLIENT_AUTH_TYPES)}")
    if auth == "RequireAnyClientCert":
        raise err(
            f"{p}client_auth_type RequireAnyClientCert (a certificate nobody checks) is not supported: "
            "use RequireAndVerifyClientCert with client_ca_file"
        )
    has_ca = bool(ca_inline or ca_file)
    if has_ca and auth in ("NoClientCert", "RequestClientCert"):
        ca_key = "client_ca_file" if ca_file else "client_ca"
        raise err(f"{p}{ca_key} is set but client_auth_type {auth} never checks client certificates")
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        try:
            if ca_file:
                ctx.load_verify_locations(cafile=str(_resolve(base, ca_file)))
            elif ca_inline:
                ctx.load_verify_locations(cadata=ca_inline)
            else:
                ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)  # as Go: the system roots
        except FileNotFoundError:
            raise err(f"{p}client_ca_file {ca_file}: no such file") from None
        except PermissionError:
            raise err(f"{p}client_ca_file {ca_file}: permission denied") from None
        except (ssl.SSLError, ValueError, OSError) as exc:
            what = f"client_ca_file {ca_file}" if ca_file else "client_ca"
            raise err(f"{p}{what} holds no usable CA certificate ({_ssl_reason(exc)})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if auth == "RequireAndVerifyClientCert" else ssl.CERT_OPTIONAL
    sans = _str_list(err, tls, "client_allowed_sans", p)
    if sans:
        if auth != "RequireAndVerifyClientCert":
            raise err(f"{p}client_allowed_sans needs client_auth_type RequireAndVerifyClientCert")
        ips = set()
        names = set()
        for san in sans:
            try:
                ips.add(ipaddress.ip_address(san))
            except ValueError:
                names.add(san)
        ctx.allowed_sans = frozenset(names)
        ctx.allowed_ips = frozenset(ips)

    # Ciphers and curves.
    suites = _str_list(err, tls, "cipher_suites", p)
    openssl_names = []
    for suite in suites:
        if suite in TLS13_SUITES:
            continue
        if suite not in CIPHER_SUITES:
            raise err(
                f"{p}cipher_suites: unknown cipher {suite!r} (Go's names, e.g. {next(iter(CIPHER_SUITES))})"
            )
        openssl_names.append(CIPHER_SUITES[suite])
    if openssl_names:
        try:
            ctx.set_ciphers(":".join(openssl_names))
        except ssl.SSLError:
            raise err(f"{p}cipher_suites: none of these ciphers is available in this OpenSSL") from None
    if _bool(err, tls, "prefer_server_cipher_suites", p):
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    curves = _str_list(err, tls, "curve_preferences", p)
    for curve in curves:
        if curve not in CURVES:
            raise err(f"{p}curve_preferences: unknown curve {curve!r} (one of {', '.join(CURVES)})")
    if len(curves) == 1:
        try:
            ctx.set_ecdh_curve(CURVES[curves[0]])
        except (ValueError, ssl.SSLError):
            raise err(f"{p}curve_preferences: {curves[0]} is not available in this OpenSSL") from None
    elif len(curves) > 1:
        warnings.append(
            f"{err.path}: tls_server_config.curve_preferences lists {len(curves)} curves; Python's ssl "
            "can restrict to one only, so OpenSSL's default curves are offered"
        )
    return ctx, validity


def _read_pem(err: _Errors, path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise err(f"tls_server_config.{key} {path}: no such file") from None
    except PermissionError:
        raise err(
            f"tls_server_config.{key} {path}: permission denied (the exporter's user must read it)"
        ) from None
    except IsADirectoryError:
        raise err(f"tls_server_config.{key} {path}: is a directory") from None
    except OSError as exc:
        raise err(f"tls_server_config.{key} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise err(f"tls_server_config.{key} {path}: not a PEM file") from None


def _memfile(text: str, name: str) -> int:
    """An anonymous in-memory file holding `text` (so inline keys never touch a disk)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, text.encode("ascii", errors="replace"))
    return fd


def _refuse_password() -> bytes:
    raise _EncryptedKeyError


class _EncryptedKeyError(Exception):
    pass


def _load_pair(err: _Errors, ctx: ssl.SSLContext, pem: tuple[str, str], what: tuple[str, str]) -> None:
    cert_pem, key_pem = pem
    cert_what, key_what = what
    cert_fd = _memfile(cert_pem, "ka-exporter-cert")
    key_fd = _memfile(key_pem, "ka-exporter-key")
    try:
        ctx.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}", password=_refuse_password)
    except _EncryptedKeyError:
        raise err(
            f"{key_what} is encrypted; give ka-exporter an unencrypted key readable only by it"
        ) from None
    except ssl.SSLError as exc:
        reason = _ssl_reason(exc)
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise err(f"{key_what} does not match {cert_what}") from None
        if "PEM lib" in str(exc) or "NO_START_LINE" in str(exc):
            raise err(f"{key_what} holds no PEM private key matching {cert_what}") from None
        raise err(f"cannot use {cert_what} with {key_what}: {reason}") from None
    finally:
        os.close(cert_fd)
        os.close(key_fd)


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# ---------------------------------------------------------------------------------- certificate dates

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def _first_cert_validity(pem: str) -> CertValidity | None:
    """notBefore/notAfter of the first certificate in a PEM text (the server's own), None if none."""
    match = _PEM_CERT.search(pem)
    if match is None:
        return None
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
        return der_validity(der)
    except (ValueError, binascii.Error, IndexError):
        return None
