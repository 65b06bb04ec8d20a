"""Serve the simulated metropolis over a real asyncua OPC UA server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import Server, ua
from asyncua.server.address_space import NodeData

from beffroi.core.model import Value, utcnow
from beffroi.core.register import Register
from beffroi.simulator.config import SimulatorSite
from beffroi.simulator.physics import Metropolis
from beffroi.simulator.writes import EquipmentWrites

logger = logging.getLogger(__name__)


# asyncua annotates its structures' fields with encoding classes (ua.UInt32, ua.Int32, ua.String,
# ua.DateTime), while it documents, and itself passes, plain int, str and datetime.
def _nodeid(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    """Return the NodeId of a numeric or string identifier in a namespace."""
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]  # plain int/str are meant


GOOD = ua.StatusCode(ua.StatusCodes.Good)  # type: ignore[arg-type]  # plain int is meant
VARIANT = {
    "float": ua.VariantType.Double,
    "bool": ua.VariantType.Boolean,
    "str": ua.VariantType.String,
}
DATATYPE = {
    "float": _nodeid(ua.ObjectIds.Double),
    "bool": _nodeid(ua.ObjectIds.Boolean),
    "str": _nodeid(ua.ObjectIds.String),
}
ROOT = "Beffroi"
YIELD_EVERY = 2_000  # writes between yields to the loop, so clients are served during big ticks


def _stored(node: NodeData, attr: ua.AttributeIds) -> Any:
    """Return the value a node holds for an attribute it was created with."""
    dv = node.attributes[attr].value
    # AddNodes stores each attribute as a DataValue, which wraps its value in a Variant.
    assert dv is not None and dv.Value is not None
    return dv.Value.Value


def _object_item(
    nodeid: ua.NodeId, name: str, parent: ua.NodeId, *, folder: bool, display: str | None = None
) -> ua.AddNodesItem:
    """Describe a folder or a plain object organised under a folder."""
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(display or name)
    attrs.Description = ua.LocalizedText(display or name)
    return ua.AddNodesItem(
        ParentNodeId=parent,
        ReferenceTypeId=_nodeid(ua.ObjectIds.Organizes),
        RequestedNewNodeId=nodeid,
        BrowseName=ua.QualifiedName(name, nodeid.NamespaceIndex),
        NodeClass=ua.NodeClass.Object,
        NodeAttributes=attrs,
        TypeDefinition=_nodeid(ua.ObjectIds.FolderType if folder else ua.ObjectIds.BaseObjectType),
    )


def variable_item(
    nodeid: ua.NodeId, name: str, parent: ua.NodeId, kind: str, value: Value, writable: bool
) -> ua.AddNodesItem:
    """Describe a scalar data variable, a component of its asset."""
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.Description = ua.LocalizedText(name)
    attrs.DataType = DATATYPE[kind]
    attrs.Value = ua.Variant(value, VARIANT[kind])
    attrs.ValueRank = ua.ValueRank.Scalar
    access = ua.AccessLevel.CurrentRead.mask
    if writable:
        access |= ua.AccessLevel.CurrentWrite.mask
    attrs.AccessLevel = attrs.UserAccessLevel = access
    return ua.AddNodesItem(
        ParentNodeId=parent,
        ReferenceTypeId=_nodeid(ua.ObjectIds.HasComponent),
        RequestedNewNodeId=nodeid,
        BrowseName=ua.QualifiedName(name, nodeid.NamespaceIndex),
        NodeClass=ua.NodeClass.Variable,
        NodeAttributes=attrs,
        TypeDefinition=_nodeid(ua.ObjectIds.BaseDataVariableType),
    )


class MetropolisSimulator:
    """Run the simulated equipment of a register behind a real OPC UA server."""

    def __init__(
        self,
        cfg: SimulatorSite,
        register: Register,
        *,
        endpoint: str | None = None,
        seed: int | None = None,
        speed: float | None = None,
        start_time: datetime | None = None,
        physics: Metropolis | None = None,
        resume: Mapping[str, float] | None = None,
    ) -> None:
        sim = cfg.simulator
        if start_time is not None and start_time.tzinfo is None:
            raise ValueError("start_time must be timezone-aware")
        self._cfg, self._register = cfg, register
        self._endpoint = endpoint or sim.endpoint
        self._seed = sim.seed if seed is None else seed
        self._speed = sim.speed if speed is None else speed
        self._tick_s = sim.tick_s
        self._start_time = start_time
        self._server: Server | None = None
        # A metropolis already stepped (through its simulated history) goes on from its state.
        self._physics: Metropolis | None = physics
        self._resume = dict(resume or {})  # counters' last stored values (physics None)
        self._ns: int | None = None
        self._nodes: dict[str, tuple[ua.NodeId, ua.VariantType]] = {}
        self._pending: list[tuple[str, Any]] = []
        self._setpoints: set[str] = set()
        self._own: ua.DataValue | None = None
        self._t0_sim = utcnow()
        self._t0_mono = time.monotonic()
        self.build_seconds = 0.0

    @property
    def endpoint(self) -> str:
        """Return the opc.tcp URL the server listens on."""
        return self._endpoint

    @property
    def namespace_index(self) -> int:
        """Return the index of cfg.simulator.namespace in the server's namespace array."""
        if self._ns is None:
            raise RuntimeError("simulator not started")
        return self._ns

    @property
    def physics(self) -> Metropolis:
        """Return the simulated state behind the server."""
        if self._physics is None:
            raise RuntimeError("simulator not started")
        return self._physics

    def sim_now(self) -> datetime:
        """Return the simulated time now (UTC): real elapsed time times speed."""
        elapsed = (time.monotonic() - self._t0_mono) * self._speed
        return self._t0_sim + timedelta(seconds=elapsed)

    def node_id(self, tag: str) -> ua.NodeId:
        """Return the NodeId serving a tag: a string id equal to the tag name."""
        return self._nodes[tag][0]

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Build the address space, listen, and step the physics until the stack closes."""
        t0 = time.perf_counter()
        start = self._start_time or utcnow()
        self._t0_sim, self._t0_mono = start.astimezone(UTC), time.monotonic()
        if self._physics is None:
            self._physics = Metropolis(
                self._register,
                seed=self._seed,
                fault_rate_per_hour=self._cfg.simulator.fault_rate_per_hour,
                start=self._t0_sim,
                timezone=self._cfg.metropolis.timezone,
            )
            if self._resume:
                taken = self._physics.resume(self._resume)
                logger.info("simulator: %d counters go on from their stored values", taken)
        else:
            # The state the history ended in, brought up to now: the first values the server
            # shows join the history without a gap (counters go on from where they were).
            self._physics.step(self._t0_sim)
        server = Server()
        await server.init()
        server.set_endpoint(self._endpoint)
        server.set_server_name(f"Beffroi simulator - {self._cfg.metropolis.name}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self._ns = await server.register_namespace(self._cfg.simulator.namespace)
        self._server = server
        server.iserver.attribute_service = EquipmentWrites(server.iserver.aspace, self._refusal)
        await self._build_address_space()
        await server.start()
        stack.push_async_callback(self._stop_server)
        task = asyncio.create_task(self._run(), name="beffroi-simulator")
        stack.push_async_callback(self._cancel, task)
        self.build_seconds = time.perf_counter() - t0
        logger.info(
            "simulator serving %d tags on %s (ns=%d) after %.1f s, speed x%g",
            len(self._nodes),
            self._endpoint,
            self._ns,
            self.build_seconds,
            self._speed,
        )

    async def _build_address_space(self) -> None:
        """Add folders, asset objects and signal variables in bulk, then stamp initial values."""
        server, ns = self._server, self._ns
        assert server is not None and ns is not None and self._physics is not None
        root = _nodeid(ROOT, ns)
        folders = [_object_item(root, ROOT, _nodeid(ua.ObjectIds.ObjectsFolder), folder=True)]
        for c in self._register.communes.values():
            folders.append(_object_item(_nodeid(c.id, ns), c.id, root, folder=True, display=c.name))
        values = self._physics.values()
        writable: list[ua.NodeId] = []
        assets: list[ua.AddNodesItem] = []
        variables: list[ua.AddNodesItem] = []
        for a in self._register.assets.values():
            anode = _nodeid(f"{a.commune}/{a.id}", ns)
            assets.append(_object_item(anode, a.id, _nodeid(a.commune, ns), folder=False))
            for spec in a.tags:
                nid = _nodeid(spec.name, ns)
                self._nodes[spec.name] = (nid, VARIANT[spec.kind])
                value = values[spec.name]
                variables.append(
                    variable_item(nid, spec.signal, anode, spec.kind, value, spec.writable)
                )
                if spec.writable:
                    writable.append(nid)
                    self._setpoints.add(spec.name)
        self._add_nodes(folders)
        self._add_assets(assets)
        self._add_nodes(variables)
        for nid in writable:
            server.set_attribute_value_setter(nid, self._on_write)
        await self._publish(list(values.items()), self._t0_sim)

    def _add_nodes(self, items: list[ua.AddNodesItem]) -> None:
        """Add nodes through the server's own AddNodes service, failing loudly."""
        assert self._server is not None
        results = self._server.iserver.node_mgt_service.add_nodes(items)
        for item, r in zip(items, results, strict=True):
            if not r.StatusCode.is_good():
                raise RuntimeError(f"cannot create node {item.RequestedNewNodeId}: {r.StatusCode}")

    def _add_assets(self, items: list[ua.AddNodesItem]) -> None:
        """Add asset objects, linking them to their commune folder in linear time.

        AddNodes checks every existing reference of the parent for each new child, which is
        quadratic in a commune folder of thousands of assets (~35 s at 50,000 tags). Nodes are
        added parentless, then the Organizes reference pair is appended as AddNodes would.
        """
        assert self._server is not None
        aspace = self._server.iserver.aspace
        parents = [item.ParentNodeId for item in items]
        for item in items:
            item.ParentNodeId = ua.NodeId()
        failed = list(self._server.iserver.node_mgt_service.try_add_nodes(items, check=False))
        if failed:
            raise RuntimeError(f"cannot create asset node {failed[0].RequestedNewNodeId}")
        organizes, folder = _nodeid(ua.ObjectIds.Organizes), _nodeid(ua.ObjectIds.FolderType)
        for item, parent_id in zip(items, parents, strict=True):
            item.ParentNodeId = parent_id
            parent, child = aspace[parent_id], aspace[item.RequestedNewNodeId]
            parent.references.append(
                ua.ReferenceDescription(
                    ReferenceTypeId=organizes,
                    IsForward=True,
                    NodeId=child.nodeid,
                    BrowseName=item.BrowseName,
                    DisplayName=item.NodeAttributes.DisplayName,
                    NodeClass=ua.NodeClass.Object,
                    TypeDefinition=item.TypeDefinition,
                )
            )
            child.references.append(
                ua.ReferenceDescription(
                    ReferenceTypeId=organizes,
                    IsForward=False,
                    NodeId=parent_id,
                    BrowseName=_stored(parent, ua.AttributeIds.BrowseName),
                    DisplayName=_stored(parent, ua.AttributeIds.DisplayName),
                    NodeClass=ua.NodeClass.Object,
                    TypeDefinition=folder,
                )
            )

    def _refusal(self, nodeid: ua.NodeId) -> str | None:
        """Return why the equipment behind a setpoint node refuses a write now, or None."""
        tag = nodeid.Identifier
        # Setpoint nodes have string ids, their tag: a node with another id is none of them.
        if nodeid.NamespaceIndex != self._ns or not isinstance(tag, str):
            return None
        if tag not in self._setpoints:
            return None
        why = self.physics.refusal(tag)
        if why is not None:
            logger.info("refused a write to %s: %s", tag, why)
        return why

    def _on_write(self, node: NodeData, attr: ua.AttributeIds, dv: ua.DataValue) -> None:
        """Store a write to a setpoint node; queue it for the physics unless we wrote it."""
        if dv is not self._own:
            if dv.Value is not None and dv.Value.Value is not None:
                tag = node.nodeid.Identifier
                assert isinstance(tag, str)  # setpoint nodes are named by their tag (string ids)
                self._pending.append((tag, dv.Value.Value))
            if dv.SourceTimestamp is None:  # clients rarely stamp writes: stamp with sim time
                source_ts, server_ts = self.sim_now(), dv.ServerTimestamp or utcnow()
                dv = dataclasses.replace(
                    dv,
                    SourceTimestamp=source_ts,  # type: ignore[arg-type]  # plain datetime is meant
                    ServerTimestamp=server_ts,  # type: ignore[arg-type]  # plain datetime is meant
                )
        node.attributes[attr].value = dv

    async def _publish(self, changes: list[tuple[str, Value]], ts: datetime) -> None:
        """Write changed values to their nodes with source time = simulated time."""
        assert self._server is not None
        write = self._server.iserver.aspace.write_attribute_value
        attr, nodes, server_ts = ua.AttributeIds.Value, self._nodes, utcnow()
        for n, (tag, value) in enumerate(changes, 1):
            nid, vtype = nodes[tag]
            dv = ua.DataValue(
                ua.Variant(value, vtype),
                StatusCode=GOOD,
                SourceTimestamp=ts,  # type: ignore[arg-type]  # plain datetime is meant
                ServerTimestamp=server_ts,  # type: ignore[arg-type]  # plain datetime is meant
            )
            self._own = dv
            status = await write(nid, attr, dv)
            if not status.is_good():
                logger.error("cannot write %s = %r: %s", tag, value, status)
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        self._own = None

    async def tick(self) -> int:
        """Apply written setpoints, step the physics to now, publish; return values written."""
        physics = self.physics
        pending, self._pending = self._pending, []
        undone: list[tuple[str, Value]] = []
        for tag, value in pending:
            accepted = physics.set_setpoint(tag, value)
            logger.debug("setpoint %s = %r (accepted %r)", tag, value, accepted)
            if accepted is None:  # not taken after all: the node shows what the device holds
                undone.append((tag, physics.value(tag)))
        now = self.sim_now()
        changes = undone + physics.step(now)
        await self._publish(changes, now)
        return len(changes)

    async def _run(self) -> None:
        """Tick every tick_s real seconds; an overrun delays the next tick instead of bunching."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at = max(next_at + self._tick_s, loop.time())
            await asyncio.sleep(next_at - loop.time())
            try:
                await self.tick()
            except Exception:
                logger.exception("simulator tick failed; continuing")

    async def force_fault(self, asset_id: str, on: bool | None) -> None:
        """Force an asset's fault on or off now (None: back to random faults)."""
        changes = self.physics.force_fault(asset_id, on)
        await self._publish(changes, self.sim_now())

    def current(self, tag: str) -> Value:
        """Return the value the server currently holds for a tag."""
        assert self._server is not None
        dv = self._server.read_attribute_value(self._nodes[tag][0])
        assert dv.Value is not None  # a DataValue wraps its value, even None, in a Variant
        return dv.Value.Value

    @staticmethod
    async def _cancel(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _stop_server(self) -> None:
        if self._server is not None:
            await self._server.stop()
            logger.info("simulator on %s stopped", self._endpoint)
