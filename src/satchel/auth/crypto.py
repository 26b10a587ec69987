"""Encryption of secrets at rest (bucket credentials inside storage addresses).

Fernet (AES-128-CBC + HMAC-SHA256) with a key derived from the instance secret by HKDF, so the
database alone never reveals a credential.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from satchel.errors import ConfigError


class SecretBox:
    def __init__(self, instance_secret: bytes) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"satchel-secrets-at-rest"
        ).derive(instance_secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                ["stored secret cannot be decrypted: SATCHEL_SECRET_KEY differs from the key "
                 "it was encrypted with; restore the original key"]
            ) from None


def derive_key(instance_secret: bytes, purpose: str) -> bytes:
    """A sub-key for one purpose (URL signing, CSRF...), so keys are never reused across uses."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"satchel:{purpose}".encode()
    ).derive(instance_secret)
