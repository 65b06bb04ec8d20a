"""The domain: samples, qualities, tags, assets, the register, config base types, the seams.

Imports nothing else of Beffroi.
"""
