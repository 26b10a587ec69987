"""Parse and format storage addresses (DESIGN §4), with a redacted form for display.

    cw://<accessKey>:<secret>@cwobject.com/<bucket>?tls=true            CoreWeave (TLS required)
    s3://<accessKey>:<secret>@<endpoint>/<bucket>?region=<r>            AWS S3
    s3://<accessKey>:<secret>@<endpoint>/<bucket>?region=<r>&tls=true   S3-compatible
    s3://<bucket>   gs://<bucket>   az://<account>/<container>          ambient credentials
    gs://<serviceAccountEmail>:<urlEncodedPrivateKey>@<bucket>          GCS
    az://:<urlEncodedAccessKey>@<account>/<container>                   Azure Blob
    file:///absolute/path                                               local filesystem

Extra query parameters understood by every scheme: ``path`` (sub-path inside the bucket) and,
for tests and private clouds, ``endpoint`` (gs/az: the API base URL to talk to). ``kms`` (s3)
names an SSE-KMS key; ``style=path|virtual`` (s3) forces the addressing style.

Errors are :class:`InvalidStorageAddress` naming the problem and the expected shape; the
message never contains the secret (the address is shown redacted, if at all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode

from pydantic import SecretStr

from satchel.errors import InvalidStorageAddress

Scheme = Literal["file", "s3", "cw", "gs", "az"]
SCHEMES: tuple[Scheme, ...] = ("s3", "cw", "gs", "az", "file")

SHAPES: dict[str, str] = {
    "cw": "cw://<accessKey>:<secretAccessKey>@cwobject.com/<bucket>?tls=true",
    "s3": "s3://<accessKey>:<secretAccessKey>@<endpoint>/<bucket>?region=<region>[&tls=true] "
    "or s3://<bucket>",
    "gs": "gs://<serviceAccountEmail>:<urlEncodedPrivateKey>@<bucket> or gs://<bucket>",
    "az": "az://:<urlEncodedAccessKey>@<account>/<container> or az://<account>/<container>",
    "file": "file:///absolute/path",
}
AWS_ENDPOINT = "s3.amazonaws.com"
CW_ENDPOINT = "cwobject.com"
_KNOWN_PARAMS = {"region", "tls", "path", "endpoint", "kms", "style", "tenant_id", "client_id"}
_PCT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class StorageAddress:
    scheme: Scheme
    bucket: str  # bucket / container; for file:// the absolute directory
    endpoint: str | None = None  # s3/cw host[:port]; gs/az API base URL override
    account: str | None = None  # azure storage account
    access_key: str | None = None  # s3/cw access key id; gs service-account email
    secret: SecretStr | None = field(default=None, repr=False)  # s3 secret, gs key, az key
    region: str | None = None
    tls: bool | None = None
    path: str = ""  # sub-path inside the bucket
    kms_key: str | None = None
    style: str | None = None  # "path" | "virtual" (s3)
    azure_tenant_id: str | None = None  # az: tenant of the managed identity
    azure_client_id: str | None = None  # az: client id of a user-assigned managed identity

    @property
    def has_credentials(self) -> bool:
        return self.secret is not None

    @property
    def is_aws(self) -> bool:
        return self.scheme == "s3" and (
            self.endpoint is None or self.endpoint.endswith("amazonaws.com")
        )

    def with_path(self, path: str) -> StorageAddress:
        from dataclasses import replace

        return replace(self, path=path.strip("/"))

    def identity(self) -> tuple[str, str, str, str]:
        """What makes two addresses the same bucket (credentials aside)."""
        where = self.account or self.endpoint or ""
        return (self.scheme, where.lower(), self.bucket, self.path)

    def format(self, *, redact: bool = True) -> str:
        return format_address(self, redact=redact)

    def __str__(self) -> str:  # never leak the secret through str()/f-strings
        return format_address(self, redact=True)


def _fail(problem: str, scheme: str | None) -> InvalidStorageAddress:
    expected = SHAPES.get(scheme or "", " | ".join(SHAPES.values()))
    return InvalidStorageAddress(
        f"invalid storage address: {problem}; expected {expected}",
        details={"problem": problem, "expected": expected},
    )


def _unquote_strict(value: str, what: str, scheme: str) -> str:
    if _PCT_RE.search(value):
        raise _fail(f"bad percent-encoding in the {what}", scheme)
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise _fail(f"bad percent-encoding in the {what}", scheme) from None


def _bool(value: str, name: str, scheme: str) -> bool:
    if value.lower() in {"true", "1", "yes"}:
        return True
    if value.lower() in {"false", "0", "no"}:
        return False
    raise _fail(f"{name} must be true or false", scheme)


def parse_address(text: str) -> StorageAddress:
    """Parse any address form of DESIGN §4; raise InvalidStorageAddress naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise _fail("the address is empty", None)
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise _fail("missing '<scheme>://'", None)
    if scheme not in SCHEMES:
        raise _fail(f"unknown scheme '{scheme}' (known: {', '.join(SCHEMES)})", None)
    if scheme == "file":
        return _parse_file(rest)

    rest, _, query = rest.partition("?")
    params: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k not in _KNOWN_PARAMS:
            raise _fail(f"unknown parameter '{k}' (known: {', '.join(sorted(_KNOWN_PARAMS))})",
                        scheme)
        params[k] = v
    userinfo = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
    user = password = None
    if userinfo is not None:
        if ":" not in userinfo:
            raise _fail("credentials must be '<id>:<secret>@'", scheme)
        user_raw, _, pw_raw = userinfo.partition(":")
        user = _unquote_strict(user_raw, "access key", scheme) or None
        password = _unquote_strict(pw_raw, "secret", scheme)
        if not password:
            raise _fail("the secret is empty", scheme)
    tls = _bool(params["tls"], "tls", scheme) if "tls" in params else None
    path = params.get("path", "").strip("/")
    common = {"path": path, "tls": tls, "region": params.get("region") or None,
              "kms_key": params.get("kms") or None}
    secret = SecretStr(password) if password is not None else None

    if scheme in {"s3", "cw"}:
        style = params.get("style")
        if style not in {None, "path", "virtual"}:
            raise _fail("style must be 'path' or 'virtual'", scheme)
        if userinfo is None:
            if scheme == "cw":
                raise _fail("CoreWeave needs credentials '<accessKey>:<secret>@cwobject.com/'",
                            scheme)
            bucket = rest.strip("/")
            if not bucket or "/" in bucket:
                raise _fail("missing bucket name", scheme)
            return StorageAddress("s3", bucket, style=style, **common)  # type: ignore[arg-type]
        if not user:
            raise _fail("the access key is empty", scheme)
        endpoint, _, bucket = rest.partition("/")
        bucket = bucket.strip("/")
        if not endpoint:
            raise _fail("missing endpoint", scheme)
        if not bucket:
            raise _fail("missing bucket name", scheme)
        if "/" in bucket:
            raise _fail("bucket name contains '/'; use ?path= for a sub-path", scheme)
        if scheme == "cw":
            if tls is not True:
                raise _fail("CoreWeave requires tls=true", scheme)
            return StorageAddress("cw", bucket, endpoint=endpoint, access_key=user, secret=secret,
                                  style="virtual", **common)  # type: ignore[arg-type]
        is_aws = endpoint.endswith("amazonaws.com")
        if not is_aws and not common["region"]:
            raise _fail("an S3-compatible endpoint needs ?region=<region>", scheme)
        return StorageAddress("s3", bucket, endpoint=endpoint, access_key=user, secret=secret,
                              style=style, **common)  # type: ignore[arg-type]

    if scheme == "gs":
        bucket = rest.strip("/")
        if not bucket or "/" in bucket:
            raise _fail("missing bucket name" if not bucket else "bucket name contains '/'",
                        scheme)
        if userinfo is not None and not user:
            raise _fail("the service-account email is empty", scheme)
        return StorageAddress("gs", bucket, endpoint=params.get("endpoint") or None,
                              access_key=user, secret=secret, **common)  # type: ignore[arg-type]

    # az
    account, _, container = rest.partition("/")
    container = container.strip("/")
    if not account:
        raise _fail("missing storage account", scheme)
    if not container or "/" in container:
        raise _fail("missing container name" if not container else "container contains '/'",
                    scheme)
    if user:
        raise _fail("Azure addresses carry only the key: 'az://:<key>@<account>/<container>'",
                    scheme)
    return StorageAddress("az", container, account=account,
                          endpoint=params.get("endpoint") or None,
                          azure_tenant_id=params.get("tenant_id") or None,
                          azure_client_id=params.get("client_id") or None,
                          secret=secret, **common)  # type: ignore[arg-type]


def _parse_file(rest: str) -> StorageAddress:
    path, _, query = rest.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(params) - {"path"}
    if unknown:
        raise _fail(f"unknown parameter '{sorted(unknown)[0]}' (known: path)", "file")
    path = _unquote_strict(path, "path", "file")
    if not path.startswith("/"):
        raise _fail("the directory must be absolute (three slashes: file:///...)", "file")
    if "\x00" in path:
        raise _fail("the directory contains NUL", "file")
    root = "/" + path.strip("/")
    return StorageAddress("file", root, path=params.get("path", "").strip("/"))


def format_address(addr: StorageAddress, *, redact: bool = True) -> str:
    """The address as text; with ``redact`` the secret shows as ``****`` and keys are shortened."""
    params: dict[str, str] = {}
    if addr.region:
        params["region"] = addr.region
    if addr.tls is not None:
        params["tls"] = "true" if addr.tls else "false"
    if addr.path:
        params["path"] = addr.path
    if addr.kms_key:
        params["kms"] = addr.kms_key
    if addr.style and addr.scheme == "s3":
        params["style"] = addr.style
    if addr.endpoint and addr.scheme in {"gs", "az"}:
        params["endpoint"] = addr.endpoint
    if addr.azure_tenant_id:
        params["tenant_id"] = addr.azure_tenant_id
    if addr.azure_client_id:
        params["client_id"] = addr.azure_client_id
    query = f"?{urlencode(params, safe=':/')}" if params else ""

    def secret_part() -> str:
        if addr.secret is None:
            return ""
        return "****" if redact else quote(addr.secret.get_secret_value(), safe="")

    if addr.scheme == "file":
        return f"file://{addr.bucket}{query}"
    if addr.scheme in {"s3", "cw"}:
        if addr.secret is None and addr.endpoint is None:
            return f"s3://{addr.bucket}{query}"
        user = addr.access_key or ""
        if redact and len(user) > 4:
            user = user[:4] + "…"
        return f"{addr.scheme}://{quote(user, safe='')}:{secret_part()}@{addr.endpoint}/" \
               f"{addr.bucket}{query}"
    if addr.scheme == "gs":
        if addr.secret is None:
            return f"gs://{addr.bucket}{query}"
        return f"gs://{quote(addr.access_key or '', safe='@')}:{secret_part()}@{addr.bucket}{query}"
    # az
    if addr.secret is None:
        return f"az://{addr.account}/{addr.bucket}{query}"
    return f"az://:{secret_part()}@{addr.account}/{addr.bucket}{query}"


def redact_address_text(text: str) -> str:
    """Redact an address that may not even parse (for start-up error messages)."""
    try:
        return parse_address(text).format(redact=True)
    except InvalidStorageAddress:
        scheme, sep, rest = text.partition("://")
        if "@" in rest:
            rest = "****@" + rest.rpartition("@")[2]
        return f"{scheme}{sep}{rest}"
