"""Request and response bodies of the run files API (docs/runs-files.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from satchel.server.schemas import ArtifactPartOut, CompletedPartIn, Out

Path = Annotated[str, Field(min_length=1, max_length=1024)]


class RunFileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path = Field(description="Path of the file inside the run, e.g. 'model.pt' or "
                       "'media/images/sample_3_0a1b2c3d.png'.")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    kind: Literal["file", "media"] = "file"


class RegisterRunFilesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[RunFileIn] = Field(min_length=1, max_length=1000)


class RunFileUploadOut(Out):
    path: str
    size: int
    sha256: str
    url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime


class RunFileMultipartOut(Out):
    path: str
    size: int
    sha256: str
    upload_id: str
    part_size: int = Field(description="Every part but the last is this many bytes.")
    parts: list[ArtifactPartOut]
    sequential: bool = Field(default=False, description="Send the parts one after the other, "
                             "in order (GCS resumable sessions).")


class RegisterRunFilesOut(BaseModel):
    uploads: list[RunFileUploadOut] = Field(description="PUT each file here, then commit.")
    unchanged: list[str] = Field(description="Committed already with the same SHA-256 and "
                                 "size: nothing to send.")
    multipart: list[RunFileMultipartOut] = Field(
        default_factory=list, description="Big files: PUT every part, complete the upload "
        "(POST .../files/multipart), then commit.")


class CompleteRunFileMultipartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path
    upload_id: str = Field(min_length=1, max_length=1024)
    parts: list[CompletedPartIn] = Field(min_length=1, max_length=10_000)


class RunFilePartUrlsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path
    upload_id: str = Field(min_length=1, max_length=1024)
    part_size: int = Field(ge=1, description="The part size the registration answered.")
    numbers: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(min_length=1,
                                                                  max_length=1000)


class RunFilePartUrlsOut(BaseModel):
    parts: list[ArtifactPartOut]


class CommitRunFilesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[Path] = Field(min_length=1, max_length=1000)


class RunFileOut(Out):
    path: str
    kind: str = Field(description="file (run.save), media (satchel.Image) or export (Parquet "
                      "written by the server, paths 'export/...').")
    size: int
    sha256: str | None
    created_at: datetime = Field(description="When the current content was registered.")
    committed_at: datetime | None


class CommitRunFilesOut(BaseModel):
    files: list[RunFileOut]


class RunFilePage(BaseModel):
    files: list[RunFileOut]
    total: int


class DownloadRunFilesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[Path] | None = Field(default=None, max_length=1000,
                                     description="Absent: every committed file (up to 1000).")


class RunFileDownloadOut(Out):
    path: str
    kind: str
    size: int
    sha256: str | None
    url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime


class DownloadRunFilesOut(BaseModel):
    files: list[RunFileDownloadOut]
