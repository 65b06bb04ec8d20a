"""Acquisition from equipment: a subpackage per protocol, on one collector base."""
