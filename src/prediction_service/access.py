"""Who may do what: scoped API keys, failed-authentication limits, per-key request rates.

Scopes: ``predict`` (every protocol's prediction routes and gRPC inference), ``feedback``
(``POST /feedback``), ``read`` (history, versions, drift, events) and ``admin`` (promote,
rollback, traffic, retrain; an admin key may do everything). Keys come from
``PREDICT_API_KEYS`` (JSON) or ``PREDICT_API_KEYS_FILE`` (JSON or YAML), a list of
``{"name", "key" | "key_sha256", "scopes", "rate"?}``; ``PREDICT_ADMIN_TOKEN`` is the key
named ``admin`` with the admin scope.

A scope is closed as soon as some key grants it (admin is always closed: with no admin key
the admin API is off), so configuring only an admin token leaves predictions open as before.
Keys are compared by SHA-256 digest in constant time against every configured key and never
logged. A client address that fails authentication too often is refused for a while (429),
and a key may carry a request rate (``"100/second"``) answered with 429 and Retry-After.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import yaml
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from prediction_service.errors import ServiceError
from prediction_service.metrics import Metrics
from prediction_service.settings import Settings

log = logging.getLogger(__name__)

SCOPES = ("predict", "feedback", "read", "admin")


class AuthError(ServiceError):
    reason = "unauthorized"

    def __init__(self, message: str, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status
        if headers:
            self.headers = headers


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes  # SHA-256 of the key
    scopes: frozenset[str]
    rate: RateLimitItem | None = None

    def grants(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _parse_keys(entries: Any, source: str) -> list[ApiKey]:
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a list of keys")
    keys = []
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"{where}: each key needs a name")
        scopes = entry.get("scopes")
        if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(SCOPES):
            raise ValueError(f"{where}.scopes: a non-empty list of {', '.join(SCOPES)}")
        if isinstance(entry.get("key"), str) and len(entry["key"]) >= 16:
            key_digest = digest(entry["key"])
        elif isinstance(entry.get("key_sha256"), str) and len(entry["key_sha256"]) == 64:
            key_digest = bytes.fromhex(entry["key_sha256"])
        else:
            raise ValueError(f"{where}: needs key (16 characters or more) or key_sha256 (hex)")
        rate = parse(entry["rate"]) if entry.get("rate") else None
        keys.append(ApiKey(entry["name"], key_digest, frozenset(scopes), rate))
    return keys


def load_keys(settings: Settings) -> list[ApiKey]:
    """Every configured key; a malformed configuration stops the service with the reason."""
    keys: list[ApiKey] = []
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        keys.append(
            ApiKey("admin", digest(settings.admin_token.get_secret_value()), frozenset({"admin"}))
        )
    if settings.api_keys is not None and settings.api_keys.get_secret_value():
        try:
            entries = json.loads(settings.api_keys.get_secret_value())
        except json.JSONDecodeError as exc:
            raise ValueError(f"PREDICT_API_KEYS: not valid JSON ({exc.msg})") from None
        keys += _parse_keys(entries, "PREDICT_API_KEYS")
    if settings.api_keys_file is not None:
        path = settings.resolve(settings.api_keys_file)
        try:
            entries = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read the keys: {exc}") from None
        keys += _parse_keys(entries, str(path))
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ValueError(f"API key names must be unique: {sorted(names)}")
    return keys


class AccessControl:
    def __init__(self, keys: list[ApiKey], failure_limit: str, metrics: Metrics) -> None:
        self.keys = keys
        self.metrics = metrics
        self.closed = {"admin"} | {s for k in keys for s in k.scopes if s != "admin"}
        self._failures = parse(failure_limit)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> AccessControl:
        return cls(load_keys(settings), settings.auth_failure_limit, metrics)

    def is_open(self, scope: str) -> bool:
        return scope not in self.closed

    def check(self, scope: str, authorization: str | None, client: str | None) -> ApiKey | None:
        """The key allowed ``scope`` (None when the scope is open); AuthError otherwise.

        A key that checks out is always let in; an address that keeps failing is refused
        (429) only its failures, so a client behind the same address as an attacker keeps
        working."""
        if scope not in self.closed:
            return None
        if not any(k.grants(scope) for k in self.keys):
            raise self._deny(
                scope,
                "disabled",
                403,
                "admin API disabled: set PREDICT_ADMIN_TOKEN (or an admin key) to enable it",
            )
        token = _bearer(authorization)
        match = self._match(token)
        if match is None:
            client = client or "unknown"
            if not self._limiter.hit(self._failures, client):
                raise self._deny(
                    scope, "client_blocked", 429,
                    "too many failed authentications from this address",
                    self._retry_after(self._failures, client),
                )  # fmt: skip
            challenge = {"WWW-Authenticate": "Bearer"}
            if token is None:
                raise self._deny(scope, "missing", 401, "missing bearer token", challenge)
            raise self._deny(scope, "invalid", 401, "invalid bearer token", challenge)
        if not match.grants(scope):
            raise self._deny(
                scope, "forbidden", 403, f"key {match.name!r} lacks the {scope!r} scope"
            )
        if match.rate is not None and not self._limiter.hit(match.rate, "key", match.name):
            self.metrics.rate_limited.labels(match.name).inc()
            raise AuthError(
                f"key {match.name!r} is over its rate of {match.rate}",
                429,
                self._retry_after(match.rate, "key", match.name),
            )
        return match

    def allows(self, scope: str, authorization: str | None) -> bool:
        """Whether the caller may see what ``scope`` guards, without refusing anyone: for
        answers that are shorter without it (``/health``, ``/models``)."""
        if scope not in self.closed:
            return True
        match = self._match(_bearer(authorization))
        return match is not None and match.grants(scope)

    def _match(self, token: str | None) -> ApiKey | None:
        if token is None:
            return None
        presented = digest(token)
        match = None
        for key in self.keys:  # every key, so the time does not tell which one came close
            if hmac.compare_digest(key.digest, presented):
                match = key
        return match

    def _deny(
        self,
        scope: str,
        reason: str,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> AuthError:
        self.metrics.auth_failures.labels(scope, reason).inc()
        return AuthError(message, status, headers)

    def _retry_after(self, item: RateLimitItem, *identifiers: str) -> dict[str, str]:
        reset, _ = self._limiter.get_window_stats(item, *identifiers)
        return {"Retry-After": str(max(1, math.ceil(reset - time.time())))}


def _bearer(authorization: str | None) -> str | None:
    kind, _, token = (authorization or "").partition(" ")
    if kind.lower() != "bearer":
        return None
    return token.strip() or None


def summary(control: AccessControl) -> str:
    """For the start-up log: which scopes are open (names only, never keys)."""
    open_scopes = [s for s in SCOPES if control.is_open(s)]
    names = ", ".join(k.name for k in control.keys) or "none"
    return f"API keys: {names}; open scopes: {', '.join(open_scopes) or 'none'}"
