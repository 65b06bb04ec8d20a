"""Users page: administrators manage users while the gateway runs, within their scope, audited."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from beffroi.control.audit import AuditLog
from beffroi.core.live import LiveValues
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from tests.conftest import free_port
from tests.test_control_helpers import dash_request, post_callback
from tests.test_hmi import logged_in_opener

PW = "correct horse battery"
BUTTONS = ("users-add", "users-update", "users-passwd", "users-remove")


def _act(button: str, name: str, role=None, communes=None, password=None, language="fr") -> dict:  # type: ignore[no-untyped-def]
    body = dash_request(
        ["users-feedback.children", "users-grid.rowData", "users-password.value"],
        {f"{b}.n_clicks": int(b == button) for b in BUTTONS},
        {
            "users-name.value": name,
            "users-role.value": role,
            "users-communes.value": communes,
            "users-password.value": password,
            "users-language.value": language,
        },
    )
    body["changedPropIds"] = [f"{button}.n_clicks"]
    return body


@pytest.fixture
def served(tmp_path: Path, demo_config, small_register):  # type: ignore[no-untyped-def]
    users = UserStore(tmp_path / "u.duckdb", set(small_register.communes))
    users.add("admin", PW, "admin", ["*"])
    users.add("admin-talant", PW, "admin", ["talant"])
    users.add("op", PW, "operator", ["*"])
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    audit = AuditLog(tmp_path / "audit.duckdb")
    app = create_app(demo_config, small_register, LiveValues(), hist, users=users, audit=audit)
    server = HmiServer(app, "127.0.0.1", free_port(), threads=2)
    server.start()
    yield server.url, audit
    server.stop()
    audit.close()
    hist.close()
    users.close()


def test_an_admin_manages_users_while_the_gateway_runs(served) -> None:
    """Add, change, reset and remove without stopping the gateway; every change audited."""
    url, audit = served
    admin = logged_in_opener(url, "admin", PW)
    status, body = post_callback(
        admin, url, _act("users-add", "marie", "operator", ["talant"], "a-long-password")
    )
    assert (
        status == 200
        and body["response"]["users-feedback"]["children"] == "Utilisateur marie ajouté par admin."
    )
    marie = logged_in_opener(url, "marie", "a-long-password")  # she can log in at once
    row = next(r for r in body["response"]["users-grid"]["rowData"] if r["name"] == "marie")
    assert row == {
        "name": "marie",
        "role": "operator",
        "role_label": "opérateur",
        "communes": "talant",
        "language": "fr",
        "language_label": "Français",
    }

    _, body = post_callback(admin, url, _act("users-passwd", "marie", password="short"))
    assert body["response"]["users-feedback"]["children"].startswith(
        "Refusé : mot de passe trop court"
    )
    _, body = post_callback(
        admin, url, _act("users-update", "marie", "supervisor", ["talant", "dijon"], language="en")
    )
    assert "Utilisateur marie modifié par admin" in body["response"]["users-feedback"]["children"]
    row = next(r for r in body["response"]["users-grid"]["rowData"] if r["name"] == "marie")
    assert (row["role_label"], row["language_label"]) == ("superviseur", "English")
    _, body = post_callback(admin, url, _act("users-remove", "admin"))
    assert "modifiés par un autre administrateur" in body["response"]["users-feedback"]["children"]
    _, body = post_callback(admin, url, _act("users-remove", "marie"))
    assert "Utilisateur marie supprimé par admin" in body["response"]["users-feedback"]["children"]
    with pytest.raises(urllib.error.HTTPError) as gone:  # her session ends with her account
        marie.open(url + "_dash-layout", timeout=10)
    assert gone.value.code == 401

    df = audit.frame()
    changes = df[df.action.str.startswith("user.")]
    assert list(changes.action) == ["user.add", "user.update", "user.remove"]
    assert set(changes.user) == {"admin"} and set(changes.target) == {"marie"}
    assert "a-long-password" not in "".join(df.detail)


def test_users_are_managed_only_by_admins_within_their_communes(served) -> None:
    url, _ = served
    status, _ = post_callback(
        logged_in_opener(url, "op", PW),
        url,
        _act("users-add", "x", "viewer", ["talant"], "a-long-password"),
    )
    assert status == 403
    local = logged_in_opener(url, "admin-talant", PW)
    for communes in (["*"], ["dijon"], ["talant", "dijon"]):  # past Talant: refused
        status, _ = post_callback(
            local, url, _act("users-add", "x", "viewer", communes, "a-long-password")
        )
        assert status == 403, communes
    status, _ = post_callback(
        local, url, _act("users-passwd", "op", password="a-new-long-password")
    )
    assert status == 403  # a metropolis-wide user is past Talant's admin
    status, body = post_callback(
        local, url, _act("users-add", "y", "viewer", ["talant"], "a-long-password")
    )
    assert status == 200
    names = {r["name"] for r in body["response"]["users-grid"]["rowData"]}
    assert names == {"admin-talant", "y"}  # only the users within Talant are listed
