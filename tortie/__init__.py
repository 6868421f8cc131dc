"""Tortie: a Python implementation of the Calico container-networking system."""

__version__ = "0.1.0"
