"""The web config's schema: the keys exporter-toolkit knows, their allowed values, and the checks
that turn a YAML document into checked values (one-line WebConfigError naming the file and the key).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

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


class WebConfigError(Exception):
    """The web config cannot be used; the message is one line: the file and what is wrong."""


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
