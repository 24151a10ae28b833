"""What every part of the workflow store shares: the transaction it runs in."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection


class Rows:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn


def as_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)
