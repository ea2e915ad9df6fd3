"""Siyu (私域): the system of record for every WeChat customer relationship."""

__version__ = "0.1.0"
