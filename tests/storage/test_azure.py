"""The Azure provider against Azurite: the conformance suite plus Azure-specific behaviour."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from azure.storage.blob import BlobClient, UserDelegationKey, generate_blob_sas

from satchel.errors import (
    InvalidInput,
    InvalidStorageAddress,
    NotFound,
    PermissionDenied,
    StorageUnavailable,
)
from satchel.storage import azure as azure_mod
from satchel.storage.address import parse_address
from satchel.storage.azure import AzureStore, block_id, open_azure
from satchel.storage.base import CompletedPart, ObjectStore
from satchel.storage.registry import StoreContext, open_store
from satchel.storage.scoped import ScopedStore
from tests.live import free_port
from tests.storage.conformance import StoreConformance, send
from tests.storage.servers.azurite import AzuriteServer

CTX = StoreContext(public_url="http://127.0.0.1:1", instance_secret=b"unused-by-azure")
# A well-formed key that is not the account's (64 bytes, base64).
WRONG_KEY = base64.b64encode(b"not the key of devstoreaccount1".ljust(64, b"!")).decode()


@pytest.fixture(scope="module")
def container(azurite: AzuriteServer) -> str:
    return azurite.create_container()


@pytest.fixture(scope="module")
def azure_store(azurite: AzuriteServer, container: str) -> AzureStore:
    store = open_store(azurite.address(container), CTX)
    assert isinstance(store, AzureStore)
    return store


class TestAzureConformance(StoreConformance):
    # SAS expiry has one-second resolution (se=...Z, truncated), checked by Azurite's clock.
    expiry_wait = 2.5

    @pytest.fixture
    def raw_store(self, azure_store: AzureStore) -> ObjectStore:
        return azure_store

    def test_wrong_method_rejected(self, store: ScopedStore) -> None:
        """Stricter than the generic test, which replays a GET URL as a PUT with the GET's
        (empty) headers: Azure answers that with 400 (x-ms-blob-type missing) before it looks at
        the SAS, so it says nothing about permissions. Here the PUT carries the header and must
        be refused by the SAS permission check itself."""
        store.put_bytes("m.bin", b"keep")
        get = store.presign_get("m.bin", expires_in=300)
        for req in (get, store.presign_head("m.bin", expires_in=300)):
            resp = send(req, b"overwrite", method="PUT", headers={"x-ms-blob-type": "BlockBlob"})
            assert resp.status_code == 403, resp.text
            assert resp.headers["x-ms-error-code"] == "AuthorizationPermissionMismatch"
            assert send(req, b"overwrite", method="PUT").status_code == 400
        assert store.get_bytes("m.bin") == b"keep"
        put = store.presign_put("m2.bin", expires_in=300, size=4)
        assert send(put, b"data").status_code == 201
        resp = send(put, method="GET")
        assert resp.status_code == 403
        assert resp.headers["x-ms-error-code"] == "AuthorizationPermissionMismatch"
        resp = send(put, method="DELETE")
        assert resp.status_code == 403
        assert store.get_bytes("m2.bin") == b"data"


@pytest.fixture
def store(azure_store: AzureStore) -> ScopedStore:
    return ScopedStore(azure_store, f"unit/{os.urandom(4).hex()}")


def _blob(store: ScopedStore, key: str) -> BlobClient:
    """The SDK client of ``key`` (relative to the scoped store), to look behind the provider."""
    assert isinstance(store.store, AzureStore)
    return store.store.container_client.get_blob_client(store.full_key(key))


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# ----------------------------------------------------------------------- capabilities + address


def test_capabilities_are_what_azure_verifies(azure_store: AzureStore) -> None:
    caps = azure_store.capabilities
    assert caps.verifies_md5 is True  # Put Blob checks Content-MD5
    assert caps.verifies_sha256 is False  # no SHA-256 header Azure would check
    assert caps.multipart and caps.presign and caps.batch_delete and caps.server_side_copy
    assert caps.needs_cors is True
    assert caps.min_part_size == 1 and caps.max_parts == 50_000
    assert caps.max_part_size == 4000 * 1024 * 1024


def test_put_instructions_carry_blob_type_and_md5(store: ScopedStore) -> None:
    data = b"md5 bound"
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324
    put = store.presign_put("x.bin", expires_in=60, size=len(data), content_md5=md5,
                            content_type="text/plain")
    assert put.method == "PUT"
    assert put.headers == {"x-ms-blob-type": "BlockBlob", "Content-MD5": md5,
                           "Content-Type": "text/plain"}
    assert send(put, data).status_code == 201
    stored = _blob(store, "x.bin").get_blob_properties()
    assert stored.content_settings.content_type == "text/plain"
    assert base64.b64encode(bytes(stored.content_settings.content_md5 or b"")).decode() == md5
    with pytest.raises(InvalidInput):
        store.presign_put("y.bin", expires_in=60, content_md5="not-an-md5")


def test_put_without_blob_type_header_is_refused(store: ScopedStore) -> None:
    put = store.presign_put("nohdr.bin", expires_in=60)
    resp = httpx.put(put.url, content=b"abc")
    assert resp.status_code == 400
    assert store.head("nohdr.bin") is None


def test_expires_at_is_the_sas_expiry(azure_store: AzureStore) -> None:
    get = azure_store.presign_get("some/key.bin", expires_in=600)
    se = datetime.strptime(_query(get.url)["se"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert get.expires_at == se
    with pytest.raises(InvalidInput):
        azure_store.presign_get("k", expires_in=0)
    with pytest.raises(InvalidInput):
        azure_store.presign_get("k", expires_in=8 * 24 * 3600)


def test_download_name_with_quotes_and_unicode(store: ScopedStore) -> None:
    store.put_bytes("n.bin", b"x")
    got = send(store.presign_get("n.bin", expires_in=60, download_name='ré"sumé.pt'))
    assert got.status_code == 200
    disposition = got.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="r__sum_.pt"')
    assert "filename*=UTF-8''r%C3%A9%22sum%C3%A9.pt" in disposition


def test_head_url_reads_properties_only(store: ScopedStore) -> None:
    store.put_bytes("h.bin", b"12345")
    resp = send(store.presign_head("h.bin", expires_in=60))
    assert resp.status_code == 200
    assert resp.headers["content-length"] == "5" and resp.content == b""


def test_batch_signing_matches_the_sdk(azurite: AzuriteServer, azure_store: AzureStore,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"batch/{i:03d}/ü é+%.bin" for i in range(50)]
    sdk_calls: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> str:
        sdk_calls.append(args[2])
        return generate_blob_sas(*args, **kwargs)

    monkeypatch.setattr(azure_mod, "generate_blob_sas", counting)
    puts = azure_store.presign_put_many([(k, 3, None) for k in keys], expires_in=300)
    gets = azure_store.presign_get_many(keys, expires_in=300)
    # The SDK signs two keys per batch (template + cross-check); the rest reuse the template.
    assert sdk_calls == keys[:2] * 2
    monkeypatch.undo()
    assert len(puts) == len(gets) == 50
    expiry = puts[0].expires_at
    for key, put, get in zip(keys, puts, gets, strict=True):
        assert put.headers == {"x-ms-blob-type": "BlockBlob"}
        for req, perm in ((put, "w"), (get, "r")):
            sdk = generate_blob_sas(azurite.account, azure_store.container, key,
                                    account_key=azurite.key, permission=perm, expiry=expiry)
            assert urlsplit(req.url).query == sdk, key
    # And the URLs really work for a few of them.
    for i in (0, 7, 49):
        assert send(puts[i], b"abc").status_code == 201
        assert send(gets[i]).content == b"abc"
    azure_store.delete_many(keys)


# ----------------------------------------------------------------------- block lists


def test_block_id_is_deterministic_and_fixed_length(store: ScopedStore) -> None:
    upload = store.create_multipart("b.bin")
    first = store.presign_part(upload, 7, expires_in=60)
    again = store.presign_part(upload, 7, expires_in=120)
    other = store.presign_part(upload, 8, expires_in=60)
    assert _query(first.url)["blockid"] == _query(again.url)["blockid"] == block_id(
        upload.upload_id, 7)
    assert _query(first.url)["comp"] == "block"
    assert _query(other.url)["blockid"] != _query(first.url)["blockid"]
    ids = {block_id(upload.upload_id, n) for n in (1, 99, 50_000)}
    assert len({len(i) for i in ids}) == 1 and len(ids) == 3
    other_upload = store.create_multipart("b.bin")
    assert block_id(other_upload.upload_id, 7) != block_id(upload.upload_id, 7)
    with pytest.raises(InvalidInput):
        store.presign_part(upload, 0, expires_in=60)
    with pytest.raises(InvalidInput):
        store.presign_part(upload, 50_001, expires_in=60)
    store.abort_multipart(upload)
    store.abort_multipart(other_upload)


def test_resent_part_overwrites_its_block(store: ScopedStore) -> None:
    upload = store.create_multipart("resent.bin", content_type="application/x-test")
    assert send(store.presign_part(upload, 1, expires_in=60), b"first try").status_code == 201
    assert send(store.presign_part(upload, 1, expires_in=60), b"second").status_code == 201
    assert send(store.presign_part(upload, 2, expires_in=60), b"-tail").status_code == 201
    blob = _blob(store, "resent.bin")
    _, uncommitted = blob.get_block_list("uncommitted")
    sizes = {b.id: b.size for b in uncommitted}
    # The SDK lists block ids decoded from base64.
    assert sizes[base64.b64decode(block_id(upload.upload_id, 1)).decode()] == len(b"second")
    assert len(sizes) == 3  # the marker block + one block per part
    info = store.complete_multipart(upload, [CompletedPart(1, "", 6), CompletedPart(2, "", 5)])
    assert info.size == 11
    assert store.get_bytes("resent.bin") == b"second-tail"
    props = blob.get_blob_properties()
    assert props.content_settings.content_type == "application/x-test"
    assert blob.get_block_list("uncommitted")[1] == []  # commit dropped the marker


def test_complete_checks_parts_and_upload(store: ScopedStore) -> None:
    upload = store.create_multipart("c.bin")
    assert send(store.presign_part(upload, 1, expires_in=60), b"abc").status_code == 201
    with pytest.raises(InvalidInput, match="part 2 was not uploaded"):
        store.complete_multipart(upload, [CompletedPart(1, ""), CompletedPart(2, "")])
    with pytest.raises(InvalidInput, match="declared"):
        store.complete_multipart(upload, [CompletedPart(1, "", 4)])
    with pytest.raises(InvalidInput):
        store.complete_multipart(upload, [CompletedPart(1, ""), CompletedPart(1, "")])
    store.abort_multipart(upload)
    with pytest.raises(NotFound):
        store.complete_multipart(upload, [CompletedPart(1, "")])
    assert store.head("c.bin") is None
    with pytest.raises(NotFound):
        store.complete_multipart(store.multipart_for("c.bin", "not-ours"), [CompletedPart(1, "")])


def test_listed_uploads_have_initiated_time_and_vanish_on_complete(store: ScopedStore) -> None:
    upload = store.create_multipart("dir/l.bin")
    listed = [u for u in store.list_multipart_uploads("dir/") if u.upload_id == upload.upload_id]
    assert [u.key for u in listed] == ["dir/l.bin"]
    assert listed[0].initiated == upload.initiated
    assert upload.initiated is not None
    assert abs(upload.initiated - datetime.now(UTC)) < timedelta(minutes=5)
    assert list(store.list_multipart_uploads("other/")) == []
    send(store.presign_part(upload, 1, expires_in=60), b"z")
    store.complete_multipart(upload, [CompletedPart(1, "")])
    assert all(u.upload_id != upload.upload_id for u in store.list_multipart_uploads(""))


def test_abort_never_touches_a_committed_blob(store: ScopedStore) -> None:
    store.put_bytes("kept.bin", b"committed data")
    upload = store.create_multipart("kept.bin")
    send(store.presign_part(upload, 1, expires_in=60), b"new")
    store.abort_multipart(upload)
    assert store.get_bytes("kept.bin") == b"committed data"


def test_abort_leaves_a_concurrent_upload_to_the_same_key(store: ScopedStore) -> None:
    a = store.create_multipart("same.bin")
    b = store.create_multipart("same.bin")
    send(store.presign_part(b, 1, expires_in=60), b"from b")
    store.abort_multipart(a)
    store.complete_multipart(b, [CompletedPart(1, "")])
    assert store.get_bytes("same.bin") == b"from b"


# ----------------------------------------------------------------------- server-side operations


def test_list_pages_follow_the_continuation_token(store: ScopedStore) -> None:
    for i in range(7):
        store.put_bytes(f"p/{i}.txt", b"x" * i)
    first = store.list_page("p/", page_size=3)
    assert [o.key for o in first.objects] == ["p/0.txt", "p/1.txt", "p/2.txt"]
    assert first.next_token is not None
    second = store.list_page("p/", page_size=3, token=first.next_token)
    assert [o.key for o in second.objects] == ["p/3.txt", "p/4.txt", "p/5.txt"]
    assert [o.size for o in second.objects] == [3, 4, 5]
    assert all(o.etag and o.last_modified for o in second.objects)
    last = store.list_page("p/", page_size=3, token=second.next_token)
    assert [o.key for o in last.objects] == ["p/6.txt"] and last.next_token is None


def test_delete_many_is_idempotent_and_reports_bad_keys(store: ScopedStore) -> None:
    store.put_bytes("del/a", b"a")
    result = store.store.delete_many([store.full_key("del/a"), store.full_key("del/never"),
                                      "../escape"])
    assert sorted(result.deleted) == sorted([store.full_key("del/a"), store.full_key("del/never")])
    assert list(result.failed) == ["../escape"]
    assert store.head("del/a") is None


def test_copy_of_missing_source_is_not_found(store: ScopedStore) -> None:
    with pytest.raises(NotFound, match=r"missing\.bin"):
        store.copy("missing.bin", "dst.bin")
    assert store.head("dst.bin") is None


def test_put_bytes_sets_content_type(store: ScopedStore) -> None:
    info = store.put_bytes("m.json", b"{}", content_type="application/json")
    assert info.size == 2 and info.etag
    head = store.head("m.json")
    assert head is not None and head.etag == info.etag


def test_account_cors_answers_preflight(azurite: AzuriteServer, azure_store: AzureStore) -> None:
    put = azure_store.presign_put("cors/x.bin", expires_in=60)
    preflight = {"Origin": "https://satchel.example", "Access-Control-Request-Method": "PUT",
                 "Access-Control-Request-Headers": "x-ms-blob-type,content-md5"}
    azurite.set_cors(["https://satchel.example"])
    try:
        resp = httpx.options(put.url, headers=preflight)
        assert resp.status_code == 200
        assert resp.headers["access-control-allow-origin"] == "https://satchel.example"
        other = httpx.options(put.url, headers={**preflight, "Origin": "https://evil.example"})
        assert other.status_code == 403
        resp = send(put, b"abc", headers={"Origin": "https://satchel.example"})
        assert "etag" in resp.headers.get("access-control-expose-headers", "").lower()
    finally:
        azurite.clear_cors()


# ----------------------------------------------------------------------- errors


def test_wrong_key_is_permission_denied_without_the_key(
    azurite: AzuriteServer, container: str
) -> None:
    store = open_azure(parse_address(azurite.address(container, key=WRONG_KEY)), CTX)
    for call in (lambda: store.head("x"), lambda: store.put_bytes("x", b"1"),
                 lambda: store.list_page("")):
        with pytest.raises(PermissionDenied) as info:
            call()
        text = f"{info.value} {info.value.details}"
        assert "Access keys" in text  # the fix
        assert WRONG_KEY not in text and azurite.key not in text
        assert WRONG_KEY[:20] not in text


def test_url_signed_with_wrong_key_is_refused(azurite: AzuriteServer, container: str) -> None:
    store = open_azure(parse_address(azurite.address(container, key=WRONG_KEY)), CTX)
    resp = send(store.presign_put("wk.bin", expires_in=60), b"abc")
    assert resp.status_code == 403


def test_missing_container_is_not_found(azurite: AzuriteServer) -> None:
    store = open_azure(parse_address(azurite.address("no-such-container")), CTX)
    with pytest.raises(NotFound, match="container 'no-such-container'"):
        store.head("x")
    with pytest.raises(NotFound, match="container 'no-such-container'"):
        store.put_bytes("x", b"1")
    with pytest.raises(NotFound, match="container 'no-such-container'"):
        store.list_page("")


def test_missing_object_is_not_found(store: ScopedStore) -> None:
    with pytest.raises(NotFound, match=r"gone\.bin"):
        store.get_bytes("gone.bin")


def test_closed_port_is_storage_unavailable(azurite: AzuriteServer) -> None:
    port = free_port()  # nothing listens there
    address = (f"az://:{azurite.key.replace('+', '%2B').replace('/', '%2F')}@devstoreaccount1"
               f"/c?endpoint=http://127.0.0.1:{port}/devstoreaccount1")
    store = open_azure(parse_address(address), CTX)
    with pytest.raises(StorageUnavailable) as info:
        store.head("x")
    assert f"127.0.0.1:{port}" in str(info.value)
    assert azurite.key not in str(info.value)


def test_invalid_key_is_rejected_at_open() -> None:
    with pytest.raises(InvalidStorageAddress, match="base64") as info:
        open_azure(parse_address("az://:not%20base64!@acct/cont"), CTX)
    assert "not base64!" not in str(info.value)


# ----------------------------------------------------------------------- ambient credentials


class _NoTokens:
    """A TokenCredential that must never be asked (the delegation key call is faked)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("no network token requests in unit tests")


def test_ambient_credentials_sign_with_a_user_delegation_key(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    now = 1_900_000_000.0
    store = AzureStore(account="acct", container="cont", credential=_NoTokens(),
                       account_url="https://127.0.0.1:9/acct", clock=lambda: now)
    calls: list[tuple[datetime, datetime]] = []

    def fake_key(start: datetime, expiry: datetime, **kwargs: Any) -> UserDelegationKey:
        calls.append((start, expiry))
        key = UserDelegationKey()  # type: ignore[no-untyped-call]
        key.signed_oid = "11111111-2222-3333-4444-555555555555"
        key.signed_tid = "66666666-7777-8888-9999-000000000000"
        key.signed_start = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_expiry = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_service = "b"
        key.signed_version = "2025-11-05"
        key.value = base64.b64encode(b"delegation-key-bytes").decode()
        return key

    monkeypatch.setattr(store.service_client, "get_user_delegation_key", fake_key)
    get = store.presign_get("a/b.bin", expires_in=3600, download_name="b.bin")
    q = _query(get.url)
    assert q["skoid"] == "11111111-2222-3333-4444-555555555555"
    assert q["sktid"] == "66666666-7777-8888-9999-000000000000"
    assert q["sks"] == "b" and q["sp"] == "r" and q["sr"] == "b" and "sig" in q
    assert "rscd" in q
    batch = store.presign_put_many([(f"k{i}", None, None) for i in range(20)], expires_in=3600)
    assert all(_query(r.url)["skoid"] == q["skoid"] for r in batch)
    assert len(calls) == 1  # one delegation key serves every signature
    (start, expiry), = calls
    assert start < datetime.fromtimestamp(now, UTC) <= expiry
    # A SAS that outlives the cached key fetches a longer one (capped at 7 days).
    store.presign_get("a/b.bin", expires_in=5 * 24 * 3600)
    assert len(calls) == 2
    assert calls[1][1] - datetime.fromtimestamp(now, UTC) <= timedelta(days=7)


def test_ambient_credentials_need_https() -> None:
    with pytest.raises(InvalidStorageAddress, match="https"):
        open_azure(parse_address("az://acct/cont?endpoint=http://127.0.0.1:9/acct"), CTX)


def test_ambient_address_uses_default_credential() -> None:
    store = open_azure(parse_address("az://myaccount/mycontainer"), CTX)
    assert store.account_url == "https://myaccount.blob.core.windows.net"
    assert store.container == "mycontainer"
    assert type(store.service_client.credential).__name__ == "DefaultAzureCredential"
