"""`satchel login`, `satchel whoami`, `satchel api-key ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from satchel.cli.output import console, print_json, print_table
from satchel.config import ClientSettings, save_user_credentials
from satchel.sdk.client import Client

keys_app = typer.Typer(help="Manage your API keys.", no_args_is_help=True)


def login(
    host: Annotated[str | None, typer.Option(help="Server URL, e.g. http://127.0.0.1:8080")] = None,
    key: Annotated[str | None, typer.Option(help="API key; without it you are asked for "
                                            "username and password")] = None,
) -> None:
    """Log in and store host + API key in your user config file (mode 0600)."""
    settings = ClientSettings.load(host=host, api_key=key)
    assert settings.host is not None
    # Only an explicit key (--key or SATCHEL_API_KEY) skips the prompt; the key stored by an
    # earlier login does not, so `satchel login` can switch users.
    env_key = ClientSettings().api_key
    api_key = key or (env_key.get_secret_value() if env_key else None)
    if api_key is None:
        username = typer.prompt("Username")
        password = typer.prompt("Password", hide_input=True)
        with Client(host=settings.host, api_key=None) as anon:
            api_key = anon.login_with_password(username, password)
    with Client(host=settings.host, api_key=api_key) as client:
        me = client.me()
        path = save_user_credentials(client.host, api_key)
    console.print(f"Logged in to {settings.host} as {me['username']}; credentials in {path}")


def whoami(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show who the stored credentials belong to."""
    with Client() as client:
        me = client.me()
    if as_json:
        print_json(me)
    else:
        console.print(f"{me['username']}{' (admin)' if me['is_admin'] else ''} on {client.host}")


@keys_app.command("create")
def create(name: Annotated[str, typer.Option(help="A label for the key")] = "") -> None:
    """Create an API key; it is printed once."""
    with Client() as client:
        out = client.create_api_key(name)
    console.print(out["api_key"], markup=False, highlight=False)


@keys_app.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List your API keys (prefixes only)."""
    with Client() as client:
        keys = client.api_keys()
    if as_json:
        print_json(keys)
    else:
        print_table(keys, ["id", "prefix", "name", "created_at", "last_used_at", "revoked_at"])


@keys_app.command("revoke")
def revoke(key_id: int) -> None:
    """Revoke an API key by id: it stops working at once."""
    with Client() as client:
        out = client.revoke_api_key(key_id)
    console.print(f"Revoked key {out['id']} (prefix {out['prefix']}).")
