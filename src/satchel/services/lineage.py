"""Artifact lineage: the run that produced a version, the runs that used it (issue 5, DESIGN §6).

* **Producer.** ``POST .../artifacts/{name}/versions`` with ``run_id`` (a run of the *same*
  project; the caller needs write access, as for logging) stores the run on the pending
  version (``artifact_versions.producing_run_id``); the commit keeps it. When the manifest
  equals ``latest`` no version is created, and the existing version keeps the producer it has
  (lineage is history: it is never rewritten). The run is then recorded as a *user* of that
  version, unless it is its producer already: its output is that version, so it shows in the
  run's artifacts and in the version's lineage.
* **Consumers.** :func:`use_artifact` records that a run used a version (one row per version
  and run, however often it asks). The caller needs write access to the run's project and
  *file* read access to the artifact's project, through the same gate as downloads
  (:func:`require_url_access`, so a team bucket's artifacts are usable only by its members);
  the artifact may live in another project or team.
* **Reading.** :func:`run_artifacts` lists what a run logged and used; versions the caller
  may not read (the gate above) are counted, not shown. :func:`lineage` names the producer and
  the consumers whose project the caller can read; the others are counted only. Soft-deleted
  runs, versions, collections and projects are neither shown nor counted (a restore brings
  them back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, or_, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from satchel.db.models import (
    ArtifactCollection,
    ArtifactUsage,
    ArtifactVersion,
    Membership,
    Project,
    Run,
    Team,
)
from satchel.errors import InvalidInput, NotFound, PermissionDenied
from satchel.services import audit, runs
from satchel.services.artifacts import (
    LATEST,
    VersionView,
    _collection,
    _producer,
    _resolve,
    _view,
)
from satchel.services.authz import Principal, require_url_access

MAX_CONSUMERS = 10_000


@dataclass(frozen=True, slots=True)
class RunRef:
    team: str
    project: str
    run_id: str


@dataclass(frozen=True, slots=True)
class Consumer:
    team: str
    project: str
    run_id: str
    used_at: datetime


@dataclass(frozen=True, slots=True)
class RunArtifact:
    """A version a run logged or used, with the project it lives in."""

    team: str
    project: str
    version: VersionView
    used_at: datetime | None = None  # for used versions: when the use was first recorded


@dataclass(frozen=True, slots=True)
class RunArtifacts:
    logged: list[RunArtifact]
    used: list[RunArtifact]
    hidden: int  # logged or used versions the caller may not read


@dataclass(frozen=True, slots=True)
class Lineage:
    producer: RunRef | None
    consumers: list[Consumer]
    total: int  # consumers the caller may see (``consumers`` is one page of them)
    hidden: int  # consumers in projects the caller cannot read


# ---------------------------------------------------------------------------- writing


def producing_run(db: Session, who: Principal, project: Project, run_id: str | None
                  ) -> Run | None:
    """The run named as producer of a new version: a live run of ``project`` that ``who`` may
    write to; NotFound otherwise."""
    if run_id is None:
        return None
    return runs.get_run(db, who, project, run_id, write=True)


def _insert_usage(db: Session, version_id: int, run_id: int, now: datetime) -> None:
    """Idempotent: a second use by the same run (or a concurrent one) changes nothing."""
    row = {"version_id": version_id, "run_id": run_id, "created_at": now}
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    db.execute(dialect.insert(ArtifactUsage).values(row).on_conflict_do_nothing(
        index_elements=["version_id", "run_id"]))


def _audit_use(db: Session, who: Principal, art_project: Project, c: ArtifactCollection,
               v: ArtifactVersion, run: Run, run_project: Project, info: audit.RequestInfo
               ) -> None:
    audit.record(db, who, "artifact_use", info, team=art_project.team.name,
                 project=art_project.name,
                 keys=[(f"{c.name}:v{v.index} run={run_project.team.name}/{run_project.name}/"
                        f"{run.run_id}", None)])


def unchanged_logged_by(db: Session, who: Principal, project: Project, c: ArtifactCollection,
                        v: ArtifactVersion, run: Run, info: audit.RequestInfo) -> None:
    """A run logged a manifest equal to ``v`` (no new version): record it as a user of ``v``
    unless it produced ``v`` itself."""
    if v.producing_run_id == run.id:
        return
    _insert_usage(db, v.id, run.id, datetime.now(UTC))
    _audit_use(db, who, project, c, v, run, project, info)


def parse_artifact_ref(text: str) -> tuple[str, str, str, str]:
    """``team/project/name[:alias|:vN]`` -> (team, project, name, ref; default ``latest``)."""
    path, sep, ref = text.partition(":")
    parts = path.split("/")
    if len(parts) != 3 or not all(parts) or (sep and not ref):
        raise InvalidInput(f"expected team/project/name[:alias|:vN], got {text[:200]!r}",
                           details={"field": "artifact"})
    return parts[0], parts[1], parts[2], ref or LATEST


def use_artifact(db: Session, who: Principal, run_project: Project, run_id: str,
                 artifact: str, info: audit.RequestInfo) -> RunArtifact:
    """Record that the run used a version (``team/project/name[:alias|:vN]``) and return it."""
    from satchel.services.projects import get_project  # projects imports artifact services

    run = runs.get_run(db, who, run_project, run_id, write=True)
    team, proj, name, ref = parse_artifact_ref(artifact)
    art_project = get_project(db, who, team, proj)
    # The gate downloads pass: using a version means reading its files.
    require_url_access(db, who, art_project, "GET")
    c = _collection(db, art_project, name)
    v = _resolve(db, art_project, c, ref)
    now = datetime.now(UTC)
    _insert_usage(db, v.id, run.id, now)
    _audit_use(db, who, art_project, c, v, run, run_project, info)
    used_at = db.scalar(select(ArtifactUsage.created_at).where(
        ArtifactUsage.version_id == v.id, ArtifactUsage.run_id == run.id))
    return RunArtifact(team, proj, _view(db, c, v), used_at or now)


# ---------------------------------------------------------------------------- reading


def _may_read_files(db: Session, who: Principal, project: Project) -> bool:
    try:
        require_url_access(db, who, project, "GET")
    except (NotFound, PermissionDenied):
        return False
    return True


def _live_versions() -> ColumnElement[bool]:
    return (ArtifactVersion.state == "committed") & ArtifactVersion.deleted_at.is_(None) & \
        ArtifactCollection.deleted_at.is_(None) & Project.deleted_at.is_(None)


def run_artifacts(db: Session, who: Principal, project: Project, run_id: str) -> RunArtifacts:
    """What a run logged (it is their producer) and used, oldest first."""
    run = runs.get_run(db, who, project, run_id)
    readable: dict[int, bool] = {}

    def visible(p: Project) -> bool:
        if p.id not in readable:
            readable[p.id] = _may_read_files(db, who, p)
        return readable[p.id]

    hidden = 0
    logged: list[RunArtifact] = []
    rows = db.execute(
        select(ArtifactVersion, ArtifactCollection, Project)
        .join(ArtifactCollection, ArtifactCollection.id == ArtifactVersion.collection_id)
        .join(Project, Project.id == ArtifactCollection.project_id)
        .where(ArtifactVersion.producing_run_id == run.id, _live_versions())
        .order_by(ArtifactVersion.committed_at, ArtifactVersion.id))
    for v, c, p in rows:
        if visible(p):
            logged.append(RunArtifact(p.team.name, p.name, _view(db, c, v)))
        else:
            hidden += 1
    used: list[RunArtifact] = []
    rows2 = db.execute(
        select(ArtifactUsage.created_at, ArtifactVersion, ArtifactCollection, Project)
        .join(ArtifactVersion, ArtifactVersion.id == ArtifactUsage.version_id)
        .join(ArtifactCollection, ArtifactCollection.id == ArtifactVersion.collection_id)
        .join(Project, Project.id == ArtifactCollection.project_id)
        .where(ArtifactUsage.run_id == run.id, _live_versions())
        .order_by(ArtifactUsage.id))
    for used_at, v, c, p in rows2:
        if visible(p):
            used.append(RunArtifact(p.team.name, p.name, _view(db, c, v), used_at))
        else:
            hidden += 1
    return RunArtifacts(logged, used, hidden)


def _readable_projects(who: Principal) -> ColumnElement[bool]:
    """SQL for services/authz.can_read_project: instance-visible, or a member's team."""
    if who.is_admin:
        return true()
    member_of = select(Membership.team_id).where(Membership.user_id == who.user_id)
    return or_(Project.visibility == "instance", Project.team_id.in_(member_of))


def lineage(db: Session, who: Principal, project: Project, name: str, ref: str, *,
            limit: int = 1000, offset: int = 0) -> Lineage:
    """The version's producing run and a page of the runs that used it (first use first)."""
    if not 1 <= limit <= MAX_CONSUMERS or offset < 0:
        raise InvalidInput(f"limit must be 1-{MAX_CONSUMERS} and offset >= 0",
                           details={"field": "limit"})
    require_url_access(db, who, project, "GET")
    c = _collection(db, project, name)
    v = _resolve(db, project, c, ref)
    producer = None
    run_id = _producer(db, v)
    if run_id is not None:  # always a run of the version's own project
        producer = RunRef(project.team.name, project.name, run_id)
    live = (select(ArtifactUsage.id)
            .join(Run, Run.id == ArtifactUsage.run_id)
            .join(Project, Project.id == Run.project_id)
            .where(ArtifactUsage.version_id == v.id, Run.deleted_at.is_(None),
                   Project.deleted_at.is_(None)))
    everyone = db.scalar(select(func.count()).select_from(live.subquery())) or 0
    shown = live.where(_readable_projects(who))
    total = db.scalar(select(func.count()).select_from(shown.subquery())) or 0
    page = db.execute(
        select(Team.name, Project.name, Run.run_id, ArtifactUsage.created_at)
        .select_from(ArtifactUsage)
        .join(Run, Run.id == ArtifactUsage.run_id)
        .join(Project, Project.id == Run.project_id)
        .join(Team, Team.id == Project.team_id)
        .where(ArtifactUsage.id.in_(shown))
        .order_by(ArtifactUsage.id).limit(limit).offset(offset))
    consumers = [Consumer(t, p, r, at) for t, p, r, at in page]
    return Lineage(producer, consumers, int(total), int(everyone) - int(total))
