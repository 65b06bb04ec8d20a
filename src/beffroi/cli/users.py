"""`beffroi user add|set|passwd|remove|list`: the HMI's users, roles, communes and language.

The users file is the gateway's while it runs (admins change users on the HMI's Users page);
these commands need it stopped, and are audited as the system user running them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from beffroi.cli.audit import audited_offline
from beffroi.cli.common import ConfigOpt, fail, load
from beffroi.core.errors import BeffroiError
from beffroi.hmi.users import UserError, UserStore
from beffroi.i18n import DEFAULT_LOCALE, LOCALES

T = TypeVar("T")

commands = typer.Typer(help="Manage HMI users: roles and commune scopes.", no_args_is_help=True)

PasswordEnvOpt = Annotated[str | None, typer.Option(help="read the password from it")]
LANGUAGE_HELP = "interface language: " + "|".join(LOCALES)


def _password(password_env: str | None) -> str:
    """Read a password from a named environment variable, or ask twice without echo."""
    if password_env:
        value = os.environ.get(password_env)
        if not value:
            raise fail([f"environment variable {password_env} is not set"])
        return value
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _guarded(fn: Callable[[], T]) -> T:
    """Run a change of the users file; its refusals and a held file become messages."""
    try:
        return fn()
    except UserError as exc:
        raise fail([str(exc)]) from None
    except BeffroiError as exc:  # the file is held: it names it, and by whom
        hint = "stop it (a running gateway holds it) and try again"
        raise fail([str(exc), hint], 1) from None


@contextmanager
def _store(config: Path) -> Iterator[UserStore]:
    """Open the users file for one command, and close it (checkpointed) after."""
    cfg = load(config)
    communes = {c.id for c in cfg.communes}
    users = _guarded(
        lambda: UserStore(cfg.state.place(cfg.resolve(cfg.hmi.users_db), "users"), communes)
    )
    try:
        yield users
    finally:
        users.close()


@commands.command("add")
def add(
    name: str,
    role: Annotated[str, typer.Option(help="viewer|operator|supervisor|auditor|admin")],
    commune: Annotated[list[str], typer.Option(help="a commune id, or '*' for all")],
    config: ConfigOpt = Path("config.toml"),
    password_env: PasswordEnvOpt = None,
    language: Annotated[str, typer.Option(help=LANGUAGE_HELP)] = DEFAULT_LOCALE,
) -> None:
    """Create a user."""
    # Both files opened first: one held fails before any prompt, and before any change.
    with audited_offline(config) as audit, _store(config) as s:
        password = _password(password_env)
        user = _guarded(lambda: s.add(name, password, role, commune, language))
        audit("user.add", user.name, role=user.role, communes=user.communes, language=user.language)
    typer.echo(f"user {user.name} added: {user.role}, {', '.join(user.communes)}, {user.language}")


@commands.command("set")
def set_user(
    name: str,
    language: Annotated[str, typer.Option(help=LANGUAGE_HELP)],
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """Change a user's interface language."""
    with audited_offline(config) as audit, _store(config) as s:
        user = _guarded(lambda: s.set_language(name, language))
        audit("user.language", user.name, language=user.language)
    typer.echo(f"language of {user.name}: {user.language}")


@commands.command("passwd")
def passwd(
    name: str, config: ConfigOpt = Path("config.toml"), password_env: PasswordEnvOpt = None
) -> None:
    """Change a user's password."""
    with audited_offline(config) as audit, _store(config) as s:
        password = _password(password_env)
        _guarded(lambda: s.set_password(name, password))
        audit("user.passwd", name)
    typer.echo(f"password of {name} changed")


@commands.command("remove")
def remove(name: str, config: ConfigOpt = Path("config.toml")) -> None:
    """Delete a user."""
    with audited_offline(config) as audit, _store(config) as s:
        _guarded(lambda: s.remove(name))
        audit("user.remove", name)
    typer.echo(f"user {name} removed")


@commands.command("list")
def list_users(config: ConfigOpt = Path("config.toml")) -> None:
    """List users with their role and communes."""
    with _store(config) as s:
        users = s.all()
    for u in users:
        typer.echo(f"{u.name}\t{u.role}\t{','.join(u.communes)}\t{u.language}")
