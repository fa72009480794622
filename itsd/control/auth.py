"""Bearer tokens with a read-only and an admin scope, for the gRPC API and the HTTP port.

``TokenTable.from_config(config.security)`` loads the tokens of the configuration (and of
``security.tokens_file``); ``check_bearer(table, authorization, need)`` is the one check
every front door makes: it takes the value of an ``Authorization`` header (gRPC metadata
``authorization``, or the HTTP header) and the scope the call needs, and answers with a
``Verdict`` (allowed, or refused as ``unauthenticated`` / ``permission_denied`` with a
message fit for the client). The HTTP port maps those to 401 / 403, gRPC to
UNAUTHENTICATED / PERMISSION_DENIED.

Scopes: ``read`` (health, metrics, lists, result streams) and ``admin`` (every call;
needed by the calls that change the daemon or push frames into it). An admin token is
also good for reads. A table with no token allows everything (the daemon then listens on
localhost by default; ``itsd config check`` warns about a non-local bind without TLS or
tokens).

Tokens are kept only as SHA-256 digests and compared in constant time; a token never
appears in a log line, a metric, an error message or an answer (messages say "the
token", never which).

This module must never import grpc, a stage, the supervisor or the monitor: the HTTP
port imports it as it is.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from itsd.config import SecurityConfig


class Scope(enum.IntEnum):
    """What a token may do; a higher scope includes the lower ones."""

    READ = 1
    ADMIN = 2


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of ``check_bearer``: ``ok``, or ``reason`` ("unauthenticated" or
    "permission_denied") with a ``message`` for the client."""

    ok: bool
    reason: str = ""
    message: str = ""


ALLOWED = Verdict(True)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenTable:
    """Bearer tokens and their scopes (kept as digests)."""

    def __init__(self, tokens: dict[str, Scope] | None = None) -> None:
        self._digests: list[tuple[bytes, Scope]] = [
            (_digest(tok), scope) for tok, scope in (tokens or {}).items()
        ]

    @property
    def enabled(self) -> bool:
        """True when any token is configured (calls then need one)."""
        return bool(self._digests)

    def scope_of(self, token: str) -> Scope | None:
        """The scope of ``token``; None when it is not one of the table's."""
        digest = _digest(token)
        found: Scope | None = None
        for known, scope in self._digests:  # every entry compared: no early exit
            if hmac.compare_digest(known, digest) and (found is None or scope > found):
                found = scope
        return found

    @classmethod
    def from_config(cls, security: SecurityConfig) -> TokenTable:
        """Tokens of ``security`` (lists and tokens_file); ValueError names the file's line."""
        tokens: dict[str, Scope] = {}
        for tok in security.read_tokens:
            tokens[tok.get_secret_value()] = Scope.READ
        for tok in security.admin_tokens:
            tokens[tok.get_secret_value()] = Scope.ADMIN
        if security.tokens_file is not None:
            for value, scope in read_tokens_file(security.tokens_file).items():
                tokens[value] = max(scope, tokens.get(value, scope))
        return cls(tokens)


def read_tokens_file(path: Path) -> dict[str, Scope]:
    """``admin TOKEN`` / ``read TOKEN`` lines (blank lines and # comments skipped).

    ValueError names the file and the line number, never the token.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"security.tokens_file: cannot read {path}: {err.strerror}") from None
    out: dict[str, Scope] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("admin", "read"):
            raise ValueError(
                f"security.tokens_file: {path} line {n}: expected 'admin TOKEN' or 'read TOKEN'"
            )
        if len(parts[1]) < 16:
            raise ValueError(
                f"security.tokens_file: {path} line {n}: a token needs at least 16 characters"
            )
        out[parts[1]] = Scope.ADMIN if parts[0] == "admin" else Scope.READ
    return out


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; None when absent or another
    scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_bearer(table: TokenTable, authorization: str | None, need: Scope) -> Verdict:
    """May a call with this ``Authorization`` value do what needs scope ``need``?"""
    if not table.enabled:
        return ALLOWED
    token = bearer_token(authorization)
    if token is None:
        return Verdict(
            False,
            "unauthenticated",
            "this call needs a bearer token (authorization: Bearer <token>)",
        )
    scope = table.scope_of(token)
    if scope is None:
        return Verdict(False, "unauthenticated", "the bearer token is not valid")
    if scope < need:
        return Verdict(
            False,
            "permission_denied",
            f"the bearer token is {scope.name.lower()}-only; this call needs an "
            f"{need.name.lower()} token",
        )
    return ALLOWED
