"""The bucket doctor: validate a bucket before Satchel relies on it (DESIGN §8).

Each finding has a severity (``error`` blocks saving a bucket, ``warning`` does not), a precise
message and the fix. Checks run in order and stop early when a later check could only repeat an
earlier failure (a bad name or an unreachable endpoint makes every round trip fail too).

    syntax -> deployment/allow-list -> bucket name -> reachability + TLS -> credentials/bucket
    -> round trip under the sub-path (put, head, get, list, multipart create/abort, delete)
    -> CORS (PUT/GET/HEAD preflights from the instance origin, ETag exposed) -> SHA-256
    verification (stores that can prove it) -> KMS -> versioning / soft delete / lifecycle,
    with clock skew read from the store's answer to the probe PUT

The doctor talks to the store only through the provider protocol and presigned URLs, i.e. the
exact paths clients will use, so what it validates is what users will hit. Every object it
writes lives under ``<sub-path>/satchel-doctor/`` and is deleted again; nothing outside the
sub-path is read, written or listed (beyond the bucket settings).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal, NoReturn, Protocol, runtime_checkable

import httpx

from satchel.config import Deployment
from satchel.errors import (
    InvalidStorageAddress,
    NotFound,
    PermissionDenied,
    SatchelError,
    StorageUnavailable,
)
from satchel.storage.address import StorageAddress, parse_address, redact_address_text
from satchel.storage.allowlist import AllowList
from satchel.storage.base import BucketInspector, Capabilities, ObjectStore
from satchel.storage.keys import validate_sub_path
from satchel.storage.registry import StoreContext, open_store
from satchel.storage.scoped import ScopedStore

Severity = Literal["error", "warning"]
PROBE_PREFIX = "satchel-doctor"
PROBE_EXPIRES = 300  # seconds; the probe URLs are used immediately
CLOCK_ERROR_SECONDS = 15 * 60  # SigV4, GCS V4 and Azure SAS all refuse requests this far off
CLOCK_WARNING_SECONDS = 120


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    message: str
    fix: str


@dataclass
class DoctorReport:
    address: str  # redacted
    path: str
    findings: list[Finding] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def to_dict(self) -> dict[str, object]:
        return {"address": self.address, "path": self.path, "ok": self.ok,
                "findings": [asdict(f) for f in self.findings], "passed": self.passed}


@dataclass(frozen=True)
class DoctorOptions:
    path: str | None = None  # overrides the address's ?path=
    origin: str | None = None  # browser origin that must pass CORS (the instance URL)
    deployment: Deployment = Deployment.SELF_MANAGED
    allow_list: AllowList | None = None  # checked for team buckets only
    for_team: bool = False
    timeout: float = 5.0  # seconds for the TCP connect; HTTP requests get twice this
    clock: Callable[[], float] = time.time  # this host's clock, for the skew check


@runtime_checkable
class ChecksumProbe(Protocol):
    """Optional: a store that can find out whether it verifies ``x-amz-checksum-sha256``
    (S3-compatible stores; see :meth:`satchel.storage.s3.S3Store.probe_checksum_support`)."""

    def probe_checksum_support(self, key: str) -> Capabilities: ...


class _Stop(Exception):
    """A check failed in a way that makes the following checks meaningless."""


class Doctor:
    def __init__(self, report: DoctorReport, options: DoctorOptions) -> None:
        self.report = report
        self.options = options

    def error(self, check: str, message: str, fix: str) -> None:
        self.report.findings.append(Finding(check, "error", message, fix))

    def fail(self, check: str, message: str, fix: str) -> NoReturn:
        """An error after which the remaining checks could only repeat it."""
        self.error(check, message, fix)
        raise _Stop

    def warn(self, check: str, message: str, fix: str) -> None:
        self.report.findings.append(Finding(check, "warning", message, fix))

    def ok(self, check: str) -> None:
        if check not in self.report.passed:
            self.report.passed.append(check)

    def failed(self, *checks: str) -> bool:
        return any(f.check in checks for f in self.report.errors)


def run_doctor(
    address: str | StorageAddress,
    context: StoreContext,
    options: DoctorOptions | None = None,
    *,
    open_fn: Callable[[StorageAddress, StoreContext], ObjectStore] = open_store,
) -> DoctorReport:
    options = options or DoctorOptions()
    report = DoctorReport(address=_shown(address), path="")
    doc = Doctor(report, options)
    try:
        addr = _check_syntax(doc, address)
        report.address = addr.format()
        report.path = addr.path
        _check_deployment(doc, addr)
        _check_bucket_name(doc, addr)
        if addr.scheme != "file":
            _check_reachability(doc, addr)
        store = _open(doc, addr, context, open_fn)
        _check_credentials(doc, store, addr)
        scoped = ScopedStore(store, addr.path)
        _round_trip(doc, scoped, addr)
        _check_checksum(doc, scoped)
        _check_kms(doc, addr)
        _check_bucket_settings(doc, store)
    except _Stop:
        pass
    return report


def _shown(address: str | StorageAddress) -> str:
    """The address for the report before it is known to parse: redacted, or not at all."""
    if isinstance(address, StorageAddress):
        return address.format()
    if re.match(r"^\s*[a-z][a-z0-9]*://", address, re.IGNORECASE):
        return redact_address_text(address.strip())
    return "(unparsed address)"  # without a scheme there is no telling where a secret sits


# ---------------------------------------------------------------------- static checks


def _check_syntax(doc: Doctor, address: str | StorageAddress) -> StorageAddress:
    try:
        addr = parse_address(address) if isinstance(address, str) else address
        if doc.options.path is not None:
            addr = addr.with_path(validate_sub_path(doc.options.path))
        else:
            validate_sub_path(addr.path)
    except InvalidStorageAddress as exc:
        doc.fail("syntax", exc.message, "write the address in one of the forms shown")
    except SatchelError as exc:
        doc.fail("syntax", exc.message, "use a sub-path like 'satchel/prod'")
    doc.ok("syntax")
    return addr


def _check_deployment(doc: Doctor, addr: StorageAddress) -> None:
    opts = doc.options
    if opts.deployment == Deployment.MULTI_TENANT and opts.for_team:
        if addr.scheme == "az":
            doc.fail("deployment", "Azure Blob team buckets are not available in multi-tenant "
                      "deployments", "use a CoreWeave, S3 or GCS bucket")
        if addr.scheme == "file":
            doc.fail("deployment", "local-filesystem buckets are not available in multi-tenant "
                      "deployments", "use a CoreWeave, S3 or GCS bucket")
    if opts.for_team and opts.allow_list is not None and opts.deployment != \
            Deployment.MULTI_TENANT:
        allowed = opts.allow_list.match(addr) is not None or (
            addr.scheme == "cw" and opts.allow_list.coreweave_enabled)
        if not allowed:
            doc.fail("allow-list", f"{addr.scheme}://…/{addr.bucket} is not on this instance's "
                      "allow-list of file stores",
                      "ask the operator to add it to SATCHEL_SUPPORTED_FILE_STORES")
    doc.ok("deployment")


_S3_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DNS_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_GCS_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_AZ_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_AZ_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")


def bucket_name_problems(addr: StorageAddress) -> list[str]:
    """Every naming rule the bucket breaks for its provider (empty list: fine)."""
    name = addr.bucket
    problems: list[str] = []
    if addr.scheme == "file":
        return problems
    if name != name.lower():
        problems.append("contains uppercase letters")
    if "_" in name and addr.scheme != "gs":
        problems.append("contains '_'")
    if addr.scheme in {"s3", "cw"}:
        if not _S3_NAME.match(name.lower().replace("_", "-")):
            problems.append("must be 3-63 characters of lowercase letters, digits, '.' and '-', "
                            "starting and ending with a letter or digit")
        if ".." in name:
            problems.append("contains '..'")
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(name)
            problems.append("is formatted as an IP address")
        if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
            problems.append("uses a reserved prefix or suffix")
    if addr.scheme == "cw":
        if not _DNS_NAME.match(name.lower().replace("_", "-")):
            problems.append("must be DNS-compliant (no dots) for virtual-hosted-style access")
        if name.startswith(("cw-", "vip-")):
            problems.append("must not start with 'cw-' or 'vip-' (reserved by CoreWeave)")
    if addr.scheme == "gs":
        if not _GCS_NAME.match(name.lower()):
            problems.append("must be 3-63 characters of lowercase letters, digits, '-', '_' and "
                            "'.', starting and ending with a letter or digit")
        if name.startswith("goog") or "google" in name:
            problems.append("must not start with 'goog' or contain 'google'")
    if addr.scheme == "az":
        if not _AZ_CONTAINER.match(name.lower()):
            problems.append("container names are 3-63 lowercase letters, digits and single "
                            "hyphens, starting and ending with a letter or digit")
        if addr.account and not _AZ_ACCOUNT.match(addr.account):
            problems.append("storage account names are 3-24 lowercase letters and digits")
    return list(dict.fromkeys(problems))


def _check_bucket_name(doc: Doctor, addr: StorageAddress) -> None:
    problems = bucket_name_problems(addr)
    if problems:
        kind = {"az": "container", "cw": "CoreWeave bucket"}.get(addr.scheme, "bucket")
        doc.fail("bucket-name", f"{kind} name '{addr.bucket}' " + "; ".join(problems),
                  f"create a {kind} with a valid name, e.g. '{_suggest(addr.bucket)}', and "
                  "put that name in the address")
    doc.ok("bucket-name")


def _suggest(name: str) -> str:
    s = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
    s = re.sub(r"^(cw-|vip-)+", "", s)
    s = re.sub(r"-{2,}", "-", s)
    return (s or "satchel-bucket").ljust(3, "0")[:63]


# ---------------------------------------------------------------------- network checks


def endpoint_of(addr: StorageAddress) -> tuple[str, int, bool]:
    """(host, port, tls) the provider will talk to."""
    if addr.scheme in {"s3", "cw"}:
        host = addr.endpoint or (f"s3.{addr.region}.amazonaws.com" if addr.region
                                 else "s3.amazonaws.com")
        tls = addr.tls if addr.tls is not None else (addr.endpoint is None or addr.is_aws)
        return _split_endpoint(f"{'https' if tls else 'http'}://{host}")
    if addr.endpoint:
        return _split_endpoint(addr.endpoint)
    if addr.scheme == "gs":
        return "storage.googleapis.com", 443, True
    return f"{addr.account}.blob.core.windows.net", 443, True


def _split_endpoint(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of an endpoint URL; IPv6 literals come back without brackets."""
    parts = httpx.URL(url)
    tls = parts.scheme == "https"
    return parts.host, parts.port or (443 if tls else 80), tls


def _check_reachability(doc: Doctor, addr: StorageAddress) -> None:
    host, port, tls = endpoint_of(addr)
    timeout = doc.options.timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        doc.fail("reachability", f"cannot connect to {host}:{port}: no answer within "
                 f"{timeout:g} s", "check the endpoint host and port in the address, and that "
                 "no firewall drops traffic from this host to the store")
    except OSError as exc:
        doc.fail("reachability", f"cannot connect to {host}:{port} ({exc.strerror or exc})",
                  "check the endpoint host and port in the address, DNS and firewalls, and "
                  "that the object store is running")
    with sock:
        if tls:
            try:
                ctx = ssl.create_default_context()
                with ctx.wrap_socket(sock, server_hostname=host):
                    pass
            except (ssl.SSLError, OSError) as exc:
                doc.fail("tls", f"TLS handshake with {host}:{port} failed ({exc})",
                          "install a certificate trusted by this host, or use tls=false for a "
                          "plain-HTTP test endpoint")
    doc.ok("reachability")


def _open(doc: Doctor, addr: StorageAddress, context: StoreContext,
          open_fn: Callable[[StorageAddress, StoreContext], ObjectStore]) -> ObjectStore:
    try:
        return open_fn(addr, context)
    except SatchelError as exc:
        doc.fail("credentials", exc.message, _credentials_fix(addr))


# Error codes that mean "these credentials are wrong", not "this permission is missing".
_S3_CREDENTIAL_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken",
                        "ExpiredToken", "InvalidClientTokenId", "TokenRefreshRequired"}
# Azure: AuthenticationFailed is a bad signature; Azurite (and Azure for account-key requests
# blocked by network rules) answers AuthorizationFailure. A missing RBAC role is
# AuthorizationPermissionMismatch, which stays a permission finding.
_AZURE_CREDENTIAL_CODES = {"AuthenticationFailed", "AuthorizationFailure",
                           "InvalidAuthenticationInfo"}
_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "RefreshError",
                      "DefaultCredentialsError", "CredentialUnavailableError"}


def _bad_credentials(exc: SatchelError) -> bool:
    """Did the store refuse *who we are* (wrong key, secret, token) rather than what we asked?

    Providers translate SDK errors at the boundary (``raise ... from``) and keep the store's
    code in ``details``; GCS keeps only the HTTP status, found on the chained exception."""
    details = exc.details
    if details.get("reason") == "invalid_credentials":
        return True
    if details.get("code") in _S3_CREDENTIAL_CODES:
        return True
    if details.get("azure_code") in _AZURE_CREDENTIAL_CODES:
        return True
    cause = exc.__cause__
    if cause is None:
        return False
    status = getattr(cause, "status_code", None) or getattr(cause, "code", None)
    return status == 401 or type(cause).__name__ in _CREDENTIAL_ERRORS


def _credentials_fix(addr: StorageAddress) -> str:
    if addr.scheme in {"s3", "cw"}:
        return ("check the access key and secret in the address (a wrong secret fails the "
                "signature, an unknown key is InvalidAccessKeyId) and that ?region= is the "
                "bucket's region")
    if addr.scheme == "gs":
        return ("check the service-account email and the private key in the address: the key "
                "must belong to that account and must not be deleted or disabled")
    if addr.scheme == "az":
        return ("check the account key (key1 or key2 from the storage account's 'Access keys' "
                "page, URL-encoded in the address); if it is right, check that the account's "
                "network rules admit this host")
    return "check the credentials in the address"


def _list_fix(addr: StorageAddress) -> str:
    return {
        "s3": "grant s3:ListBucket on the bucket (for the sub-path prefix at least)",
        "cw": "grant s3:ListBucket on the bucket (for the sub-path prefix at least)",
        "gs": "grant storage.objects.list (roles/storage.objectUser) on the bucket",
        "az": "grant 'Storage Blob Data Contributor' (it includes List) on the container",
    }.get(addr.scheme, "make the directory readable") + \
        "; `satchel storage policy` prints a complete policy"


def _check_credentials(doc: Doctor, store: ObjectStore, addr: StorageAddress) -> None:
    """One list request under the probe prefix: tells apart a wrong secret, a missing bucket,
    a missing list permission and a store that does not answer."""
    try:
        store.list_page(_probe_prefix(addr), page_size=1)
    except NotFound as exc:
        doc.fail("bucket", exc.message,
                 f"create the bucket '{addr.bucket}' first, or fix its name in the address")
    except PermissionDenied as exc:
        if _bad_credentials(exc):
            doc.fail("credentials", exc.message, _credentials_fix(addr))
        # Listing may simply not be granted; the round trip reports exactly what else is missing.
        doc.error("list", exc.message, _list_fix(addr))
        return
    except StorageUnavailable as exc:
        doc.fail("reachability", exc.message, "check the endpoint, tls= and that the store "
                 "answers S3/GCS/Azure API requests on that port")
    except SatchelError as exc:
        doc.fail("bucket", exc.message, "check the endpoint, region and bucket name in the "
                 "address")
    doc.ok("credentials")


def _probe_prefix(addr: StorageAddress) -> str:
    return f"{addr.path}/{PROBE_PREFIX}/" if addr.path else f"{PROBE_PREFIX}/"


def _why(exc: Exception) -> str:
    """An error's text for a finding: Satchel's message, or the HTTP client's error class and
    text (httpx messages name the failure, never the signed URL)."""
    if isinstance(exc, SatchelError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------------- round trip


def _round_trip(doc: Doctor, store: ScopedStore, addr: StorageAddress) -> None:
    """Write a probe object under the sub-path through a presigned PUT, read it back (HEAD,
    presigned GET, listing), create and abort a multipart upload, check CORS against it, and
    delete it again whatever happened in between."""
    key = f"{PROBE_PREFIX}/{secrets.token_hex(8)}.txt"
    data = f"satchel doctor probe {doc.options.clock()}\n".encode()
    written = False
    with httpx.Client(timeout=doc.options.timeout * 2) as http:
        try:
            if store.store.scheme == "file":
                # The local bucket is served by the Satchel server itself; check the directory
                # directly (the blob endpoint is covered by the conformance suite).
                written = _local_round_trip(doc, store, key, data)
                return
            written = _write_probe(doc, store, http, key, data, addr)
            if not written:
                return
            _check_head(doc, store, key, data)
            _check_read(doc, store, http, key, data)
            _check_listing(doc, store, key, addr)
            _check_multipart(doc, store, key)
            _check_cors(doc, store, http, key, addr)
        finally:
            if written:
                _delete_probe(doc, store, key)


def _write_probe(doc: Doctor, store: ScopedStore, http: httpx.Client, key: str, data: bytes,
                 addr: StorageAddress) -> bool:
    fix = {
        "s3": "grant s3:PutObject on the bucket path",
        "cw": "grant s3:PutObject on the bucket path",
        "gs": "grant storage.objects.create (roles/storage.objectUser) on the bucket",
        "az": "grant 'Storage Blob Data Contributor' on the container (SAS needs 'Write' and "
              "'Create')",
    }.get(addr.scheme, "grant write permission")
    if addr.kms_key:
        fix += f"; with SSE-KMS also kms:GenerateDataKey on {addr.kms_key}"
    try:
        put = store.presign_put(key, expires_in=PROBE_EXPIRES, size=len(data))
        resp = http.request("PUT", put.url, headers=put.headers, content=data)
    except (SatchelError, httpx.HTTPError) as exc:
        doc.error("write", f"cannot upload through a presigned PUT: {_why(exc)}", fix)
        return False
    # Any answer carries the store's clock; a skewed clock is also why signatures fail.
    _check_clock(doc, resp)
    if resp.status_code >= 300:
        doc.error("write", f"presigned PUT of {store.full_key(key)} failed with HTTP "
                  f"{resp.status_code} {_store_message(resp)}", fix)
        return False
    doc.ok("write")
    return True


def _check_head(doc: Doctor, store: ScopedStore, key: str, data: bytes) -> None:
    try:
        info = store.head(key)
    except SatchelError as exc:
        doc.error("head", f"cannot read the metadata of the object just written: {exc.message}",
                  "grant read permission on the bucket path (s3:GetObject, storage.objects.get, "
                  "Azure 'Read')")
        return
    if info is None or info.size != len(data):
        doc.error("head", "the object just written is not visible to HEAD with its size "
                  f"({'missing' if info is None else f'{info.size} bytes, expected {len(data)}'})",
                  "use a store with read-after-write consistency; Satchel checks every upload "
                  "with HEAD before committing it")
        return
    doc.ok("head")


def _check_read(doc: Doctor, store: ScopedStore, http: httpx.Client, key: str,
                data: bytes) -> None:
    fix = ("grant read permission on the bucket path (s3:GetObject, storage.objects.get, Azure "
           "'Read')")
    try:
        get = store.presign_get(key, expires_in=PROBE_EXPIRES)
        got = http.request("GET", get.url, headers=get.headers)
    except (SatchelError, httpx.HTTPError) as exc:
        doc.error("read", f"cannot download through a presigned GET: {_why(exc)}", fix)
        return
    if got.status_code != 200:
        doc.error("read", f"presigned GET returned HTTP {got.status_code} "
                  f"{_store_message(got)}", fix)
    elif got.content != data:
        doc.error("read", "presigned GET returned different bytes than were uploaded",
                  "check for a proxy or gateway that rewrites object bodies")
    else:
        doc.ok("read")


def _local_round_trip(doc: Doctor, store: ScopedStore, key: str, data: bytes) -> bool:
    try:
        store.put_bytes(key, data)
    except (SatchelError, OSError) as exc:
        doc.error("write", f"cannot write into the directory: {exc}",
                  "make the directory writable by the user running Satchel")
        return False
    doc.ok("write")
    try:
        same = store.get_bytes(key) == data
    except (SatchelError, OSError) as exc:
        doc.error("read", f"cannot read the probe back: {exc}",
                  "make the directory readable by the user running Satchel")
        return True
    if not same:
        doc.error("read", "the probe object reads back different bytes", "check the disk")
    else:
        doc.ok("read")
    _check_listing(doc, store, key, None)
    _check_multipart(doc, store, key)
    return True


def _check_listing(doc: Doctor, store: ScopedStore, key: str,
                   addr: StorageAddress | None) -> None:
    if any(f.check == "list" for f in doc.report.findings):
        return  # already reported by the credentials check
    fix = _list_fix(addr) if addr is not None else "make the directory readable"
    try:
        keys = [o.key for o in store.list_page(key, page_size=10).objects]
    except SatchelError as exc:
        doc.error("list", exc.message, fix)
        return
    if key not in keys:
        doc.error("list", f"the object just written ({store.full_key(key)}) does not appear "
                  "in a listing of its prefix", "use a store whose listings are consistent "
                  "after writes; " + fix)
        return
    doc.ok("list")


def _check_multipart(doc: Doctor, store: ScopedStore, key: str) -> None:
    if not store.capabilities.multipart:
        return
    try:
        upload = store.create_multipart(key + ".multipart")
        store.abort_multipart(upload)
    except SatchelError as exc:
        doc.error("multipart", f"cannot create and abort a multipart upload: {exc.message}",
                  "grant s3:PutObject, s3:AbortMultipartUpload and s3:ListMultipartUploadParts "
                  "(or the provider's equivalent); files over the part size need multipart")
        return
    doc.ok("multipart")


def _delete_probe(doc: Doctor, store: ScopedStore, key: str) -> None:
    fix = ("grant delete permission on the bucket path (s3:DeleteObject, "
           "storage.objects.delete, Azure 'Delete'): without it the garbage collector cannot "
           f"free space; then remove the probe object {store.full_key(key)} by hand")
    try:
        result = store.delete_many([key])
        gone = key in result.deleted and store.head(key) is None
    except SatchelError as exc:
        doc.error("delete", f"cannot delete the probe object: {exc.message}", fix)
        return
    if not gone:
        reason = "; ".join(result.failed.values()) or "the object is still there afterwards"
        doc.error("delete", f"cannot delete the probe object ({reason})", fix)
        return
    doc.ok("delete")


def _store_message(resp: httpx.Response) -> str:
    """The store's error code from an S3/GCS/Azure XML body, else the start of the body."""
    text = resp.text
    m = re.search(r"<Code>([^<]+)</Code>", text)
    return m.group(1) if m else (text[:120].strip() or resp.reason_phrase)


def _check_clock(doc: Doctor, resp: httpx.Response) -> None:
    date = resp.headers.get("date")
    if not date:
        return
    try:
        remote = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return
    skew = remote - doc.options.clock()
    ahead = "ahead of" if skew > 0 else "behind"
    message = (f"the store's clock is {abs(skew):.0f} s {ahead} this host's (store Date: "
               f"{date})")
    if abs(skew) > CLOCK_ERROR_SECONDS:
        doc.error("clock", message + "; presigned URLs are refused this far off",
                  "synchronise this host's clock with NTP (e.g. chrony or systemd-timesyncd); "
                  "stores reject signatures more than 15 minutes off")
    elif abs(skew) > CLOCK_WARNING_SECONDS:
        doc.warn("clock", message, "synchronise this host's clock with NTP before presigned "
                 "URLs start failing (stores refuse them 15 minutes off)")
    else:
        doc.ok("clock")


# ---------------------------------------------------------------------- CORS

# Methods a browser sends without listing them in Access-Control-Allow-Methods (Fetch spec).
_SAFELISTED_METHODS = {"GET", "HEAD", "POST"}
_POLICY_PROVIDER = {"s3": "s3", "cw": "cw", "gs": "gcs", "az": "azure"}


def _header_set(value: str) -> set[str]:
    return {v.strip().lower() for v in value.split(",") if v.strip()}


def _preflight_problem(resp: httpx.Response, origin: str, method: str,
                       wanted: list[str]) -> str | None:
    """Why a browser would refuse this preflight answer (None: it would accept it)."""
    allow_origin = resp.headers.get("access-control-allow-origin")
    if resp.status_code >= 300 or allow_origin not in {origin, "*"}:
        return (f"the CORS preflight for {method} from origin {origin} is refused (HTTP "
                f"{resp.status_code}, Access-Control-Allow-Origin: {allow_origin or 'none'})")
    allow_methods = resp.headers.get("access-control-allow-methods", "")
    methods = {m.upper() for m in _header_set(allow_methods)}
    if method not in _SAFELISTED_METHODS and method not in methods and "*" not in methods:
        return (f"CORS does not allow {method} from origin {origin} (Access-Control-Allow-"
                f"Methods: {allow_methods or 'none'}): browsers cannot upload")
    allowed = _header_set(resp.headers.get("access-control-allow-headers", ""))
    missing = [h for h in wanted if h not in allowed and "*" not in allowed]
    if missing:
        return (f"CORS does not allow the request header(s) {', '.join(missing)} on {method} "
                f"from origin {origin} (Access-Control-Allow-Headers: "
                f"{resp.headers.get('access-control-allow-headers') or 'none'})")
    return None


def _check_cors(doc: Doctor, store: ScopedStore, http: httpx.Client, key: str,
                addr: StorageAddress) -> None:
    """Preflight PUT, GET and HEAD from the instance origin the way a browser does, then a real
    GET with an Origin to see whether ETag is exposed (browsers need it for multipart)."""
    origin = doc.options.origin
    if not store.capabilities.needs_cors:
        doc.ok("cors")
        return
    if not origin:
        doc.warn("cors", "CORS was not checked because no instance origin is known",
                 "pass --origin https://your-satchel-host (the server does this itself)")
        return
    fix = (f"apply the CORS document printed by `satchel storage policy --provider "
           f"{_POLICY_PROVIDER.get(addr.scheme, addr.scheme)}`: allow origin {origin}, methods "
           "GET, PUT and HEAD, all request headers, and expose ETag")
    if addr.scheme == "az":
        fix += " (Azure keeps CORS on the storage account's Blob service, not the container)"
    errors_before = len(doc.report.errors)
    try:
        # The PUT URL is only preflighted, never used: nothing is written.
        put = store.presign_put(key + ".cors", expires_in=PROBE_EXPIRES, size=1)
        get = store.presign_get(key, expires_in=PROBE_EXPIRES)
        answered = False
        refused: list[str] = []
        for method, req in (("PUT", put), ("GET", get), ("HEAD", get)):
            wanted = sorted({h.lower() for h in req.headers}
                            | ({"content-type"} if method == "PUT" else set()))
            headers = {"Origin": origin, "Access-Control-Request-Method": method}
            if wanted:
                headers["Access-Control-Request-Headers"] = ",".join(wanted)
            resp = http.request("OPTIONS", req.url, headers=headers)
            if resp.headers.get("access-control-allow-origin"):
                answered = True
            problem = _preflight_problem(resp, origin, method, wanted)
            if problem:
                refused.append(problem)
        if not answered:
            doc.error("cors", f"the bucket has no CORS rule for origin {origin}: the PUT, GET "
                      "and HEAD preflights were all refused, so browsers cannot upload or "
                      "download", fix)
            return
        for problem in refused:
            doc.error("cors", problem, fix)
        resp = http.request("GET", get.url, headers={"Origin": origin, **get.headers})
        if resp.headers.get("access-control-allow-origin") in {origin, "*"}:
            exposed = _header_set(resp.headers.get("access-control-expose-headers", ""))
            if "etag" not in exposed and "*" not in exposed:
                doc.error("cors", "CORS does not expose the ETag header (Access-Control-Expose-"
                          "Headers: "
                          f"{resp.headers.get('access-control-expose-headers') or 'none'}): "
                          "browsers cannot complete multipart uploads", fix)
    except (SatchelError, httpx.HTTPError) as exc:
        doc.error("cors", f"could not check CORS: {_why(exc)}", fix)
        return
    if len(doc.report.errors) == errors_before:
        doc.ok("cors")


# ---------------------------------------------------------------------- checksums


def _check_checksum(doc: Doctor, store: ScopedStore) -> None:
    """Does the store verify a client-declared SHA-256? Stores that can find out (S3) upload a
    small object with a deliberately wrong checksum under the probe prefix: a store that
    refuses it verifies SHA-256 (and Satchel's uploads bind it); one that accepts it gets
    Content-MD5 only. Run only once writing and deleting are known to work, so an accepted
    probe can be removed again."""
    if "write" not in doc.report.passed or "delete" not in doc.report.passed:
        return
    if store.capabilities.verifies_sha256:
        doc.ok("checksum-sha256")
        return
    raw = store.store
    if not isinstance(raw, ChecksumProbe):
        return
    probe_key = store.full_key(f"{PROBE_PREFIX}/{secrets.token_hex(8)}.sha256")
    try:
        caps = raw.probe_checksum_support(probe_key)
    except SatchelError as exc:
        doc.warn("checksum", f"could not find out whether the store verifies SHA-256 "
                 f"checksums: {exc.message}", "uploads are verified with Content-MD5 only; "
                 "re-run the doctor once the store answers")
        return
    if caps.verifies_sha256:
        doc.ok("checksum-sha256")
    else:
        doc.warn("checksum", "the store accepted an upload whose x-amz-checksum-sha256 was "
                 "wrong: it does not verify SHA-256, so uploads are verified with Content-MD5 "
                 "only", "nothing is required to use the bucket; for end-to-end SHA-256 "
                 "verification use a store version that supports S3 additional checksums")


# ---------------------------------------------------------------------- bucket state


def _check_kms(doc: Doctor, addr: StorageAddress) -> None:
    if not addr.kms_key:
        return
    if doc.failed("write"):
        doc.error("kms", f"writing with KMS key {addr.kms_key} failed",
                  "grant kms:GenerateDataKey and kms:Decrypt on the key to the bucket identity, "
                  "and check the key is in the bucket's region")
    else:
        doc.ok("kms")


def _check_bucket_settings(doc: Doctor, store: ObjectStore) -> None:
    if not isinstance(store, BucketInspector):
        return
    try:
        state = store.bucket_settings()
    except SatchelError as exc:
        doc.warn("bucket-settings", f"could not read versioning/lifecycle settings: "
                 f"{exc.message}", "grant s3:GetBucketVersioning and "
                 "s3:GetLifecycleConfiguration (or the provider's equivalent) so the doctor "
                 "can check them")
        return
    if state.versioning and not state.expires_noncurrent:
        doc.warn("versioning", "versioning is enabled and no lifecycle rule expires noncurrent "
                 "versions: objects the garbage collector deletes stay as noncurrent versions "
                 "and keep costing storage",
                 "add a lifecycle rule that expires noncurrent versions (e.g. "
                 "NoncurrentVersionExpiration after 7 days), or suspend versioning")
    if state.soft_delete_days:
        doc.warn("soft-delete", f"soft delete keeps deleted objects for {state.soft_delete_days} "
                 "days after garbage collection", "shorten or disable it if space must be "
                 "freed promptly")
    for rule in state.expiring_rules:
        doc.warn("lifecycle", f"a lifecycle rule expires or archives live data: {rule}",
                 "remove the rule or scope it to a prefix outside Satchel's path; otherwise "
                 "artifacts disappear (or become unreadable) behind Satchel's back")
    doc.ok("bucket-settings")
