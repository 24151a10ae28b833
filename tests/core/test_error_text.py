"""Core errors name inputs in words (the desktop shows them as they are); the command line says
the same error with its own flag."""

from __future__ import annotations

import re

import pytest

from stella_core.cli.common import error_text
from stella_core.errors import DefinitionError, NotFoundError
from stella_core.limits import check_text, in_range


def test_a_range_error_names_the_input_in_words_and_the_cli_names_the_flag() -> None:
    with pytest.raises(DefinitionError) as caught:
        in_range(1001, "required approvals", low=0, high=1000, field="required approvals")
    assert "--" not in caught.value.message
    assert caught.value.message.startswith("required approvals 1001 is out of range")
    assert error_text(caught.value).startswith("--required-approvals 1001 is out of range")


def test_a_text_error_says_its_flag_on_the_command_line_only() -> None:
    with pytest.raises(DefinitionError) as caught:
        check_text("year\x00end", "reason", field="reason")
    assert caught.value.message == "reason contains a NUL character, which text may not hold"
    assert error_text(caught.value) == (
        "--reason contains a NUL character, which text may not hold"
    )


def test_a_message_about_an_input_gets_the_flag_as_a_hint() -> None:
    error = DefinitionError("a rejection needs a reason", field="reason")
    assert error_text(error) == "a rejection needs a reason (--reason)"
    prefixed = NotFoundError("approver: no such person: nobody", field="approver")
    assert error_text(prefixed) == "--approver: no such person: nobody"


def test_errors_about_no_input_or_already_about_a_flag_are_said_as_they_are() -> None:
    assert error_text(DefinitionError("the ledger is empty")) == "the ledger is empty"
    with pytest.raises(DefinitionError) as caught:
        in_range(0, "--limit", low=1, high=10)
    assert error_text(caught.value) == caught.value.message
    assert caught.value.message.startswith("--limit 0 is out of range")


def test_what_fixes_an_error_is_said_as_a_command_on_the_command_line_only(
    tmp_path,
) -> None:
    from stella_core.crypto.secretbox import SecretBox
    from stella_core.tenancy.keys import LocalKeys, NoPersonalPassphraseError

    keys = LocalKeys(tmp_path, "embedded", SecretBox.from_home(tmp_path))
    keys.create("person-carol")
    with pytest.raises(NoPersonalPassphraseError) as caught:
        keys.unlock("carol", "anything")
    assert "stella" not in caught.value.message  # the desktop shows it too
    assert caught.value.remedy == ("keys-passphrase", "carol")
    assert error_text(caught.value).endswith("; run 'stella --profile carol keys passphrase'")


def test_no_core_message_names_a_command_line_flag_or_command() -> None:
    """The source of the core outside `cli/` says no flag or `stella …` command in its
    messages (string literals in raise statements and module constants)."""
    import ast
    from pathlib import Path

    import stella_core

    root = Path(stella_core.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if "cli" in path.relative_to(root).parts or "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for part in ast.walk(node.exc):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str):
                        words = part.value
                        if "'stella " in words or re.search(r"(?<![-\w])--[a-z]", words):
                            offenders.append(f"{path.relative_to(root)}:{part.lineno}")
    assert offenders == []
