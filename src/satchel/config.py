"""Configuration: the only module that reads the environment.

``Settings`` configures the server (env prefix ``SATCHEL_``), ``ClientSettings`` the SDK and
CLI (``SATCHEL_HOST``, ``SATCHEL_API_KEY``, plus the user config file written by
``satchel login``). Both are built once and passed down; nothing else looks at ``os.environ``.
"""

from __future__ import annotations

import json
import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from satchel.errors import ConfigError

if TYPE_CHECKING:
    from satchel.storage.allowlist import AllowList


class Deployment(StrEnum):
    SELF_MANAGED = "self-managed"
    DEDICATED = "dedicated"
    MULTI_TENANT = "multi-tenant"


def default_home() -> Path:
    return Path("~/.satchel").expanduser()


class Settings(BaseSettings):
    """Server settings. Every field is documented in docs/settings.md (a test keeps it complete)."""

    model_config = SettingsConfigDict(
        env_prefix="SATCHEL_", extra="ignore", frozen=True, populate_by_name=True
    )

    home: Path = Field(
        default_factory=default_home,
        description="Data directory: SQLite database, local bucket, secret key.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db. "
        "Default: SQLite (WAL) at HOME/satchel.db.",
    )
    host: str = Field(
        default="127.0.0.1",
        # Not SATCHEL_HOST: that is the SDK/CLI's server URL, often set in the same shell.
        validation_alias=AliasChoices("SATCHEL_BIND_HOST"),
        description="Address the server binds to (`satchel server --host`).",
    )
    port: int = Field(default=8080, ge=0, le=65535, description="Port the server binds to.")
    base_url: str | None = Field(
        default=None,
        description="Public URL of the server (used in local-bucket presigned URLs and as the "
        "CORS origin). Default: http://HOST:PORT.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key for URL signing, sessions and encrypting secrets at rest. "
        "Default: generated once into HOME/secret_key (mode 0600).",
    )
    storage: str | None = Field(
        default=None,
        description="Instance bucket address used until an admin sets one. "
        "Default: file://HOME/bucket (the embedded local bucket).",
    )
    supported_file_stores: str = Field(
        default="",
        validation_alias=AliasChoices(
            "SATCHEL_SUPPORTED_FILE_STORES", "GORILLA_SUPPORTED_FILE_STORES"
        ),
        description="Comma-separated allow-list of bucket addresses teams may use "
        "(GORILLA_SUPPORTED_FILE_STORES is accepted as an alias).",
    )
    deployment: Deployment = Field(
        default=Deployment.SELF_MANAGED, description="self-managed, dedicated or multi-tenant."
    )
    bucket_factory: SecretStr | None = Field(
        default=None,
        description="Multi-tenant only: address with operator credentials used to create team "
        "buckets on request; the new bucket is named <bucket>-<team>.",
    )
    bucket_access_identity: str | None = Field(
        default=None, description="Principal that must be granted on customer buckets."
    )
    admin_username: str = Field(default="admin", description="Name of the first admin user.")
    admin_password: SecretStr | None = Field(
        default=None,
        description="Seed the first admin's password non-interactively (not printed).",
    )
    admin_api_key: SecretStr | None = Field(
        default=None,
        description="Seed the first admin's API key non-interactively (not printed). "
        "Must look like sk_<8 chars>_<at least 32 chars>.",
    )
    presign_expiry_seconds: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="Lifetime of presigned URLs."
    )
    session_max_age_seconds: int = Field(
        default=14 * 24 * 3600, ge=60, description="Lifetime of a web session cookie."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    workers: int = Field(default=1, ge=1, le=64, description="Uvicorn worker processes.")
    # Garbage collection of artifact objects (docs/gc.md).
    gc_grace_seconds: int = Field(
        default=86_400, ge=0,
        description="The garbage collector never frees an object (or its row) younger than "
        "this: uploads in progress finish safely.",
    )
    artifact_retention_seconds: int = Field(
        default=30 * 86_400, ge=0,
        description="How long a soft-deleted artifact version (or its collection or project) "
        "or run stays restorable; garbage collection frees its objects (and purges the run's "
        "data) after that.",
    )
    gc_interval_seconds: int = Field(
        default=21_600, ge=0,
        description="Seconds between scheduled garbage collections (any replica runs them, one "
        "at a time); 0 disables the scheduled job (`satchel gc` still works).",
    )
    gc_pending_expiry_seconds: int = Field(
        default=7 * 86_400, ge=1,
        description="A pending artifact version (upload started, never committed) older than "
        "this is dropped by garbage collection. At least SATCHEL_GC_GRACE_SECONDS.",
    )
    # Parquet export of finished runs into the team bucket (docs/runs-export.md).
    export_interval_seconds: int = Field(
        default=60, ge=0,
        description="Seconds between sweeps that export finished runs (new or with records "
        "since their last export) to Parquet in the team bucket; any replica sweeps, one at a "
        "time. 0 disables the background export (on-demand export still works).",
    )

    # Crash detection of runs (docs/runs.md).
    run_heartbeat_timeout_seconds: int = Field(
        default=300, ge=1,
        description="A running run with no sign of life (records or heartbeats) for this long "
        "is marked crashed. Keep it well above the SDK's SATCHEL_HEARTBEAT_SECONDS.",
    )
    run_monitor_interval_seconds: int = Field(
        default=60, ge=0,
        description="Seconds between checks for crashed runs (one replica at a time does "
        "them); 0 disables the check.",
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return v

    @field_validator("gc_interval_seconds")
    @classmethod
    def _gc_interval(cls, v: int) -> int:
        if 0 < v < 60:
            raise ValueError("expected 0 (disabled) or at least 60 seconds")
        return v

    @field_validator("gc_pending_expiry_seconds")
    @classmethod
    def _pending_expiry(cls, v: int, info: ValidationInfo) -> int:
        grace = info.data.get("gc_grace_seconds")
        if isinstance(grace, int) and v < grace:
            raise ValueError("must be at least SATCHEL_GC_GRACE_SECONDS: a pending upload is "
                             "kept at least as long as the objects it uploads")
        return v

    @field_validator("supported_file_stores")
    @classmethod
    def _allow_list(cls, v: str) -> str:
        from satchel.errors import InvalidStorageAddress
        from satchel.storage.allowlist import parse_allow_list

        try:
            parse_allow_list(v)
        except InvalidStorageAddress as exc:
            raise ValueError(exc.message) from None
        return v

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL, e.g. https://satchel.example.com")
        return v.rstrip("/")

    @field_validator("admin_api_key")
    @classmethod
    def _api_key(cls, v: SecretStr | None) -> SecretStr | None:
        from satchel.auth.tokens import looks_like_api_key

        if v is not None and not looks_like_api_key(v.get_secret_value()):
            raise ValueError("expected sk_<8 letters/digits>_<32+ letters/digits>")
        return v

    # ----- derived values (never read the environment) -----

    @property
    def public_url(self) -> str:
        return self.base_url or f"http://{self.host}:{self.port}"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.home / 'satchel.db'}"

    @property
    def default_storage_address(self) -> str:
        return self.storage or f"file://{(self.home / 'bucket').resolve()}"

    @property
    def allow_list(self) -> AllowList:
        from satchel.storage.allowlist import parse_allow_list

        return parse_allow_list(self.supported_file_stores)

    @property
    def cookie_secure(self) -> bool:
        return self.public_url.startswith("https://")

    def resolved_secret_key(self) -> bytes:
        """The instance secret; generated on first use into HOME/secret_key with mode 0600."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.home / "secret_key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()


def _format_validation_error(exc: ValidationError, prefix: str) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "?"
        name = loc.upper() if loc.upper().startswith(prefix) else f"{prefix}{loc.upper()}"
        msg = err["msg"].removeprefix("Value error, ")
        # Never echo the offending value: it may be a secret.
        problems.append(f"{name}: {msg}")
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment plus overrides; one line per problem on failure."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, "SATCHEL_")) from None


def _env_names(name: str, field: Any) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices]
    return [f"SATCHEL_{name.upper()}"]


def _type_text(field: Any) -> str:
    ann = field.annotation
    args = [a for a in getattr(ann, "__args__", (ann,)) if a is not type(None)]
    base = args[0] if args else ann
    if isinstance(base, type) and issubclass(base, StrEnum):
        return "one of " + ", ".join(f"`{m.value}`" for m in base)
    text = {SecretStr: "secret", Path: "path", int: "integer", str: "string"}.get(base, str(base))
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower(), None)
              for m in field.metadata}
    low, high = bounds.get("Ge"), bounds.get("Le")
    if low is not None and high is not None:
        text += f", {low}-{high}"
    elif low is not None:
        text += f", >= {low}"
    elif high is not None:
        text += f", <= {high}"
    return text


def _default_text(field: Any) -> str:
    if field.default_factory is not None:
        value = str(field.default_factory())
        return f"`{value.replace(str(Path.home()), '~', 1)}`"
    if field.default is None:
        return "unset"
    if isinstance(field.default, StrEnum):
        return f"`{field.default.value}`"
    return f"`{field.default}`" if field.default != "" else "empty"


def settings_reference() -> str:
    """docs/settings.md, generated from the Settings fields (a test keeps the file current)."""
    lines = [
        "# Server settings",
        "",
        "<!-- Generated from satchel.config.Settings by "
        "`satchel admin settings-reference > docs/settings.md`; do not edit by hand. -->",
        "",
        "The server reads these environment variables at start-up and refuses to start, with "
        "one line per problem, when a value is invalid. Secrets are never printed or logged.",
        "",
        "| Variable | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        env = " or ".join(f"`{n}`" for n in _env_names(name, field))
        # Escaped so Markdown shows them: "|" ends a cell, "<x>" would be read as HTML.
        desc = (field.description or "").replace("|", "\\|").replace("<", "\\<")
        lines.append(f"| {env} | {_type_text(field)} | {_default_text(field)} | {desc} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- client side


def user_config_path() -> Path:
    """Where ``satchel login`` stores host and key (mode 0600)."""
    base = os.environ.get("SATCHEL_CONFIG_DIR")
    if base:
        return Path(base) / "credentials.json"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    root = Path(xdg) if xdg else Path("~/.config").expanduser()
    return root / "satchel" / "credentials.json"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/satchel``, else ``~/.cache/satchel`` (SDK hash cache, resume journal,
    download cache; see docs/transfer.md)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg else Path("~/.cache").expanduser()
    return root / "satchel"


class ClientSettings(BaseSettings):
    """What the SDK and CLI need: server URL and API key, and where the SDK keeps its caches.

    Precedence: explicit arguments > environment (SATCHEL_HOST, SATCHEL_API_KEY) > the user
    config file written by ``satchel login``. The cache settings (SATCHEL_CACHE_DIR,
    SATCHEL_DOWNLOAD_CACHE, SATCHEL_DOWNLOAD_CACHE_MAX_BYTES) are documented in
    docs/transfer.md.
    """

    model_config = SettingsConfigDict(env_prefix="SATCHEL_", extra="ignore")

    host: str | None = None
    api_key: SecretStr | None = None
    timeout_seconds: float = 30.0
    cache_dir: Path = Field(default_factory=default_cache_dir)
    download_cache: bool = True
    download_cache_max_bytes: int = Field(default=10 * 1024**3, ge=0)

    @classmethod
    def load(cls, host: str | None = None, api_key: str | None = None) -> ClientSettings:
        stored: dict[str, Any] = {}
        path = user_config_path()
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError):
                stored = {}
        env = cls()
        resolved_host = host or env.host or stored.get("host") or "http://127.0.0.1:8080"
        # The stored key belongs to the stored host: never send it to another server.
        same_host = str(stored.get("host") or "").rstrip("/") == resolved_host.rstrip("/")
        stored_key = stored.get("api_key") if same_host else None
        return cls(
            host=resolved_host,
            api_key=SecretStr(api_key)
            if api_key
            else env.api_key or (SecretStr(stored_key) if stored_key else None),
            timeout_seconds=env.timeout_seconds,
            cache_dir=env.cache_dir,
            download_cache=env.download_cache,
            download_cache_max_bytes=env.download_cache_max_bytes,
        )


def save_user_credentials(host: str, api_key: str) -> Path:
    """Write the user config file with mode 0600 (created that way, never widened)."""
    path = user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"host": host, "api_key": api_key}, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


class RunSettings(BaseSettings):
    """How the SDK runs a run (docs/runs.md). Arguments to ``satchel.init`` win over these."""

    model_config = SettingsConfigDict(env_prefix="SATCHEL_", extra="ignore")

    run_dir: Path = Field(default=Path("satchel"), description="Where run spools are kept.")
    mode: str = Field(default="online", pattern="^(online|offline|disabled)$")
    finish_timeout_seconds: float = Field(default=600.0, ge=0)
    heartbeat_seconds: float = Field(default=30.0, gt=0)
    send_interval_seconds: float = Field(default=0.5, gt=0)
    batch_max_records: int = Field(default=20_000, ge=1, le=100_000)
    batch_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=48 * 1024 * 1024)
    system_metrics_seconds: float = Field(default=15.0, ge=0)
    console_capture: bool = True
