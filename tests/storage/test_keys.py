"""Object keys and bucket sub-paths: the one place that decides what may be written where."""

from __future__ import annotations

import posixpath
import random

import pytest

from satchel.errors import InvalidKey
from satchel.storage.keys import (
    MAX_KEY_BYTES,
    join_key,
    join_prefix,
    strip_sub_path,
    validate_key,
    validate_sub_path,
)

BAD_KEYS = {
    "empty": "",
    "dot-dot": "..",
    "dot-dot segment": "a/../b",
    "leading dot-dot": "../etc/passwd",
    "trailing dot-dot": "a/b/..",
    "dot": ".",
    "dot segment": "a/./b",
    "leading dot": "./a",
    "absolute": "/etc/passwd",
    "double slash": "a//b",
    "trailing slash": "a/b/",
    "NUL": "a\x00b",
    "newline": "a\nb",
    "carriage return": "a\rb",
    "tab": "a\tb",
    "escape": "a\x1bb",
    "DEL": "a\x7fb",
    "backslash": "a\\b",
    "backslash traversal": "..\\..\\windows",
    "too long": "k" * (MAX_KEY_BYTES + 1),
    "too long in UTF-8": "é" * (MAX_KEY_BYTES // 2 + 1),  # 2 bytes each
}

GOOD_KEYS = [
    "a",
    "team/project/run/file.txt",
    "...",
    "..a",
    "a..b",
    ".hidden/file",
    "a/.config",
    "name with spaces.txt",
    "日本語/データ.bin",
    "emoji-🙂.png",
    "k" * MAX_KEY_BYTES,
    "é" * (MAX_KEY_BYTES // 2),
    "a:b@c=d&e+f%20",
]


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_unsafe_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidKey) as info:
        validate_key(key)
    err = info.value
    assert err.code == "invalid_key" and err.http_status == 400
    # The message says what was expected; details never carry raw control characters.
    assert "expected a relative path" in err.message
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in err.details["key"])
    assert len(err.details["key"]) <= 200


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_safe_keys_are_accepted_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(("problem", "key"), [
    ("'..' segment", "a/../b"),
    ("'.' segment", "a/./b"),
    ("absolute", "/a"),
    ("'//'", "a//b"),
    ("control characters", "a\x00"),
    ("backslash", "a\\b"),
    ("ends with '/'", "a/"),
    (f"longer than {MAX_KEY_BYTES} bytes", "k" * 2000),
])
def test_rejection_names_the_rule(problem: str, key: str) -> None:
    with pytest.raises(InvalidKey, match=problem):
        validate_key(key)


# --------------------------------------------------------------------------- sub-paths


@pytest.mark.parametrize(("raw", "normalised"), [
    (None, ""),
    ("", ""),
    ("/", ""),
    ("//", ""),
    ("satchel", "satchel"),
    ("/satchel/prod/", "satchel/prod"),
    ("satchel/prod", "satchel/prod"),
])
def test_sub_path_is_normalised(raw: str | None, normalised: str) -> None:
    assert validate_sub_path(raw) == normalised


@pytest.mark.parametrize("raw", ["..", "/../", "a/../b", "a/./b", "a//b", "a\\b", "a\x00b",
                                 "tenants/\n", "x" * (MAX_KEY_BYTES + 1)])
def test_unsafe_sub_paths_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidKey, match="bucket path"):
        validate_sub_path(raw)


# --------------------------------------------------------------------------- joining


@pytest.mark.parametrize(("sub", "parts", "joined"), [
    ("", ("k",), "k"),
    ("satchel/prod", ("team/x.bin",), "satchel/prod/team/x.bin"),
    ("/satchel/prod/", ("team/x.bin",), "satchel/prod/team/x.bin"),
    ("sub", ("a", "b/c", "d.txt"), "sub/a/b/c/d.txt"),
])
def test_join_key_applies_the_sub_path(sub: str, parts: tuple[str, ...], joined: str) -> None:
    assert join_key(sub, *parts) == joined


@pytest.mark.parametrize("part", ["../x", "..", "/x", "", "x/", "a//b", "a\\..\\b", "\x00"])
def test_join_key_rejects_unsafe_parts(part: str) -> None:
    with pytest.raises(InvalidKey):
        join_key("sub", part)
    with pytest.raises(InvalidKey):
        join_key("sub", "ok", part)


def test_join_key_rejects_a_result_that_is_too_long() -> None:
    sub = "s" * 600
    part = "p" * 600  # each part is fine alone, the whole key is not
    assert validate_key(part) == part
    with pytest.raises(InvalidKey, match="longer than"):
        join_key(sub, part)


def test_join_key_rejects_an_unsafe_sub_path() -> None:
    with pytest.raises(InvalidKey):
        join_key("../other-tenant", "x")


@pytest.mark.parametrize(("sub", "prefix", "joined"), [
    ("", "", ""),
    ("sub", "", "sub/"),  # the trailing '/' keeps "sub-sibling/..." out of listings
    ("sub", "dir/", "sub/dir/"),
    ("sub", "dir", "sub/dir"),
    ("a/b", "c/d/", "a/b/c/d/"),
    ("", "dir/", "dir/"),
])
def test_join_prefix(sub: str, prefix: str, joined: str) -> None:
    assert join_prefix(sub, prefix) == joined


def test_sub_path_prefix_does_not_match_a_sibling() -> None:
    prefix = join_prefix("tenant", "")
    assert join_key("tenant", "x").startswith(prefix)
    assert not join_key("tenant-sibling", "x").startswith(prefix)


@pytest.mark.parametrize("prefix", ["../", "..", "/abs/", "a/../", "a\\b/", "\x00"])
def test_join_prefix_rejects_unsafe_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidKey):
        join_prefix("sub", prefix)


@pytest.mark.parametrize(("sub", "key", "relative"), [
    ("", "a/b", "a/b"),
    ("sub", "sub/a/b", "a/b"),
    ("/x/y/", "x/y/z", "z"),
])
def test_strip_sub_path(sub: str, key: str, relative: str) -> None:
    assert strip_sub_path(sub, key) == relative


@pytest.mark.parametrize("key", ["sub-sibling/a", "subx", "other/sub/a", "sub", "a"])
def test_strip_sub_path_refuses_keys_outside_the_sub_path(key: str) -> None:
    with pytest.raises(InvalidKey, match="outside the bucket path"):
        strip_sub_path("sub", key)


# --------------------------------------------------------------------------- property


_SEGMENTS = ["a", "b.txt", "data", ".", "..", "...", ".a", "a.", "", " ", "é", "日本",
             "a\\..", "..\\", "\x00", "\n", "\x7f", "x" * 40, "%2e%2e", "~", "-", "_"]


def _random_key(rng: random.Random) -> str:
    key = "/".join(rng.choice(_SEGMENTS) for _ in range(rng.randint(1, 6)))
    if rng.random() < 0.15:
        key = "/" + key
    if rng.random() < 0.1:
        key += "/"
    return key


def test_accepted_keys_never_escape_their_sub_path() -> None:
    """Seeded random search: any key join_key accepts stays under the sub-path, also after
    the path normalisation a filesystem or proxy might apply, and strips back to itself."""
    rng = random.Random(20240601)
    subs = ["", "tenant", "org/tenant", "/org/tenant/"]
    accepted = rejected = 0
    for _ in range(20_000):
        sub = rng.choice(subs)
        key = _random_key(rng)
        try:
            full = join_key(sub, key)
        except InvalidKey:
            rejected += 1
            continue
        accepted += 1
        base = validate_sub_path(sub)
        # Normalising changes nothing: there is no '.', '..' or '//' left to collapse.
        assert posixpath.normpath(full) == full, (sub, key)
        anchored = posixpath.normpath("/" + full)
        root = "/" + base
        assert anchored == "/" + full
        assert posixpath.commonpath([root, anchored]) == root, (sub, key)
        if base:
            assert full.startswith(base + "/")
            assert anchored.startswith(root + "/")
        assert "\\" not in full and "\x00" not in full
        assert strip_sub_path(sub, full) == key
    # The search exercised both sides of the rule.
    assert accepted > 1000 and rejected > 1000, (accepted, rejected)


def test_every_key_that_would_escape_is_rejected() -> None:
    rng = random.Random(7)
    escaping = 0
    for _ in range(20_000):
        key = _random_key(rng)
        normalised = posixpath.normpath("/tenant/" + key.replace("\\", "/"))
        if normalised == "/tenant" or normalised.startswith("/tenant/"):
            continue
        escaping += 1
        with pytest.raises(InvalidKey):
            join_key("tenant", key)
    assert escaping > 100
