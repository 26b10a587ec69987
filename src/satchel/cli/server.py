"""`satchel server`: migrate, create the first admin if needed, serve."""

from __future__ import annotations

from typing import Annotated

import typer

from satchel.config import load_settings
from satchel.logs import configure_logging


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080)")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes")] = None,
) -> None:
    """Start the Satchel server (SQLite + local bucket under ~/.satchel unless configured)."""
    import uvicorn

    from satchel.server.app import build_context, create_app, run_bootstrap

    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items()
                 if v is not None}
    settings = load_settings(**overrides)
    configure_logging(settings.log_level)
    ctx = build_context(settings)
    created = run_bootstrap(ctx)
    if created is not None:
        _announce(created, settings.public_url)
    print(f"Satchel listening on {settings.public_url}  (data: {settings.home})", flush=True)
    if settings.workers > 1:
        ctx.db.dispose()
        uvicorn.run("satchel.server.app:create_app", factory=True, host=settings.host,
                    port=settings.port, workers=settings.workers, log_config=None,
                    access_log=False)
    else:
        uvicorn.run(create_app(settings, context=ctx), host=settings.host, port=settings.port,
                    log_config=None, access_log=False)


def _announce(created: object, url: str) -> None:
    """Print generated first-admin credentials once, to stdout (never to the log)."""
    from satchel.services.users import Bootstrap

    assert isinstance(created, Bootstrap)
    lines = [f"Created instance admin '{created.username}'."]
    if created.password:
        lines.append(f"  password: {created.password}")
    if created.api_key:
        lines.append(f"  API key:  {created.api_key}")
    if created.password or created.api_key:
        lines.append("These are shown once. Log in with:")
        lines.append(f"  satchel login --host {url} --key <API key>")
    print("\n".join(lines), flush=True)
