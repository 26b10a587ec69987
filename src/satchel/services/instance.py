"""Instance identity: organization ID, customer namespace and the principal buckets must trust."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from satchel.config import Settings
from satchel.db.models import InstanceSetting

ORG_ID_KEY = "organization_id"


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    organization_id: str
    customer_namespace: str
    bucket_access_identity: str | None
    deployment: str
    origin: str
    supported_file_stores: list[str]


def get_setting(db: Session, key: str) -> str | None:
    row = db.get(InstanceSetting, key)
    return row.value if row is not None else None


def organization_id(db: Session) -> str:
    """Generated once, on first use, and stable afterwards."""
    value = get_setting(db, ORG_ID_KEY)
    if value is None:
        value = str(uuid.uuid4())
        db.add(InstanceSetting(key=ORG_ID_KEY, value=value))
        db.flush()
    return value


def instance_info(db: Session, settings: Settings) -> InstanceInfo:
    org = organization_id(db)
    return InstanceInfo(
        organization_id=org,
        customer_namespace=f"satchel-{org.replace('-', '')[:12]}",
        bucket_access_identity=settings.bucket_access_identity,
        deployment=settings.deployment.value,
        origin=settings.public_url,
        supported_file_stores=settings.allow_list.display(),
    )
