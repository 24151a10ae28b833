"""`stella` entry point. Exit codes: 0 success, 2 bad input (a missing or wrong passphrase too),
3 a refused decision, 1 other failures (reason on stderr).

Fast to start: only the command module of the group given is imported and its parser built
(the others appear as names with their help), and each command imports the core it needs when
it runs. `stella --help` imports no database driver, ORM or cryptography.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from stella_core import __version__
from stella_core.cli.common import Handler, UsageError, error_text, text_flag
from stella_core.errors import StellaError

# Every group or top-level command in the order `stella --help` lists them: name, help, the
# command module that builds it (its GROUPS[name]).
GROUPS: list[tuple[str, str, str]] = [
    ("db", "database schema and the embedded server", "db_cmds"),
    ("whoami", "who this profile acts as", "people_cmds"),
    ("user", "people", "people_cmds"),
    ("profile", "connection profiles", "people_cmds"),
    ("registry", "OCI registries", "release_cmds"),
    ("component", "components", "release_cmds"),
    ("release", "releases", "release_cmds"),
    ("env", "environments", "env_cmds"),
    ("target", "where environments deploy: agents, SSH and WinRM hosts", "target_cmds"),
    ("demo", "demo data", "audit_cmds"),
    ("audit", "the audit log", "audit_cmds"),
    ("workflow", "workflow templates", "workflow_cmds"),
    ("run", "workflow runs", "workflow_cmds"),
    ("evidence", "signed evidence packets", "evidence_cmds"),
    ("keys", "signing keys", "evidence_cmds"),
    ("promote", "request a promotion of a release", "promotion_cmds"),
    ("promotion", "promotions", "promotion_cmds"),
    ("approve", "approve a promotion (signed with your key)", "promotion_cmds"),
    ("reject", "reject a promotion (signed with your key)", "promotion_cmds"),
    ("rollback", "go back to the newest release every target still holds", "rollback_cmds"),
    ("agent", "agents: enrollment tokens, status, revocation", "agent_cmds"),
    ("drift", "drift: what runs on targets against what should", "drift_cmds"),
    ("serve", "run workflow workers until SIGTERM/SIGINT", "serve_cmds"),
]
_NAMES = {name for name, _, _ in GROUPS}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code 2 matches "bad input"
        raise UsageError(f"{self.prog}: {message}")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Text by default: every value a flag or argument takes is checked to be text
        PostgreSQL can store, unless it says otherwise (a path names a file: `type=str`)."""
        if kwargs.get("action", "store") in ("store", "append", "extend") and "type" not in kwargs:
            kwargs["type"] = text_flag
        return super().add_argument(*args, **kwargs)


class _PeekFailed(Exception):
    pass


class _Peek(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise _PeekFailed(message)


def _top_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="act as this person (a connection profile)")
    parser.add_argument("--verbose", "-v", action="store_true")


def chosen_group(argv: Sequence[str]) -> str | None:
    """The group the command line names, read with the top-level options the real parser has
    (abbreviations included); None when there is none or the line is malformed there."""
    peek = _Peek(prog="stella", add_help=False)
    _top_options(peek)
    peek.add_argument("group", nargs="?")
    try:
        known, _ = peek.parse_known_args(list(argv))
    except _PeekFailed:
        return None
    group = known.group
    return group if group in _NAMES else None


def build_parser(only: str | None = None, *, every: bool = True) -> argparse.ArgumentParser:
    """The command line's parser: every group in full (`every`), or only `only` in full and
    the others as their name and help (what `stella --help` and a mistyped group need)."""
    common = _Parser(add_help=False)
    common.add_argument("--output", "-o", choices=["text", "json"], default="text")
    common.add_argument(
        "--profile", default=argparse.SUPPRESS, help="act as this person (a connection profile)"
    )

    parser = _Parser(prog="stella", description="Stella Release Desk command line")
    parser.add_argument("--version", action="version", version=f"stella {__version__}")
    _top_options(parser)
    groups = parser.add_subparsers(dest="group", required=True, parser_class=_Parser)

    def leaf(sub: Any, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_)
        p.set_defaults(handler=handler)
        return p

    for name, help_, module in GROUPS:
        if every or name == only:
            commands = importlib.import_module(f"stella_core.cli.{module}")
            commands.GROUPS[name](groups, leaf, help_)
        else:
            groups.add_parser(name, help=help_)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from stella_core.cli import warm

    argv = sys.argv[1:] if argv is None else list(argv)
    group = chosen_group(argv)
    code = warm.run_warm(group, argv)
    if code is not None:
        return code
    try:
        return _main(group, argv)
    finally:
        warm.start_if_useful(group, argv)


def _main(group: str | None, argv: list[str]) -> int:
    try:
        parser = build_parser(group, every=False)
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        args.handler(args)
    except StellaError as exc:
        print(f"stella: error: {error_text(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stella: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure still gets a one-line reason and exit 1
        logging.getLogger("stella").debug("unexpected failure", exc_info=True)
        print(f"stella: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
