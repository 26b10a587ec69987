"""Artifact lineage: record a run's use of a version, list a run's artifacts, a version's
producer and consumers.

Thin: authorization, rules and audit live in services/lineage.py.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from satchel.server.deps import DB, CurrentUser, Info
from satchel.server.lineage_schemas import (
    ConsumerOut,
    LineageOut,
    RunArtifactOut,
    RunArtifactsOut,
    RunRefOut,
    UseArtifactIn,
)
from satchel.services import lineage, projects

router = APIRouter(tags=["artifacts"])
RUN = "/teams/{team}/projects/{project}/runs/{run_id}/artifacts"
ART = "/teams/{team}/projects/{project}/artifacts/{name}/versions/{ref}/lineage"


def _out(a: lineage.RunArtifact) -> RunArtifactOut:
    return RunArtifactOut(team=a.team, project=a.project, used_at=a.used_at,
                          **asdict(a.version))


@router.post(RUN + "/use", response_model=RunArtifactOut)
def use_artifact(team: str, project: str, run_id: str, body: UseArtifactIn, who: CurrentUser,
                 db: DB, info: Info) -> RunArtifactOut:
    """Record that the run used a version (once per version and run) and return it. Needs
    write access to the run's project and download access to the artifact's."""
    p = projects.get_project(db, who, team, project)
    return _out(lineage.use_artifact(db, who, p, run_id, body.artifact, info))


@router.get(RUN, response_model=RunArtifactsOut)
def run_artifacts(team: str, project: str, run_id: str, who: CurrentUser, db: DB
                  ) -> RunArtifactsOut:
    """Versions the run logged (it is their producer) and used."""
    p = projects.get_project(db, who, team, project)
    res = lineage.run_artifacts(db, who, p, run_id)
    return RunArtifactsOut(logged=[_out(a) for a in res.logged],
                           used=[_out(a) for a in res.used], hidden=res.hidden)


@router.get(ART, response_model=LineageOut)
def version_lineage(team: str, project: str, name: str, ref: str, who: CurrentUser, db: DB,
                    limit: Annotated[int, Query(ge=1, le=lineage.MAX_CONSUMERS)] = 1000,
                    offset: Annotated[int, Query(ge=0)] = 0) -> LineageOut:
    """The run that produced the version and the runs that used it; consumers in projects
    you cannot read are counted, not named."""
    p = projects.get_project(db, who, team, project)
    res = lineage.lineage(db, who, p, name, ref, limit=limit, offset=offset)
    return LineageOut(
        producer=RunRefOut.model_validate(res.producer) if res.producer else None,
        consumers=[ConsumerOut.model_validate(c) for c in res.consumers], total=res.total,
        hidden_consumers=res.hidden)
