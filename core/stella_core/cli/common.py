"""What the command modules share: output, acting as the profile's person, times from flags."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from stella_core.errors import DefinitionError


def out(args: argparse.Namespace, value: Any, lines: list[str]) -> None:
    """JSON with `--output json`, else the human lines."""
    if args.output == "json":
        json.dump(value, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        for line in lines:
            print(line)


@contextmanager
def acting(args: argparse.Namespace) -> Iterator[Any]:
    """The core, acting as the profile's person, closed (and the embedded server released)
    after."""
    from stella_core.bootstrap import Stella

    stella = Stella.open(args.profile)
    try:
        yield stella
    finally:
        stella.close()


def time_flag(text: str, flag: str) -> datetime:
    """An ISO 8601 time with a timezone (`Z` accepted)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DefinitionError(f"{flag} {text!r} is not an ISO 8601 time") from exc
    if value.tzinfo is None:
        raise DefinitionError(f"{flag} {text!r} needs a timezone (for example Z)")
    return value
