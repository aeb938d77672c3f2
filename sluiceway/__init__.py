"""Sluiceway: log-based change data capture through Kafka into warehouses, run by Dagster.

The core shared by every stage of the data path: settings, errors and client construction.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
