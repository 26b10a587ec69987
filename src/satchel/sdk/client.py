"""HTTP client for the Satchel REST API.

Errors come back as the same exception classes the server raised (rebuilt from the stable
error code), so ``except TeamStorageImmutable`` works in user code and the CLI can print
``TeamStorageImmutable: ...``.
"""

from __future__ import annotations

from typing import Any

import httpx

from satchel.config import ClientSettings, save_user_credentials
from satchel.errors import InvalidInput, ServerUnreachable, error_from_payload

API = "/api/v1"
JSON = dict[str, Any]


class Client:
    def __init__(
        self,
        host: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        settings = ClientSettings.load(host=host, api_key=api_key)
        assert settings.host is not None
        self.settings = settings
        if not settings.host.startswith(("http://", "https://")):
            raise InvalidInput(
                f"host must start with http:// or https:// (got {settings.host[:100]!r})"
            )
        self.host = settings.host.rstrip("/")
        headers = {"User-Agent": "satchel-sdk"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._http = httpx.Client(
            base_url=self.host, headers=headers, transport=transport,
            timeout=timeout or settings.timeout_seconds,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach the Satchel server at {self.host} ({type(exc).__name__}); "
                "check --host / SATCHEL_HOST and that the server is running"
            ) from exc
        if resp.status_code >= 400:
            try:
                payload = resp.json()
            except ValueError:
                payload = None
            raise error_from_payload(resp.status_code, payload)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    # ----------------------------------------------------------------- identity

    def me(self) -> JSON:
        result: JSON = self.request("GET", f"{API}/me")
        return result

    def login_with_password(self, username: str, password: str, *, key_name: str = "cli") -> str:
        """Exchange a password for a new API key."""
        body = {"username": username, "password": password, "create_api_key": True,
                "key_name": key_name}
        key: str = self.request("POST", f"{API}/auth/login", json=body)["api_key"]
        return key

    def create_api_key(self, name: str = "") -> JSON:
        result: JSON = self.request("POST", f"{API}/api-keys", json={"name": name})
        return result

    def api_keys(self) -> list[JSON]:
        result: list[JSON] = self.request("GET", f"{API}/api-keys")
        return result

    def revoke_api_key(self, key_id: int) -> JSON:
        result: JSON = self.request("DELETE", f"{API}/api-keys/{key_id}")
        return result

    def create_user(self, username: str, *, password: str | None = None, is_admin: bool = False,
                    create_api_key: bool = False) -> JSON:
        body: JSON = {"username": username, "is_admin": is_admin,
                      "create_api_key": create_api_key}
        if password is not None:
            body["password"] = password
        result: JSON = self.request("POST", f"{API}/users", json=body)
        return result

    # ----------------------------------------------------------------- teams & projects

    def create_team(self, name: str, *, storage: JSON | None = None,
                    artifact_ttl_seconds: int | None = None) -> JSON:
        """Create a team; ``storage`` is e.g. {"type": "external", "bucket": "omega-bucket",
        "path": "satchel"} (fixed forever once the team exists); ``artifact_ttl_seconds`` the
        default TTL of new artifact versions (None: keep forever)."""
        body: JSON = {"name": name}
        if storage is not None:
            body["storage"] = storage
        if artifact_ttl_seconds is not None:
            body["artifact_ttl_seconds"] = artifact_ttl_seconds
        result: JSON = self.request("POST", f"{API}/teams", json=body)
        return result

    def update_team(self, name: str, **fields: Any) -> JSON:
        result: JSON = self.request("PATCH", f"{API}/teams/{name}", json=fields)
        return result

    def teams(self) -> list[JSON]:
        result: list[JSON] = self.request("GET", f"{API}/teams")
        return result

    def team(self, name: str) -> JSON:
        result: JSON = self.request("GET", f"{API}/teams/{name}")
        return result

    def add_member(self, team: str, username: str, role: str = "member") -> JSON:
        result: JSON = self.request(
            "POST", f"{API}/teams/{team}/members", json={"username": username, "role": role}
        )
        return result

    def remove_member(self, team: str, username: str) -> JSON:
        result: JSON = self.request("DELETE", f"{API}/teams/{team}/members/{username}")
        return result

    def create_project(self, team: str, name: str, *, visibility: str = "instance",
                       description: str = "") -> JSON:
        result: JSON = self.request(
            "POST", f"{API}/teams/{team}/projects",
            json={"name": name, "visibility": visibility, "description": description},
        )
        return result

    def projects(self, team: str | None = None) -> list[JSON]:
        params = {"team": team} if team else None
        result: list[JSON] = self.request("GET", f"{API}/projects", params=params)
        return result

    def project(self, team: str, name: str) -> JSON:
        result: JSON = self.request("GET", f"{API}/teams/{team}/projects/{name}")
        return result

    def team_projects(self, team: str, *, deleted: bool = False) -> list[JSON]:
        """A team's projects, or its soft-deleted ones (members and instance admins)."""
        result: list[JSON] = self.request("GET", f"{API}/teams/{team}/projects",
                                          params={"deleted": "true" if deleted else "false"})
        return result

    def delete_project(self, team: str, name: str) -> JSON:
        result: JSON = self.request("DELETE", f"{API}/teams/{team}/projects/{name}")
        return result

    def restore_project(self, team: str, name: str) -> JSON:
        result: JSON = self.request("POST", f"{API}/teams/{team}/projects/{name}/restore")
        return result

    # ----------------------------------------------------------------- files

    def file_urls(self, team: str, project: str, files: list[JSON]) -> list[JSON]:
        """Presigned URLs: files = [{"path", "method": GET|HEAD|PUT, "size"?, "sha256"?}]."""
        result: list[JSON] = self.request(
            "POST", f"{API}/teams/{team}/projects/{project}/files/urls", json={"files": files}
        )
        return result

    def files(self, team: str, project: str, prefix: str = "") -> list[JSON]:
        result: list[JSON] = self.request(
            "GET", f"{API}/teams/{team}/projects/{project}/files", params={"prefix": prefix}
        )
        return result

    # ----------------------------------------------------------------- artifacts

    def _artifacts(self, team: str, project: str) -> str:
        return f"{API}/teams/{team}/projects/{project}/artifacts"

    def create_artifact_version(self, team: str, project: str, name: str, body: JSON) -> JSON:
        result: JSON = self.request("POST", f"{self._artifacts(team, project)}/{name}/versions",
                                    json=body)
        return result

    def complete_artifact_multipart(self, team: str, project: str, name: str, pending_id: int,
                                    body: JSON) -> None:
        self.request("POST", f"{self._artifacts(team, project)}/{name}/pending/{pending_id}"
                     "/multipart", json=body)

    def commit_artifact(self, team: str, project: str, name: str, pending_id: int,
                        aliases: list[str]) -> JSON:
        result: JSON = self.request(
            "POST", f"{self._artifacts(team, project)}/{name}/pending/{pending_id}/commit",
            json={"aliases": aliases})
        return result

    def artifact_collections(self, team: str, project: str, *, deleted: bool = False
                             ) -> list[JSON]:
        result: list[JSON] = self.request("GET", self._artifacts(team, project),
                                          params={"deleted": "true" if deleted else "false"})
        return result

    def artifact_collection(self, team: str, project: str, name: str, *,
                            deleted: bool = False) -> JSON:
        result: JSON = self.request("GET", f"{self._artifacts(team, project)}/{name}",
                                    params={"deleted": "true" if deleted else "false"})
        return result

    def delete_artifact_collection(self, team: str, project: str, name: str) -> JSON:
        result: JSON = self.request("DELETE", f"{self._artifacts(team, project)}/{name}")
        return result

    def restore_artifact_collection(self, team: str, project: str, name: str) -> JSON:
        result: JSON = self.request("POST", f"{self._artifacts(team, project)}/{name}/restore")
        return result

    def set_artifact_ttl(self, team: str, project: str, name: str, ref: str,
                         ttl_seconds: int) -> JSON:
        """Expire the version ``ttl_seconds`` after its commit (0: keep forever)."""
        result: JSON = self.request(
            "PUT", f"{self._artifacts(team, project)}/{name}/versions/{ref}/ttl",
            json={"ttl_seconds": ttl_seconds})
        return result

    def artifact_versions(self, team: str, project: str, name: str, *, deleted: bool = False
                          ) -> list[JSON]:
        result: list[JSON] = self.request(
            "GET", f"{self._artifacts(team, project)}/{name}/versions",
            params={"deleted": "true" if deleted else "false"})
        return result

    def artifact_version(self, team: str, project: str, name: str, ref: str) -> JSON:
        result: JSON = self.request("GET",
                                    f"{self._artifacts(team, project)}/{name}/versions/{ref}")
        return result

    def artifact_download(self, team: str, project: str, name: str, ref: str, *,
                          paths: list[str] | None = None) -> JSON:
        """Presigned GETs for a version's files (only ``paths`` when given: URL refresh)."""
        result: JSON = self.request(
            "POST", f"{self._artifacts(team, project)}/{name}/versions/{ref}/download",
            json=None if paths is None else {"paths": paths})
        return result

    def artifact_pending_urls(self, team: str, project: str, name: str, pending_id: int,
                              body: JSON) -> JSON:
        """Fresh upload URLs for objects / multipart parts of a pending version:
        ``{"objects": [sha256...], "parts": [{sha256, upload_id, part_size, numbers}]}``."""
        result: JSON = self.request(
            "POST", f"{self._artifacts(team, project)}/{name}/pending/{pending_id}/urls",
            json=body)
        return result

    def delete_artifact_version(self, team: str, project: str, name: str, ref: str) -> JSON:
        result: JSON = self.request(
            "DELETE", f"{self._artifacts(team, project)}/{name}/versions/{ref}")
        return result

    def restore_artifact_version(self, team: str, project: str, name: str, ref: str) -> JSON:
        result: JSON = self.request(
            "POST", f"{self._artifacts(team, project)}/{name}/versions/{ref}/restore")
        return result

    def set_artifact_alias(self, team: str, project: str, name: str, alias: str, version: str
                           ) -> JSON:
        result: JSON = self.request(
            "PUT", f"{self._artifacts(team, project)}/{name}/aliases/{alias}",
            json={"version": version})
        return result

    def remove_artifact_alias(self, team: str, project: str, name: str, alias: str) -> None:
        self.request("DELETE", f"{self._artifacts(team, project)}/{name}/aliases/{alias}")

    # ----------------------------------------------------------------- lineage

    def use_artifact(self, team: str, project: str, run_id: str, artifact: str) -> JSON:
        """Record that run ``team/project/run_id`` used ``artifact``
        (``team/project/name[:alias|:vN]``); returns the version with its team and project."""
        result: JSON = self.request(
            "POST", f"{API}/teams/{team}/projects/{project}/runs/{run_id}/artifacts/use",
            json={"artifact": artifact})
        return result

    def run_artifacts(self, team: str, project: str, run_id: str) -> JSON:
        """``{"logged": [...], "used": [...], "hidden": n}`` of a run."""
        result: JSON = self.request(
            "GET", f"{API}/teams/{team}/projects/{project}/runs/{run_id}/artifacts")
        return result

    def artifact_lineage(self, team: str, project: str, name: str, ref: str, *,
                         limit: int = 1000, offset: int = 0) -> JSON:
        result: JSON = self.request(
            "GET", f"{self._artifacts(team, project)}/{name}/versions/{ref}/lineage",
            params={"limit": limit, "offset": offset})
        return result

    # ----------------------------------------------------------------- instance & storage

    def instance_storage(self) -> JSON:
        result: JSON = self.request("GET", f"{API}/admin/storage")
        return result

    def set_instance_storage(self, address: str, *, path: str | None = None) -> JSON:
        result: JSON = self.request("PUT", f"{API}/admin/storage",
                                    json={"address": address, "path": path})
        return result

    def audit(self, **filters: Any) -> list[JSON]:
        params = {k: v for k, v in filters.items() if v is not None}
        result: list[JSON] = self.request("GET", f"{API}/admin/audit", params=params)
        return result

    # ----------------------------------------------------------------- garbage collection

    def run_gc(self, *, dry_run: bool = False, team: str | None = None) -> JSON:
        """Run the artifact garbage collector now (instance admins); returns the run record.
        Waits as long as the run takes."""
        result: JSON = self.request(
            "POST", f"{API}/admin/gc", json={"dry_run": dry_run, "team": team},
            timeout=httpx.Timeout(self._http.timeout.connect, read=None))
        return result

    def gc_runs(self, *, limit: int = 20) -> list[JSON]:
        result: list[JSON] = self.request("GET", f"{API}/admin/gc/runs",
                                          params={"limit": limit})
        return result

    def gc_run(self, run_id: int) -> JSON:
        result: JSON = self.request("GET", f"{API}/admin/gc/runs/{run_id}")
        return result

    def gc_status(self) -> JSON:
        result: JSON = self.request("GET", f"{API}/admin/gc/status")
        return result

    def instance(self) -> JSON:
        result: JSON = self.request("GET", f"{API}/instance")
        return result

    def storage_doctor(self, address: str, *, path: str | None = None,
                       origin: str | None = None) -> JSON:
        body: JSON = {"address": address, "path": path, "origin": origin}
        result: JSON = self.request("POST", f"{API}/admin/storage/doctor", json=body)
        return result


def login(host: str | None = None, key: str | None = None) -> Client:
    """Check a key against the server and store host + key in the user config file (0600)."""
    client = Client(host=host, api_key=key)
    client.me()
    settings = ClientSettings.load(host=host, api_key=key)
    if settings.api_key is None:
        raise InvalidInput("no API key given; pass key= or set SATCHEL_API_KEY")
    save_user_credentials(client.host, settings.api_key.get_secret_value())
    return client
