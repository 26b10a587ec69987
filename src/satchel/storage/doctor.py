"""The bucket doctor: validate a bucket before Satchel relies on it (DESIGN §8).

Each finding has a severity (``error`` blocks saving a bucket, ``warning`` does not), a precise
message and the fix. Checks run in order and stop early when a later check could only repeat an
earlier failure (a bad name or an unreachable endpoint makes every round trip fail too).

    syntax -> deployment/allow-list -> bucket name -> reachability + TLS -> credentials/bucket
    -> round trip under the sub-path (put, head, get, list, multipart create/abort, delete)
    -> CORS (GET/PUT/HEAD preflights from the instance origin, ETag exposed) -> KMS
    -> versioning / soft delete / lifecycle -> clock skew

The doctor talks to the store only through the provider protocol and presigned URLs, i.e. the
exact paths clients will use, so what it validates is what users will hit.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal, NoReturn
from urllib.parse import urlsplit

import httpx

from satchel.config import Deployment
from satchel.errors import InvalidStorageAddress, NotFound, PermissionDenied, SatchelError
from satchel.storage.address import StorageAddress, parse_address
from satchel.storage.allowlist import AllowList
from satchel.storage.base import BucketInspector, ObjectStore
from satchel.storage.keys import validate_sub_path
from satchel.storage.registry import StoreContext, open_store
from satchel.storage.scoped import ScopedStore

Severity = Literal["error", "warning"]
PROBE_PREFIX = "satchel-doctor"


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
    timeout: float = 5.0


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
        self.report.passed.append(check)


def run_doctor(
    address: str | StorageAddress,
    context: StoreContext,
    options: DoctorOptions | None = None,
    *,
    open_fn: Callable[[StorageAddress, StoreContext], ObjectStore] = open_store,
) -> DoctorReport:
    options = options or DoctorOptions()
    shown = address.format() if isinstance(address, StorageAddress) else "(unparsed address)"
    report = DoctorReport(address=shown, path="")
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
        with _probe_object(doc, scoped) as probe:
            if probe is not None:
                _check_cors(doc, scoped, probe, addr)
        _check_kms(doc, addr)
        _check_bucket_settings(doc, store)
    except _Stop:
        pass
    return report


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
                  f"create a {kind} with a valid name, e.g. '{_suggest(addr.bucket)}'")
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
    elif addr.endpoint:
        parts = urlsplit(addr.endpoint)
        tls = parts.scheme == "https"
        return parts.hostname or "", parts.port or (443 if tls else 80), tls
    elif addr.scheme == "gs":
        host, tls = "storage.googleapis.com", True
    else:
        host, tls = f"{addr.account}.blob.core.windows.net", True
    name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    return name, int(port) if port else (443 if tls else 80), tls


def _check_reachability(doc: Doctor, addr: StorageAddress) -> None:
    host, port, tls = endpoint_of(addr)
    try:
        sock = socket.create_connection((host, port), timeout=doc.options.timeout)
    except OSError as exc:
        doc.fail("reachability", f"cannot connect to {host}:{port} ({exc.strerror or exc})",
                  "check the endpoint address and port, DNS, firewalls and that the store runs")
        return
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
        doc.fail("credentials", exc.message, "check the credentials in the address")


def _reason(exc: SatchelError) -> str:
    return str(exc.details.get("reason", ""))


def _check_credentials(doc: Doctor, store: ObjectStore, addr: StorageAddress) -> None:
    try:
        store.list_page(_probe_prefix(addr), page_size=1)
    except NotFound as exc:
        doc.fail("bucket", f"bucket '{addr.bucket}' does not exist ({exc.message})",
                  "create the bucket first, or fix its name in the address")
    except PermissionDenied as exc:
        if _reason(exc) == "invalid_credentials":
            doc.fail("credentials", f"the store rejected the credentials: {exc.message}",
                      "check the access key and secret (a wrong secret fails the signature)")
        # Listing may simply not be granted; the round trip reports exactly what is missing.
        doc.error("list", f"cannot list objects: {exc.message}",
                  "grant list permission on the bucket (s3:ListBucket, storage.objects.list, "
                  "Azure 'List' / Storage Blob Data Contributor)")
        return
    except SatchelError as exc:
        doc.fail("credentials", f"the store did not answer a list request: {exc.message}",
                  "check the endpoint, region and credentials")
    doc.ok("credentials")


def _probe_prefix(addr: StorageAddress) -> str:
    return f"{addr.path}/{PROBE_PREFIX}/" if addr.path else f"{PROBE_PREFIX}/"


@dataclass
class _Probe:
    key: str
    data: bytes
    get_response: httpx.Response


@contextlib.contextmanager
def _probe_object(doc: Doctor, store: ScopedStore) -> Iterator[_Probe | None]:
    """Round trip under the sub-path; yields the probe for CORS checks, then deletes it."""
    key = f"{PROBE_PREFIX}/{secrets.token_hex(8)}.txt"
    data = f"satchel doctor probe {time.time()}\n".encode()
    http = httpx.Client(timeout=doc.options.timeout * 2)
    written = False
    try:
        if store.store.scheme == "file":
            # The local bucket is served by the Satchel server itself; check the directory
            # directly (the blob endpoint is covered by the conformance suite).
            _local_round_trip(doc, store, key, data)
            written = True
            yield None
            return
        put = store.presign_put(key, expires_in=300, size=len(data))
        resp = http.request("PUT", put.url, headers=put.headers, content=data)
        if resp.status_code >= 300:
            doc.error("write", f"presigned PUT failed with HTTP {resp.status_code}: "
                      f"{_store_message(resp)}",
                      "grant write permission (s3:PutObject, storage.objects.create, Azure "
                      "'Write'/'Create'); if a KMS key is set, grant kms:GenerateDataKey")
            yield None
            return
        written = True
        doc.ok("write")
        _check_clock(doc, resp)
        info = store.head(key)
        if info is None or info.size != len(data):
            doc.error("head", "the object just written is not visible to HEAD with its size",
                      "check read-after-write consistency and s3:GetObject permission")
        else:
            doc.ok("head")
        get = store.presign_get(key, expires_in=300)
        got = http.request("GET", get.url, headers=get.headers)
        if got.status_code != 200 or got.content != data:
            doc.error("read", f"presigned GET returned HTTP {got.status_code}"
                      + ("" if got.status_code != 200 else " with different bytes"),
                      "grant read permission (s3:GetObject, storage.objects.get, Azure 'Read')")
        else:
            doc.ok("read")
        _check_listing(doc, store, key)
        _check_multipart(doc, store, key)
        yield _Probe(key, data, got)
    except SatchelError as exc:
        doc.error("round-trip", f"round trip under the sub-path failed: {exc.message}",
                  "grant read, write, list and delete on the bucket path")
        yield None
    finally:
        if written:
            _delete_probe(doc, store, key)
        http.close()


def _local_round_trip(doc: Doctor, store: ScopedStore, key: str, data: bytes) -> None:
    try:
        store.put_bytes(key, data)
    except (SatchelError, OSError) as exc:
        doc.fail("write", f"cannot write into the directory: {exc}",
                 "make the directory writable by the user running Satchel")
    doc.ok("write")
    if store.get_bytes(key) != data:
        doc.error("read", "the probe object reads back different bytes", "check the disk")
    else:
        doc.ok("read")
    _check_listing(doc, store, key)
    _check_multipart(doc, store, key)


def _check_listing(doc: Doctor, store: ScopedStore, key: str) -> None:
    if any(f.check == "list" for f in doc.report.findings):
        return
    try:
        keys = [o.key for o in store.list_page(f"{PROBE_PREFIX}/", page_size=1000).objects]
    except SatchelError as exc:
        doc.error("list", f"cannot list objects: {exc.message}",
                  "grant list permission (s3:ListBucket, storage.objects.list, Azure 'List')")
        return
    if key not in keys:
        doc.error("list", "the object just written does not appear in a listing of its prefix",
                  "grant list permission on the bucket path")
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
                  "grant s3:AbortMultipartUpload and s3:ListMultipartUploadParts (or the "
                  "provider's equivalent); large files need multipart")
        return
    doc.ok("multipart")


def _delete_probe(doc: Doctor, store: ScopedStore, key: str) -> None:
    try:
        result = store.delete_many([key])
        gone = key in result.deleted and store.head(key) is None
    except SatchelError as exc:
        doc.error("delete", f"cannot delete objects: {exc.message}",
                  "grant delete permission (s3:DeleteObject, storage.objects.delete, Azure "
                  f"'Delete'); remove the probe object {key} by hand")
        return
    if not gone:
        reason = "; ".join(result.failed.values()) or "object still present"
        doc.error("delete", f"cannot delete objects ({reason})",
                  "grant delete permission (s3:DeleteObject, storage.objects.delete, Azure "
                  "'Delete'); without it the garbage collector cannot free space")
        return
    doc.ok("delete")


def _store_message(resp: httpx.Response) -> str:
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
    skew = abs(remote - time.time())
    if skew > 15 * 60:
        doc.error("clock", f"this host's clock differs from the store's by {skew:.0f} s",
                  "synchronise the clock (NTP); stores reject signatures more than 15 minutes "
                  "off")
    elif skew > 120:
        doc.warn("clock", f"this host's clock differs from the store's by {skew:.0f} s",
                 "synchronise the clock (NTP) before presigned URLs start failing")
    else:
        doc.ok("clock")


# ---------------------------------------------------------------------- CORS


def _check_cors(doc: Doctor, store: ScopedStore, probe: _Probe, addr: StorageAddress) -> None:
    origin = doc.options.origin
    if not store.capabilities.needs_cors:
        doc.ok("cors")
        return
    if not origin:
        doc.warn("cors", "CORS was not checked because no instance origin is known",
                 "pass --origin https://your-satchel-host (the server does this itself)")
        return
    fix = ("apply the CORS document printed by `satchel storage policy` for this provider "
           f"(allow origin {origin}, methods GET, PUT, HEAD, expose ETag)")
    put = store.presign_put(probe.key + ".cors", expires_in=300, size=1)
    get = store.presign_get(probe.key, expires_in=300)
    with httpx.Client(timeout=doc.options.timeout * 2) as http:
        any_cors = False
        failed = False
        for method, req in (("PUT", put), ("GET", get), ("HEAD", get)):
            req_headers = sorted({h.lower() for h in req.headers} | ({"content-type"}
                                                                     if method == "PUT" else set()))
            headers = {"Origin": origin, "Access-Control-Request-Method": method}
            if req_headers:
                headers["Access-Control-Request-Headers"] = ",".join(req_headers)
            resp = http.request("OPTIONS", req.url, headers=headers)
            allow_origin = resp.headers.get("access-control-allow-origin")
            allow_methods = resp.headers.get("access-control-allow-methods", "")
            if allow_origin:
                any_cors = True
            if resp.status_code >= 300 or allow_origin not in {origin, "*"}:
                failed = True
                if any_cors or allow_origin:
                    doc.error("cors", f"CORS preflight for {method} from origin {origin} is "
                              f"refused (HTTP {resp.status_code}, allowed origin "
                              f"{allow_origin or 'none'})", fix)
                continue
            methods = {m.strip().upper() for m in allow_methods.split(",") if m.strip()}
            if methods and method not in methods and "*" not in methods:
                failed = True
                doc.error("cors", f"CORS allows {', '.join(sorted(methods))} but not {method}",
                          fix)
        if not any_cors:
            doc.error("cors", f"the bucket has no CORS rule for origin {origin}: browsers "
                      "cannot upload or download", fix)
            return
        resp = http.request("GET", get.url, headers={"Origin": origin, **get.headers})
        exposed = {h.strip().lower() for h in
                   resp.headers.get("access-control-expose-headers", "").split(",")}
        if "etag" not in exposed and "*" not in exposed:
            failed = True
            doc.error("cors", "CORS does not expose the ETag header: browsers cannot complete "
                      "multipart uploads", fix)
    if not failed:
        doc.ok("cors")


# ---------------------------------------------------------------------- bucket state


def _check_kms(doc: Doctor, addr: StorageAddress) -> None:
    if not addr.kms_key:
        return
    if any(f.check in {"write", "round-trip"} for f in doc.report.errors):
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
    if state.versioning and not state.cleanup_rules:
        doc.warn("versioning", "versioning is enabled: objects the garbage collector deletes "
                 "stay as noncurrent versions and keep costing storage",
                 "add a lifecycle rule that expires noncurrent versions (e.g. after 7 days)")
    if state.soft_delete_days:
        doc.warn("soft-delete", f"soft delete keeps deleted objects for {state.soft_delete_days} "
                 "days after garbage collection", "shorten or disable it if space must be "
                 "freed promptly")
    for rule in state.expiring_rules:
        doc.warn("lifecycle", f"lifecycle rule expires or moves live data: {rule}",
                 "remove the rule or scope it away from Satchel's path; artifacts would "
                 "disappear behind Satchel's back")
    doc.ok("bucket-settings")
