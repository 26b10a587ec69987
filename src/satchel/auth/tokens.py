"""API keys: ``sk_<prefix>_<secret>``.

The prefix (8 characters) identifies a key in listings and logs; the whole key is stored only as
its SHA-256 digest. Keys carry 256 bits of randomness, so a fast hash is safe here (as for
GitHub tokens) and keeps per-request authentication cheap; passwords use argon2 instead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
_KEY_RE = re.compile(r"^sk_([A-Za-z0-9]{8})_([A-Za-z0-9]{32,128})$")


def generate_api_key() -> str:
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(43))  # ~256 bits
    return f"sk_{prefix}_{secret}"


def looks_like_api_key(value: str) -> bool:
    return _KEY_RE.match(value) is not None


def key_prefix(value: str) -> str:
    m = _KEY_RE.match(value)
    if m is None:
        raise ValueError("not a Satchel API key")
    return m.group(1)


def hash_token(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def generate_session_token() -> str:
    return secrets.token_urlsafe(32)
