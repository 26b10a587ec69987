"""The allow-list of file stores teams may use (``SATCHEL_SUPPORTED_FILE_STORES``).

Comma-separated storage addresses. An entry holds the credentials; a team form only names the
bucket. The bare entry ``cw://`` enables CoreWeave as an option (credentials then come with the
team's own address). A malformed entry is reported with the entry redacted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from satchel.errors import InvalidStorageAddress
from satchel.storage.address import StorageAddress, parse_address, redact_address_text


@dataclass(frozen=True)
class AllowList:
    entries: tuple[StorageAddress, ...] = field(default=())
    coreweave_enabled: bool = False

    def __bool__(self) -> bool:
        return bool(self.entries) or self.coreweave_enabled

    def match(self, address: StorageAddress) -> StorageAddress | None:
        """The allow-list entry for the same bucket (scheme, endpoint/account, bucket)."""
        for entry in self.entries:
            if entry.identity()[:3] == address.identity()[:3]:
                return entry
        return None

    def display(self) -> list[str]:
        shown = [e.format(redact=True) for e in self.entries]
        return [*shown, "cw://"] if self.coreweave_enabled else shown


def parse_allow_list(text: str) -> AllowList:
    """Parse the comma-separated list; raise InvalidStorageAddress naming the (redacted) entry."""
    entries: list[StorageAddress] = []
    coreweave = False
    for position, raw in enumerate(text.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        if item == "cw://":
            coreweave = True
            continue
        try:
            entries.append(parse_address(item))
        except InvalidStorageAddress as exc:
            problem = exc.details.get("problem", exc.message)
            raise InvalidStorageAddress(
                f"entry {position} ({redact_address_text(item)}): {problem}; "
                f"expected {exc.details.get('expected', 'a storage address')}",
                details={"entry": position},
            ) from None
    return AllowList(tuple(entries), coreweave)
