from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.concurrency import run_in_threadpool

from satchel.server.deps import DB, Ctx, CurrentUser
from satchel.services import instance
from satchel.services.authz import require_instance_admin
from satchel.storage.doctor import DoctorOptions, run_doctor
from satchel.storage.registry import StoreContext

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
    store_ctx = StoreContext(ctx.settings.public_url, ctx.instance_secret)
    report = await run_in_threadpool(run_doctor, body.address.get_secret_value(), store_ctx,
                                     options)
    return DoctorOut.model_validate(report.to_dict())
