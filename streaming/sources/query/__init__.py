"""Query-based capture: polling any SQLAlchemy database (the fallback when no log is readable)."""

__all__: list[str] = []
