"""ISA-18.2 alarm states as operators read them, in their language (the journal keeps codes)."""

from __future__ import annotations

from beffroi.i18n import N_, _

STATE_NAMES = {
    "normal": N_("normal"),
    "unack_active": N_("active, unacknowledged"),
    "ack_active": N_("active, acknowledged"),
    "unack_rtn": N_("returned, unacknowledged"),
    "shelved": N_("shelved"),
    "suppressed": N_("suppressed"),
    "out_of_service": N_("out of service"),
    "in_service": N_("in service"),
}


def state_name(state: str) -> str:
    """Return an alarm state's name in the user's language (an unknown code as it is)."""
    return _(STATE_NAMES[state]) if state in STATE_NAMES else state
