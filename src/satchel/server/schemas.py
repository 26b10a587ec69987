"""Request and response bodies of the REST API (the OpenAPI document is built from these)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

if TYPE_CHECKING:
    from satchel.services.files import IssuedUrl


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, object]
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ok"]
    database: str


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: SecretStr = Field(min_length=1, max_length=1024)
    create_api_key: bool = Field(
        default=False, description="Return a new API key instead of starting a web session."
    )
    key_name: str = Field(default="", max_length=100)


class UserOut(Out):
    id: int
    username: str
    is_admin: bool
    created_at: datetime


class ApiKeyOut(Out):
    id: int
    prefix: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewApiKeyOut(BaseModel):
    api_key: str = Field(description="Shown once; store it now.")
    key: ApiKeyOut


class LoginResponse(BaseModel):
    user: UserOut
    api_key: str | None = None
    csrf_token: str | None = None


class CreateApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=100)


class CreateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: SecretStr | None = Field(default=None, max_length=1024)
    is_admin: bool = False
    create_api_key: bool = False


class CreatedUser(BaseModel):
    user: UserOut
    api_key: str | None = None


class MemberOut(Out):
    username: str
    role: str


class FindingOut(BaseModel):
    check: str
    severity: str
    message: str
    fix: str


class TeamOut(Out):
    name: str
    storage_type: str
    storage: str | None = Field(description="External bucket address, redacted.")
    storage_path: str
    created_at: datetime
    members: list[MemberOut]
    my_role: str | None
    warnings: list[FindingOut] = Field(
        default_factory=list, description="Bucket doctor warnings (creation only)."
    )
    artifact_ttl_seconds: int | None = Field(
        default=None, description="Default time-to-live of new artifact versions in seconds; "
        "null = keep forever.")


class StorageSpecIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["internal", "external"] = "internal"
    bucket: SecretStr | None = Field(
        default=None, max_length=20_000,
        description="An allow-listed bucket name, or a storage address (may hold credentials "
        "in multi-tenant mode and for CoreWeave; never returned).",
    )
    path: str = Field(default="", max_length=512)
    kms_key: str | None = Field(default=None, max_length=2048)
    azure_tenant_id: str | None = Field(default=None, max_length=64)
    azure_client_id: str | None = Field(default=None, max_length=64)
    create_bucket: bool = Field(default=False, description="Multi-tenant: create a new bucket.")


class CreateTeam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    storage: StorageSpecIn | None = None
    artifact_ttl_seconds: int | None = Field(
        default=None, description="Default time-to-live of new artifact versions in seconds "
        "(1 to 50 years); null = keep forever.")


class UpdateTeam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    storage: StorageSpecIn | None = Field(
        default=None, description="Always refused: team storage is fixed at creation."
    )
    artifact_ttl_seconds: int | None = Field(
        default=None, description="Default time-to-live of new artifact versions in seconds "
        "(1 to 50 years); null = keep forever. Absent = unchanged. Team admins only.")


class AddMember(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    role: Literal["admin", "member", "viewer"] = "member"


class FileUrlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=1024)
    method: Literal["GET", "HEAD", "PUT"] = "GET"
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    download_name: str | None = Field(default=None, max_length=255)


class FileUrlsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[FileUrlRequest] = Field(min_length=1, max_length=10_000)


class FileUrlOut(Out):
    path: str
    method: str
    url: str
    headers: dict[str, str]
    expires_at: datetime


class FileOut(Out):
    key: str
    size: int
    etag: str | None
    last_modified: datetime | None


class InstanceStorageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: SecretStr = Field(max_length=20_000)
    path: str | None = Field(default=None, max_length=512)


class InstanceStorageOut(BaseModel):
    address: str = Field(description="Redacted.")
    path: str
    provider: str
    configured: bool = Field(description="False while the built-in default is in use.")
    bucket_access_identity: str | None
    organization_id: str
    customer_namespace: str
    warnings: list[FindingOut] = Field(default_factory=list)


class AuditOut(Out):
    id: int
    created_at: datetime
    username: str | None
    action: str
    team: str | None
    project: str | None
    object_key: str | None
    method: str | None
    client_ip: str | None
    request_id: str | None


class ProjectOut(Out):
    team: str
    name: str
    visibility: str
    description: str
    created_at: datetime
    deleted_at: datetime | None = None


class CreateProject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    visibility: Literal["instance", "team"] = "instance"
    description: str = Field(default="", max_length=10_000)


# ---------------------------------------------------------------------------- artifacts



class ArtifactEntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    ref: str | None = Field(default=None, min_length=1, max_length=2048,
                            description="Reference entry: an external URI, recorded not copied.")


class ResumeMultipartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    upload_id: str = Field(min_length=1, max_length=1024)
    part_size: int = Field(ge=1, le=5 * 1024**3)
    parts_done: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(
        default_factory=list, max_length=10_000,
        description="Part numbers already uploaded: no URLs are issued for them.")


class ResumeIn(BaseModel):
    """What an interrupted upload already did (the SDK's resume journal, docs/transfer.md)."""

    model_config = ConfigDict(extra="forbid")
    pending_id: int = Field(ge=1, description="The pending version the interrupted run created.")
    uploaded: list[Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]] = Field(
        default_factory=list, max_length=1_000_000,
        description="Objects entirely in the bucket already: no URLs are issued for them "
        "(commit still verifies them).")
    multipart: list[ResumeMultipartIn] = Field(default_factory=list, max_length=10_000)


class CreateArtifactVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = Field(default="", max_length=10_000)
    metadata: dict[str, object] = Field(default_factory=dict)
    entries: list[ArtifactEntryIn] = Field(max_length=1_000_000)
    resume: ResumeIn | None = Field(
        default=None, description="Continue this user's pending version of the same "
        "collection and digest instead of creating one (ignored when it no longer exists).")
    ttl_seconds: int | None = Field(
        default=None, description="Time-to-live from the commit, in seconds (1 to 50 years); "
        "0 = keep forever even if the team has a default; absent or null = the team's "
        "default. Ignored when nothing changed (created false): use PUT .../ttl.")
    run_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="The run of this project that logs the version (lineage: its producer). "
        "When nothing changed, the run is recorded as a user of the existing version instead.")


class ArtifactVersionOut(Out):
    id: int = Field(description="Identifies a pending version for commit.")
    name: str
    type: str
    version: str | None = Field(description="v0, v1, ... once committed.")
    digest: str
    state: str
    aliases: list[str]
    description: str
    metadata: dict[str, object]
    size: int
    file_count: int
    created_at: datetime
    committed_at: datetime | None
    deleted_at: datetime | None
    expires_at: datetime | None = Field(
        description="When the TTL runs out (committed_at + TTL; garbage collection then "
        "soft-deletes the version); null = kept forever. Provisional while pending.")
    producing_run: str | None = Field(
        description="Id of the run (in the version's project) that logged it; null when it "
        "was logged outside a run.")


class ArtifactUploadOut(Out):
    sha256: str
    size: int
    url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime


class ArtifactPartOut(Out):
    number: int
    url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime


def part_urls_out(urls: Sequence[IssuedUrl]) -> list[ArtifactPartOut]:
    """Signed part URLs (services/multipart.py: ``path`` is the part number) as the API
    shows them; artifacts and run files alike."""
    return [ArtifactPartOut(number=int(u.path), url=u.url, method=u.method,
                            headers=u.headers, expires_at=u.expires_at) for u in urls]


class ArtifactMultipartOut(Out):
    sha256: str
    size: int
    upload_id: str
    part_size: int
    parts: list[ArtifactPartOut]
    sequential: bool = Field(default=False, description="Send the parts one after the other, "
                             "in order (GCS resumable sessions).")


class CreateArtifactVersionOut(Out):
    version: ArtifactVersionOut
    created: bool = Field(description="False: the manifest equals the latest version's.")
    uploads: list[ArtifactUploadOut]
    multipart: list[ArtifactMultipartOut]
    resumed: bool = Field(default=False, description="True: the pending version named in "
                          "``resume`` is continued; only what it still lacks is listed.")


class PendingPartsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    upload_id: str = Field(min_length=1, max_length=1024)
    part_size: int = Field(ge=1, le=5 * 1024**3)
    numbers: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(min_length=1,
                                                                  max_length=10_000)


class PendingUrlsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    objects: list[Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]] = Field(
        default_factory=list, max_length=10_000, description="Objects to PUT whole.")
    parts: list[PendingPartsIn] = Field(default_factory=list, max_length=1_000,
                                        description="Parts of open multipart uploads.")


class PendingUrlsOut(BaseModel):
    uploads: list[ArtifactUploadOut]
    multipart: list[ArtifactMultipartOut]


class CompletedPartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: int = Field(ge=1, le=10_000)
    etag: str = Field(default="", max_length=256, description="The ETag the store answered for "
                      "the part (S3 needs it); empty where the store answers none (Azure "
                      "blocks, GCS resumable chunks: the part number identifies the part).")


class CompleteMultipartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    upload_id: str = Field(min_length=1, max_length=1024)
    parts: list[CompletedPartIn] = Field(min_length=1, max_length=10_000)


class CommitArtifactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    aliases: list[str] = Field(default_factory=list, max_length=100)


class ArtifactCollectionOut(Out):
    name: str
    type: str
    description: str
    created_at: datetime
    versions: int = Field(description="Visible versions (for a deleted collection: the "
                          "versions a restore brings back).")
    deleted_at: datetime | None = None


class ArtifactEntryOut(Out):
    path: str
    size: int
    sha256: str | None
    ref: str | None


class ArtifactVersionDetailOut(BaseModel):
    version: ArtifactVersionOut
    entries: list[ArtifactEntryOut]


class ArtifactDownloadEntryOut(Out):
    path: str
    size: int
    sha256: str | None
    ref: str | None
    url: str | None
    method: str | None
    headers: dict[str, str]
    expires_at: datetime | None


class ArtifactDownloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[Annotated[str, Field(min_length=1, max_length=1024)]] | None = Field(
        default=None, max_length=10_000,
        description="Only these entries (URL refresh); absent = every file.")


class ArtifactDownloadOut(BaseModel):
    version: ArtifactVersionOut
    entries: list[ArtifactDownloadEntryOut]


class SetAliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=128, description="vN or another alias.")


class SetTtlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl_seconds: int = Field(description="Time-to-live from the version's commit, in seconds "
                             "(1 to 50 years); 0 = keep forever.")


# ---------------------------------------------------------------------------- garbage collection


class GcRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = Field(default=False, description="Report what would be expired, dropped "
                          "and freed; change nothing.")
    team: str | None = Field(default=None, min_length=1, max_length=63,
                             description="Collect this team only (default: every team).")


class GcRunOut(Out):
    id: int
    trigger: Literal["manual", "scheduled"]
    dry_run: bool
    team: str | None
    status: Literal["running", "succeeded", "failed"] = Field(
        description="A run whose collector died reads 'failed' (error 'abandoned: ...') once "
        "its lease has expired.")
    started_by: str | None
    started_at: datetime
    finished_at: datetime | None
    objects_freed: int
    bytes_freed: int
    versions_expired: int
    pending_dropped: int
    multipart_aborted: int
    rows_missing_object: int
    report: dict[str, object] = Field(description="Per-team details: counts, orphan objects "
                                      "(without rows) and rows without objects, deleted runs "
                                      "purged and their files freed, errors.")
    error: str | None


class GcStatusOut(Out):
    running: bool = Field(description="A collector holds the lease now.")
    lease_holder: str | None
    lease_expires_at: datetime | None
    interval_seconds: int = Field(description="Seconds between scheduled runs; 0 = off.")
    next_run_at: datetime | None = Field(description="When the next scheduled run is due.")
    last_run: GcRunOut | None
