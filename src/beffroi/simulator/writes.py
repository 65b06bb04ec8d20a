"""The simulator's OPC UA Write service: equipment may refuse a write, node by node."""

from __future__ import annotations

from collections.abc import Callable

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AddressSpace, AttributeService

ADMIN = User(role=UserRole.Admin)  # asyncua's default user: the server's own writes


class EquipmentWrites(AttributeService):
    """The server's Write service, asking the equipment first: a jammed one refuses the write."""

    def __init__(self, aspace: AddressSpace, refusal: Callable[[ua.NodeId], str | None]) -> None:
        super().__init__(aspace)
        self._refusal = refusal

    async def write(self, params: ua.WriteParameters, user: User = ADMIN) -> list[ua.StatusCode]:
        """Refuse value writes the equipment does not take; do the others as asyncua does."""
        out: list[ua.StatusCode] = []
        for item in params.NodesToWrite:
            # A node closed to writes is refused by the server first, as it would be anyway.
            why = self._refusal(item.NodeId) if self._open(item) else None
            if why is not None:
                # asyncua annotates a StatusCode's value with ua.UInt32, an int subclass.
                code = ua.StatusCodes.BadDeviceFailure
                out.append(ua.StatusCode(code))  # type: ignore[arg-type]  # plain int is meant
            else:
                out += await super().write(ua.WriteParameters(NodesToWrite=[item]), user)
        return out

    def _open(self, item: ua.WriteValue) -> bool:
        if item.AttributeId != ua.AttributeIds.Value:
            return False
        access = self._aspace.read_attribute_value(item.NodeId, ua.AttributeIds.AccessLevel)
        level = access.Value.Value if access.Value is not None else None
        return isinstance(level, int) and bool(level & ua.AccessLevel.CurrentWrite.mask)
