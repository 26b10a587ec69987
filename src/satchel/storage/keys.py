"""The one place that validates object keys and joins them under a bucket's sub-path.

Every key that reaches a provider went through :func:`join_key`. A key is a ``/``-separated
relative path whose segments are non-empty and not ``.`` or ``..``; it contains no NUL or
other control characters and no backslash, and is at most 1024 bytes of UTF-8 (the S3 limit).
"""

from __future__ import annotations

import re

from satchel.errors import InvalidKey

MAX_KEY_BYTES = 1024
# One pass for the common case (signing 100k URLs validates 100k keys): printable characters
# other than backslash, no leading/trailing '/', no '//', no '.' or '..' segment.
_SAFE = re.compile(r"(?!/)(?!.*//)(?!.*/$)(?!(?:.*/)?\.{1,2}(?:/|$))[^\x00-\x1f\x7f\\]+")


def _problem(key: str) -> str | None:
    if not key:
        return "key is empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return "key contains NUL or control characters"
    if "\\" in key:
        return "key contains a backslash"
    if key.startswith("/"):
        return "key is absolute (starts with '/')"
    if "//" in key:
        return "key contains an empty segment ('//')"
    if key.endswith("/"):
        return "key ends with '/'"
    for segment in key.split("/"):
        if segment in {".", ".."}:
            return f"key contains a '{segment}' segment"
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"key is longer than {MAX_KEY_BYTES} bytes"
    return None


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if safe, else raise InvalidKey naming the rule it broke."""
    if _SAFE.fullmatch(key) is not None and (len(key) <= MAX_KEY_BYTES // 4
                                             or len(key.encode()) <= MAX_KEY_BYTES):
        return key
    problem = _problem(key)
    if problem is not None:
        raise InvalidKey(
            f"{problem}; expected a relative path like 'team/project/file.bin'",
            details={"key": key.encode("unicode_escape").decode()[:200]},
        )
    return key


def validate_sub_path(path: str | None) -> str:
    """Normalise a bucket sub-path: strip surrounding slashes; '' means the bucket root."""
    if path is None:
        return ""
    stripped = path.strip("/")
    if stripped == "":
        return ""
    problem = _problem(stripped)
    if problem is not None:
        raise InvalidKey(
            f"bucket path: {problem.replace('key', 'path', 1)}; expected e.g. 'satchel/prod'",
            details={"path": stripped.encode("unicode_escape").decode()[:200]},
        )
    return stripped


def join_key(sub_path: str, *parts: str) -> str:
    """Join the bucket sub-path and key parts into one in-bucket key, validating everything."""
    segments = [validate_sub_path(sub_path)] if sub_path else []
    for part in parts:
        segments.append(validate_key(part))
    return validate_key("/".join(segments))


def join_prefix(sub_path: str, prefix: str) -> str:
    """Like join_key, for listing prefixes: '' lists the whole sub-path; keeps a trailing '/'."""
    base = validate_sub_path(sub_path)
    if prefix == "":
        return f"{base}/" if base else ""
    trailing = prefix.endswith("/")
    body = validate_key(prefix.rstrip("/"))
    full = f"{base}/{body}" if base else body
    return f"{full}/" if trailing else full


def strip_sub_path(sub_path: str, key: str) -> str:
    """The inverse of join_key for keys listed from the store."""
    base = validate_sub_path(sub_path)
    if not base:
        return key
    if not key.startswith(base + "/"):
        raise InvalidKey(f"key {key!r} is outside the bucket path {base!r}")
    return key[len(base) + 1 :]
