"""The storage conformance suite: every provider runs these tests against a real local server.

A provider's test module subclasses :class:`StoreConformance` and provides two fixtures:

* ``raw_store``: the provider's :class:`~satchel.storage.base.ObjectStore` for a bucket that
  exists on a real server (SeaweedFS, Azurite, fake-gcs-server behind the verifying proxy, or
  Satchel's own blob endpoint for the local provider);
* ``expiry_wait``: seconds to wait after a 1-second URL before it must be rejected
  (servers differ in clock granularity).

Every test works inside a fresh random sub-path, so tests never see each other's objects.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from satchel.errors import NotFound
from satchel.storage.base import CompletedPart, ObjectStore, PresignedRequest
from satchel.storage.keys import join_key
from satchel.storage.scoped import ScopedStore

MiB = 1024 * 1024


def send(req: PresignedRequest, body: bytes | Iterator[bytes] | None = None,
         *, method: str | None = None, url: str | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    """Make the request a client would make with this presigned request."""
    hdrs = dict(req.headers)
    hdrs.update(headers or {})
    with httpx.Client(timeout=60) as http:
        return http.request(method or req.method, url or req.url, headers=hdrs, content=body)


def tamper_signature(url: str) -> str:
    """Flip one character of the signature-bearing query parameter."""
    parts = urlsplit(url)
    params = parts.query.split("&")
    for i, p in enumerate(params):
        name, _, value = p.partition("=")
        if name.lower() in {"x-amz-signature", "x-goog-signature", "sig", "x-satchel-signature",
                            "signature"} and value:
            flipped = ("A" if value[0] != "A" else "B") + value[1:]
            params[i] = f"{name}={flipped}"
            return urlunsplit(parts._replace(query="&".join(params)))
    raise AssertionError(f"no signature parameter found in {parts.query[:200]}")


def swap_key(url: str, old_key: str, new_key: str) -> str:
    parts = urlsplit(url)
    assert parts.path.endswith(old_key), (parts.path, old_key)
    return urlunsplit(parts._replace(path=parts.path[: -len(old_key)] + new_key))


def is_rejected(resp: httpx.Response) -> bool:
    """Stores answer a bad signature with 403 (S3, Azure, GCS, local) — accept 401 too."""
    return resp.status_code in {401, 403}


class StoreConformance:
    """Subclass in tests/storage/test_<provider>.py and provide ``raw_store``."""

    expiry_wait: float = 2.5

    @pytest.fixture
    def store(self, raw_store: ObjectStore) -> ScopedStore:
        return ScopedStore(raw_store, f"conformance/{secrets.token_hex(6)}")

    # ----------------------------------------------------------------- round trip

    def test_round_trip_with_checksum(self, store: ScopedStore) -> None:
        data = os.urandom(256 * 1024 + 7)
        sha = hashlib.sha256(data).hexdigest()
        put = store.presign_put("a/b/data.bin", expires_in=300, size=len(data), sha256=sha)
        resp = send(put, data)
        assert resp.status_code in {200, 201}, resp.text
        info = store.head("a/b/data.bin")
        assert info is not None and info.size == len(data)
        if info.sha256 is not None:
            # A store reports a SHA-256 only if it verified it at upload: commit verification
            # (services/artifact_verify.py) may then answer from a listing instead of HEADs.
            assert store.capabilities.verifies_sha256
            assert info.sha256 == sha
        got = send(store.presign_get("a/b/data.bin", expires_in=300))
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == sha
        assert put.expires_at.timestamp() > time.time() + 200

    def test_range_get(self, store: ScopedStore) -> None:
        data = os.urandom(10_000)
        store.put_bytes("r.bin", data)
        got = send(store.presign_get("r.bin", expires_in=60), headers={"Range": "bytes=100-199"})
        assert got.status_code == 206
        assert got.content == data[100:200]

    def test_download_name(self, store: ScopedStore) -> None:
        store.put_bytes("d.bin", b"hello")
        got = send(store.presign_get("d.bin", expires_in=60, download_name="model weights.pt"))
        assert got.status_code == 200 and got.content == b"hello"
        assert "model" in got.headers.get("content-disposition", "")

    def test_head_and_get_of_missing_key(self, store: ScopedStore) -> None:
        assert store.head("nope/missing.bin") is None
        with pytest.raises(NotFound):
            store.get_bytes("nope/missing.bin")

    def test_server_side_copy(self, store: ScopedStore) -> None:
        store.put_bytes("src.bin", b"copy me")
        store.copy("src.bin", "dst/copied.bin")
        assert store.get_bytes("dst/copied.bin") == b"copy me"
        assert store.get_bytes("src.bin") == b"copy me"

    # ----------------------------------------------------------------- rejections

    def test_tampered_url_rejected_and_nothing_written(self, store: ScopedStore) -> None:
        put = store.presign_put("t.bin", expires_in=300, size=3)
        resp = send(put, b"abc", url=tamper_signature(put.url))
        assert is_rejected(resp), (resp.status_code, resp.text[:300])
        assert store.head("t.bin") is None
        store.put_bytes("t2.bin", b"xyz")
        get = store.presign_get("t2.bin", expires_in=300)
        resp = send(get, url=tamper_signature(get.url))
        assert is_rejected(resp)

    def test_expired_url_rejected(self, store: ScopedStore) -> None:
        store.put_bytes("e.bin", b"old")
        get = store.presign_get("e.bin", expires_in=1)
        put = store.presign_put("e2.bin", expires_in=1, size=3)
        time.sleep(self.expiry_wait)
        assert is_rejected(send(get))
        assert is_rejected(send(put, b"new"))
        assert store.head("e2.bin") is None

    def test_url_for_other_key_rejected(self, store: ScopedStore) -> None:
        store.put_bytes("mine.bin", b"mine")
        store.put_bytes("other.bin", b"other")
        get = store.presign_get("mine.bin", expires_in=300)
        resp = send(get, url=swap_key(get.url, "mine.bin", "other.bin"))
        assert is_rejected(resp)
        put = store.presign_put("mine.bin", expires_in=300, size=4)
        resp = send(put, b"evil", url=swap_key(put.url, "mine.bin", "other.bin"))
        assert is_rejected(resp)
        assert store.get_bytes("other.bin") == b"other"

    def test_wrong_method_rejected(self, store: ScopedStore) -> None:
        store.put_bytes("m.bin", b"keep")
        get = store.presign_get("m.bin", expires_in=300)
        resp = send(get, b"overwrite", method="PUT")
        assert is_rejected(resp) or resp.status_code == 405
        assert store.get_bytes("m.bin") == b"keep"
        put = store.presign_put("m2.bin", expires_in=300, size=4)
        assert send(put, b"data").status_code in {200, 201}
        resp = send(put, method="GET")
        assert is_rejected(resp) or resp.status_code == 405

    def test_wrong_checksum_rejected_by_store(self, store: ScopedStore) -> None:
        caps = store.capabilities
        data, other = b"the real bytes", b"different bytes"
        if caps.verifies_sha256:
            put = store.presign_put("c.bin", expires_in=300, size=len(data),
                                    sha256=hashlib.sha256(other).hexdigest())
        elif caps.verifies_md5:
            md5 = base64.b64encode(hashlib.md5(other).digest()).decode()  # noqa: S324
            put = store.presign_put("c.bin", expires_in=300, size=len(data), content_md5=md5)
        else:
            pytest.skip("this store verifies no client checksum (capabilities say so)")
        resp = send(put, data)
        assert 400 <= resp.status_code < 500, resp.text
        assert store.head("c.bin") is None

    # ----------------------------------------------------------------- multipart

    def test_multipart_with_resent_part(self, store: ScopedStore) -> None:
        if not store.capabilities.multipart:
            pytest.skip("store has no multipart capability")
        part_size = max(5 * MiB, store.capabilities.min_part_size)
        data = os.urandom(part_size * 2 + MiB)
        chunks = [data[:part_size], data[part_size:2 * part_size], data[2 * part_size:]]
        upload = store.create_multipart("big/file.bin")
        etags: dict[int, str] = {}
        # Out of order where the store allows it (parts are uploaded in parallel in practice).
        order = [1, 2, 3] if store.capabilities.sequential_parts else [1, 3, 2]

        def interrupted_body() -> Iterator[bytes]:
            yield chunks[1][: MiB]
            raise ConnectionAbortedError("simulated interruption")

        for n in order:
            req = store.presign_part(upload, n, expires_in=300, size=len(chunks[n - 1]))
            if n == 2:
                with pytest.raises((ConnectionAbortedError, httpx.HTTPError)):
                    send(req, interrupted_body())
                req = store.presign_part(upload, n, expires_in=300, size=len(chunks[n - 1]))
            resp = send(req, chunks[n - 1])
            assert resp.status_code in {200, 201, 308}, resp.text
            etags[n] = resp.headers.get("etag", "").strip('"') or f"part-{n}"
        info = store.complete_multipart(
            upload, [CompletedPart(n, etags[n], len(chunks[n - 1])) for n in (1, 2, 3)]
        )
        assert info.size == len(data)
        got = send(store.presign_get("big/file.bin", expires_in=300))
        assert got.status_code == 200
        assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()

    def test_abort_multipart(self, store: ScopedStore) -> None:
        if not store.capabilities.multipart:
            pytest.skip("store has no multipart capability")
        upload = store.create_multipart("aborted.bin")
        assert any(u.upload_id == upload.upload_id for u in store.list_multipart_uploads(""))
        store.abort_multipart(upload)
        assert all(u.upload_id != upload.upload_id for u in store.list_multipart_uploads(""))
        assert store.head("aborted.bin") is None

    # ----------------------------------------------------------------- list + delete

    def test_list_and_batch_delete_2000_keys_under_sub_path(
        self, store: ScopedStore, raw_store: ObjectStore
    ) -> None:
        # Keys that must survive: outside the sub-path, and a sibling whose name shares the
        # sub-path's string prefix (a classic prefix-matching bug).
        outside = [join_key(f"outside-{secrets.token_hex(4)}", f"keep-{i}") for i in range(3)]
        sibling = join_key(store.sub_path + "-sibling", "keep")
        for key in [*outside, sibling]:
            raw_store.put_bytes(key, b"survivor")
        keys = [f"many/{i // 100:02d}/obj-{i:04d}.txt" for i in range(2000)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: store.put_bytes(k, k.encode()), keys))

        listed = [o.key for o in store.iter_objects("many/", page_size=500)]
        assert sorted(listed) == sorted(keys)
        assert len(set(listed)) == 2000
        everything = {o.key for o in store.iter_objects("")}
        assert set(keys) <= everything

        deleted: list[str] = []
        for i in range(0, len(keys), 1000):
            result = store.delete_many(keys[i:i + 1000])
            assert result.failed == {}
            deleted += result.deleted
        assert sorted(deleted) == sorted(keys)
        assert list(store.iter_objects("many/")) == []
        for key in [*outside, sibling]:
            assert raw_store.get_bytes(key) == b"survivor"
        raw_store.delete_many([*outside, sibling])
