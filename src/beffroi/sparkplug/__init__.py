"""MQTT Sparkplug B 3.0: the edge node and the primary host that join edges to a central site."""
