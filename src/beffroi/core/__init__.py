"""Domain model, configuration, registry, scheduler and runtime: imports nothing else of Beffroi."""
