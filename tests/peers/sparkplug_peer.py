"""A Sparkplug B peer Beffroi did not write: pysparkplug, in its own virtualenv (.venv-peer).

pysparkplug needs paho-mqtt 1.x, which Beffroi's aiomqtt does not take: this runs apart, as
another vendor's node or host would, and speaks to Beffroi only through the broker.

  edge HOST PORT GROUP NODE DEVICE TAG VALUE   an edge node with one device and one Double
      metric; prints "born", then applies each DCMD to its metric and reports it (DDATA).
  host HOST PORT GROUP HOST_ID                 a primary host: STATE online, then one JSON
      line per message received (type, device, metrics with name, value, historical).
"""

from __future__ import annotations

import json
import sys
import time

import pysparkplug as psp


def out(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def edge(
    host: str, port: int, group: str, node_id: str, device_id: str, tag: str, value: float
) -> None:
    node = psp.EdgeNode(group, node_id, metrics=[])

    def on_command(edge_node: psp.EdgeNode, message: psp.Message) -> None:
        for m in message.payload.metrics:
            name = m.name or tag
            out(event="dcmd", name=name, value=m.value)
            now = psp.get_current_timestamp()
            edge_node.update_device(
                device_id, [psp.Metric(now, name, psp.DataType.DOUBLE, value=float(m.value))]
            )

    metric = psp.Metric(psp.get_current_timestamp(), tag, psp.DataType.DOUBLE, value=value)
    node.register(psp.Device(device_id, [metric], cmd_callback=on_command))
    node.connect(host, port=port, keepalive=5, blocking=False)
    time.sleep(1.0)
    out(event="born")
    for line in sys.stdin:  # each line: a new value to publish (end of input: stop)
        now = psp.get_current_timestamp()
        node.update_device(
            device_id, [psp.Metric(now, tag, psp.DataType.DOUBLE, value=float(line))]
        )
        out(event="sent", value=float(line))
    node.disconnect()


def host(host: str, port: int, group: str, host_id: str) -> None:
    client = psp.Client(client_id=f"peer-host-{host_id}")
    state = psp.Topic(message_type=psp.MessageType.STATE, sparkplug_host_id=host_id)

    def on_message(_client: psp.Client, message: psp.Message) -> None:
        topic, payload = message.topic, message.payload
        metrics = [
            {"name": m.name, "value": m.value, "historical": m.is_historical}
            for m in getattr(payload, "metrics", ())
            if m.name != "bdSeq" and m.name != "Node Control/Rebirth"
        ]
        out(
            type=str(topic.message_type),
            node=topic.edge_node_id,
            device=topic.device_id,
            metrics=metrics,
        )

    def on_connect(c: psp.Client) -> None:
        c.publish(
            psp.Message(
                state,
                psp.State(psp.get_current_timestamp(), True),
                qos=psp.QoS.AT_LEAST_ONCE,
                retain=True,
            )
        )
        out(event="online")

    client.set_will(
        psp.Message(
            state,
            psp.State(psp.get_current_timestamp(), False),
            qos=psp.QoS.AT_LEAST_ONCE,
            retain=True,
        )
    )
    client.subscribe(
        psp.Topic(group_id=group, message_type=psp.MULTI_LEVEL_WILDCARD),
        psp.QoS.AT_LEAST_ONCE,
        on_message,
    )
    client.connect(host, port=port, keepalive=5, blocking=False, callback=on_connect)
    for _ in sys.stdin:  # runs until its input closes
        pass
    client.disconnect()


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "edge":
        edge(args[0], int(args[1]), args[2], args[3], args[4], args[5], float(args[6]))
    else:
        host(args[0], int(args[1]), args[2], args[3])
