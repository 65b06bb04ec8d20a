"""Named OPC UA status codes (Part 4, 7.34), the quality language of every collector.

The values are those of the OPC UA specification, as asyncua's `ua.StatusCodes` has them; core
keeps the few that Beffroi itself writes or maps to, so that no other module spells them in hex.
"""

from __future__ import annotations

BadResourceUnavailable = 0x80040000  # Modbus 6: server device busy
BadShutdown = 0x800C0000  # the gateway stopped: nothing is known from then on
BadNoCommunication = 0x80310000  # the link to the equipment is lost
BadNodeIdInvalid = 0x80330000  # a node id the server cannot parse
BadNodeIdUnknown = 0x80340000  # no such node (removed from the server); Modbus 2: bad address
BadOutOfRange = 0x803C0000  # Modbus 3: illegal data value
BadNotSupported = 0x803D0000  # Modbus 1: illegal function
BadDeviceFailure = 0x808B0000  # the equipment says it failed (Modbus 4, a jammed bollard)


def severity(code: int) -> int:
    """Return the code's severity bits: 0 Good, 1 Uncertain, 2 or 3 Bad."""
    return (code >> 30) & 0b11
