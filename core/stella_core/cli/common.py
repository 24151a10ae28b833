"""What the command modules share: output, acting as the profile's person (with their
passphrase when their key is under one), and the flags' types: bounded whole numbers, finite
seconds, text PostgreSQL can store, times within years 1 to 9999, files to write."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stella_core.errors import DefinitionError, StellaError
from stella_core.limits import (
    INT32_MAX,
    MAX_LIST_ROWS,
    MAX_WAIT_SECONDS,
    seconds,
    shown,
    text_problem,
    whole_number,
)

Handler = Callable[[argparse.Namespace], Any]
# leaf(subparsers, name, handler, help) -> the command's parser, with --output and --profile.
Leaf = Callable[[Any, str, Handler, str], argparse.ArgumentParser]

ROLES = ["release-manager", "approver", "auditor", "admin"]


class UsageError(DefinitionError):
    pass


def show(args: argparse.Namespace, value: Any, text_lines: Callable[[], list[str]]) -> None:
    """JSON with `--output json`, else the human lines (made only when shown)."""
    if args.output == "json":
        json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
        sys.stdout.write("\n")
    else:
        for line in text_lines():
            print(line)


# What fixes an error (its `remedy`), said as the command that does it.
REMEDIES = {
    "registry-insecure": "stella registry add NAME --url URL --insecure",
    "keys-passphrase": "stella --profile {0} keys passphrase",
    "keys-rotate": "stella --profile {0} keys rotate",
    "user-add": "stella user add NAME --role ROLE",
    "db-upgrade": "stella db upgrade",
    "registry-add": "stella registry add NAME --url URL",
    "serve": "stella serve",
}


def error_text(exc: StellaError) -> str:
    """An error as the command line says it: the core names an input in words (its `field`,
    the desktop shows the same message), the command line names its flag instead, and adds the
    command that fixes it (its `remedy`)."""
    message = exc.message
    field = exc.field
    if field and not field.startswith("-"):
        flag = "--" + field.replace(" ", "-").replace("_", "-")
        if message.startswith(field):
            message = flag + message[len(field) :]
        else:
            message = f"{message} ({flag})"
    if exc.remedy and exc.remedy[0] in REMEDIES:
        message += f"; run '{REMEDIES[exc.remedy[0]].format(*exc.remedy[1:])}'"
    return message


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
    not a terminal (checked: not empty, no NUL)."""
    if not sys.stdin.isatty():
        return secret_line()
    try:
        first = getpass.getpass(f"New passphrase for {person}'s signing key: ")
        second = getpass.getpass("The same passphrase again: ")
    except EOFError as exc:
        raise DefinitionError("no passphrase given; nothing was changed") from exc
    if first != second:
        raise DefinitionError("the two passphrases differ; nothing was changed")
    return first


MAX_SECRET_LINE = 4096


def secret_line(what: str = "the passphrase") -> str:
    """One line of standard input, without its line ending: at most MAX_SECRET_LINE characters
    (standard input may be /dev/zero, which has no line end), UTF-8 and without NUL."""
    try:
        line = sys.stdin.readline(MAX_SECRET_LINE + 2)
    except UnicodeDecodeError:
        raise DefinitionError(f"{what} on standard input is not UTF-8 text") from None
    line = line.rstrip("\r\n")
    if len(line) > MAX_SECRET_LINE:
        raise DefinitionError(
            f"{what} on standard input is longer than {MAX_SECRET_LINE} characters"
        )
    problem = text_problem(line)
    if problem is not None:
        raise DefinitionError(f"{what} on standard input {problem}")
    return line


def time_flag(text: str, flag: str) -> datetime:
    """An ISO 8601 time with a timezone (`Z` accepted), within years 1 to 9999 in UTC (where
    Python's times end; PostgreSQL would store one past it, and nobody could read it back)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DefinitionError(
            f"{flag} {shown(text)} is not an ISO 8601 time with a year from 1 to 9999 "
            "(for example 2026-12-24T00:00:00Z)"
        ) from exc
    if value.tzinfo is None:
        raise DefinitionError(f"{flag} {shown(text)} needs a timezone (for example Z)")
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        raise DefinitionError(f"{flag} {shown(text)} is outside years 1 to 9999 in UTC") from exc
    return value


def _flag_type(check: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """An argparse type from a check that raises DefinitionError: argparse then says
    `argument --flag: <the check's message>`, one line, exit 2."""

    def parse(text: str) -> Any:
        try:
            return check(text)
        except DefinitionError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    parse.__name__ = name
    return parse


def number_flag(low: int, high: int) -> Callable[[str], int]:
    """A flag's type: a whole number from `low` to `high`."""
    return _flag_type(lambda text: whole_number(text, "", low=low, high=high), "whole number")


def seconds_flag(low: float, high: float) -> Callable[[str], float]:
    """A flag's type: a finite number of seconds from `low` to `high`."""
    return _flag_type(lambda text: seconds(text, "", low=low, high=high), "seconds")


def text_flag(text: str) -> str:
    """A flag's type for text that may reach PostgreSQL (the default for every flag and
    argument that is not a path): no NUL, and UTF-8 (Python decodes other bytes of a command
    line into lone surrogates, which no database driver can send)."""
    problem = text_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{shown(text)} {problem}")
    return text


def output_file(text: str, flag: str) -> Path:
    """A file to write: its directory exists and it is not itself a directory."""
    target = Path(text)
    if target.is_dir():
        raise DefinitionError(f"{flag} {text}: is a directory; name a file to write")
    if not target.parent.is_dir():
        raise DefinitionError(f"{flag} {text}: directory {target.parent} does not exist")
    return target


# Flags' ranges shared by several command modules: what the columns hold, and no more.
LIMIT = number_flag(1, MAX_LIST_ROWS)
VERSION = number_flag(1, INT32_MAX)
TIMEOUT = seconds_flag(0, MAX_WAIT_SECONDS)


def named_values(pairs: list[str], flag: str) -> dict[str, str]:
    """`NAME=VALUE` flags (`--label`, `--input`, given again for each) as a dict; a malformed
    or repeated name is a usage error naming the flag."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} needs NAME=VALUE, got {pair!r}")
        if name in found:
            raise UsageError(f"{flag} {name} is given twice")
        found[name] = value
    return found
