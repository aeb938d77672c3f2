"""Pydantic validation errors as messages a person can act on: field, value, fix."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["describe_errors"]

_SECRET_WORDS = ("password", "secret", "token", "credential", "salt")


def _field_description(model: Any, loc: tuple[Any, ...]) -> str | None:
    description = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return description
        info = fields[part]
        description = info.description
        model = info.annotation
    return description


def _shown(path: str, value: Any) -> str:
    if any(word in path for word in _SECRET_WORDS):
        return "**********"
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, str) and value:
        return value
    return repr(value)


def describe_errors(
    exc: ValidationError, model: type[BaseModel], source: str, env_prefix: str | None = None
) -> str:
    """One line per error naming the field, its value (secrets masked) and how to fix it.

    Args:
        exc: the validation error.
        model: the model validated (field descriptions become hints).
        source: where the values came from, e.g. 'sluiceway.yaml' or 'pipelines/shop.yaml'.
        env_prefix: if the values may also come from the environment, its variable prefix.
    """
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        if not loc:  # a rule across fields: its message names the fields
            lines.append(f"  {error['msg']}")
            continue
        path = ".".join(str(p) for p in loc)
        shown = _shown(path, error.get("input"))
        if error["type"] == "extra_forbidden":
            lines.append(
                f"  {path}: unknown setting (value {shown}); remove it or fix its spelling"
            )
            continue
        described = _field_description(model, loc)
        hint = f" ({described})" if described else ""
        if error["type"] == "missing":
            lines.append(f"  {path}: missing; add {path}{hint} in {source}")
            continue
        where = source
        if env_prefix:
            where += (
                " or the environment variable "
                + env_prefix
                + "__".join(str(p).upper() for p in loc)
            )
        lines.append(f"  {path} = {shown}: {error['msg']}\n    fix: set {path}{hint} in {where}")
    return "\n".join(lines)
