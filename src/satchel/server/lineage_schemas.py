"""Request and response bodies of artifact lineage (services/lineage.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from satchel.server.schemas import ArtifactVersionOut, Out


class UseArtifactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    artifact: str = Field(min_length=1, max_length=512,
                          description="team/project/name[:alias|:vN] (default alias latest); "
                          "any project whose artifacts you may download.")


class RunArtifactOut(ArtifactVersionOut):
    """A version a run logged or used, with the project it lives in."""

    team: str
    project: str
    used_at: datetime | None = Field(
        description="When the run's use was first recorded; null for versions it logged.")


class RunArtifactsOut(BaseModel):
    logged: list[RunArtifactOut] = Field(description="Versions this run produced.")
    used: list[RunArtifactOut] = Field(description="Versions this run used, first use first.")
    hidden: int = Field(description="Logged or used versions you may not read (not listed).")


class RunRefOut(Out):
    team: str
    project: str
    run_id: str


class ConsumerOut(RunRefOut):
    used_at: datetime


class LineageOut(BaseModel):
    producer: RunRefOut | None = Field(description="The run that logged the version, if any.")
    consumers: list[ConsumerOut] = Field(description="A page of the runs that used it, first "
                                         "use first (only runs you can read).")
    total: int = Field(description="Consumers you can read, over all pages.")
    hidden_consumers: int = Field(description="Consumers in projects you cannot read.")
