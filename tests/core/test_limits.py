"""The shared bounds on input: whole numbers, seconds, text, files and JSON from outside."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from stella_core.errors import DefinitionError
from stella_core.limits import (
    INT32_MAX,
    check_text,
    json_depth,
    load_json,
    read_bounded,
    read_text,
    seconds,
    whole_number,
)

HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("+7", 7), (" 12 ", 12), ("-0", 0), ("2147483647", INT32_MAX)]
)
def test_whole_numbers_in_range(text, value) -> None:
    assert whole_number(text, "--n", low=0, high=INT32_MAX) == value


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("-1", "--n -1 is out of range: give a whole number from 0 to 2147483647"),
        ("2147483648", "out of range"),
        (HUGE, "--n 9999999999999999999999999999999999999999… (5000 digits) is out of range"),
        ("-" + HUGE, "(5000 digits) is out of range"),
        ("1.5", "is not a whole number"),
        ("²", "is not a whole number"),
        ("", "is not a whole number"),
    ],
)
def test_whole_numbers_refused(text, says) -> None:
    with pytest.raises(DefinitionError) as err:
        whole_number(text, "--n", low=0, high=INT32_MAX)
    assert says in err.value.message
    assert len(err.value.message) < 200


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e999", HUGE, "-1", "x", "1e7"])
def test_seconds_are_finite_and_bounded(text) -> None:
    with pytest.raises(DefinitionError):
        seconds(text, "--timeout", low=0, high=3600)


def test_seconds_in_range() -> None:
    assert seconds("0.5", "--timeout", low=0, high=3600) == 0.5


@pytest.mark.parametrize(("text", "says"), [("a\0b", "NUL"), ("a\udcffb", "not valid UTF-8")])
def test_text_postgresql_cannot_store(text, says) -> None:
    with pytest.raises(DefinitionError, match=says):
        check_text(text, "--reason")
    assert check_text("ünïcødé ✓ 𝄞", "--reason") == "ünïcødé ✓ 𝄞"


def test_a_device_is_read_only_to_just_past_the_cap() -> None:
    with pytest.raises(DefinitionError, match="/dev/zero is more than the 1024 bytes"):
        read_bounded("/dev/zero", 1024, "document")


def test_a_large_file_is_refused_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(10 * 1024 * 1024 * 1024)  # sparse: its size says it, nothing is read
    with pytest.raises(DefinitionError, match="is 10737418240 bytes, more than the 1024"):
        read_bounded(str(big), 1024, "document")


def test_a_pipe_that_never_ends(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def write_forever() -> None:
        try:
            with fifo.open("wb") as out:
                while not stop.is_set():
                    out.write(b"x" * 4096)
        except BrokenPipeError:
            return  # the reader stopped reading: as it should

    writer = threading.Thread(target=write_forever, daemon=True)
    writer.start()
    try:
        with pytest.raises(DefinitionError, match="more than the 65536 bytes"):
            read_bounded(str(fifo), 65536, "document")
    finally:
        stop.set()
        writer.join(timeout=5)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read document"):
        read_bounded(str(tmp_path / "missing"), 10, "document")
    with pytest.raises(DefinitionError, match="Is a directory"):
        read_bounded(str(tmp_path), 10, "document")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"a": "caf\xe9"}')
    with pytest.raises(DefinitionError, match="not UTF-8 text"):
        read_text(str(latin), 100, "document")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[" * 100_000 + "]" * 100_000, "nests more than 64 levels deep"),
        ("[" * 65 + "]" * 65, "nests more than 64 levels deep"),
        ('{"n": ' + HUGE + "}", "(5000 digits) is beyond 2**53 - 1"),
        ('{"n": 9007199254740992}', "beyond 2**53 - 1"),
        ('{"n": 1e999}', "too large"),
        ('{"n": NaN}', "NaN is not a JSON number"),
        ('{"a": 1, "a": 2}', "appears twice"),
        ('{"a": ', "is not JSON"),
    ],
)
def test_json_from_outside_is_bounded(text, says) -> None:
    with pytest.raises(DefinitionError) as err:
        load_json(text, "policy p.json")
    assert says in err.value.message
    assert err.value.message.startswith("policy p.json")


def test_json_within_bounds() -> None:
    assert load_json("[" * 64 + "]" * 64, "doc") is not None
    assert load_json('{"n": -9007199254740991, "x": 1.5}', "doc") == {
        "n": -9007199254740991,
        "x": 1.5,
    }
    assert json_depth({"a": [{"b": []}]}) == 4
    assert json_depth(3) == 0
