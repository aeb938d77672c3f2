"""Orchestration: Dagster as the control plane, with one `Definitions` object.

``definitions.py`` builds it; resources, jobs, assets, sensors and checks each have a module.
"""

__all__: list[str] = []
