"""Request and response bodies of the Parquet export routes (server/routes/run_export.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(default=False, description="Write the files again even when the "
                        "existing export already reflects every record of the run.")


class ExportedFileOut(BaseModel):
    path: str = Field(description="Relative to the run, e.g. export/history.parquet.")
    key: str = Field(description="Relative to the team's prefix: "
                     "runs/<project>/<run_id>/export/<file>.")
    bucket_key: str = Field(description="The object's full key in the bucket (with the "
                            "bucket's sub-path and the team prefix).")
    size: int
    sha256: str
    committed_at: datetime
    rows: int | None = Field(default=None, description="Set when this request wrote the file.")
    columns: int | None = None
    url: str = Field(description="Presigned GET (authorized and audited).")
    method: str
    headers: dict[str, str]
    expires_at: datetime


class RunExportOut(BaseModel):
    team: str
    project: str
    run_id: str
    state: str
    written: bool = Field(description="False when the existing export was current and "
                          "returned as is.")
    exported_at: datetime | None = Field(
        description="The run's heartbeat_at (when its last records batch arrived) that the "
        "files reflect; unchanged when records arrived while this export was written (the "
        "background export writes it again). When the files were written: committed_at.")
    record_hwm: int
    files: list[ExportedFileOut]


class ExportFailureOut(BaseModel):
    run_id: str
    code: str
    message: str


class ProjectExportOut(BaseModel):
    team: str
    project: str
    runs: list[RunExportOut]
    failed: list[ExportFailureOut]
    written: int = Field(description="Runs whose files this request wrote.")
    current: int = Field(description="Runs whose existing export was already current.")
