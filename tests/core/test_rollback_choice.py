"""Which release a rollback goes back to, from what each target's sticker holds (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from stella_core.errors import NotFoundError
from stella_core.promotions.rollback import RollbackRefusedError, TargetHoldings, choose
from stella_core.releases.model import Release, ReleaseComponent

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def digest(n: int) -> str:
    return "sha256:" + f"{n:x}".rjust(64, "0")


def release(n: int, web: int | None = None) -> Release:
    return Release(
        id=uuid4(),
        name=f"r{n}",
        created_at=T0 + timedelta(hours=n),
        created_by="alice",
        components=(
            ReleaseComponent(name="web", repository="reg/web", tag=None, digest=digest(web or n)),
        ),
    )


RELEASES = [release(n) for n in (4, 3, 2, 1)]  # newest first, as the store lists them


def held(target: str, *names: int) -> TargetHoldings:
    return TargetHoldings(target, releases=tuple((f"r{n}", {"web": digest(n)}) for n in names))


def test_the_newest_release_every_target_holds_other_than_the_running_one() -> None:
    plan = choose("prod", [held("a", 3, 2, 1), held("b", 3, 2, 1)], RELEASES)
    assert (plan.release, plan.from_release) == ("r2", "r3")
    assert plan.before()["targets"][0] == {
        "target": "a",
        "targetId": None,
        "release": "r3",
        "components": {"web": digest(3)},
        "deploymentId": None,
    }


def test_newest_is_by_creation_and_only_among_what_every_target_holds() -> None:
    # b never ran r2: r1 is the newest both hold, though a ran r2 more recently than r1.
    plan = choose("prod", [held("a", 3, 1, 2), held("b", 3, 1)], RELEASES)
    assert plan.release == "r1"


def test_targets_running_different_releases_may_meet_at_one_of_them() -> None:
    # b's deployment of r3 failed: it runs r2, which a still holds.
    plan = choose("prod", [held("a", 3, 2), held("b", 2, 1)], RELEASES)
    assert (plan.release, plan.from_release) == ("r2", "r3")


def test_a_release_is_held_only_with_its_exact_digests() -> None:
    # A sticker naming r2 with other digests does not hold r2.
    forged = TargetHoldings("b", releases=(("r3", {"web": digest(3)}), ("r2", {"web": digest(9)})))
    with pytest.raises(RollbackRefusedError, match="no earlier release is on every target"):
        choose("prod", [held("a", 3, 2), forged], RELEASES)


def test_refusals_name_the_targets() -> None:
    with pytest.raises(RollbackRefusedError, match="b holds r3"):
        choose("prod", [held("a", 3, 2), held("b", 3)], RELEASES)
    with pytest.raises(RollbackRefusedError, match="r2 is not on every target of prod: b never"):
        choose("prod", [held("a", 3, 2), held("b", 3)], RELEASES, to="r2")
    unreadable = TargetHoldings("b", problem="there is no sticker on the target")
    with pytest.raises(RollbackRefusedError, match="target b: there is no sticker"):
        choose("prod", [held("a", 3, 2), unreadable], RELEASES)
    with pytest.raises(RollbackRefusedError, match="runs r3 already"):
        choose("prod", [held("a", 3, 2)], RELEASES, to="r3")
    with pytest.raises(RollbackRefusedError, match="has no targets"):
        choose("prod", [], RELEASES)
    with pytest.raises(NotFoundError):
        choose("prod", [held("a", 3, 2)], RELEASES, to="r9")


def test_to_may_name_any_release_every_target_holds() -> None:
    plan = choose("prod", [held("a", 3, 2, 1), held("b", 3, 2, 1)], RELEASES, to="r1")
    assert plan.release == "r1"
