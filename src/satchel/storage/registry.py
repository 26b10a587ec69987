"""Open a store for an address: the provider is picked by scheme and imported lazily.

Cloud SDKs are optional extras (``satchel[s3]``, ``[gcs]``, ``[azure]``); a missing one is a
clear StorageError naming the extra to install, raised only when that scheme is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from satchel.errors import StorageError
from satchel.storage.address import StorageAddress, parse_address
from satchel.storage.base import ObjectStore
from satchel.storage.scoped import ScopedStore


@dataclass(frozen=True)
class StoreContext:
    """What providers may need from the instance (never request data)."""

    # Public base URL of the Satchel server (local-bucket presigned URLs point at it).
    public_url: str
    # Instance secret; the local provider derives its URL-signing key from it.
    instance_secret: bytes


class _Factory(Protocol):
    def __call__(self, address: StorageAddress, context: StoreContext) -> ObjectStore: ...


# scheme -> (module, factory function, pip extra)
_PROVIDERS: dict[str, tuple[str, str, str]] = {
    "file": ("satchel.storage.local", "open_local", ""),
    "s3": ("satchel.storage.s3", "open_s3", "s3"),
    "cw": ("satchel.storage.s3", "open_s3", "s3"),
    "gs": ("satchel.storage.gcs", "open_gcs", "gcs"),
    "az": ("satchel.storage.azure", "open_azure", "azure"),
}


def open_store(address: StorageAddress | str, context: StoreContext) -> ObjectStore:
    addr = parse_address(address) if isinstance(address, str) else address
    module_name, func, extra = _PROVIDERS[addr.scheme]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("satchel"):
            raise StorageError(f"the '{addr.scheme}' provider is not available yet") from exc
        raise StorageError(
            f"the '{addr.scheme}' provider needs an optional dependency ({exc.name}); "
            f"install it with: pip install 'satchel[{extra}]'"
        ) from exc
    factory: _Factory = getattr(module, func)
    return factory(addr, context)


def open_scoped(address: StorageAddress | str, context: StoreContext) -> ScopedStore:
    """The store with its address's sub-path applied."""
    addr = parse_address(address) if isinstance(address, str) else address
    return ScopedStore(open_store(addr, context), addr.path)
