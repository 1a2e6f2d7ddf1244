"""Waitpoint tokens: HMAC-SHA256 bearer credentials, and the keystore that signs them.

A token is ``<kid>:<64 lowercase hex>``, the HMAC-SHA256 under the secret of ``kid`` of
the kid, the execution id, the waitpoint id and the waitpoint key. The appliance mints
(it holds the current key); the store verifies: the kid must be the current one or a
previous one inside its grace window, and the token must be the one minted for that
waitpoint of that execution (constant-time compare). Tokens are never logged and never
listed: reads show ``token_fingerprint`` (the first 16 hex of the digest). See
spec/suspension.md § Tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from .errors import (
    InvalidInput,
    InvalidToken,
    MissingToken,
    RotationConflict,
    TokenExpired,
    UnknownKid,
)

#: Longest grace a rotation may give a previous kid (2**53 - 1 ms, as in the original).
GRACE_MAX_MS = 2**53 - 1
DEFAULT_GRACE_MS = 86_400_000
DEFAULT_KID = "k1"
_KID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def check_kid(kid: object, where: str = "new_kid") -> str:
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise InvalidInput(f"{where}: must be 1 to 64 characters from A-Z a-z 0-9 . _ - (no "
                           f"':'), got {kid!r:.80}")
    return kid


def check_secret_hex(secret: object, where: str = "new_secret_hex") -> str:
    """An even-length hex secret of at least 16 bytes, as lowercase hex."""
    if not isinstance(secret, str) or not _HEX.fullmatch(secret) or len(secret) > 1024:
        raise InvalidInput(f"{where}: must be a non-empty even-length hex string (0-9a-f), at "
                           f"most 1024 characters")
    if len(secret) < 32:
        raise InvalidInput(f"{where}: must hold at least 16 bytes (32 hex characters); 64 are "
                           f"recommended (e.g. `openssl rand -hex 32`)")
    return secret.lower()


def generate_secret() -> str:
    return secrets.token_hex(32)


def _message(kid: str, execution_id: str, waitpoint_id: str, waitpoint_key: str) -> bytes:
    parts = [p.encode() for p in (kid, execution_id, waitpoint_id, waitpoint_key)]
    return b"ffwp1" + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def mint(kid: str, secret_hex: str, execution_id: str, waitpoint_id: str,
         waitpoint_key: str) -> str:
    digest = hmac.new(bytes.fromhex(secret_hex),
                      _message(kid, execution_id, waitpoint_id, waitpoint_key),
                      hashlib.sha256).hexdigest()
    return f"{kid}:{digest}"


def parse(token: str) -> tuple[str, str] | None:
    """``(kid, digest)``, or None when the token is not shaped like one."""
    kid, sep, digest = token.partition(":")
    if not sep or not _KID.fullmatch(kid) or not _DIGEST.fullmatch(digest):
        return None
    return kid, digest


def fingerprint(token: str | None) -> tuple[str, str]:
    """``(token_kid, token_fingerprint)`` for reads: never the token itself."""
    parsed = parse(token or "")
    return (parsed[0], parsed[1][:16]) if parsed else ("", "")


@dataclass(slots=True)
class Keystore:
    """The kids a store holds: the current one signs, the others verify until their
    ``expires_at``. One per store on SQL, one replica per partition on Valkey."""

    current: str | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    #: kid → ms after which its tokens are refused (never set for the current kid).
    expires: dict[str, int] = field(default_factory=dict)

    def check(self, token: str, now: int) -> None:
        """Refuse a token whose kid is unknown or past its grace (before any state is
        looked at); the token itself is compared by ``verify``."""
        if not token:
            raise MissingToken("waitpoint_token: is required: pass the token the worker "
                               "received when it created the waitpoint or suspended")
        parsed = parse(token)
        if parsed is None:
            raise InvalidToken.of()
        kid = parsed[0]
        if kid != self.current:
            if kid not in self.secrets:
                raise UnknownKid.of(kid=kid)
            expires = self.expires.get(kid)
            if expires is None or expires < now:
                raise TokenExpired.of(kid=kid)


def verify(keys: Keystore, token: str, minted: str | None, now: int) -> None:
    """The whole check: the kid (``Keystore.check``), then the token against the one minted
    for the waitpoint (``minted``: None when the waitpoint is unknown or not this
    execution's — answered as a bad token, so a caller learns nothing about waitpoints)."""
    keys.check(token, now)
    if minted is None or not hmac.compare_digest(token.encode(), minted.encode()):
        raise InvalidToken.of()


# -- rotation ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rotation:
    """``kind``: ``rotated`` or ``noop``."""

    kind: str
    new_kid: str
    previous_kid: str | None = None
    gc_count: int = 0


def rotate(keys: Keystore, new_kid: str, secret_hex: str, grace_ms: int, now: int) -> Rotation:
    """Install ``new_kid`` as the current kid (in place); the previous one verifies for
    ``grace_ms`` more. Same kid and secret again: a no-op; same kid, other secret: a
    conflict. Kids whose grace ended are forgotten."""
    if keys.current == new_kid or new_kid in keys.secrets:
        stored = keys.secrets.get(new_kid)
        if stored is not None and stored != secret_hex:
            raise RotationConflict.of(kid=new_kid)
        if keys.current == new_kid:
            keys.secrets[new_kid] = secret_hex
            return Rotation("noop", new_kid)
    gone = [k for k, at in keys.expires.items() if at < now and k != new_kid]
    for kid in gone:
        keys.secrets.pop(kid, None)
        keys.expires.pop(kid, None)
    previous = keys.current
    if previous is not None:
        keys.expires[previous] = now + grace_ms
    keys.current = new_kid
    keys.secrets[new_kid] = secret_hex
    keys.expires.pop(new_kid, None)
    return Rotation("rotated", new_kid, previous, len(gone))


def seed(keys: Keystore, kid: str, secret_hex: str | None) -> str:
    """At boot: an empty keystore gets ``kid`` with the configured secret (or a generated
    one). Returns ``installed``, ``kept`` or ``differs`` (a configured secret that differs
    from what the store holds: the stored keys win; rotate to change them)."""
    if keys.current is None:
        keys.current = kid
        keys.secrets[kid] = secret_hex or generate_secret()
        keys.expires.pop(kid, None)
        return "installed"
    if secret_hex is None:
        return "kept"
    if keys.current == kid and keys.secrets.get(kid) in (None, secret_hex):
        keys.secrets[kid] = secret_hex
        return "kept"
    return "differs"


__all__ = ["DEFAULT_GRACE_MS", "DEFAULT_KID", "GRACE_MAX_MS", "Keystore", "Rotation",
           "check_kid", "check_secret_hex", "fingerprint", "generate_secret", "mint", "parse",
           "rotate", "seed", "verify"]
