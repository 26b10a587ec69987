from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.concurrency import run_in_threadpool

from satchel.server.deps import DB, Ctx, CurrentUser, Info
from satchel.server.schemas import AuditOut, InstanceStorageIn, InstanceStorageOut
from satchel.services import audit, instance
from satchel.services.authz import require_instance_admin
from satchel.storage.doctor import DoctorOptions, run_doctor

router = APIRouter(tags=["instance"])


class InstanceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    organization_id: str
    customer_namespace: str
    bucket_access_identity: str | None
    deployment: str
    origin: str
    supported_file_stores: list[str] = Field(description="Allow-list entries, redacted.")


class DoctorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: SecretStr = Field(description="Storage address (may contain credentials; never "
                               "echoed back or logged).", max_length=20_000)
    path: str | None = Field(default=None, max_length=512)
    origin: str | None = Field(default=None, max_length=2048,
                               description="Browser origin for the CORS check; default: this "
                               "server's public URL.")


class FindingOut(BaseModel):
    check: str
    severity: str
    message: str
    fix: str


class DoctorOut(BaseModel):
    address: str
    path: str
    ok: bool
    findings: list[FindingOut]
    passed: list[str]


@router.get("/instance", response_model=InstanceOut)
def get_instance(ctx: Ctx, db: DB, _: CurrentUser) -> InstanceOut:
    """Organization ID, customer namespace and the identity buckets must grant access to."""
    return InstanceOut.model_validate(instance.instance_info(db, ctx.settings))


@router.post("/admin/storage/doctor", response_model=DoctorOut)
async def doctor(body: DoctorRequest, ctx: Ctx, who: CurrentUser) -> DoctorOut:
    """Validate a bucket (instance admins only): errors block saving it, warnings do not."""
    require_instance_admin(who)
    options = DoctorOptions(path=body.path, origin=body.origin or ctx.settings.public_url,
                            deployment=ctx.settings.deployment)
    report = await run_in_threadpool(run_doctor, body.address.get_secret_value(),
                                     ctx.storage.context, options)
    return DoctorOut.model_validate(report.to_dict())


@router.get("/admin/storage", response_model=InstanceStorageOut)
def show_storage(ctx: Ctx, db: DB, who: CurrentUser) -> InstanceStorageOut:
    """The instance bucket (redacted), identity, organization ID and namespace."""
    view = instance.show_instance_storage(db, ctx.storage, ctx.settings, who)
    return InstanceStorageOut.model_validate(view, from_attributes=True)


@router.put("/admin/storage", response_model=InstanceStorageOut)
def set_storage(body: InstanceStorageIn, ctx: Ctx, db: DB, who: CurrentUser, info: Info
                ) -> InstanceStorageOut:
    """Set the instance bucket. The doctor runs first: errors block (400 bucket_check_failed),
    warnings are returned. Refused once files were written (409 instance_storage_in_use)."""
    view = instance.set_instance_storage(db, ctx.storage, ctx.settings, who,
                                         body.address.get_secret_value(), body.path, info)
    return InstanceStorageOut.model_validate(view, from_attributes=True)


@router.get("/admin/audit", response_model=list[AuditOut])
def audit_log(
    db: DB, who: CurrentUser,
    user: str | None = Query(default=None, max_length=64),
    team: str | None = Query(default=None, max_length=63),
    project: str | None = Query(default=None, max_length=128),
    action: str | None = Query(default=None, max_length=64),
    since: datetime | None = None,
    limit: int = Query(default=100, ge=1, le=10_000),
) -> list[AuditOut]:
    """Audit events, newest first (instance admins only)."""
    rows = audit.query(db, who, username=user, team=team, project=project, action=action,
                       since=since, limit=limit)
    return [AuditOut.model_validate(r) for r in rows]
