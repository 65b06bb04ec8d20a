"""The Dash web HMI: map of the metropolis, trends, served by waitress in a background thread."""

from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer

__all__ = ["HmiServer", "create_app"]
