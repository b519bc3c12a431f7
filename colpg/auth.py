"""Who may use the HTTP service: API keys with a read or write scope, and the database role it runs as.

``COLPG_API_KEYS`` lists the keys as comma-separated ``scope:key`` entries, e.g.
``read:3f9c...,write:a71e...``. A read key may search, encode and read index stats; a write key
may also add, replace and delete documents. Clients send ``Authorization: Bearer <key>``.
Only the keys' SHA-256 digests are kept, and a presented key is compared with every digest in
constant time. Serving without keys must be asked for (``colpg serve --no-auth``) and is allowed
on a loopback address only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from colpg import db
from colpg.errors import ConfigurationError
from colpg.resources import query

__all__ = ["API_KEYS_ENV", "SCOPES", "ApiKeys", "check_anonymous_host", "requirement", "superuser_warning"]

API_KEYS_ENV = "COLPG_API_KEYS"
#: Scopes from least to most: each grants what the ones before it do.
SCOPES = ("read", "write")
#: Shorter keys can be guessed; ``python -c "import secrets; print(secrets.token_urlsafe(32))"`` makes a good one.
MIN_KEY_CHARS = 16
SERVICE_ROLE = "colpg_service"

bearer = HTTPBearer(auto_error=False, description=f"An API key from {API_KEYS_ENV} (scope read or write).")


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys, as (SHA-256 digest, scope) pairs."""

    digests: tuple[tuple[bytes, str], ...]

    @classmethod
    def parse(cls, spec: str) -> ApiKeys:
        """Keys from ``scope:key[,scope:key...]``; the message of an error never repeats a key."""
        digests: list[tuple[bytes, str]] = []
        for number, entry in enumerate((e.strip() for e in spec.split(",")), start=1):
            if not entry:
                continue
            scope, colon, key = entry.partition(":")
            if not colon or scope.strip() not in SCOPES:
                raise ConfigurationError(
                    f"{API_KEYS_ENV} entry {number} must be scope:key with scope {' or '.join(SCOPES)}, got scope {scope.strip()!r}"
                )
            key = key.strip()
            if len(key) < MIN_KEY_CHARS:
                raise ConfigurationError(f"{API_KEYS_ENV} entry {number}: a key needs at least {MIN_KEY_CHARS} characters, got {len(key)}")
            digest = _digest(key)
            if any(hmac.compare_digest(digest, known) for known, _ in digests):
                raise ConfigurationError(f"{API_KEYS_ENV} entry {number} repeats a key given before; give each key once")
            digests.append((digest, scope.strip()))
        return cls(tuple(digests))

    @classmethod
    def from_env(cls) -> ApiKeys:
        return cls.parse(os.environ.get(API_KEYS_ENV, ""))

    def scope_of(self, key: str) -> str | None:
        """The scope of ``key``, None for an unknown key; every digest is compared, whichever matches."""
        digest = _digest(key)
        found = None
        for known, scope in self.digests:
            if hmac.compare_digest(known, digest):
                found = scope
        return found

    def __bool__(self) -> bool:
        return bool(self.digests)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def requirement(keys: ApiKeys | None, scope: str) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A FastAPI dependency that lets through requests with a key of ``scope`` or above (all of them when ``keys`` is None)."""

    def check(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        if keys is None:
            return
        if credentials is None:
            raise _unauthorized("this endpoint needs an API key: send the header Authorization: Bearer <key>")
        granted = keys.scope_of(credentials.credentials)
        if granted is None:
            raise _unauthorized(f"the API key is not one of the service's keys ({API_KEYS_ENV})")
        if SCOPES.index(granted) < SCOPES.index(scope):
            raise HTTPException(status_code=403, detail=f"this endpoint needs a {scope} key; the key given has scope {granted}")

    return check


def check_anonymous_host(host: str) -> None:
    """Serving without keys is for this machine only: refuse any address but a loopback one."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"--no-auth lets anyone who reaches the port change documents; it is allowed on a loopback address only"
            f" (127.0.0.1, ::1, localhost), got --host {host}; set {API_KEYS_ENV} to serve on {host}"
        )


def superuser_warning(url: str) -> str | None:
    """A warning when the service's database role is a superuser (it then can read and change anything), else None."""
    with db.connect(url, vector_types=False) as conn:
        row = conn.execute(query("role_is_superuser")).fetchone()
    if row is None or not row[0]:
        return None
    return (
        f"the service is connected to PostgreSQL as a superuser ({db.describe_url(url)}): a flaw in it would expose the whole"
        f" server; connect it as the least-privilege role {SERVICE_ROLE} (see the README)"
    )
