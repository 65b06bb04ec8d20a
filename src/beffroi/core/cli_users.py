"""`beffroi user add|passwd|remove|list`: the HMI's users, their roles and communes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from beffroi.core.cli_audit import audited_offline
from beffroi.core.errors import BeffroiError

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="config file (TOML)")]


def _password(password_env: str | None) -> str:
    """Read a password from a named environment variable, or ask twice without echo."""
    if password_env:
        value = os.environ.get(password_env)
        if not value:
            from beffroi.core.cli import _fail

            raise _fail([f"environment variable {password_env} is not set"])
        return value
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def register(app: typer.Typer) -> None:
    """Add the `user` command group to the CLI."""
    users_app = typer.Typer(
        help="Manage HMI users: roles and commune scopes.", no_args_is_help=True
    )
    app.add_typer(users_app, name="user")

    @contextmanager
    def store(config: Path) -> Iterator[Any]:
        """Open the users file for one command, and close it (checkpointed) after."""
        from beffroi.core.cli import _load
        from beffroi.core.plugins import load

        cfg = _load(config)
        communes = {c.id for c in cfg.communes}
        users = guarded(load("hmi", "users"), cfg.resolve(cfg.hmi.users_db), communes)
        try:
            yield users
        finally:
            users.close()

    def guarded(fn, *args):
        from beffroi.core.cli import _fail
        from beffroi.hmi.users import UserError

        try:
            return fn(*args)
        except UserError as exc:
            raise _fail([str(exc)]) from None
        except BeffroiError as exc:  # the file is held: it names it, and by whom
            hint = "stop it (a running gateway holds it) and try again"
            raise _fail([str(exc), hint], 1) from None

    @users_app.command("add")
    def add(
        name: str,
        role: Annotated[str, typer.Option(help="viewer|operator|supervisor|auditor|admin")],
        commune: Annotated[list[str], typer.Option(help="a commune id, or '*' for all")],
        config: ConfigOpt = Path("config.toml"),
        password_env: Annotated[str | None, typer.Option(help="read the password from it")] = None,
    ) -> None:
        """Create a user."""
        # Both files opened first: one held fails before any prompt, and before any change.
        with audited_offline(config) as audit, store(config) as s:
            user = guarded(s.add, name, _password(password_env), role, commune)
            audit("user.add", user.name, role=user.role, communes=user.communes)
        typer.echo(f"user {user.name} added: {user.role}, {', '.join(user.communes)}")

    @users_app.command("passwd")
    def passwd(
        name: str,
        config: ConfigOpt = Path("config.toml"),
        password_env: Annotated[str | None, typer.Option(help="read the password from it")] = None,
    ) -> None:
        """Change a user's password."""
        with audited_offline(config) as audit, store(config) as s:
            guarded(s.set_password, name, _password(password_env))
            audit("user.passwd", name)
        typer.echo(f"password of {name} changed")

    @users_app.command("remove")
    def remove(name: str, config: ConfigOpt = Path("config.toml")) -> None:
        """Delete a user."""
        with audited_offline(config) as audit, store(config) as s:
            guarded(s.remove, name)
            audit("user.remove", name)
        typer.echo(f"user {name} removed")

    @users_app.command("list")
    def list_users(config: ConfigOpt = Path("config.toml")) -> None:
        """List users with their role and communes."""
        with store(config) as s:
            users = s.all()
        for u in users:
            typer.echo(f"{u.name}\t{u.role}\t{','.join(u.communes)}")
