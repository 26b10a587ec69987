"""The local-filesystem provider passes the conformance suite through the real blob endpoint."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from satchel.config import Settings
from satchel.server.app import build_context, create_app
from satchel.storage.local import LocalStore
from tests.live import free_port, serve_in_thread
from tests.storage.conformance import StoreConformance


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    home = tmp_path_factory.mktemp("local-bucket")
    port = free_port()
    settings = Settings(home=home, secret_key=secrets.token_urlsafe(32),
                        base_url=f"http://127.0.0.1:{port}",
                        database_url=f"sqlite:///{home / 'db.sqlite'}")
    ctx = build_context(settings)
    (store,) = ctx.local_stores.values()
    with serve_in_thread(create_app(settings, context=ctx), port):
        yield store
    ctx.db.dispose()


class TestLocalConformance(StoreConformance):
    expiry_wait = 2.2

    @pytest.fixture
    def raw_store(self, local_server: LocalStore) -> LocalStore:
        return local_server


def test_bucket_layout_is_plain_files(local_server: LocalStore) -> None:
    local_server.put_bytes("team/project/file.txt", b"by hand")
    assert (Path(local_server.bucket) / "team/project/file.txt").read_bytes() == b"by hand"
