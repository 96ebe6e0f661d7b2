"""How TOTP secrets are encrypted at rest: Fernet, under a key derived
from each of the app's secret keys.  The newest key encrypts; a secret
under any key still decrypts (MultiFernet), so the secret key can be
rotated without locking anyone out."""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HKDF_INFO = b"mailflow mfa totp secret encryption v1"

# One key, or every key newest first.
SecretKeys = str | Sequence[str]


# Derived once a process for each key: every code checked needs it.
@functools.lru_cache(maxsize=16)
def encryption_key(secret_key: str) -> bytes:
    """The Fernet key for TOTP secrets, derived from the app's secret key
    with a label of its own, so it is never the key used to sign links."""
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=HKDF_INFO,
    ).derive(secret_key.encode("utf-8"))
    return base64.urlsafe_b64encode(derived)


def fernets(secret_keys: SecretKeys) -> list[Fernet]:
    """A Fernet for each key, newest first."""
    keys = [secret_keys] if isinstance(secret_keys, str) else secret_keys
    return [Fernet(encryption_key(key)) for key in keys]


def encrypt(secret: str, secret_keys: SecretKeys) -> str:
    """``secret`` encrypted under the newest key."""
    return fernets(secret_keys)[0].encrypt(secret.encode("ascii")).decode("ascii")


def decrypt(token: str, secret_keys: SecretKeys) -> str:
    """The secret in ``token``, under whichever key; InvalidToken (or
    ValueError for a damaged row) when none opens it."""
    return MultiFernet(fernets(secret_keys)).decrypt(token.encode("ascii")).decode("ascii")


def reencrypted(token: str, secret_keys: SecretKeys) -> str | None:
    """``token`` encrypted anew under the newest key, or None when it is
    under the newest already.  InvalidToken when no key opens it."""
    newest, *older = fernets(secret_keys)
    data = token.encode("ascii")
    try:
        newest.decrypt(data)
    except InvalidToken:
        if not older:
            raise
        # MultiFernet tries every key; rotate() encrypts under its first.
        return MultiFernet([newest, *older]).rotate(data).decode("ascii")
    return None
