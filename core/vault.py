"""Codes at rest: encrypted with Fernet, deduplicated by a keyed hash.

MultiFernet encrypts with the newest key and decrypts with any listed key, so keys can
be rotated by putting a new one first. The dedupe digest is an HMAC keyed per Fernet key
(derived with HKDF); a lookup checks the digests under every listed key, so a code
imported before a rotation is still recognised after it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _digest_key(fernet_key: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"cardshop code digest"
    ).derive(fernet_key)


class CodeVault:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is needed")
        self._newest = Fernet(keys[0])
        self._fernet = MultiFernet([Fernet(key) for key in keys])
        self._digest_keys = [_digest_key(key) for key in keys]

    def encrypt(self, code: str) -> bytes:
        return self._fernet.encrypt(code.encode())

    def decrypt(self, token: bytes) -> str:
        return self._fernet.decrypt(token).decode()

    def digest(self, code: str) -> str:
        """The digest stored with a new code (newest key)."""
        return self._hmac(self._digest_keys[0], code)

    def digests(self, code: str) -> list[str]:
        """The digests a code may have been stored under, one per listed key."""
        return [self._hmac(key, code) for key in self._digest_keys]

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt a stored code under the newest key."""
        return self._fernet.rotate(token)

    def is_current(self, token: bytes) -> bool:
        """Whether a stored code is already encrypted under the newest key."""
        try:
            self._newest.decrypt(token)
        except InvalidToken:
            return False
        return True

    @staticmethod
    def _hmac(key: bytes, code: str) -> str:
        return hmac.new(key, code.encode(), hashlib.sha256).hexdigest()
