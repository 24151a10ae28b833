"""JSON Schemas (draft 2020-12) of the evidence predicates, shipped with the package.

One file per predicate type of our own, plus the profile of SLSA VSA v1 we emit. Auditors get
the same files in an export, so they can check predicates with any JSON Schema validator.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

SCHEMA_FILES = {
    "approval": "approval-v1.schema.json",
    "deployment": "deployment-v1.schema.json",
    "rollback": "rollback-v1.schema.json",
    "drift": "drift-v1.schema.json",
    "run": "run-v1.schema.json",
    "exception": "exception-v1.schema.json",
    "key": "key-v1.schema.json",
    "policy": "policy-v1.schema.json",
    "vsa": "vsa-v1-profile.schema.json",
}


@functools.cache
def schema_text(name: str) -> str:
    """The schema file's text, by short name (`run`, `approval`, … or `vsa`)."""
    return resources.files(__package__).joinpath(SCHEMA_FILES[name]).read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """A fresh copy of a schema (callers may change it)."""
    schema: dict[str, Any] = json.loads(schema_text(name))
    return schema
