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

The package: `schema` (the keys and their checks), `tls` (the SSLContext), `auth` (basic_auth_users at
request time), `der` (certificate dates); this module loads and re-reads the file and is the API.

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

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from ka_exporter.outputs.webconfig.auth import AUTH_CACHE_SIZE, BCRYPT_MAX_PASSWORD, WebConfig, parse_basic
from ka_exporter.outputs.webconfig.der import CertValidity, _utc, der_validity
from ka_exporter.outputs.webconfig.schema import (
    HTTP_KEYS,
    TLS_KEYS,
    TOP_KEYS,
    WebConfigError,
    _bool,
    _Errors,
    _headers,
    _no_unknown,
    _resolve,
    _section,
    _StrictLoader,
    _tls_enabled,
    _users,
    _yaml_problem,
)
from ka_exporter.outputs.webconfig.tls import ServerContext, _build_context

__all__ = [
    "AUTH_CACHE_SIZE",
    "BCRYPT_MAX_PASSWORD",
    "CertValidity",
    "ServerContext",
    "WebConfig",
    "WebConfigError",
    "WebConfigReloader",
    "der_validity",
    "load_web_config",
    "parse_basic",
]

# The logger= name operators' log filters know, kept when the module moved to outputs/.
log = logging.getLogger("ka_exporter.webconfig")


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
