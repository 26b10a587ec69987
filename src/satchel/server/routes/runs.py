"""Runs: start/resume, records (the SDK's batched, numbered log stream), read history.

Thin: authorization and rules live in services/runs.py, run_records.py and history.py.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from satchel.errors import InvalidInput, PayloadTooLarge
from satchel.server.deps import DB, CurrentUser
from satchel.server.run_schemas import (
    ConsoleLineOut,
    ConsoleOut,
    CreateRun,
    HeartbeatOut,
    HistoryKeysOut,
    RecordsIn,
    RecordsOut,
    RunOut,
    RunPage,
    StartRunOut,
    UpdateRun,
)
from satchel.services import history, projects, run_records, runs

router = APIRouter(tags=["runs"])
BASE = "/teams/{team}/projects/{project}/runs"
MAX_BODY = 64 * 1024 * 1024  # decompressed records body


def _out(run: Any, project: Any) -> RunOut:
    return RunOut.model_validate(runs.view(run, project))


@router.post(BASE, response_model=StartRunOut, status_code=201)
def start_run(team: str, project: str, body: CreateRun, who: CurrentUser, db: DB
              ) -> StartRunOut:
    """Create a run (or, with ``resume``, continue an existing one)."""
    p = projects.get_project(db, who, team, project)
    run, created = runs.start_run(db, who, p, runs.RunIn(
        run_id=body.run_id, name=body.name, config=body.config, tags=body.tags,
        notes=body.notes, group=body.group, job_type=body.job_type, metadata=body.metadata,
        resume=body.resume))
    return StartRunOut(run=_out(run, p), created=created)


@router.get(BASE, response_model=RunPage)
def list_runs(
    team: str, project: str, who: CurrentUser, db: DB,
    state: Annotated[list[str] | None, Query(max_length=4)] = None,
    tag: Annotated[list[str] | None, Query(max_length=16)] = None,
    group: Annotated[str | None, Query(max_length=128)] = None,
    job_type: Annotated[str | None, Query(max_length=64)] = None,
    name: Annotated[str | None, Query(max_length=128)] = None,
    order: Annotated[str, Query(max_length=32)] = "-created_at",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RunPage:
    """Runs of a project; filters combine with AND (several ``state``/``tag`` values too)."""
    p = projects.get_project(db, who, team, project)
    page, total = runs.list_runs(db, who, p, filters=runs.RunFilter(
        states=state or (), tags=tag or (), group=group, job_type=job_type,
        name_contains=name), order=order, limit=limit, offset=offset)
    return RunPage(runs=[_out(r, p) for r in page], total=total)


@router.get(BASE + "/{run_id}", response_model=RunOut)
def show_run(team: str, project: str, run_id: str, who: CurrentUser, db: DB) -> RunOut:
    p = projects.get_project(db, who, team, project)
    return _out(runs.get_run(db, who, p, run_id), p)


@router.patch(BASE + "/{run_id}", response_model=RunOut)
def update_run(team: str, project: str, run_id: str, body: UpdateRun, who: CurrentUser,
               db: DB) -> RunOut:
    p = projects.get_project(db, who, team, project)
    return _out(runs.update_run(db, who, p, run_id, name=body.name, tags=body.tags,
                                notes=body.notes), p)


@router.delete(BASE + "/{run_id}", response_model=RunOut)
def delete_run(team: str, project: str, run_id: str, who: CurrentUser, db: DB) -> RunOut:
    """Soft delete (restorable with ``POST .../restore``; the id is never reused)."""
    p = projects.get_project(db, who, team, project)
    return _out(runs.delete_run(db, who, p, run_id), p)


@router.post(BASE + "/{run_id}/restore", response_model=RunOut)
def restore_run(team: str, project: str, run_id: str, who: CurrentUser, db: DB) -> RunOut:
    p = projects.get_project(db, who, team, project)
    return _out(runs.restore_run(db, who, p, run_id), p)


async def records_body(request: Request) -> Any:
    """The records body, gunzipped if ``Content-Encoding: gzip``, parsed as JSON -- in the
    thread pool: a large batch takes a few hundred ms to parse, which must not stall the
    event loop (and every other request) meanwhile."""
    raw = await request.body()
    gz = request.headers.get("content-encoding", "").lower() == "gzip"
    return await run_in_threadpool(_parse_records_body, raw, gz)


def _parse_records_body(raw: bytes, gz: bool) -> Any:
    if gz:
        try:
            d = zlib.decompressobj(wbits=31)
            raw = d.decompress(raw, MAX_BODY + 1)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise InvalidInput("the body is not valid gzip") from exc
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"a records batch may be at most {MAX_BODY // 2**20} MiB "
                              "uncompressed; send smaller batches")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}"[:300]) from exc


@router.post(BASE + "/{run_id}/records", response_model=RecordsOut,
             openapi_extra={"requestBody": {"content": {"application/json": {
                 "schema": RecordsIn.model_json_schema()}}, "required": True}})
def post_records(team: str, project: str, run_id: str, who: CurrentUser, db: DB,
                 body: Annotated[Any, Depends(records_body)], request: Request,
                 after: BackgroundTasks) -> RecordsOut:
    """Apply a batch of numbered records exactly once (see docs/runs.md)."""
    if not isinstance(body, dict) or not isinstance(body.get("start"), int) or \
            isinstance(body.get("start"), bool) or not isinstance(body.get("records"), list):
        raise InvalidInput('expected {"start": <int>, "records": [...]}',
                           details={"field": "body"})
    p = projects.get_project(db, who, team, project)
    run = runs.get_run(db, who, p, run_id, write=True, lock=True)
    res = run_records.apply(db, run, body["start"], body["records"])
    exporter = request.app.state.export_scheduler
    if res.applied and res.state != "running" and exporter is not None:
        # The run just finished: export it now rather than at the next sweep. A background
        # task runs after the response, so after this request's transaction committed.
        after.add_task(exporter.job.wake)
    return RecordsOut.model_validate(res, from_attributes=True)


@router.post(BASE + "/{run_id}/heartbeat", response_model=HeartbeatOut)
def heartbeat(team: str, project: str, run_id: str, who: CurrentUser, db: DB
              ) -> HeartbeatOut:
    """A sign of life from the run's process (any records batch counts as one too)."""
    p = projects.get_project(db, who, team, project)
    run = runs.heartbeat(db, who, p, run_id)
    return HeartbeatOut(state=run.state, heartbeat_at=run.heartbeat_at)


@router.get(BASE + "/{run_id}/history", response_model=None,
            responses={200: {"content": {"application/json": {}},
                             "description": '{"stream": ..., "keys": {key: {"steps": [...], '
                                            '"values": [...]}}}'}})
def read_history(
    team: str, project: str, run_id: str, who: CurrentUser, db: DB,
    keys: Annotated[list[str], Query(min_length=1, max_length=1000)],
    stream: Annotated[str, Query(max_length=8)] = "history",
    samples: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    min_step: Annotated[int | None, Query()] = None,
    max_step: Annotated[int | None, Query()] = None,
) -> Response:
    """Series of the given keys ordered by step; ``samples`` > 0 thins each to at most that
    many evenly spaced points. Non-finite values come as "NaN"/"Infinity"/"-Infinity"."""
    p = projects.get_project(db, who, team, project)
    run = runs.get_run(db, who, p, run_id)
    series = history.read(db, run, keys, stream=stream, samples=samples, min_step=min_step,
                          max_step=max_step)
    body = {"stream": stream, "keys": {s.key: {"steps": s.steps,
                                               "values": history.jsonable_list(s.values)}
                                       for s in series}}
    # json.dumps directly: a pydantic round trip of 10k-point lists costs more than the query.
    return Response(json.dumps(body, separators=(",", ":"), allow_nan=False),
                    media_type="application/json")


@router.get(BASE + "/{run_id}/history/keys", response_model=HistoryKeysOut)
def history_keys(team: str, project: str, run_id: str, who: CurrentUser, db: DB,
                 stream: Annotated[str, Query(max_length=8)] = "history") -> HistoryKeysOut:
    p = projects.get_project(db, who, team, project)
    run = runs.get_run(db, who, p, run_id)
    if stream not in history.STREAMS:
        raise InvalidInput(f"stream must be one of {', '.join(history.STREAMS)}")
    return HistoryKeysOut(stream=stream, keys=history.keys(db, run, stream=stream))


@router.get(BASE + "/{run_id}/logs", response_model=ConsoleOut)
def console_logs(team: str, project: str, run_id: str, who: CurrentUser, db: DB,
                 offset: int = 0,
                 limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> ConsoleOut:
    """Captured console lines from ``offset`` (negative: the last ``-offset`` lines)."""
    p = projects.get_project(db, who, team, project)
    run = runs.get_run(db, who, p, run_id)
    lines = runs.console(db, run, offset=offset, limit=limit)
    return ConsoleOut(lines=[ConsoleLineOut.model_validate(line) for line in lines],
                      total=run.console_lines)
