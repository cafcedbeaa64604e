"""Model cards: the YAML front matter of ``README.md`` as ``cardData`` and the fields repo info lifts from it.

The front matter is found with the same pattern the clients use (``docs/protocol.md``, "Model cards").
Invalid YAML is no error for repo info (the card simply has no data); ``POST /api/validate-yaml`` reports it.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import yaml

YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


class CardError(ValueError):
    """The README's front matter is not valid YAML (or not a mapping)."""


def _plain(value: Any) -> Any:
    """YAML dates and times as ISO strings (JSON cannot carry them); containers recursively."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def card_data(text: str) -> dict[str, Any] | None:
    """The front matter as a mapping; None without one; ``CardError`` when it is not valid."""
    match = YAML_BLOCK.match(text)
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        raise CardError(f"Invalid YAML in README.md front matter: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CardError("README.md front matter must be a YAML mapping")
    return _plain(data)


def info_fields(readme: bytes | None) -> dict[str, Any]:
    """What repo info shows from a README: ``cardData`` and the tags, library and pipeline it names."""
    if readme is None:
        return {"tags": []}
    try:
        data = card_data(readme.decode("utf-8", "replace"))
    except CardError:
        data = None
    if not data:
        return {"tags": []}
    tags = [str(t) for t in data.get("tags") or [] if isinstance(t, (str, int, float))]
    license_ = data.get("license")
    if isinstance(license_, str):
        tags.append(f"license:{license_}")
    out: dict[str, Any] = {"cardData": data, "tags": tags}
    for key in ("library_name", "pipeline_tag"):
        if isinstance(data.get(key), str):
            out[key] = data[key]
    return out
