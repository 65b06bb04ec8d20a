"""Simulated metropolis equipment: vectorised physics served over a real OPC UA server."""
