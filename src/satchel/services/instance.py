"""Instance identity: organization ID, customer namespace and the principal buckets must trust."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from satchel.config import Deployment, Settings
from satchel.db.models import AuditEvent, InstanceSetting, Team
from satchel.errors import (
    InstanceStorageInUse,
    NotAvailable,
    SatchelError,
    StorageAlreadyClaimed,
)
from satchel.services import audit
from satchel.services.authz import Principal, require_instance_admin
from satchel.services.storage import StorageRegistry, paths_overlap
from satchel.services.team_storage import raise_on_errors
from satchel.storage.address import parse_address
from satchel.storage.doctor import DoctorOptions, Finding, run_doctor
from satchel.storage.keys import validate_sub_path
from satchel.storage.scoped import ScopedStore

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


# ---------------------------------------------------------------------- instance bucket


@dataclass(frozen=True, slots=True)
class InstanceStorageView:
    address: str
    path: str
    provider: str
    configured: bool
    bucket_access_identity: str | None
    organization_id: str
    customer_namespace: str
    warnings: list[dict[str, str]]


def show_instance_storage(db: Session, storage: StorageRegistry, settings: Settings,
                          who: Principal, warnings: list[Finding] | None = None
                          ) -> InstanceStorageView:
    require_instance_admin(who)
    addr = storage.instance_address(db)
    info = instance_info(db, settings)
    return InstanceStorageView(
        address=addr.format(redact=True), path=addr.path, provider=addr.scheme,
        configured=storage.instance_is_configured(db),
        bucket_access_identity=info.bucket_access_identity,
        organization_id=info.organization_id, customer_namespace=info.customer_namespace,
        warnings=[f.__dict__ for f in warnings or []],
    )


def instance_bucket_in_use(db: Session, storage: StorageRegistry) -> bool:
    """Has any file been written to the instance bucket? URLs issued for internal teams count
    (an upload may be under way); otherwise the bucket's team area is listed."""
    issued = db.scalar(
        select(AuditEvent.id).join(Team, Team.name == AuditEvent.team)
        .where(Team.storage_type == "internal", AuditEvent.method == "PUT").limit(1)
    )
    if issued is not None:
        return True
    addr = storage.instance_address(db)
    try:
        scoped = ScopedStore(storage.open(addr), addr.path)
        return bool(scoped.list_page("teams/", page_size=1).objects)
    except SatchelError:
        return False  # unreachable and never written to


def set_instance_storage(db: Session, storage: StorageRegistry, settings: Settings,
                         who: Principal, address_text: str, path: str | None,
                         info: audit.RequestInfo) -> InstanceStorageView:
    """Validate with the doctor (errors block, warnings are returned) and save."""
    require_instance_admin(who)
    if settings.deployment == Deployment.MULTI_TENANT:
        raise NotAvailable("multi-tenant deployments have no customer instance-level bucket; "
                           "teams bring their own buckets")
    addr = parse_address(address_text)
    if path is not None:
        addr = addr.with_path(validate_sub_path(path))
    current = storage.instance_address(db)
    if current.format(redact=False) != addr.format(redact=False) and \
            instance_bucket_in_use(db, storage):
        raise InstanceStorageInUse(
            f"files have already been written to the instance bucket ({current.format()}); "
            "changing it would strand them. Migrate the data first (a migration tool is "
            "planned); until then the instance bucket cannot change.",
            details={"current": current.format()},
        )
    for other, team_addr in storage.external_addresses(db):
        if team_addr.identity()[:3] == addr.identity()[:3] and \
                paths_overlap(team_addr.path, addr.path):
            raise StorageAlreadyClaimed(
                f"that bucket path overlaps the storage of team '{other}'; choose another path",
                details={"team": other},
            )
    report = run_doctor(addr, storage.context, DoctorOptions(
        origin=settings.public_url, deployment=settings.deployment))
    raise_on_errors(report)
    storage.save_instance_address(db, addr)
    storage.open(addr)
    audit.record(db, who, "instance_storage_set", info, keys=[(addr.format(), None)])
    return show_instance_storage(db, storage, settings, who, report.warnings)
