"""OPC UA monitored items: per-tag settings, server limits, deadbands, chunked creation."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from asyncua import Client, ua

from beffroi.collectors.opcua.config import OpcUaCollectorConfig
from beffroi.core.model import TagSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ItemSettings:
    """How one tag is sampled: interval, server queue and deadband."""

    sampling_interval_ms: float
    queue_size: int
    deadband_type: str = "none"
    deadband: float = 0.0


def item_settings(tags: Sequence[TagSpec], cfg: OpcUaCollectorConfig) -> dict[str, ItemSettings]:
    """Resolve each tag's settings: the first rule whose glob matches wins, else the defaults."""
    default = ItemSettings(float(cfg.publishing_interval_ms), cfg.queue_size)
    cache: dict[int, ItemSettings] = {}
    out: dict[str, ItemSettings] = {}
    for spec in tags:
        for i, rule in enumerate(cfg.rules):
            if fnmatch.fnmatchcase(spec.name, rule.match):
                settings = cache.get(i)
                if settings is None:
                    settings = cache[i] = ItemSettings(
                        default.sampling_interval_ms
                        if rule.sampling_interval_ms is None
                        else rule.sampling_interval_ms,
                        rule.queue_size or default.queue_size,
                        rule.deadband_type,
                        rule.deadband,
                    )
                break
        else:
            settings = default
        # Deadbands apply to numbers only; servers refuse a filter on booleans and text.
        if spec.kind != "float" and settings.deadband_type != "none":
            settings = ItemSettings(settings.sampling_interval_ms, settings.queue_size)
        out[spec.name] = settings
    return out


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """The server's per-call limits (0 means none announced)."""

    monitored_items_per_call: int = 0
    nodes_per_read: int = 0
    nodes_per_browse: int = 0
    nodes_per_translate: int = 0

    def chunk(self, limit: int, configured: int) -> int:
        """Return how many operations to send per call: the configured size, capped by the limit."""
        return min(configured, limit) if limit > 0 else configured


def node_id(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    """Return the NodeId of a numeric or string identifier in a namespace."""
    # asyncua annotates NodeId's fields with its encoding classes (ua.Int32, ua.String,
    # ua.Int16), while it documents, and itself passes, plain int and str.
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]  # plain int/str are meant


_LIMIT_NODES = (
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds,
)


async def read_limits(client: Client) -> OperationLimits:
    """Read Server/ServerCapabilities/OperationLimits; a limit the server lacks counts as none."""
    params = ua.ReadParameters()
    params.NodesToRead = [
        ua.ReadValueId(NodeId=node_id(n), AttributeId=ua.AttributeIds.Value) for n in _LIMIT_NODES
    ]
    results = await client.uaclient.read(params)
    values = []
    for dv in results:
        ok = dv.StatusCode is None or dv.StatusCode.is_good()
        raw = dv.Value.Value if ok and dv.Value is not None else 0
        values.append(int(raw) if isinstance(raw, int) and raw > 0 else 0)
    return OperationLimits(*values)


def plain_nodeid(nid: ua.NodeId) -> ua.NodeId:
    """Return a NodeId without the server index and namespace URI of an ExpandedNodeId."""
    return ua.NodeId(nid.Identifier, nid.NamespaceIndex, nid.NodeIdType)


def chunks(items: list[T], size: int) -> list[list[T]]:
    """Split a list into consecutive pieces of at most `size` items."""
    return [items[i : i + size] for i in range(0, len(items), size)]


async def in_chunks(
    items: list[T], size: int, call: Callable[[list[T]], Awaitable[list[R]]], what: str
) -> list[R]:
    """Send items in calls of at most `size`, halving it when the server says too many."""
    out: list[R] = []
    i = 0
    while i < len(items):
        part = items[i : i + size]
        try:
            out.extend(await call(part))
        except ua.UaStatusCodeError as exc:
            # Some servers announce no limit (or a wrong one) and refuse big calls anyway.
            if exc.code != ua.StatusCodes.BadTooManyOperations or size == 1:
                raise
            size = max(1, size // 2)
            log.info("server refused %d %s in one call; sending %d per call", len(part), what, size)
            continue
        i += len(part)
    return out


async def read_eu_ranges(
    client: Client, nodes: dict[str, ua.NodeId], limits: OperationLimits, chunk_size: int
) -> dict[str, tuple[float, float]]:
    """Read the EURange property (low, high) of the given nodes, where the server has one."""
    tags = list(nodes)
    path = ua.RelativePath(
        Elements=[
            ua.RelativePathElement(
                ReferenceTypeId=node_id(ua.ObjectIds.HasProperty),
                # asyncua annotates these with ua.Boolean, a marker class no bool is an instance of.
                IsInverse=False,  # type: ignore[arg-type]  # asyncua: ua.Boolean means bool
                IncludeSubtypes=True,  # type: ignore[arg-type]  # asyncua: ua.Boolean means bool
                TargetName=ua.QualifiedName("EURange", 0),
            )
        ]
    )
    requests = [ua.BrowsePath(StartingNode=nodes[t], RelativePath=path) for t in tags]
    size = limits.chunk(limits.nodes_per_translate, chunk_size)
    results = await in_chunks(
        requests, size, client.uaclient.translate_browsepaths_to_nodeids, "browse paths"
    )
    found = {
        t: plain_nodeid(r.Targets[0].TargetId)
        for t, r in zip(tags, results, strict=True)
        if r.StatusCode.is_good() and r.Targets
    }
    if not found:
        return {}
    names = list(found)
    reads = [ua.ReadValueId(NodeId=found[t], AttributeId=ua.AttributeIds.Value) for t in names]

    async def read(part: list[ua.ReadValueId]) -> list[ua.DataValue]:
        return await client.uaclient.read(ua.ReadParameters(NodesToRead=part))

    values = await in_chunks(reads, limits.chunk(limits.nodes_per_read, chunk_size), read, "reads")
    out: dict[str, tuple[float, float]] = {}
    for t, dv in zip(names, values, strict=True):
        rng = dv.Value.Value if dv.Value is not None else None
        if isinstance(rng, ua.Range) and rng.High > rng.Low:
            out[t] = (float(rng.Low), float(rng.High))
    return out


def absolute_deadband(
    settings: ItemSettings, spec: TagSpec, eu_range: tuple[float, float] | None
) -> float | None:
    """Return the absolute deadband of a tag, converting a percent of its EURange."""
    if settings.deadband_type == "absolute":
        return settings.deadband
    if settings.deadband_type != "percent":
        return None
    low, high = eu_range or (spec.low, spec.high)
    if low is None or high is None or high <= low:
        return None
    return settings.deadband / 100.0 * (high - low)


def data_change_filter(deadband: float | None) -> ua.DataChangeFilter | None:
    """Build the filter that reports a change of status or a value move beyond the deadband."""
    if deadband is None:
        return None
    flt = ua.DataChangeFilter()
    flt.Trigger = ua.DataChangeTrigger.StatusValue
    flt.DeadbandType = ua.DeadbandType.Absolute
    flt.DeadbandValue = float(deadband)
    return flt


def monitored_item_request(
    nodeid: ua.NodeId, handle: int, settings: ItemSettings, flt: ua.DataChangeFilter | None
) -> ua.MonitoredItemCreateRequest:
    """Describe one monitored item of a tag's Value attribute."""
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = settings.sampling_interval_ms
    params.QueueSize = settings.queue_size
    params.DiscardOldest = True
    if flt is not None:
        params.Filter = flt
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=nodeid, AttributeId=ua.AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=params,
    )
