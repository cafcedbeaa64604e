"""The subset of JSON Schema the admin API declares its inputs with, and the check that enforces it.

One declaration per input serves both the OpenAPI document and validation, so the two never
disagree. Strings are refused when empty or when they hold control characters (a NUL in a
PostgreSQL text column is an error, and a newline in a name would split log lines).
"""

from __future__ import annotations

import re
from typing import Any

from hubproxy.errors import Invalid

MAX_OFFSET = 1_000_000_000
#: Longest string any admin input takes.
MAX_STRING = 1024
STR: dict[str, Any] = {"type": "string", "maxLength": MAX_STRING}
STR_LIST: dict[str, Any] = {"type": "array", "items": STR, "maxItems": 1000}
OBJ: dict[str, Any] = {"type": "object"}
LIST: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
REPO_TYPE = {"type": "string", "enum": ["model", "dataset", "space"]}
REPO_BODY = {"type": "object", "required": ["repo_id"], "additionalProperties": False,
             "properties": {"repo_type": REPO_TYPE, "repo_id": STR, "revision": STR}}
USER_BODY = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
    "name": STR, "kind": {"type": "string", "enum": ["user", "service"]}, "is_admin": {"type": "boolean"},
    "fullname": STR}}
TOKEN_BODY = {"type": "object", "required": ["user"], "additionalProperties": False, "properties": {
    "user": STR, "name": STR, "role": {"type": "string", "enum": ["read", "write"]},
    "expires_days": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 36500}}}
POLICY_PROPS = {"allow": STR_LIST, "deny": STR_LIST, "pull_new": {"type": "boolean"}}
PROJECT_BODY = {"type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {"name": STR, **POLICY_PROPS}}
POLICY_BODY = {"type": "object", "additionalProperties": False, "properties": POLICY_PROPS}
MEMBER_BODY = {"type": "object", "required": ["role"], "additionalProperties": False, "properties": {
    "role": {"type": "string", "enum": ["viewer", "developer", "maintainer"]}}}
PAGE_QUERY = {"limit": {"type": "integer", "minimum": 1, "maximum": 10000},
              "offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}}
TIME_QUERY = {"since": {"type": "number"}, "until": {"type": "number"}}
AUDIT_QUERY = {**TIME_QUERY, "user": STR, "repo": STR, **PAGE_QUERY,
               "format": {"type": "string", "enum": ["json", "jsonl", "csv"]}}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KINDS: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int,
                          "number": (int, float)}


def check(value: Any, schema: dict[str, Any], where: str) -> None:
    """Raise ``Invalid`` naming ``where`` unless ``value`` fits ``schema``."""
    expected = schema.get("type")
    if expected and (not isinstance(value, _KINDS[expected]) or (expected in ("integer", "number")
                                                                and isinstance(value, bool))):
        raise Invalid(f"{where} must be a {expected}")
    if "enum" in schema and value not in schema["enum"]:
        raise Invalid(f"{where} must be one of {', '.join(map(str, schema['enum']))}")
    if expected == "string":
        _check_string(value, schema, where)
    if expected in ("number", "integer"):
        _check_number(value, schema, where)
    if expected == "object":
        for name in schema.get("required", []):
            if name not in value:
                raise Invalid(f"{where}.{name} is required")
        props = schema.get("properties", {})
        for name, item in value.items():
            if name not in props:
                raise Invalid(f"{where}.{name} is not a known field")
            check(item, props[name], f"{where}.{name}")
    if expected == "array":
        if len(value) > schema.get("maxItems", 10_000):
            raise Invalid(f"{where} has more than {schema.get('maxItems', 10_000)} items")
        for i, item in enumerate(value):
            check(item, schema.get("items", {}), f"{where}[{i}]")


def _check_string(value: str, schema: dict[str, Any], where: str) -> None:
    if not value:
        raise Invalid(f"{where} must not be empty")
    if len(value) > schema.get("maxLength", MAX_STRING):
        raise Invalid(f"{where} is longer than {schema.get('maxLength', MAX_STRING)} characters")
    if _CONTROL.search(value):
        raise Invalid(f"{where} must not contain control characters")


def _check_number(value: float, schema: dict[str, Any], where: str) -> None:
    if value != value or abs(value) > 1e15:  # NaN, or beyond any time or count hubproxy stores
        raise Invalid(f"{where} is out of range")
    low = schema.get("minimum")
    if low is not None and (value < low or (schema.get("exclusiveMinimum") and value == low)):
        raise Invalid(f"{where} must be above {low}")
    if "maximum" in schema and value > schema["maximum"]:
        raise Invalid(f"{where} must be at most {schema['maximum']}")


def query_value(name: str, text: str, schema: dict[str, Any]) -> Any:
    """A query parameter converted to its declared type and checked."""
    value: Any = text
    kind = schema.get("type")
    if kind in ("integer", "number"):
        try:
            value = float(text) if kind == "number" else int(text)
        except ValueError:
            raise Invalid(f"{name} must be a{'n integer' if kind == 'integer' else ' number'}") from None
    check(value, schema, name)
    return value
