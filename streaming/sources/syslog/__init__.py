"""Syslog as a source: a listener producing log messages as insert events."""

__all__: list[str] = []
