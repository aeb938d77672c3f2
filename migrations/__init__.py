"""Migrations: cutover plans (copy, catch up, verify, fence, switch, roll back)."""

__all__: list[str] = []
