"""Commit verification (services/artifact_verify.py) on a real local bucket: the listing path
and the HEAD path find exactly the same problems, and the listing is used only when it may be."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from satchel.services import artifact_verify
from satchel.storage.keys import join_key
from satchel.storage.local import LocalStore
from satchel.storage.scoped import ScopedStore


def _key(sha: str) -> str:
    return join_key("artifacts", "sha256", sha[:2], sha[2:4], sha)


class Counting(ScopedStore):
    """The real scoped store, counting the calls verification makes."""

    heads = 0
    lists = 0

    def head(self, key: str) -> Any:
        type(self).heads += 1
        return super().head(key)

    def list_page(self, prefix: str = "", **kw: Any) -> Any:
        type(self).lists += 1
        return super().list_page(prefix, **kw)


@pytest.fixture
def bucket(tmp_path: Path) -> tuple[Counting, dict[str, int]]:
    store = LocalStore(tmp_path / "b", public_url="http://x", instance_secret=b"k" * 32)
    scoped = Counting(store, "teams/kappa")
    objects: dict[str, int] = {}
    for i in range(150):
        data = f"object {i}".encode() * (i + 1)
        sha = hashlib.sha256(data).hexdigest()
        scoped.put_bytes(_key(sha), data)
        objects[sha] = len(data)
    # someone else's object under a look-alike key outside the layout is never counted
    scoped.put_bytes("artifacts/sha256/zz/" + "0" * 64, b"stray")
    Counting.heads = Counting.lists = 0
    return scoped, objects


def _wanted(objects: dict[str, int]) -> dict[str, int]:
    wanted = dict(objects)
    first = sorted(objects)[0]
    wanted[first] += 1  # wrong size
    wanted["0" * 64] = 5  # not in the bucket (only the stray look-alike is)
    wanted["f" * 64] = 9  # not in the bucket at all
    return wanted


def _expected(objects: dict[str, int]) -> list[dict[str, Any]]:
    first = sorted(objects)[0]
    return sorted([{"sha256": first, "problem": "size", "expected": objects[first] + 1,
                    "found": objects[first]},
                   {"sha256": "0" * 64, "problem": "missing"},
                   {"sha256": "f" * 64, "problem": "missing"}], key=lambda p: p["sha256"])


def test_listing_path_finds_the_same_problems_with_few_heads(
        bucket: tuple[Counting, dict[str, int]]) -> None:
    store, objects = bucket
    problems = artifact_verify.verify(store, _wanted(objects), known_objects=0, key_of=_key,
                                      multipart_threshold=1 << 30)
    assert problems == _expected(objects)
    assert Counting.lists >= 1
    assert Counting.heads == 2  # only the two the listing did not show


@pytest.mark.parametrize("why", ["few", "big_team"])
def test_head_path_when_listing_does_not_pay_or_is_not_safe(
        bucket: tuple[Counting, dict[str, int]], why: str) -> None:
    store, objects = bucket
    wanted = _wanted(objects)
    known = 0
    if why == "few":
        keep = [*sorted(wanted)[:10], "0" * 64, "f" * 64]
        wanted = {k: wanted[k] for k in keep}
    else:
        known = 1_000_000
    problems = artifact_verify.verify(store, wanted, known_objects=known, key_of=_key,
                                      multipart_threshold=1 << 30)
    assert problems == [p for p in _expected(objects) if p["sha256"] in wanted]
    assert Counting.lists == 0
    assert Counting.heads == len(wanted)


def test_big_objects_are_always_headed(bucket: tuple[Counting, dict[str, int]]) -> None:
    store, objects = bucket
    threshold = sorted(objects.values())[-5]  # the 5 biggest count as multipart objects
    problems = artifact_verify.verify(store, objects, known_objects=0, key_of=_key,
                                      multipart_threshold=threshold)
    assert problems == []
    assert Counting.lists >= 1 and Counting.heads == 5
