"""Which bucket holds a team's files, and the key layout inside it.

Layout (documented in docs/storage.md): every team's objects live under its own prefix below
the bucket's sub-path, ``<bucket path>/teams/<team>/``, whether the bucket is the instance
bucket (shared by all *internal* teams) or the team's own (*external*). Services reach storage
only through :meth:`StorageRegistry.team_bucket`, which returns a store already scoped to that
prefix, so nothing can be written outside it.

The instance bucket is ``SATCHEL_STORAGE`` (default: the local bucket under the data
directory) until an admin sets one; the admin's choice is stored encrypted in
``instance_settings``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from satchel.auth.crypto import SecretBox
from satchel.config import Settings
from satchel.db.models import InstanceSetting, Team
from satchel.errors import NotFound
from satchel.storage.address import StorageAddress, parse_address
from satchel.storage.base import ObjectStore
from satchel.storage.keys import join_key
from satchel.storage.local import LocalStore
from satchel.storage.registry import StoreContext, open_store
from satchel.storage.scoped import ScopedStore

INSTANCE_STORAGE_KEY = "instance_storage"


def team_prefix(bucket_path: str, team: str) -> str:
    """``<bucket path>/teams/<team>``: the one prefix a team's objects live under."""
    return join_key(bucket_path, "teams", team) if bucket_path else join_key("teams", team)


@dataclass(frozen=True)
class TeamBucket:
    team: str
    external: bool
    address: StorageAddress  # carries the secret: never return or log it
    store: ScopedStore  # scoped to team_prefix(...)

    @property
    def display(self) -> str:
        return self.address.format(redact=True)


def paths_overlap(a: str, b: str) -> bool:
    """True when one sub-path equals or contains the other ('' contains everything)."""
    a, b = a.strip("/"), b.strip("/")
    return not a or not b or a == b or a.startswith(b + "/") or b.startswith(a + "/")


class StorageRegistry:
    """Opens stores once per process and resolves instance and team buckets."""

    def __init__(self, settings: Settings, instance_secret: bytes) -> None:
        self.settings = settings
        self.box = SecretBox(instance_secret)
        self.context = StoreContext(settings.public_url, instance_secret)
        self.local_stores: dict[str, LocalStore] = {}
        self._stores: dict[str, ObjectStore] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- opening

    def open(self, address: StorageAddress) -> ObjectStore:
        """The provider for an address (cached by bucket + credentials; the path is applied by
        ScopedStore, not here)."""
        cache_key = replace(address, path="").format(redact=False)
        with self._lock:
            store = self._stores.get(cache_key)
        if store is None:
            store = open_store(replace(address, path=""), self.context)
            with self._lock:
                store = self._stores.setdefault(cache_key, store)
                if isinstance(store, LocalStore):
                    self.local_stores[store.store_id] = store
        return store

    # ----------------------------------------------------------------- instance bucket

    def instance_address(self, db: Session) -> StorageAddress:
        row = db.get(InstanceSetting, INSTANCE_STORAGE_KEY)
        if row is not None:
            return parse_address(self.box.decrypt(row.value))
        return parse_address(self.settings.default_storage_address)

    def instance_is_configured(self, db: Session) -> bool:
        return db.get(InstanceSetting, INSTANCE_STORAGE_KEY) is not None

    def save_instance_address(self, db: Session, address: StorageAddress) -> None:
        value = self.box.encrypt(address.format(redact=False))
        row = db.get(InstanceSetting, INSTANCE_STORAGE_KEY)
        if row is None:
            db.add(InstanceSetting(key=INSTANCE_STORAGE_KEY, value=value))
        else:
            row.value = value
        db.flush()

    # ----------------------------------------------------------------- team buckets

    def team_address(self, db: Session, team: Team) -> StorageAddress:
        if team.storage_type == "external":
            if not team.storage_address_enc:
                raise NotFound(f"team '{team.name}' has no storage configured")
            return parse_address(self.box.decrypt(team.storage_address_enc))
        return self.instance_address(db)

    def team_bucket(self, db: Session, team: Team) -> TeamBucket:
        address = self.team_address(db, team)
        store = ScopedStore(self.open(address), team_prefix(address.path, team.name))
        return TeamBucket(team.name, team.storage_type == "external", address, store)

    def external_addresses(self, db: Session) -> list[tuple[str, StorageAddress]]:
        rows = db.execute(
            select(Team.name, Team.storage_address_enc).where(Team.storage_type == "external")
        )
        return [(name, parse_address(self.box.decrypt(enc))) for name, enc in rows if enc]

    # ----------------------------------------------------------------- local blob endpoint

    def local_store(self, db: Session, store_id: str) -> LocalStore | None:
        """The local store a blob URL names; loads file:// buckets from the database on a miss
        (another replica may have created the team that uses it)."""
        store = self.local_stores.get(store_id)
        if store is not None:
            return store
        candidates = [self.instance_address(db)]
        candidates += [addr for _, addr in self.external_addresses(db)]
        for addr in candidates:
            if addr.scheme == "file":
                self.open(addr)
        return self.local_stores.get(store_id)
