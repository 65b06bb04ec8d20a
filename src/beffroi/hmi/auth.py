"""Login for every HMI page and callback: Flask-Login sessions, rate-limited, commune-scoped."""

from __future__ import annotations

import html
import logging
import os
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from flask import Flask, Response, abort, has_request_context, redirect, request
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.wrappers import Response as BaseResponse  # what flask.redirect returns

from beffroi.api import routes
from beffroi.hmi.users import User, UserStore

log = logging.getLogger(__name__)

# Paths that answer without a session: the login form itself, health and metrics for the
# city's IT monitoring, the public open-data feed, and the token-authenticated API.
PUBLIC = ("/login", "/healthz", "/metrics", "/public/", f"{routes.PREFIX}/")


class SessionUser(UserMixin):
    """The Flask-Login face of a User."""

    def __init__(self, user: User):
        self.user = user

    def get_id(self) -> str:
        """Return the session key: the user name."""
        return self.user.name


def current() -> User:
    """Return the logged-in user of this request (every guarded request has one)."""
    if not current_user.is_authenticated:
        abort(401)
    return current_user.user


def sees(commune: str) -> bool:
    """Tell whether the current request's user may see a commune (True outside requests)."""
    if not has_request_context():
        return True
    return current_user.is_authenticated and current_user.user.sees(commune)


def ensure_sees(commune: str) -> None:
    """Refuse the request with 403 when the commune is outside the user's scope."""
    if not current().sees(commune):
        log.warning("user %s refused data of %s", current().name, commune)
        abort(403)


def ensure_may(right: str) -> None:
    """Refuse the request with 403 when the user's role lacks a right."""
    if not current().may(right):
        abort(403)


class LoginThrottle:
    """Refuse logins after too many failures for one address and name within a window."""

    def __init__(self, attempts: int, window_s: float):
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def wait_s(self, key: tuple[str, str]) -> float:
        """Return how long this key must wait before trying again (0 when it may try)."""
        now = time.monotonic()
        with self._lock:
            q = self._failures[key]
            while q and now - q[0] > self.window_s:
                q.popleft()
            return self.window_s - (now - q[0]) if len(q) >= self.attempts else 0.0

    def failed(self, key: tuple[str, str]) -> None:
        """Record a failed attempt."""
        with self._lock:
            self._failures[key].append(time.monotonic())

    def succeeded(self, key: tuple[str, str]) -> None:
        """Forget the failures of a key that logged in."""
        with self._lock:
            self._failures.pop(key, None)


def session_secret(env_name: str, fallback: Path) -> bytes:
    """Return the session secret from the environment, or one generated and kept at first run."""
    value = os.environ.get(env_name) if env_name else None
    if value:
        return value.encode()
    if fallback.exists():
        return fallback.read_bytes()
    fallback.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(fallback, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def _public(path: str) -> bool:
    return any(path.startswith(p) if p.endswith("/") else path == p for p in PUBLIC)


def _safe_next(target: str | None) -> str:
    """Keep redirects on this site: only a local path is accepted after login."""
    if not target:
        return "/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _login_page(title: str, error: str = "", next_url: str = "/", status: int = 200) -> Response:
    body = f"""<!doctype html><html lang="fr"><head><meta charset="utf-8">
<title>Beffroi — connexion</title><meta name="viewport" content="width=device-width">
<style>body{{font-family:system-ui,sans-serif;background:#1d2733;color:#eef;display:flex;
justify-content:center;align-items:center;height:100vh;margin:0}}form{{background:#263445;
padding:2em 2.5em;border-radius:8px;min-width:280px}}h1{{margin:0 0 .2em}}p.m{{margin:0 0 1.5em;
color:#9ab}}label{{display:block;margin:.8em 0 .3em}}input{{width:100%;padding:.5em;
box-sizing:border-box}}button{{margin-top:1.5em;width:100%;padding:.6em;background:#2f7de1;
color:#fff;border:0;border-radius:4px;font-size:1em}}.e{{color:#ff8f8f;margin-top:1em}}</style>
</head><body><form method="post" action="/login" id="login-form">
<h1>Beffroi</h1><p class="m">{html.escape(title)}</p>
<input type="hidden" name="next" value="{html.escape(next_url)}">
<label for="username">Utilisateur</label><input id="username" name="username" required autofocus>
<label for="password">Mot de passe</label>
<input id="password" name="password" type="password" required>
<button type="submit" id="login-submit">Se connecter</button>
{f'<p class="e" id="login-error">{html.escape(error)}</p>' if error else ""}
</form></body></html>"""
    return Response(body, status, mimetype="text/html")


def install_auth(
    server: Flask,
    users: UserStore,
    secret: bytes,
    *,
    title: str,
    session_hours: float = 12,
    attempts: int = 5,
    window_s: float = 300,
    audit: Callable[..., Any] | None = None,
) -> LoginThrottle:
    """Require a session on every route but the public ones; add /login and /logout."""

    def record(user: str, action: str, outcome: str = "ok", **detail: str) -> None:
        # A failing audit log must not lock the command post out: log it and carry on.
        if audit is not None:
            try:
                audit(user or "?", action, outcome=outcome, **detail)
            except Exception:
                log.exception("cannot audit %s of %s", action, user)

    server.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="beffroi_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=session_hours),
    )
    manager = LoginManager()
    manager.init_app(server)
    manager.session_protection = "strong"
    throttle = LoginThrottle(attempts, window_s)

    @manager.user_loader
    def load_user(name: str) -> SessionUser | None:
        user = users.get(name)
        return SessionUser(user) if user else None

    @server.before_request
    def guard() -> BaseResponse | None:
        if _public(request.path) or current_user.is_authenticated:
            return None
        wants_page = request.method == "GET" and "text/html" in request.headers.get("Accept", "")
        if wants_page:
            return redirect(f"/login?next={request.full_path.rstrip('?')}")
        return Response('{"error": "login required"}', 401, mimetype="application/json")

    @server.get("/login")
    def login_form() -> Response:
        return _login_page(title, next_url=_safe_next(request.args.get("next")))

    @server.post("/login")
    def login_submit() -> BaseResponse:
        name = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        next_url = _safe_next(request.form.get("next"))
        key = (request.remote_addr or "?", name.lower())
        wait = throttle.wait_s(key)
        if wait > 0:
            log.warning("login throttled for %s from %s", name, key[0])
            record(name, "login.throttled", "refused", address=key[0])
            msg = f"Trop de tentatives : réessayez dans {int(wait) + 1} s."
            return _login_page(title, msg, next_url, status=429)
        user = users.verify(name, password)
        if user is None:
            throttle.failed(key)
            log.warning("failed login for %r from %s", name, key[0])
            record(name, "login.failed", "refused", address=key[0])
            return _login_page(title, "Utilisateur ou mot de passe incorrect.", next_url, 401)
        throttle.succeeded(key)
        login_user(SessionUser(user))
        log.info("login: %s (%s) from %s", user.name, user.role, key[0])
        record(user.name, "login", address=key[0], role=user.role)
        return redirect(next_url)

    @server.route("/logout", methods=["GET", "POST"])
    def logout() -> BaseResponse:
        if current_user.is_authenticated:
            log.info("logout: %s", current_user.get_id())
            record(current_user.get_id(), "logout", address=request.remote_addr or "?")
        logout_user()
        return redirect("/login")

    return throttle
