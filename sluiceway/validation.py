"""Pydantic validation errors as messages a person can act on: field, value, fix."""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

__all__ = ["describe_errors", "load_spec"]

Spec = TypeVar("Spec", bound=BaseModel)

_SECRET_WORDS = ("password", "secret", "token", "credential", "salt")


def _members(annotation: Any) -> list[Any]:
    """The models an annotation may hold: itself, a union's members, a list's items."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    if origin in (list, tuple, set, dict):
        args = get_args(annotation)
        return _members(args[-1]) if args else []
    return [annotation]


def _tag(model: Any) -> str | None:
    fields = getattr(model, "model_fields", {})
    for name in ("kind", "type"):
        if name in fields and isinstance(fields[name].default, str):
            return str(fields[name].default)
    return None


def _walk(model: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], str | None]:
    """The location without union tags (``source.postgres.x`` is ``source.x``), and the
    description of the field it ends at."""
    shown: list[Any] = []
    description = None
    candidates = [model]
    for part in loc:
        if isinstance(part, int):  # a list index
            shown.append(part)
            continue
        tagged = [m for m in candidates if _tag(m) == part]
        if len(candidates) > 1 and tagged:  # a discriminated union's tag: not a field
            candidates = tagged
            continue
        shown.append(part)
        found = next(
            (m.model_fields[part] for m in candidates if part in getattr(m, "model_fields", {})),
            None,
        )
        if found is None:
            candidates = []
            description = None
            continue
        description = found.description
        candidates = _members(found.annotation)
    return tuple(shown), description


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
        loc, described = _walk(model, tuple(error["loc"]))
        if not loc:  # a rule across fields: its message names the fields
            lines.append(f"  {error['msg']}")
            continue
        path = ".".join(str(p) for p in loc)
        shown = _shown(path, error.get("input"))
        if error["type"] == "union_tag_invalid":  # name the tag field and its value
            context = error.get("ctx", {})
            path += "." + str(context.get("discriminator", "kind")).strip("'")
            shown = str(context.get("tag"))
        if error["type"] == "extra_forbidden":
            lines.append(
                f"  {path}: unknown setting (value {shown}); remove it or fix its spelling"
            )
            continue
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


def load_spec(name_or_path: str | Path, directory: Path, model: type[Spec], what: str) -> Spec:
    """A YAML specification by name (``<directory>/<name>.yaml``) or by path, validated.

    Raises:
        ConfigError: the file is missing (the known names listed), not YAML, not a mapping,
            or invalid (each field with its value and fix).
    """
    import yaml

    from sluiceway.errors import ConfigError

    path = Path(name_or_path)
    if not path.suffix:
        path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(path.parent.glob("*.yaml"))) or "none"
        raise ConfigError(f"no {what} {str(name_or_path)!r} ({path} is missing); known: {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        fields = ", ".join(list(model.model_fields)[:4])
        raise ConfigError(f"{path} must hold a mapping ({fields}, ...)")
    try:
        return model(**data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid {what} {path}:\n" + describe_errors(exc, model, str(path))
        ) from None
