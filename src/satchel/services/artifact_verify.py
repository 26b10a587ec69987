"""Commit-time verification: does the team's bucket hold every new object, with the declared
size (and SHA-256 where the store reports one)?

Two ways to ask, chosen per commit:

* **HEAD each object**, many at a time (a thread pool: the calls wait on the network). Always
  used for few objects and for big (multipart) objects.
* **LIST the team's object prefix once** when many small objects are new and the listing is
  short compared with them (the team's known objects plus the new ones at most
  ``LIST_FACTOR`` times the new ones). A listing answers presence and size for a thousand keys
  per request, where a HEAD answers one. It checks exactly what a HEAD checks: a store's HEAD
  reports a SHA-256 only when the store verified the SHA-256 bound into the presigned PUT at
  upload (``Capabilities.verifies_sha256``; the storage conformance suite asserts this for
  every provider), so on such stores the bytes under ``sha256/<x>`` were checked against ``x``
  when written, and on the others a HEAD has nothing but the size to compare either. Objects
  the listing does not show are HEADed, so a listing can never make a missing object look
  present; at worst it costs the HEADs it saved.

:func:`head_many` and :func:`problem_of` are the HEAD half on their own; run files
(services/run_files.py) verify with them too, so "present, same size, same SHA-256 where the
store reports one" is decided here only.

Measured on SeaweedFS with 2,000 new 100 KiB objects (bench/bench_artifacts.py): serial HEADs
through the store SDK took 2.7-3.7 s of the commit; one listing ~0.4 s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from satchel.storage.base import ObjectInfo
from satchel.storage.scoped import ScopedStore

LIST_MIN_OBJECTS = 64  # below this, HEADs are as quick as a listing
LIST_FACTOR = 20  # list when at most this many objects are listed per object to verify
HEAD_THREADS = 16
PREFIX = "artifacts/sha256/"


def verify(store: ScopedStore, wanted: Mapping[str, int], *, known_objects: int,
           key_of: Callable[[str], str], multipart_threshold: int) -> list[dict[str, Any]]:
    """Problems with the objects ``wanted`` (sha256 -> size); empty when all are fine."""
    found: dict[str, ObjectInfo | None] = {}
    small = [s for s, n in wanted.items() if n < multipart_threshold]
    if len(small) >= LIST_MIN_OBJECTS and known_objects + len(wanted) <= LIST_FACTOR * len(small):
        want = set(small)
        for info in store.iter_objects(PREFIX):
            sha = info.key.rsplit("/", 1)[-1]
            if sha in want and info.key == key_of(sha):
                found[sha] = info
    rest = sorted(s for s in wanted if s not in found)
    found.update(zip(rest, head_many(store, [key_of(s) for s in rest]), strict=True))
    problems: list[dict[str, Any]] = []
    for sha, size in sorted(wanted.items()):
        problem = problem_of(found.get(sha), size, sha)
        if problem is not None:
            problems.append({"sha256": sha, **problem})
    return problems


def head_many(store: ScopedStore, keys: Sequence[str]) -> list[ObjectInfo | None]:
    """HEAD ``keys``, up to ``HEAD_THREADS`` at a time (the calls wait on the network)."""
    if len(keys) <= 1:
        return [store.head(k) for k in keys]
    with ThreadPoolExecutor(min(HEAD_THREADS, len(keys)),
                            thread_name_prefix="satchel-verify") as pool:
        return list(pool.map(store.head, keys))


def problem_of(info: ObjectInfo | None, size: int, sha256: str | None
               ) -> dict[str, Any] | None:
    """What is wrong with an object expected to hold ``size`` bytes with ``sha256`` (None:
    nothing). The SHA-256 is compared when both sides know one."""
    if info is None:
        return {"problem": "missing"}
    if info.size != size:
        return {"problem": "size", "expected": size, "found": info.size}
    if info.sha256 is not None and sha256 is not None and info.sha256.lower() != sha256:
        return {"problem": "sha256", "expected": sha256, "found": info.sha256}
    return None
