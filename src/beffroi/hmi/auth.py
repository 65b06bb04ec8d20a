"""Login for every HMI page and callback: server-side sessions, throttled logins, scopes."""

from __future__ import annotations

import html
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from flask import Flask, Response, abort, has_request_context, redirect, request, session
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.wrappers import Response as BaseResponse  # what flask.redirect returns

from beffroi.api import routes
from beffroi.core.keys import kept_secret
from beffroi.core.limits import PASSWORD_MAX, USER_NAME_MAX
from beffroi.hmi.server import address_key
from beffroi.hmi.users import User, UserError, UserStore
from beffroi.i18n import DEFAULT_LOCALE, LOCALES, N_, _, current_locale, set_request_locale

log = logging.getLogger(__name__)

# Paths that answer without a session: the login form itself, health and metrics for the
# city's IT monitoring, the public open-data feed and report page, the crews' field links
# (their own signed token), and the token-authenticated API.
PUBLIC = ("/login", "/healthz", "/metrics", "/public/", "/field/", f"{routes.PREFIX}/")
# A session's last use is written to the users file at most this often (and at most a tenth
# of the idle lifetime): the idle check reads the time kept in memory; the file's copy only
# matters after a restart, when it makes a session look at most this much idler.
TOUCH_EVERY = timedelta(minutes=1)
# A random id given to each browser that opens the login form (sent back to /login only):
# the users file remembers the sessions each browser opened, so a user's own browser is known.
BROWSER_COOKIE = "beffroi_browser"
BROWSER_COOKIE_DAYS = 365
# Failure counts kept per kind (address, name, …): past this, the oldest failures go first, so
# a flood of new addresses or names cannot fill the memory.
MAX_TRACKED = 10_000


class Recorder(Protocol):
    """What the HMI audits logins with (`AuditLog.record`)."""

    def __call__(self, user: str, action: str, *, outcome: str = ..., **detail: Any) -> object:
        """Append one record."""
        ...


class SessionUser(UserMixin):
    """The Flask-Login face of a user's session."""

    def __init__(self, user: User, token: str):
        self.user = user
        self.token = token

    def get_id(self) -> str:
        """Return the session key: the session's token (never the name, which outlives it)."""
        return self.token


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


@dataclass(slots=True)
class _Seen:
    """A session as this process last read it, and when it was last used."""

    user: User
    created: datetime
    last_seen: datetime  # the newest request
    stored: datetime  # last_seen as the users file has it
    revision: int  # the store's revision when it was read


class Sessions:
    """Server-side sessions: checked at every request, ended at logout, expiry or any change.

    The HMI's pages refresh every second or two: a session is read from the users file once,
    then again only when the store's revision moves (a user changed, a session ended), so a
    request costs a dict lookup and a revocation applies at the next request whichever waitress
    thread serves it (one dict, one lock for all of them).
    """

    def __init__(self, users: UserStore, *, lifetime: timedelta, idle: timedelta):
        self._users = users
        self.lifetime = lifetime
        self.idle = idle
        self._touch_every = min(TOUCH_EVERY, idle / 10)
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def open(self, name: str, browser: str | None) -> str:
        """Open a session for a user who just logged in; return its token for the cookie."""
        now = self._users.clock()
        with self._lock:
            # Sessions nobody came back to leave memory here (they are ended if they come).
            for token in [t for t, s in self._seen.items() if self._expired(s, now)]:
                del self._seen[token]
        return self._users.open_session(name, browser)

    def check(self, token: str) -> User | None:
        """Return the user of an open session and note its use; end it if it has expired."""
        now = self._users.clock()
        with self._lock:
            seen = self._seen.get(token)
            if seen is None or seen.revision != self._users.revision:
                seen = self._read(token, seen)
                if seen is None:
                    return None
            why = self._expired(seen, now)
            if why:
                del self._seen[token]
                self._users.end_session(token, why)
                log.info("session of %s ended: %s", seen.user.name, why)
                return None
            seen.last_seen = max(seen.last_seen, now)
            if now - seen.stored >= self._touch_every:
                self._users.touch_session(token, now)
                seen.stored = now
            return seen.user

    def end(self, token: str, why: str) -> None:
        """End a session (logout, a new login in the same browser)."""
        with self._lock:
            self._seen.pop(token, None)
            self._users.end_session(token, why)

    def _read(self, token: str, before: _Seen | None) -> _Seen | None:
        # The revision is read first: a change committed meanwhile moves it again, and the
        # next request reads once more rather than trusting rows older than the change.
        revision = self._users.revision
        stored = self._users.session(token)
        if stored is None:
            self._seen.pop(token, None)
            return None
        # The time in memory is newer than the file's (written once a minute).
        last_seen = max(stored.last_seen, before.last_seen) if before else stored.last_seen
        seen = _Seen(stored.user, stored.created, last_seen, stored.last_seen, revision)
        self._seen[token] = seen
        return seen

    def _expired(self, seen: _Seen, now: datetime) -> str | None:
        if now >= seen.created + self.lifetime:
            return "lifetime"
        if now >= seen.last_seen + self.idle:
            return "idle"
        return None


@dataclass(frozen=True, slots=True)
class Attempt:
    """A login attempt: the client's address, the name tried, a known browser's id if any."""

    address: str
    name: str
    browser: str | None = None


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0


_Table = dict[Hashable, _Failures]


class LoginThrottle:
    """Slow password guessing down without letting anyone lock a user out.

    Past a free allowance, each failure doubles the wait before the next attempt, from 1 s up
    to `delay_max_s`; failures are forgotten after `window_s` without a new one. Failures are
    counted three ways, one per way of guessing:

    - per address (an IPv6 /64 is one), on all names: past `address_attempts` failures the
      address waits, whatever name it tries (one client guessing many names);
    - per name, from all addresses: an address that has failed `attempts` times on a name
      waits for the name's count (many clients guessing one name). An address that has not is
      never held up by it: failures elsewhere cannot lock the user out;
    - per known browser: a browser the user has logged in from before (its id cookie found in
      the user's sessions) trying that name skips both counts and waits for its own failures
      only, so a guesser sharing the user's address (NAT, terminal server, proxy) cannot lock
      them out.
    """

    def __init__(
        self,
        *,
        attempts: int = 5,
        address_attempts: int = 10,
        delay_max_s: float = 300,
        window_s: float = 900,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.attempts = attempts
        self.address_attempts = address_attempts
        self.delay_max_s = delay_max_s
        self.window_s = window_s
        self._clock = clock
        self._addresses: _Table = {}
        self._pairs: _Table = {}
        self._names: _Table = {}
        self._browsers: _Table = {}
        self._lock = threading.Lock()

    def wait_s(self, attempt: Attempt) -> float:
        """Return how long this attempt must wait before it is tried (0: try it now)."""
        now = self._clock()
        address = address_key(attempt.address)
        with self._lock:
            if attempt.browser is not None:
                return self._wait(self._browsers, attempt.browser, self.attempts, now)
            wait = self._wait(self._addresses, address, self.address_attempts, now)
            pair = self._get(self._pairs, (address, attempt.name), now)
            if pair is not None and pair.count >= self.attempts:
                wait = max(wait, self._wait(self._names, attempt.name, self.attempts, now))
            return wait

    def failed(self, attempt: Attempt) -> None:
        """Count a failed attempt."""
        now = self._clock()
        address = address_key(attempt.address)
        with self._lock:
            if attempt.browser is not None:
                self._count(self._browsers, attempt.browser, now)
                return
            self._count(self._addresses, address, now)
            self._count(self._pairs, (address, attempt.name), now)
            self._count(self._names, attempt.name, now)

    def succeeded(self, attempt: Attempt) -> None:
        """Forgive the failures this address or browser made on the name that logged in."""
        now = self._clock()
        address = address_key(attempt.address)
        with self._lock:
            if attempt.browser is not None:
                self._browsers.pop(attempt.browser, None)
            # The user's own typos; failures from there on other names stay counted.
            pair = self._pairs.pop((address, attempt.name), None)
            if pair is None:
                return
            for table, key in ((self._addresses, address), (self._names, attempt.name)):
                entry = self._get(table, key, now)
                if entry is not None:
                    entry.count -= pair.count
                    if entry.count <= 0:
                        del table[key]

    def _get(self, table: _Table, key: Hashable, now: float) -> _Failures | None:
        entry = table.get(key)
        if entry is not None and now - entry.last > self.window_s:
            del table[key]
            return None
        return entry

    def _wait(self, table: _Table, key: Hashable, free: int, now: float) -> float:
        entry = self._get(table, key, now)
        if entry is None or entry.count < free:
            return 0.0
        delay = min(self.delay_max_s, 2.0 ** min(entry.count - free, 60))
        return max(0.0, entry.last + delay - now)

    def _count(self, table: _Table, key: Hashable, now: float) -> None:
        # Re-inserted at each failure: the dict's order is then the order of last failures.
        entry = self._get(table, key, now)
        table.pop(key, None)
        entry = entry or _Failures()
        entry.count += 1
        entry.last = now
        table[key] = entry
        while len(table) > MAX_TRACKED:
            del table[next(iter(table))]


def _browser_id(cookie: str | None) -> str | None:
    """Return the browser's id from its cookie, or None for none or one not ours."""
    plain = (cookie or "").replace("-", "").replace("_", "")
    return cookie if cookie and len(cookie) <= 64 and plain.isascii() and plain.isalnum() else None


def session_secret(env_name: str, fallback: Path) -> bytes:
    """Return the session secret from the environment, or one generated and kept at first run."""
    return kept_secret(env_name, fallback)


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


_STYLE = """<style>body{font-family:system-ui,sans-serif;background:#1d2733;color:#eef;
display:flex;justify-content:center;align-items:center;height:100vh;margin:0}form,main{
background:#263445;padding:2em 2.5em;border-radius:8px;min-width:280px}h1{margin:0 0 .2em}
p.m{margin:0 0 1.5em;color:#9ab}label{display:block;margin:.8em 0 .3em}input{width:100%;
padding:.5em;box-sizing:border-box}button{margin-top:1.5em;width:100%;padding:.6em;
background:#2f7de1;color:#fff;border:0;border-radius:4px;font-size:1em}.e{color:#ff8f8f;
margin-top:1em}a{color:#8cc4ff}</style>"""


def _page(head_title: str, body: str, status: int) -> Response:
    """Wrap a small standalone page (login, refusals) in the HMI's look and language."""
    page = f"""<!doctype html><html lang="{current_locale()}"><head><meta charset="utf-8">
<title>{html.escape(head_title)}</title><meta name="viewport" content="width=device-width">
{_STYLE}</head><body>{body}</body></html>"""
    return Response(page, status, mimetype="text/html")


def _login_page(title: str, error: str = "", next_url: str = "/", status: int = 200) -> Response:
    e = html.escape
    said = f'<p class="e" id="login-error">{e(error)}</p>' if error else ""
    body = f"""<form method="post" action="/login" id="login-form">
<h1>Beffroi</h1><p class="m">{e(title)}</p>
<input type="hidden" name="next" value="{e(next_url)}">
<label for="username">{e(_("User"))}</label>
<input id="username" name="username" required autofocus>
<label for="password">{e(_("Password"))}</label>
<input id="password" name="password" type="password" required>
<button type="submit" id="login-submit">{e(_("Log in"))}</button>
{said}
</form>"""
    return _page(_("Beffroi — log in"), body, status)


def _refusal_page(status: int, heading: str, said: str) -> Response:
    """Render an HTTP refusal as a short page in the user's language, with a way back."""
    e = html.escape
    body = f"""<main id="error-page"><h1>{e(heading)}</h1><p class="m" id="error-text">{e(said)}</p>
<p><a href="/" id="error-home">{e(_("Back to the command post"))}</a></p></main>"""
    return _page(f"Beffroi — {heading}", body, status)


def _browser_locale() -> str:
    """Return the language a browser prefers among ours; French when it names none of them."""
    best = request.accept_languages.best_match(list(LOCALES))
    return best if best in LOCALES else DEFAULT_LOCALE


def _wants_page() -> bool:
    """Tell whether the request is a browser's page load (which deserves a page, not JSON)."""
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


def install_auth(
    server: Flask,
    users: UserStore,
    secret: bytes,
    *,
    title: str,
    session_hours: float = 12,
    session_idle_min: float = 30,
    throttle: LoginThrottle | None = None,
    audit: Recorder | None = None,
) -> None:
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
    sessions = Sessions(
        users, lifetime=timedelta(hours=session_hours), idle=timedelta(minutes=session_idle_min)
    )
    throttle = throttle or LoginThrottle()

    # The cookie (signed by Flask) carries only the session's token; who it is and whether it
    # still holds is the server's answer, at every request.
    @manager.user_loader
    def load_user(token: str) -> SessionUser | None:
        user = sessions.check(token)
        return SessionUser(user, token) if user else None

    @server.before_request
    def guard() -> BaseResponse | None:
        # Every request speaks its user's language; before login, what the browser prefers.
        if current_user.is_authenticated:
            set_request_locale(current_user.user.language)
            return None
        set_request_locale(_browser_locale())
        if _public(request.path):
            return None
        if _wants_page():
            return redirect(f"/login?next={request.full_path.rstrip('?')}")
        return Response('{"error": "login required"}', 401, mimetype="application/json")

    def refused(status: int, heading: str, said: str) -> Callable[[Exception], Any]:
        def handle(exc: Exception) -> Any:
            # Scripts and callbacks get the status as before; a browser gets a page it can read.
            if not _wants_page():
                return exc
            return _refusal_page(status, _(heading), _(said))

        return handle

    server.register_error_handler(
        403,
        refused(
            403,
            N_("Access refused"),
            N_("Your role or your communes do not give access to this."),
        ),
    )
    server.register_error_handler(
        404, refused(404, N_("Page not found"), N_("There is no page at this address."))
    )

    @server.post("/language")
    def choose_language() -> BaseResponse:
        user = current()
        language = request.form.get("language", "")
        try:
            users.set_language(user.name, language)
        except UserError:
            abort(400)
        log.info("%s chose the %s interface", user.name, language)
        record(user.name, "user.language", target=user.name, language=language, source="hmi")
        # Back to the page the form was on, now in the chosen language.
        back = urlparse(request.referrer or "/")
        return redirect(_safe_next(back.path + (f"?{back.query}" if back.query else "")))

    @server.get("/login")
    def login_form() -> Response:
        page = _login_page(title, next_url=_safe_next(request.args.get("next")))
        if _browser_id(request.cookies.get(BROWSER_COOKIE)) is None:
            page.set_cookie(
                BROWSER_COOKIE,
                secrets.token_urlsafe(16),
                max_age=BROWSER_COOKIE_DAYS * 86400,
                path="/login",
                secure=bool(server.config.get("SESSION_COOKIE_SECURE")),
                httponly=True,
                samesite="Strict",
            )
        return page

    @server.post("/login")
    def login_submit() -> BaseResponse:
        name = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        next_url = _safe_next(request.form.get("next"))
        if len(name) > USER_NAME_MAX or len(password) > PASSWORD_MAX or "\x00" in name:
            # No account has such a name or password: refused before any hashing or lookup.
            msg = _("Invalid user name or password.")
            return _login_page(title, msg, next_url, status=400)
        # The socket's address (or what a configured trusted proxy reports), never a header
        # the client writes itself.
        address = request.remote_addr or "?"
        browser = _browser_id(request.cookies.get(BROWSER_COOKIE))
        known = browser is not None and users.knows_browser(name, browser)
        attempt = Attempt(address, name.lower(), browser if known else None)
        wait = throttle.wait_s(attempt)
        if wait > 0:
            log.warning("login throttled for %s from %s", name, address)
            record(name, "login.throttled", "refused", address=address)
            msg = _("Too many attempts: try again in %(s)d s.") % {"s": math.ceil(wait)}
            page = _login_page(title, msg, next_url, status=429)
            page.headers["Retry-After"] = str(math.ceil(wait))
            return page
        user = users.verify(name, password)
        if user is None:
            throttle.failed(attempt)
            log.warning("failed login for %r from %s", name, address)
            record(name, "login.failed", "refused", address=address)
            return _login_page(title, _("Wrong user name or password."), next_url, 401)
        throttle.succeeded(attempt)
        previous = session.get("_user_id")
        if isinstance(previous, str):  # logging in again in the same browser
            sessions.end(previous, "replaced")
        session.clear()
        login_user(SessionUser(user, sessions.open(user.name, browser)))
        log.info("login: %s (%s) from %s", user.name, user.role, address)
        record(user.name, "login", address=address, role=user.role)
        return redirect(next_url)

    @server.route("/logout", methods=["GET", "POST"])
    def logout() -> BaseResponse:
        if current_user.is_authenticated:
            name = current_user.user.name
            sessions.end(current_user.get_id(), "logout")
            log.info("logout: %s", name)
            record(name, "logout", address=request.remote_addr or "?")
        logout_user()
        return redirect("/login")
