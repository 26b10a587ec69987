"""``run.log_artifact`` and ``run.use_artifact``: artifacts with lineage (docs/artifacts.md).

Both talk to the server at once, through the run's own client (artifact bytes go straight to
the bucket, so there is nothing to spool): logging records the run as the version's producer,
using records it as a consumer. They need an ``online`` run. An ``offline`` run refuses both
(it has no server yet; log with ``satchel artifact put`` or ``Api`` once online). A
``disabled`` run's ``log_artifact`` is a no-op returning None, like its other calls; its
``use_artifact`` refuses, because the caller needs the files it returns: fetch them with
``satchel.Api().artifact(path)``, which needs no run.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from satchel.errors import InvalidInput
from satchel.sdk.artifact import Api, Artifact, LoggedArtifact
from satchel.sdk.progress import ProgressCallback

if TYPE_CHECKING:
    from satchel.sdk.run import Run


class RunArtifacts:
    def __init__(self, run: Run) -> None:
        self._run = run
        self._api: Api | None = None
        self._lock = threading.Lock()

    def _online(self, call: str) -> Api:
        run = self._run
        if run.mode != "online" or run._client is None:
            hint = ("fetch the version with satchel.Api().artifact(path) instead"
                    if call == "use_artifact" else
                    "log it with satchel.Api().log_artifact or `satchel artifact put`")
            raise InvalidInput(f"run.{call} needs an online run (this run is {run.mode}): "
                               f"artifacts go to the server at once; {hint}")
        if run._finished:
            raise InvalidInput(f"run {run.path} is finished; call run.{call} before "
                               "run.finish()")
        with self._lock:
            if self._api is None:
                self._api = Api(client=run._client)
            spool = run._spool
            if spool is not None and not spool.info.created:
                # init could not reach the server and the sender has not created the run
                # yet: create it now ("attach" takes it as it is if the sender was quicker).
                info = spool.info
                run._client.request(
                    "POST", f"/api/v1/teams/{info.team}/projects/{info.project}/runs",
                    json=dict(info.spec, run_id=info.run_id, resume="attach"))
            return self._api

    def log(self, artifact: Artifact, aliases: Sequence[str],
            progress: ProgressCallback | None) -> LoggedArtifact | None:
        if self._run.mode == "disabled":
            return None
        api = self._online("log_artifact")
        run = self._run
        return api.log_artifact(artifact, f"{run.team}/{run.project}", aliases=aliases,
                                progress=progress, run_id=run.id)

    def use(self, path: str) -> LoggedArtifact:
        api = self._online("use_artifact")
        run = self._run
        data = api.client.use_artifact(run.team, run.project, run.id, path)
        return LoggedArtifact(api, str(data["team"]), str(data["project"]), data)

    def close(self) -> None:
        """Release the transfer pool and caches (the run closes its client itself)."""
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None
