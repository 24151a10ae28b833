"""JSON Schemas shipped with the package (the template document, schema_version 1)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

TEMPLATE_SCHEMA_FILE = "template-v1.schema.json"


@functools.cache
def _text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def template_schema() -> dict[str, Any]:
    """The template document's JSON Schema; a fresh copy on each call (callers may change it)."""
    schema: dict[str, Any] = json.loads(_text(TEMPLATE_SCHEMA_FILE))
    return schema
