"""The composition root: the root config, the runtime that wires every part, the registry."""
