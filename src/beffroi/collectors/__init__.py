"""Acquisition from equipment: one module per protocol."""
