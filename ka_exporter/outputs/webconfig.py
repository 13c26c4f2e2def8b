"""The `--web.config.file`: TLS and basic auth in the exporter-toolkit format node_exporter uses.

    tls_server_config:
      cert_file: server.crt          # or `cert:` inline PEM; relative paths are from this file's directory
      key_file: server.key           # or `key:` inline PEM
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt         # or `client_ca:` inline PEM
      client_allowed_sans: [prometheus.example.org]
      min_version: TLS12             # TLS10..TLS13
      max_version: TLS13
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # Go names, TLS <= 1.2 only
      prefer_server_cipher_suites: true
      curve_preferences: [X25519]
    http_server_config:
      http2: true                    # accepted; this server speaks HTTP/1.1
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

Everything is checked when the file is loaded: an unknown key, a missing or unreadable file, a key that
does not match its certificate, a value out of range, or a setting this server cannot honour raises
`WebConfigError` with one line naming the file and the problem. An expired (or not yet valid) server
certificate is not refused: the exporter logs one warning line and serves, so a forgotten renewal
shows up as a scrape error in Prometheus instead of a dead exporter.

Deviations from exporter-toolkit, all refused loudly rather than ignored quietly:
- `client_auth_type: RequireAnyClientCert` (demand a certificate but never check it) cannot be built
  with Python's ssl module and is refused; `RequestClientCert` asks for nothing (the exporter never
  uses an unverified certificate, so the two behave alike for it).
- `rate_limit` is refused (not implemented).
- `curve_preferences` with more than one curve keeps OpenSSL's default groups (Python 3.11 sets one
  group only) and says so in a warning line.
- Re-reading: like exporter-toolkit (which reads the file and the certificate again for every TLS
  handshake and the users for every request), `WebConfigReloader` stats the file and the files it
  names (cert_file, key_file, client_ca_file) for each new connection and each request and loads them
  again when one changed, so rotated certificates (new handshakes) and changed users (next request)
  apply without a restart. Unlike
  exporter-toolkit, a file that no longer loads (a half-written key, a typo) does not fail every
  handshake: the last good config stays in use and one error line says why (again only after the
  next change). Switching between HTTP and HTTPS needs a restart (the listener's scheme is fixed).

Passwords are checked with bcrypt once per (user, hash, password) and the success is remembered in
memory under an HMAC with a per-process random key (never the password itself), so Prometheus'
scrapes cost a hash lookup, not a bcrypt round. Failures are never cached and bcrypt runs one at a
time, so a password-guessing client gets at most one CPU core and no shortcut. An unknown user costs
the same bcrypt round as a known one, so timing does not tell which users exist.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import yaml

# The logger= name operators' log filters know, kept when the module moved to outputs/.
log = logging.getLogger("ka_exporter.webconfig")

TOP_KEYS = frozenset({"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"})
TLS_KEYS = frozenset(
    {
        "cert",
        "key",
        "client_ca",
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "client_allowed_sans",
        "min_version",
        "max_version",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
    }
)
HTTP_KEYS = frozenset({"http2", "headers"})

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
# Go's crypto/tls names (what exporter-toolkit accepts) -> OpenSSL names. TLS 1.3 suites are accepted
# and, as in Go, not configurable (they are always on when TLS 1.3 is).
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
}
TLS13_SUITES = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
# Headers exporter-toolkit lets the operator set, with their allowed values (None: any value).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
BCRYPT_HASH = re.compile(r"^\$2[aby]?\$(\d\d)\$[./A-Za-z0-9]{53}$")
BCRYPT_MAX_PASSWORD = 72
AUTH_CACHE_SIZE = 1024


class WebConfigError(Exception):
    """The web config cannot be used; the message is one line: the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class CertValidity:
    not_before: float
    not_after: float


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


class WebConfig:
    """A loaded, checked web config. `ssl_context()` for the server, `authorize()` for each request."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        context: ssl.SSLContext | None = None,
        users: Mapping[str, bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        warnings: Iterable[str] = (),
        cert_validity: CertValidity | None = None,
        files: Iterable[Path] = (),
    ) -> None:
        self.path = path
        self.files: tuple[Path, ...] = tuple(files)  # the files it was built from (for re-reading)
        self._context = context
        self._users = dict(users or {})
        self.headers: dict[str, str] = dict(headers or {})
        self.warnings: tuple[str, ...] = tuple(warnings)
        self.cert_validity = cert_validity
        # An unknown user is checked against a real hash of the same cost: same time as a known user.
        self._decoy = next(iter(self._users.values()), b"")
        self._cache_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self.bcrypt_rounds = 0  # how many bcrypt checks ran (cache misses); for tests and benches

    @property
    def tls(self) -> bool:
        return self._context is not None

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(sorted(self._users))

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context, or None to serve plain HTTP."""
        return self._context

    def quick_authorize(self, header: str | None) -> bool | None:
        """The answer when it needs no bcrypt round (no users, malformed header, cached success), else None.

        The HTTP server calls this on its event loop and only sends the None cases to `authorize` in
        a thread: a password-guessing client never delays a scrape whose success is cached.
        """
        if not self._users:
            return True
        parsed = parse_basic(header)
        if parsed is None:
            return False
        user, password = parsed
        hashed = self._users.get(user)
        if hashed is None:
            return None  # an unknown user costs a bcrypt round too (timing)
        key = self._cache_id(user, hashed, password)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
        return None

    def _cache_id(self, user: str, hashed: bytes, password: bytes) -> bytes:
        return hmac.new(
            self._cache_key, b"\0".join((user.encode(), hashed, password)), hashlib.sha256
        ).digest()

    def authorize(self, header: str | None) -> bool:
        """Is this raw Authorization header allowed? Always True when no basic_auth_users are set."""
        quick = self.quick_authorize(header)
        parsed = parse_basic(header)
        if quick is not None or parsed is None:
            return bool(quick)
        user, password = parsed
        hashed = self._users.get(user)
        known = hashed is not None
        if hashed is None:
            hashed = self._decoy
        key = self._cache_id(user, hashed, password)
        ok = self._check(password, hashed) and known
        if ok:
            with self._cache_lock:
                self._cache[key] = None
                while len(self._cache) > AUTH_CACHE_SIZE:
                    self._cache.popitem(last=False)
        return ok

    def _check(self, password: bytes, hashed: bytes) -> bool:
        if len(password) > BCRYPT_MAX_PASSWORD:
            return False  # bcrypt ignores what follows byte 72; such a password never matches
        with self._bcrypt_lock:
            self.bcrypt_rounds += 1
            try:
                return bool(bcrypt.checkpw(password, hashed))
            except ValueError:
                return False


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """`Basic base64(user:password)` -> (user, password bytes); None if absent or malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


# ---------------------------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (Go's yaml.UnmarshalStrict does too)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key if isinstance(key, str | int | float | bool) else id(key_node))
    return dict(loader.construct_mapping(node, deep=True))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_web_config(path: Path, now: Callable[[], float] = time.time) -> WebConfig:
    """Read and check the web config; WebConfigError (one line) if it cannot be used as written.

    Warnings (expired certificate, basic auth over plain HTTP...) are logged, one line each, and kept
    in `WebConfig.warnings`.
    """
    path = Path(path)
    err = _Errors(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise err(f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise err("not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise err(_yaml_problem(exc)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise err("must be a YAML mapping (tls_server_config, http_server_config, basic_auth_users)")
    _no_unknown(err, data, TOP_KEYS, "")
    if data.get("rate_limit") is not None:
        raise err("rate_limit is not supported by ka-exporter (remove it)")

    warnings: list[str] = []
    tls_section = _section(err, data, "tls_server_config")
    http_section = _section(err, data, "http_server_config")
    _no_unknown(err, tls_section, TLS_KEYS, "tls_server_config.")
    _no_unknown(err, http_section, HTTP_KEYS, "http_server_config.")

    users = _users(err, data.get("basic_auth_users"))
    headers = _headers(err, http_section)
    _bool(err, http_section, "http2", "http_server_config.")  # accepted and checked; we serve HTTP/1.1

    context: ssl.SSLContext | None = None
    validity: CertValidity | None = None
    if _tls_enabled(tls_section):
        context, validity = _build_context(err, tls_section, path.parent, warnings)
        clock = now()
        if validity.not_after < clock:
            warnings.append(
                f"{path}: the server certificate expired on {_utc(validity.not_after)}; serving it anyway, "
                "clients that check it will refuse to connect until it is renewed"
            )
        elif validity.not_before > clock:
            warnings.append(
                f"{path}: the server certificate is not valid before {_utc(validity.not_before)}; serving "
                "it anyway, clients that check it will refuse to connect until then"
            )
    elif users:
        warnings.append(
            f"{path}: basic_auth_users without tls_server_config: passwords cross the network in clear text"
        )
    for line in warnings:
        log.warning("%s", line)
    files = [path]
    for key in ("cert_file", "key_file", "client_ca_file"):
        name = tls_section.get(key)
        if isinstance(name, str) and name:
            files.append(_resolve(path.parent, name))
    return WebConfig(
        path,
        context=context,
        users=users,
        headers=headers,
        warnings=warnings,
        cert_validity=validity,
        files=files,
    )


_Stamp = tuple[tuple[int, int, int, int] | None, ...]


def _stamp(files: Iterable[Path]) -> _Stamp:
    out: list[tuple[int, int, int, int] | None] = []
    for name in files:
        try:
            st = os.stat(name)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class WebConfigReloader:
    """The current web config: loaded again when the file or a file it names has changed.

    `current()` is cheap when nothing changed (one stat per file) and is called by the HTTP server
    for each new connection, so new TLS handshakes get rotated certificates without a restart.
    """

    def __init__(self, first: WebConfig, now: Callable[[], float] = time.time) -> None:
        if first.path is None:
            raise ValueError("a reloadable web config needs its path")
        self.path = first.path
        self._now = now
        self._config = first
        self._stamp = _stamp(first.files)
        self._tried = self._stamp
        self._lock = threading.Lock()
        self.reloads = 0

    def current(self) -> WebConfig:
        config = self._config
        stamp = _stamp(config.files)
        if stamp in (self._stamp, self._tried):
            return config
        with self._lock:
            if stamp in (self._stamp, self._tried):
                return self._config
            self._tried = stamp
            try:
                new = load_web_config(self.path, now=self._now)
            except WebConfigError as exc:
                log.error("%s; still serving with the web config loaded before", exc)
                return self._config
            if new.tls != self._config.tls:
                log.error(
                    "web config %s: switching between HTTP and HTTPS needs a restart; still serving "
                    "with the web config loaded before",
                    self.path,
                )
                return self._config
            # The stamp of what was read (a file named for the first time is stamped now).
            self._stamp = self._tried = _stamp(new.files) if new.files != config.files else stamp
            self._config = new
            self.reloads += 1
            log.info("web config %s re-read: new connections use it", self.path)
            return new


class _Errors:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, what: str) -> WebConfigError:
        return WebConfigError(f"web config {self.path}: {what}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # Never str(exc): it quotes the offending line, which may hold a key or a hash.
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        return f"not valid YAML{where}: {problem}"
    return "not valid YAML"


def _no_unknown(err: _Errors, section: Mapping[Any, Any], known: frozenset[str], prefix: str) -> None:
    for key in section:
        if key not in known:
            hint = ", ".join(sorted(known - {"rate_limit"}))
            raise err(f"unknown setting {prefix}{key} (known here: {hint})")


def _section(err: _Errors, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise err(f"{name} must be a mapping")
    return value


def _str(err: _Errors, section: Mapping[str, Any], key: str, prefix: str) -> str:
    value = section.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise err(f"{prefix}{key} must be a string")
    return value


def _bool(err: _Errors, section: Mapping[str, Any], key: str, prefix: str, default: bool = True) -> bool:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise err(f"{prefix}{key} must be true or false")
    return value


def _str_list(err: _Errors, section: Mapping[str, Any], key: str, prefix: str) -> list[str]:
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise err(f"{prefix}{key} must be a list of strings")
    return list(value)


def _users(err: _Errors, value: Any) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise err("basic_auth_users must be a mapping of user name to bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in value.items():
        if not isinstance(user, str) or not user:
            raise err(f"basic_auth_users: user name {user!r} must be a non-empty string (quote it)")
        if ":" in user:
            raise err(f"basic_auth_users: user name {user!r} contains ':', which basic auth cannot carry")
        match = BCRYPT_HASH.match(hashed) if isinstance(hashed, str) else None
        if match is None or not 4 <= int(match.group(1)) <= 31:
            # The value is not echoed: it may be a password written where the hash belongs.
            raise err(
                f"basic_auth_users: the value for user {user!r} is not a bcrypt hash "
                "(make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')"
            )
        users[user] = hashed.encode("ascii")
    return users


def _headers(err: _Errors, http_section: Mapping[str, Any]) -> dict[str, str]:
    value = http_section.get("headers")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise err("http_server_config.headers must be a mapping")
    headers: dict[str, str] = {}
    for name, val in value.items():
        if name not in HEADERS:
            raise err(
                f"http_server_config.headers: header {name!r} can not be configured "
                f"(allowed: {', '.join(HEADERS)})"
            )
        if not isinstance(val, str) or "\n" in val or "\r" in val:
            raise err(f"http_server_config.headers.{name} must be a one-line string")
        allowed = HEADERS[name]
        if allowed is not None and val not in allowed:
            raise err(f"http_server_config.headers.{name} must be one of {', '.join(allowed)}, not {val!r}")
        if val:
            headers[str(name)] = val
    return headers


def _tls_enabled(section: Mapping[str, Any]) -> bool:
    # Stricter than exporter-toolkit, which serves plain HTTP when only e.g. min_version is set: any
    # TLS setting means TLS, and then a missing certificate is an error, never a silent downgrade.
    return any(value not in (None, "", []) for value in section.values())


def _resolve(base: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else base / p


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


def _tlv(buf: bytes, i: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at i."""
    tag = buf[i]
    length = buf[i + 1]
    start = i + 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(buf[start : start + n], "big")
        start += n
    end = start + length
    if end > len(buf):
        raise ValueError("truncated DER")
    return tag, start, end


def der_validity(der: bytes) -> CertValidity:
    """Walk Certificate -> tbsCertificate -> validity; ValueError if the DER is not a certificate."""
    tag, start, _ = _tlv(der, 0)
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, i, _ = _tlv(der, start)  # tbsCertificate
    if tag != 0x30:
        raise ValueError("not a certificate")
    if der[i] == 0xA0:  # [0] version
        i = _tlv(der, i)[2]
    for _ in range(3):  # serialNumber, signature, issuer
        i = _tlv(der, i)[2]
    tag, i, _ = _tlv(der, i)  # validity
    if tag != 0x30:
        raise ValueError("no validity in certificate")
    tag1, s1, e1 = _tlv(der, i)
    tag2, s2, e2 = _tlv(der, e1)
    return CertValidity(_asn1_time(tag1, der[s1:e1]), _asn1_time(tag2, der[s2:e2]))


def _asn1_time(tag: int, raw: bytes) -> float:
    text = raw.decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime YYMMDDHHMM[SS]Z
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMM[SS]Z
        raise ValueError("not a time")
    fields = (int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]))
    seconds = int(text[12:14]) if len(text) >= 14 else 0
    return float(calendar.timegm((*fields, seconds, 0, 0, 0)))


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
