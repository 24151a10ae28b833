"""What the command modules share: output, acting as the profile's person (with their
passphrase when their key is under one), times from flags."""

from __future__ import annotations

import argparse
import getpass
import json
import os
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


PASSPHRASE_ENV = "STELLA_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)


@contextmanager
def acting(args: argparse.Namespace) -> Iterator[Any]:
    """The core, acting as the profile's person, closed (and the embedded server released)
    after. A key under the person's own passphrase is opened with `ask_passphrase`."""
    from stella_core.bootstrap import Stella

    stella = Stella.open(args.profile)
    stella.local_keys.ask = ask_passphrase
    try:
        yield stella
    finally:
        stella.close()


def ask_passphrase(person: str) -> str:
    """The passphrase of `person`'s key, when signing needs it: STELLA_PASSPHRASE, else asked on
    the terminal, else a clear error (exit 2) saying how to give it."""
    from stella_core.tenancy.keys import PassphraseRequiredError

    given = os.environ.get(PASSPHRASE_ENV)
    if given:
        return given
    if sys.stdin.isatty():
        try:
            return getpass.getpass(f"Passphrase of {person}'s signing key: ")
        except EOFError:
            pass
    raise PassphraseRequiredError(
        f"{person}'s signing key is protected by their own passphrase: give it in "
        f"{PASSPHRASE_ENV}, or run this from a terminal to be asked for it"
    )


def new_passphrase(person: str) -> str:
    """A new passphrase: typed twice on the terminal, or one line of standard input when that is
    not a terminal (checked by the core: not empty, no NUL)."""
    if not sys.stdin.isatty():
        return passphrase_line()
    try:
        first = getpass.getpass(f"New passphrase for {person}'s signing key: ")
        second = getpass.getpass("The same passphrase again: ")
    except EOFError as exc:
        raise DefinitionError("no passphrase given; nothing was changed") from exc
    if first != second:
        raise DefinitionError("the two passphrases differ; nothing was changed")
    return first


def passphrase_line() -> str:
    """One line of standard input, without its line ending."""
    return sys.stdin.readline().rstrip("\r\n")


def time_flag(text: str, flag: str) -> datetime:
    """An ISO 8601 time with a timezone (`Z` accepted)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DefinitionError(f"{flag} {text!r} is not an ISO 8601 time") from exc
    if value.tzinfo is None:
        raise DefinitionError(f"{flag} {text!r} needs a timezone (for example Z)")
    return value
