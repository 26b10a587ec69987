"""Choosing a team's storage at creation, under the deployment mode's rules (DESIGN §3).

    mode            instance bucket     team buckets                       credentials
    self-managed    admin sets it       any provider on the allow-list     the allow-list entry's
    dedicated       admin sets it       any provider on the allow-list     the allow-list entry's
    multi-tenant    operator's only     CoreWeave, S3, GCS (no Azure);      the team's address, or
                                        or "create a new bucket for me"    the operator's factory

The bare allow-list entry ``cw://`` lets teams bring CoreWeave buckets with their own keys.
Every external bucket passes the doctor before the team exists; a bucket + path already used by
another team (or overlapping the instance bucket's team area) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from satchel.config import Deployment, Settings
from satchel.errors import (
    BucketCheckFailed,
    InvalidInput,
    NotAvailable,
    StorageAlreadyClaimed,
)
from satchel.services.storage import StorageRegistry, paths_overlap
from satchel.storage.address import StorageAddress, parse_address
from satchel.storage.base import BucketCreator
from satchel.storage.doctor import DoctorOptions, DoctorReport, Finding, run_doctor
from satchel.storage.keys import validate_sub_path

MULTI_TENANT_SCHEMES = ("cw", "s3", "gs")


@dataclass(frozen=True)
class StorageSpec:
    """What a team-creation request says about storage."""

    type: str = "internal"  # internal | external
    bucket: str | None = None  # an address, or a bare bucket name on the allow-list
    path: str = ""
    kms_key: str | None = None
    azure_tenant_id: str | None = None
    azure_client_id: str | None = None
    create_bucket: bool = False


@dataclass(frozen=True)
class ResolvedStorage:
    address: StorageAddress
    warnings: list[Finding]


def resolve_external(
    db: Session, storage: StorageRegistry, settings: Settings, team: str, spec: StorageSpec,
) -> ResolvedStorage:
    """Validate the spec, pick credentials, run the doctor; raise with an actionable error."""
    if spec.type not in {"internal", "external"}:
        raise InvalidInput(f"unknown storage type {spec.type!r}; expected internal or external",
                           details={"field": "storage.type"})
    path = validate_sub_path(spec.path)
    if spec.create_bucket:
        address = _create_bucket(storage, settings, team, path)
    else:
        if not spec.bucket:
            raise InvalidInput("external storage needs a bucket (an allow-listed bucket name or "
                               "a storage address)", details={"field": "storage.bucket"})
        address = _choose(settings, spec.bucket)
        address = replace(address, path=path)
    address = _apply_options(address, spec)
    _check_claims(db, storage, address, team)
    report = run_doctor(address, storage.context, DoctorOptions(
        origin=settings.public_url, deployment=settings.deployment,
        allow_list=settings.allow_list, for_team=True,
    ))
    raise_on_errors(report)
    return ResolvedStorage(address, report.warnings)


def raise_on_errors(report: DoctorReport) -> None:
    if report.ok:
        return
    first = report.errors[0]
    raise BucketCheckFailed(
        f"the bucket failed the doctor's checks: {first.check}: {first.message} "
        f"(fix: {first.fix})" + (f"; and {len(report.errors) - 1} more"
                                  if len(report.errors) > 1 else ""),
        details={"findings": [f.__dict__ for f in report.findings], "passed": report.passed},
    )


def _choose(settings: Settings, text: str) -> StorageAddress:
    mode = settings.deployment
    allow = settings.allow_list
    if "://" in text:
        requested = parse_address(text)
    else:
        name = text.strip()
        matches = [e for e in allow.entries if e.bucket == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidInput(f"several allow-listed buckets are named '{name}'; give the full "
                               "address (scheme, endpoint, bucket) without credentials",
                               details={"field": "storage.bucket"})
        raise NotAvailable(
            f"bucket '{name}' is not on this instance's allow-list; allowed: "
            + (", ".join(allow.display()) or "none (SATCHEL_SUPPORTED_FILE_STORES is empty)"),
            details={"field": "storage.bucket"},
        )
    if mode == Deployment.MULTI_TENANT:
        if requested.scheme not in MULTI_TENANT_SCHEMES:
            what = "Azure Blob" if requested.scheme == "az" else f"'{requested.scheme}'"
            raise NotAvailable(
                f"{what} team buckets are not available in multi-tenant deployments; use "
                "CoreWeave (cw://), S3 (s3://) or GCS (gs://), or ask for a new bucket",
                details={"field": "storage.bucket", "scheme": requested.scheme},
            )
        return requested
    if requested.scheme == "cw" and allow.coreweave_enabled and requested.has_credentials:
        return requested
    entry = allow.match(requested)
    if entry is None:
        raise NotAvailable(
            f"{requested.format()} is not on this instance's allow-list; allowed: "
            + (", ".join(allow.display()) or "none (SATCHEL_SUPPORTED_FILE_STORES is empty)"),
            details={"field": "storage.bucket"},
        )
    return entry


def _apply_options(address: StorageAddress, spec: StorageSpec) -> StorageAddress:
    if spec.kms_key:
        if address.scheme not in {"s3"}:
            raise InvalidInput("a KMS key ARN applies to AWS S3 buckets only",
                               details={"field": "storage.kms_key"})
        if not re.match(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[\w/+=,.@-]+$",
                        spec.kms_key):
            raise InvalidInput("KMS key must be an ARN like "
                               "arn:aws:kms:us-east-1:123456789012:key/<id>",
                               details={"field": "storage.kms_key"})
        address = replace(address, kms_key=spec.kms_key)
    if spec.azure_tenant_id or spec.azure_client_id:
        if address.scheme != "az":
            raise InvalidInput("Azure tenant and client ids apply to Azure buckets only",
                               details={"field": "storage.azure_client_id"})
        address = replace(address, azure_tenant_id=spec.azure_tenant_id or None,
                          azure_client_id=spec.azure_client_id or None)
    return address


def _check_claims(db: Session, storage: StorageRegistry, address: StorageAddress, team: str
                  ) -> None:
    where = address.identity()[:3]
    for other, addr in storage.external_addresses(db):
        if addr.identity()[:3] == where and paths_overlap(addr.path, address.path):
            raise StorageAlreadyClaimed(
                f"bucket '{address.bucket}' path '{address.path or '/'}' overlaps the storage of "
                f"team '{other}' (path '{addr.path or '/'}'); choose a distinct path",
                details={"team": other},
            )
    instance = storage.instance_address(db)
    if instance.identity()[:3] == where and paths_overlap(instance.path, address.path):
        raise StorageAlreadyClaimed(
            f"bucket '{address.bucket}' path '{address.path or '/'}' overlaps the instance "
            "bucket; a team bucket must hold only that team's objects, so choose a path outside "
            f"'{instance.path or '/'}'",
            details={"team": None},
        )


def _create_bucket(storage: StorageRegistry, settings: Settings, team: str, path: str
                   ) -> StorageAddress:
    if settings.deployment != Deployment.MULTI_TENANT:
        raise NotAvailable("'create a new bucket for me' is offered in multi-tenant deployments "
                           "only; pick an allow-listed bucket")
    if settings.bucket_factory is None:
        raise NotAvailable("this instance has no bucket factory configured "
                           "(SATCHEL_BUCKET_FACTORY); pick an existing bucket")
    factory = parse_address(settings.bucket_factory.get_secret_value())
    name = f"{factory.bucket}-{team}"[:63].rstrip("-")
    address = replace(factory, bucket=name, path=path)
    store = storage.open(address)
    if not isinstance(store, BucketCreator):
        raise NotAvailable(f"the '{factory.scheme}' provider cannot create buckets")
    store.create_bucket(cors_origins=[settings.public_url])
    return address
