"""Bounds of what people and clients send: names, reasons, comments, messages, counts.

Every entry (HMI callbacks, the token API, the command line) checks what it takes against these
before any work or storage, and refuses with a one-line message: a 100 kB "reason" or a NUL in a
name is a mistake or an attack, never something to store, hash or display.
"""

from __future__ import annotations

import re

from beffroi.i18n import N_, _, fmt_number

USER_NAME_MAX = 64  # HMI accounts
PASSWORD_MAX = 1024  # hashing a longer one would cost the server, not protect anyone
COMMENT_MAX = 500  # alarm comments, setpoint and rule-change reasons
MESSAGE_MAX = 200  # text setpoints: information panels show at most this many characters
TAG_MAX = 200  # a tag name `commune/asset/signal`
TAGS_PER_QUERY = 500
ROWS_MAX = 100_000  # `limit` of a listing
POINTS_MAX = 100_000  # `max_points` of a downsampled query

# C0 and C1 control characters but tab and line feed: invisible, they make logs and audit
# records lie (a carriage return rewrites a terminal line, NUL truncates C strings).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_USER_NAME = re.compile(r"^[\w.@-]+$")

# The names of what is checked, as messages say them (translated when a refusal is written);
# a name not listed here (an API parameter such as `max_points`) is shown as it is.
FIELD_NAMES = (
    N_("name"),
    N_("reason"),
    N_("comment"),
    N_("user"),
    N_("user name"),
    N_("note"),
    N_("title"),
    N_("alarm id"),
    N_("attribute name"),
    N_("origin"),
)


def _field(what: str) -> str:
    """Name a checked field in the user's language; API parameters keep their own names."""
    return _(what) if what in FIELD_NAMES else what


def check_text(value: object, what: str, limit: int) -> str:
    """Return `value` if it is text within `limit` characters without control characters."""
    if not isinstance(value, str):
        raise ValueError(
            _("%(what)s: expected text, got %(type)s")
            % {"what": _field(what), "type": type(value).__name__}
        )
    if len(value) > limit:
        raise ValueError(
            _("%(what)s: at most %(limit)s characters (got %(n)s)")
            % {"what": _field(what), "limit": fmt_number(limit), "n": fmt_number(len(value))}
        )
    if _CONTROL.search(value):
        raise ValueError(_("%(what)s: control characters are not allowed") % {"what": _field(what)})
    return value


def check_user_name(value: object) -> str:
    """Return an account name: letters, digits, `.`, `_`, `@`, `-`; at most USER_NAME_MAX."""
    name = check_text(value, "user name", USER_NAME_MAX)
    if not _USER_NAME.match(name):
        raise ValueError(_("user name: letters, digits, '.', '_', '@' and '-' only"))
    return name


def check_count(value: object, what: str, low: int, high: int) -> int:
    """Return an integer within [low, high], or raise saying what was expected."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            _("%(what)s: expected a whole number, got %(value)s")
            % {"what": _field(what), "value": repr(value)}
        )
    if not low <= value <= high:
        raise ValueError(
            _("%(what)s: expected %(low)s to %(high)s, got %(value)s")
            % {"what": _field(what), "low": low, "high": high, "value": value}
        )
    return value
