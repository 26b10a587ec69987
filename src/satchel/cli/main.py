"""Entry point of the ``satchel`` command. User mistakes print one line, never a traceback."""

from __future__ import annotations

import sys

import typer

from satchel.cli import admin, artifacts, auth, db, gc, projects, runs, server, storage, teams
from satchel.cli.output import err_console, error_line
from satchel.errors import ConfigError, SatchelError

app = typer.Typer(
    name="satchel",
    help="Satchel: experiment tracking and artifacts whose files stay in your own bucket.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("server")(server.serve)
app.command("login")(auth.login)
app.command("whoami")(auth.whoami)
app.add_typer(auth.keys_app, name="api-key")
app.add_typer(teams.app, name="team")
app.add_typer(projects.app, name="project")
app.add_typer(artifacts.app, name="artifact")
app.add_typer(storage.app, name="storage")
app.add_typer(admin.app, name="admin")
app.add_typer(db.app, name="db")
app.add_typer(runs.app, name="run")
app.command("sync")(runs.sync)
app.add_typer(runs.export_app, name="export")
app.add_typer(gc.app, name="gc")


def main(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        # Standalone mode: typer handles usage errors, --help, EOF and Ctrl-C at prompts with
        # the click it ships (recent typer vendors click as typer._click, whose exceptions are
        # not click's, so catching click's classes here let them escape as tracebacks).
        command.main(args=argv, prog_name="satchel", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ConfigError as exc:
        for problem in exc.problems:
            err_console.print(f"ConfigError: {problem}", markup=False, highlight=False)
        return 2
    except SatchelError as exc:
        err_console.print(error_line(exc), markup=False, highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
