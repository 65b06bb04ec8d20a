"""Beffroi: supervision hypervisor and SCADA historian for a metropolis."""

__version__ = "0.1.0"
