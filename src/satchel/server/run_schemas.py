"""Request and response bodies of the runs API (kept apart from schemas.py by domain)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from satchel.server.schemas import Out


class CreateRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str | None = Field(default=None, max_length=64,
                               description="Chosen by the SDK; generated when absent.")
    name: str = Field(default="", max_length=128)
    config: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list, max_length=64)
    notes: str = Field(default="", max_length=10_000)
    group: str = Field(default="", max_length=128)
    job_type: str = Field(default="", max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)
    resume: Literal["never", "allow", "must", "attach"] = Field(
        default="never", description='"allow"/"must" continue an existing run; "attach" '
        '(used by the SDK) takes an existing run of that id as it is.')


class UpdateRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=128)
    tags: list[str] | None = Field(default=None, max_length=64)
    notes: str | None = Field(default=None, max_length=10_000)


class RunOut(Out):
    team: str
    project: str
    run_id: str
    name: str
    state: str
    config: dict[str, Any]
    summary: dict[str, Any]
    tags: list[str]
    notes: str
    group: str
    job_type: str
    metadata: dict[str, Any]
    created_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    record_hwm: int = Field(description="Records applied so far; the SDK sends from here.")
    last_step: int
    history_rows: int
    console_lines: int
    resumed: int


class StartRunOut(BaseModel):
    run: RunOut
    created: bool


class RunPage(BaseModel):
    runs: list[RunOut]
    total: int


class RecordsIn(BaseModel):
    """Documentation of the records body (parsed by hand for speed; may be gzip-encoded)."""

    start: int = Field(ge=0, description="Number of the first record in this batch.")
    records: list[list[Any]] = Field(description="Records as compact arrays; see docs/runs.md.")


class RejectedRecord(BaseModel):
    record: int
    reason: str


class RecordsOut(BaseModel):
    hwm: int
    applied: int
    duplicates: int
    rejected: list[RejectedRecord]
    state: str


class HeartbeatOut(BaseModel):
    state: str
    heartbeat_at: datetime


class SeriesOut(BaseModel):
    steps: list[int]
    values: list[Any]


class HistoryOut(BaseModel):
    stream: str
    keys: dict[str, SeriesOut]


class HistoryKeysOut(BaseModel):
    stream: str
    keys: dict[str, int] = Field(description="key -> number of points")


class ConsoleLineOut(Out):
    line_no: int
    stream: str
    created_at: datetime
    text: str


class ConsoleOut(BaseModel):
    lines: list[ConsoleLineOut]
    total: int
