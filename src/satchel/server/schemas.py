"""Request and response bodies of the REST API (the OpenAPI document is built from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


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


class TeamOut(Out):
    name: str
    storage_type: str
    storage: str | None
    storage_path: str
    created_at: datetime
    members: list[MemberOut]
    my_role: str | None


class CreateTeam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)


class AddMember(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    role: Literal["admin", "member", "viewer"] = "member"


class ProjectOut(Out):
    team: str
    name: str
    visibility: str
    description: str
    created_at: datetime


class CreateProject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    visibility: Literal["instance", "team"] = "instance"
    description: str = Field(default="", max_length=10_000)
