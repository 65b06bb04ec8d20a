"""MQTT: topic rules, JSON or plain payloads, commands confirmed by state topics (aiomqtt)."""
