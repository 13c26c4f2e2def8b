"""basic_auth_users at request time: `WebConfig.authorize` (bcrypt once per user, hash and password,
the success remembered under an HMAC; never the password) and the Authorization header parser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import ssl
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path

import bcrypt

from ka_exporter.outputs.webconfig.der import CertValidity

BCRYPT_MAX_PASSWORD = 72
AUTH_CACHE_SIZE = 1024


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
