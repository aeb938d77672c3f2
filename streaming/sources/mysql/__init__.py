"""Log-based capture from the MariaDB/MySQL row-based binlog."""

__all__: list[str] = []
