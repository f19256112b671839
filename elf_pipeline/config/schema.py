"""The config schema (workflow/schemas/config.schema.yaml): the one place config defaults are written.

Torch-free and cached: the Snakefile, the config resolvers and the stages read defaults from here
(``defaults("teachers", "*")``: the defaults of one teacher block) instead of repeating them.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from elf_pipeline.infra.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=4)
def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    import yaml

    with open(path) as handle:
        return yaml.safe_load(handle)


def _resolved(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


def _node(schema: dict, keys: tuple[str, ...]) -> dict:
    node = schema
    for index, key in enumerate(keys):
        node = _resolved(schema, node)
        node = node.get("additionalProperties") if key == "*" else node.get("properties", {}).get(key)
        if not isinstance(node, dict):
            raise ConfigError(f"config key {'.'.join(keys[:index + 1])}: not in the schema")
    return node


def subschema(*keys: str, schema: dict | None = None) -> dict:
    """The schema of the config value at ``keys`` (``"*"``: any key of a mapping, e.g. one teacher)."""
    schema = schema or load_schema()
    return _resolved(schema, _node(schema, keys))


def defaults(*keys: str, schema: dict | None = None) -> dict[str, Any]:
    """The schema defaults of the block at ``keys``, nested blocks with defaults included."""
    schema = schema or load_schema()
    out: dict[str, Any] = {}
    for name, prop in subschema(*keys, schema=schema).get("properties", {}).items():
        if "default" in prop or "default" in _resolved(schema, prop):  # a default may sit next to a $ref
            out[name] = copy.deepcopy(prop.get("default", _resolved(schema, prop).get("default")))
        elif "properties" in _resolved(schema, prop):
            nested = defaults(*keys, name, schema=schema)
            if nested:
                out[name] = nested
    return out


def default(*keys: str, schema: dict | None = None) -> Any:
    """The schema default of one config key."""
    schema = schema or load_schema()
    node = _node(schema, keys)
    node = node if "default" in node else _resolved(schema, node)
    if "default" not in node:
        raise ConfigError(f"config key {'.'.join(keys)}: the schema gives no default")
    return copy.deepcopy(node["default"])


def validate_schema(config: dict, schema_path: str | Path = SCHEMA_PATH) -> None:
    """JSON-schema validation with one line per problem: the key path and what is wrong."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema(schema_path))
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path).lstrip(".")
    key = key or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        raise ConfigError(f"config key {key + '.' if key != '(top level)' else ''}{extra[0] if extra else '?'}: "
                          f"unknown key{hint}")
    if isinstance(error.instance, str) and _number_text(error.instance):
        number = float(error.instance)
        why = ("YAML reads an exponent without a dot, like 1e-2, as a string" if "e" in error.instance.lower()
               else "it is quoted")
        raise ConfigError(f"config key {key}: {error.instance!r} is text, not a number ({why}); write "
                          f"{int(number) if number.is_integer() and 'e' not in error.instance.lower() else number!r}")
    message = error.message if len(error.message) < 200 else error.message[:200] + "..."
    raise ConfigError(f"config key {key}: {message}")


def _number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")
