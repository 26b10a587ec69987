"""Generate the CORS document and least-privilege access policy a bucket needs.

Pure functions: nothing here talks to a cloud. ``satchel storage policy`` fills in the
instance's identity (the principal that must be granted), organization ID and origin.

Least privilege means: object read/write/delete and multipart housekeeping only under the
Satchel path, listing restricted to that prefix, and read access to the bucket settings the
doctor inspects (CORS, versioning, lifecycle). No bucket deletion, no ACL or policy changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from satchel.errors import InvalidInput
from satchel.storage.keys import validate_sub_path

Provider = Literal["s3", "cw", "gcs", "azure"]
PROVIDERS: tuple[Provider, ...] = ("s3", "cw", "gcs", "azure")
CORS_METHODS = ["GET", "PUT", "HEAD"]
MAX_AGE = 3600


@dataclass(frozen=True)
class PolicyRequest:
    provider: Provider
    bucket: str
    identity: str  # IAM role/user ARN, service-account email, or managed identity client id
    organization_id: str
    origin: str
    path: str = ""
    kms_key: str | None = None
    azure_account: str | None = None


@dataclass(frozen=True)
class PolicyBundle:
    """Documents to apply, each with the command that applies it."""

    cors: str
    cors_apply: str
    policy: str
    policy_apply: str
    notes: list[str]

    def render(self) -> str:
        parts = [
            "# 1. CORS (browsers upload and download directly)", self.cors, "",
            f"# apply: {self.cors_apply}", "",
            "# 2. Access policy (least privilege for Satchel)", self.policy, "",
            f"# apply: {self.policy_apply}",
        ]
        if self.notes:
            parts += ["", "# Notes", *[f"# - {n}" for n in self.notes]]
        return "\n".join(parts)


def generate_policy(req: PolicyRequest) -> PolicyBundle:
    if req.provider not in PROVIDERS:
        raise InvalidInput(f"unknown provider {req.provider!r}; expected one of "
                           f"{', '.join(PROVIDERS)}")
    if not req.bucket:
        raise InvalidInput("a bucket name is required (--bucket)")
    if not req.identity:
        raise InvalidInput("the identity to grant is unknown; set SATCHEL_BUCKET_ACCESS_IDENTITY "
                           "on the server or pass --identity")
    path = validate_sub_path(req.path)
    if req.provider in {"s3", "cw"}:
        return _s3(req, path)
    if req.provider == "gcs":
        return _gcs(req, path)
    return _azure(req, path)


def _dump(doc: object) -> str:
    return json.dumps(doc, indent=2)


def _s3(req: PolicyRequest, path: str) -> PolicyBundle:
    cors = {"CORSRules": [{
        "AllowedOrigins": [req.origin],
        "AllowedMethods": CORS_METHODS,
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": MAX_AGE,
    }]}
    objects = f"arn:aws:s3:::{req.bucket}/{path}/*" if path else f"arn:aws:s3:::{req.bucket}/*"
    bucket_arn = f"arn:aws:s3:::{req.bucket}"
    # CoreWeave bucket policies name principals under "CW" instead of "AWS".
    principal: dict[str, object] = {"CW" if req.provider == "cw" else "AWS": [req.identity]}
    sid = f"Satchel{req.organization_id.replace('-', '')[:24]}"
    list_statement: dict[str, object] = {
        "Sid": f"{sid}List",
        "Effect": "Allow",
        "Principal": principal,
        "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
        "Resource": [bucket_arn],
    }
    if path:
        list_statement["Condition"] = {"StringLike": {"s3:prefix": [f"{path}/*", path]}}
    statements: list[dict[str, object]] = [
        {
            "Sid": f"{sid}Objects",
            "Effect": "Allow",
            "Principal": principal,
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                       "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            "Resource": [objects],
        },
        list_statement,
        {
            "Sid": f"{sid}Inspect",
            "Effect": "Allow",
            "Principal": principal,
            "Action": ["s3:GetBucketLocation", "s3:GetBucketCORS", "s3:GetBucketVersioning",
                       "s3:GetLifecycleConfiguration"],
            "Resource": [bucket_arn],
        },
    ]
    notes = [f"organization ID {req.organization_id} names the statements so they can be "
             "found and audited"]
    policy: dict[str, object] = {"Version": "2012-10-17", "Statement": statements}
    policy_text = _dump(policy)
    if req.kms_key:
        key_policy = {"Version": "2012-10-17", "Statement": [{
            "Sid": f"{sid}Kms",
            "Effect": "Allow",
            "Principal": principal,
            "Action": ["kms:GenerateDataKey", "kms:Decrypt", "kms:Encrypt",
                       "kms:DescribeKey"],
            "Resource": "*",
            "Condition": {"StringEquals": {
                "kms:ViaService": "s3.*.amazonaws.com" if req.provider == "s3" else "*",
            }},
        }]}
        policy_text += "\n\n# KMS key policy statement for " + req.kms_key + "\n" + \
            _dump(key_policy)
        notes.append("add the KMS statement to the key policy of the SSE-KMS key; clients "
                     "send x-amz-server-side-encryption headers that Satchel signs")
    if req.provider == "cw":
        notes.append("CoreWeave requires virtual-hosted-style URLs over TLS and bucket names "
                     "without '_' that do not start with 'cw-' or 'vip-'")
        cors_apply = ("aws s3api put-bucket-cors --endpoint-url https://cwobject.com "
                      f"--bucket {req.bucket} --cors-configuration file://cors.json")
        policy_apply = ("aws s3api put-bucket-policy --endpoint-url https://cwobject.com "
                        f"--bucket {req.bucket} --policy file://policy.json")
    else:
        cors_apply = (f"aws s3api put-bucket-cors --bucket {req.bucket} "
                      "--cors-configuration file://cors.json")
        policy_apply = f"aws s3api put-bucket-policy --bucket {req.bucket} --policy file://policy.json"
    return PolicyBundle(_dump(cors), cors_apply, policy_text, policy_apply, notes)


def _gcs(req: PolicyRequest, path: str) -> PolicyBundle:
    cors = [{
        "origin": [req.origin],
        "method": CORS_METHODS,
        "responseHeader": ["Content-Type", "ETag", "x-goog-hash", "x-goog-resumable",
                           "Content-Range", "Range"],
        "maxAgeSeconds": MAX_AGE,
    }]
    member = req.identity if ":" in req.identity else f"serviceAccount:{req.identity}"
    condition = None
    if path:
        condition = {
            "title": f"satchel-{req.organization_id[:8]}",
            "description": f"Satchel objects under {path}/",
            "expression": (f'resource.name.startsWith("projects/_/buckets/{req.bucket}/objects/'
                           f'{path}/")'),
        }
    binding: dict[str, object] = {"role": "roles/storage.objectUser", "members": [member]}
    if condition:
        binding["condition"] = condition
    policy = {"bindings": [
        binding,
        {"role": "roles/storage.insightsCollectorService", "members": [member]},
    ]}
    notes = [
        "roles/storage.objectUser covers object get/create/delete/list and resumable uploads",
        "with ambient credentials the service account also needs "
        "roles/iam.serviceAccountTokenCreator on itself to sign URLs (signBlob)",
        f"organization ID {req.organization_id} titles the IAM condition",
    ]
    return PolicyBundle(
        _dump(cors), f"gcloud storage buckets update gs://{req.bucket} --cors-file=cors.json",
        _dump(policy),
        f"gcloud storage buckets add-iam-policy-binding gs://{req.bucket} --member={member} "
        "--role=roles/storage.objectUser" + (" --condition-from-file=condition.json"
                                             if condition else ""),
        notes,
    )


def _azure(req: PolicyRequest, path: str) -> PolicyBundle:
    account = req.azure_account or "<storage-account>"
    cors = {"CorsRules": [{
        "AllowedOrigins": [req.origin],
        "AllowedMethods": [*CORS_METHODS, "OPTIONS"],
        "AllowedHeaders": ["*"],
        "ExposedHeaders": ["ETag", "x-ms-*"],
        "MaxAgeInSeconds": MAX_AGE,
    }]}
    scope = (f"/subscriptions/<subscription>/resourceGroups/<group>/providers/"
             f"Microsoft.Storage/storageAccounts/{account}/blobServices/default/containers/"
             f"{req.bucket}")
    assignments = {"roleAssignments": [
        {"role": "Storage Blob Data Contributor", "assignee": req.identity, "scope": scope},
        {"role": "Storage Blob Delegator", "assignee": req.identity,
         "scope": scope.split("/blobServices/")[0],
         "why": "user-delegation SAS for presigned URLs with managed identity"},
    ]}
    notes = [
        "Azure CORS is set per storage account (Blob service), not per container",
        "with an account key in the address no role assignment is needed, but keys grant the "
        "whole account: prefer a managed identity",
        f"tag the assignments with organization ID {req.organization_id} to audit them",
    ]
    if path:
        notes.append(f"Azure RBAC cannot scope to a path; Satchel keeps its objects under {path}/")
    return PolicyBundle(
        _dump(cors),
        f"az storage cors add --services b --account-name {account} --methods GET PUT HEAD "
        f"OPTIONS --origins {req.origin} --allowed-headers '*' --exposed-headers 'ETag,x-ms-*' "
        f"--max-age {MAX_AGE}",
        _dump(assignments),
        f"az role assignment create --role 'Storage Blob Data Contributor' --assignee "
        f"{req.identity} --scope {scope}",
        notes,
    )
