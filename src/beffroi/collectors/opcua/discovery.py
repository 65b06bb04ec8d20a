"""Find tags by browsing an OPC UA subtree `root/<commune>/<asset>/<signal>` and the templates."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from asyncua import Client, ua

from beffroi.collectors.opcua.items import OperationLimits, in_chunks, node_id, plain_nodeid
from beffroi.core.model import TagSpec, tag_name
from beffroi.core.site import AssetClassConfig

log = logging.getLogger(__name__)

_NODE_ID = re.compile(r"^(ns=\d+;)?[isgb]=")


@dataclass
class Discovered:
    """Tags found under the root, their node ids, their assets, and what was skipped and why."""

    nodes: dict[str, ua.NodeId] = field(default_factory=dict)
    tags: list[TagSpec] = field(default_factory=list)
    assets: dict[str, tuple[str, str]] = field(default_factory=dict)  # id → (commune, class)
    skipped: Counter[str] = field(default_factory=Counter)


async def resolve_root(client: Client, root: str, ns: int) -> ua.NodeId:
    """Return the node of a node-id string, or of a browse path under Objects."""
    if _NODE_ID.match(root):
        return ua.NodeId.from_string(root)
    parts = [p for p in root.strip("/").split("/") if p]
    if parts and parts[0] in ("Objects", "0:Objects"):
        parts = parts[1:]
    path = [p if re.match(r"^\d+:", p) else f"{ns}:{p}" for p in parts]
    node = await client.nodes.objects.get_child(path) if path else client.nodes.objects
    return node.nodeid


async def _children(
    client: Client, parents: list[ua.NodeId], mask: int, size: int
) -> list[list[ua.ReferenceDescription]]:
    """Browse the hierarchical children of many nodes, following continuation points."""

    def describe(nid: ua.NodeId) -> ua.BrowseDescription:
        return ua.BrowseDescription(
            NodeId=nid,
            BrowseDirection=ua.BrowseDirection.Forward,
            ReferenceTypeId=node_id(ua.ObjectIds.HierarchicalReferences),
            IncludeSubtypes=True,
            NodeClassMask=mask,
            ResultMask=ua.BrowseResultMask.All,
        )

    async def browse(part: list[ua.BrowseDescription]) -> list[ua.BrowseResult]:
        params = ua.BrowseParameters(NodesToBrowse=part)
        params.RequestedMaxReferencesPerNode = 0
        return await client.uaclient.browse(params)

    results = await in_chunks([describe(p) for p in parents], size, browse, "browse nodes")
    out: list[list[ua.ReferenceDescription]] = []
    for res in results:
        refs = list(res.References or [])
        point = res.ContinuationPoint
        while point:
            params = ua.BrowseNextParameters(ReleaseContinuationPoints=False)
            params.ContinuationPoints = [point]
            more = (await client.uaclient.browse_next(params))[0]
            refs.extend(more.References or [])
            point = more.ContinuationPoint
        out.append(refs)
    return out


def _class_by_prefix(classes: Mapping[str, AssetClassConfig]) -> dict[str, str]:
    return {c.prefix: cid for cid, c in classes.items()}


async def discover(
    client: Client,
    root: ua.NodeId,
    classes: Mapping[str, AssetClassConfig],
    communes: Sequence[str],
    wanted_classes: Sequence[str],
    limits: OperationLimits,
    chunk_size: int,
) -> Discovered:
    """Map `root/<commune>/<asset>/<signal>` variables to tags through the class templates.

    The asset's class is the one whose prefix starts the asset id (`LC-0412` → `LC`), as in the
    register; variables that are not signals of that class are skipped and counted.
    """
    size = limits.chunk(limits.nodes_per_browse, chunk_size)
    objects = ua.NodeClass.Object.value
    found = Discovered()
    by_prefix = _class_by_prefix(classes)
    [commune_refs] = await _children(client, [root], objects, size)
    commune_nodes = []
    for ref in commune_refs:
        cid = ref.BrowseName.Name
        if cid not in communes:
            found.skipped["unknown commune"] += 1
            continue
        commune_nodes.append((cid, plain_nodeid(ref.NodeId)))
    asset_lists = await _children(client, [n for _, n in commune_nodes], objects, size)
    assets: list[tuple[str, str, str, ua.NodeId]] = []
    for (cid, _), refs in zip(commune_nodes, asset_lists, strict=True):
        for ref in refs:
            aid = ref.BrowseName.Name
            class_id = by_prefix.get(aid.split("-", 1)[0])
            if class_id is None:
                found.skipped["no asset class for the id prefix"] += 1
                continue
            if wanted_classes and class_id not in wanted_classes:
                continue
            assets.append((cid, aid, class_id, plain_nodeid(ref.NodeId)))
            found.assets[aid] = (cid, class_id)
    variables = ua.NodeClass.Variable.value
    signal_lists = await _children(client, [a[3] for a in assets], variables, size)
    for (cid, aid, class_id, _), refs in zip(assets, signal_lists, strict=True):
        templates = {s.name: s for s in classes[class_id].signals}
        for ref in refs:
            sig = templates.get(ref.BrowseName.Name)
            if sig is None:
                found.skipped["not a signal of the class"] += 1
                continue
            name = tag_name(cid, aid, sig.name)
            found.nodes[name] = plain_nodeid(ref.NodeId)
            found.tags.append(
                TagSpec(
                    name=name,
                    asset=aid,
                    commune=cid,
                    signal=sig.name,
                    kind=sig.kind,
                    unit=sig.unit,
                    writable=sig.writable,
                    low=sig.low,
                    high=sig.high,
                    interval_s=sig.interval_s,
                )
            )
    return found
