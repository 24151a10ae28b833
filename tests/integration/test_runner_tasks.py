"""The task runner's other task types on this machine (LocalHost): stickers written and read
back, the execute-command allow-list, uploads, health checks, and payloads that are refused."""

from __future__ import annotations

import base64
import stat
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stella_core.crypto.keys import SigningKey
from stella_core.deploy.hosts import LocalHost
from stella_core.deploy.model import TaskType
from stella_core.deploy.runner import TaskFailedError, run_task
from stella_core.deploy.sticker import StickerComponent, build_sticker, sign_sticker, verify_sticker
from tests.support.registry import free_port

HOST = LocalHost()
KEY = SigningKey.generate()


def _sticker() -> dict[str, Any]:
    now = datetime.now(UTC)
    return sign_sticker(
        build_sticker(
            release_id=uuid.uuid4(),
            release_name="shop-1",
            release_created_at=now,
            components=[StickerComponent("web", "sha256:" + "a" * 64, "v1")],
            deployment_id=uuid.uuid4(),
            promotion_id=uuid.uuid4(),
            environment_id=uuid.uuid4(),
            environment_name="dev",
            target_id=uuid.uuid4(),
            target_name="local",
            started_at=now,
            completed_at=now,
            deployed_by="orchestrator",
            evidence_packet_id=uuid.uuid4(),
            compose_lock_sha256="d" * 64,
            generated_at=now,
        ),
        KEY,
    )


def _failure(task: TaskType, payload: Any, **kwargs: Any) -> TaskFailedError:
    with pytest.raises(TaskFailedError) as caught:
        run_task(task, payload, HOST, **kwargs)
    return caught.value


def test_a_written_sticker_reads_back_and_verifies_a_flipped_byte_does_not(tmp_path: Path) -> None:
    directory = tmp_path / "stella" / "web-01"
    assert run_task(TaskType.READ_STICKER, {"directory": str(directory)}, HOST)["sticker"] is None

    written = run_task(
        TaskType.WRITE_STICKER, {"directory": str(directory), "sticker": _sticker()}, HOST
    )
    path = Path(written["path"])
    assert path == directory / "stella.version.json"
    # Written atomically: no temporary file is left beside it.
    assert sorted(p.name for p in directory.iterdir()) == ["stella.version.json"]

    read = run_task(TaskType.READ_STICKER, {"directory": str(directory)}, HOST)
    raw = base64.b64decode(read["raw_b64"])
    assert raw == path.read_bytes()
    keys = {KEY.key_id: KEY.public_key()}
    check = verify_sticker(raw, keys)
    assert check.ok, check.reason
    assert read["sticker"]["deployment"]["targetName"] == "local"

    damaged = bytearray(raw)
    damaged[raw.index(b'"web"') + 2] ^= 0x01  # "web" -> "wdb"
    path.write_bytes(bytes(damaged))
    again = run_task(TaskType.READ_STICKER, {"directory": str(directory)}, HOST)
    check = verify_sticker(base64.b64decode(again["raw_b64"]), keys)
    assert not check.ok
    assert check.reason == "the sticker's signature does not match its content"


def test_execute_command_runs_only_what_the_allow_list_names() -> None:
    argv = [sys.executable, "-c", "print('allowed')"]
    refused = _failure(TaskType.EXECUTE_COMMAND, {"argv": argv})
    assert refused.error_type == "not-allowed"
    # An allow-list entry must match word for word.
    refused = _failure(
        TaskType.EXECUTE_COMMAND, {"argv": argv}, allow_commands=[[sys.executable, "-c"]]
    )
    assert refused.error_type == "not-allowed"
    done = run_task(TaskType.EXECUTE_COMMAND, {"argv": argv}, HOST, allow_commands=[argv])
    assert done["stdout"].strip() == "allowed"
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    failed = _failure(TaskType.EXECUTE_COMMAND, {"argv": failing}, allow_commands=[failing])
    assert failed.error_type == "command-failed"
    assert "exited with 3" in failed.message


def test_upload_files_writes_inside_the_directory_only(tmp_path: Path) -> None:
    payload = {
        "directory": str(tmp_path / "d"),
        "files": [
            {"path": "conf/app.env", "content_b64": base64.b64encode(b"A=1\n").decode()},
            {
                "path": "run.sh",
                "content_b64": base64.b64encode(b"#!/bin/sh\n").decode(),
                "mode": 0o750,
            },
        ],
    }
    out = run_task(TaskType.UPLOAD_FILES, payload, HOST)
    assert len(out["paths"]) == 2
    assert (tmp_path / "d" / "conf" / "app.env").read_bytes() == b"A=1\n"
    assert stat.S_IMODE((tmp_path / "d" / "run.sh").stat().st_mode) == 0o750
    for bad in ("../escape", "/etc/passwd", "a/../../b", "a//b"):
        payload["files"] = [{"path": bad, "content_b64": ""}]
        assert _failure(TaskType.UPLOAD_FILES, payload).error_type == "bad-payload"
    assert not (tmp_path / "escape").exists()
    payload["files"] = [{"path": "x", "content_b64": "", "mode": 0o4755}]
    assert "mode" in _failure(TaskType.UPLOAD_FILES, payload).message


def test_a_health_check_of_nothing_listening_fails_with_what_it_got() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    failed = _failure(TaskType.HEALTH_CHECK, {"url": url, "timeout": 2})
    assert failed.error_type == "health-check-failed"
    assert url in failed.message
    assert (
        _failure(TaskType.HEALTH_CHECK, {"url": "file:///etc/passwd"}).error_type == "bad-payload"
    )


@pytest.mark.parametrize(
    ("task", "payload", "words"),
    [
        (TaskType.DEPLOY, [], "not an object"),
        (TaskType.READ_STICKER, {"directory": "x", "extra": 1}, "unknown member 'extra'"),
        (TaskType.READ_STICKER, {}, "no 'directory'"),
        (TaskType.READ_STICKER, {"directory": "a/../../b"}, "'..'"),
        (TaskType.WRITE_STICKER, {"directory": "x", "sticker": {"a": 1}}, "signed sticker"),
        (TaskType.INSPECT, {"project": "Bad Name", "runtime": "podman-compose"}, "project"),
        (
            TaskType.INSPECT,
            {"project": "p", "runtime": "podman-compose", "engine": "rkt"},
            "engine",
        ),
        (
            TaskType.DEPLOY,
            {
                "project": "p",
                "directory": "d",
                "runtime": "podman-compose",
                "lockfile": "x: 1",
                "images": [{"component": "web", "image": "127.0.0.1:5000/web:latest"}],
            },
            "not pinned by digest",
        ),
    ],
)
def test_untrusted_payloads_are_refused_with_a_reason(
    task: TaskType, payload: Any, words: str
) -> None:
    failed = _failure(task, payload)
    assert failed.error_type == "bad-payload"
    assert words in failed.message


def test_an_unknown_task_type_is_refused() -> None:
    assert _failure("format-disk", {}).error_type == "bad-payload"  # type: ignore[arg-type]


def test_a_directory_that_cannot_be_written_is_a_host_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    failed = _failure(TaskType.WRITE_STICKER, {"directory": str(blocker), "sticker": _sticker()})
    assert failed.error_type == "host-error"
    assert str(blocker) in failed.message
