"""Sources: capture from databases into change events (postgres/ now; mariadb and query next)."""

__all__: list[str] = []
