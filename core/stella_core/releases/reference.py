"""Strict grammar for names, repositories, tags and digests (OCI distribution-spec).

Pure functions: no I/O. Every failure is an `InvalidReferenceError` that says what was wrong.
"""

from __future__ import annotations

import re

from stella_core.errors import InvalidNameError, InvalidReferenceError
from stella_core.limits import check_name

# distribution-spec: <name> components separated by "/", each [a-z0-9]+ with separators . _ __ -+
_REPO_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_REPO_COMPONENT}(?:/{_REPO_COMPONENT})*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
# Names of releases: readable, shell-safe (other names: limits.check_name).
RELEASE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
MAX_REPOSITORY_LENGTH = 255


def check_release_name(value: str) -> str:
    if not RELEASE_NAME_RE.match(value):
        raise InvalidNameError(
            f"invalid release name {value!r}: use 1-128 characters A-Z, a-z, 0-9, '.', '_', "
            "'+' or '-', starting with a letter or digit"
        )
    return value


def check_repository(value: str) -> str:
    if len(value) > MAX_REPOSITORY_LENGTH or not REPOSITORY_RE.match(value):
        raise InvalidReferenceError(
            f"invalid repository {value!r}: lowercase path components separated by '/' "
            "(e.g. team/web)"
        )
    return value


def is_digest(value: str) -> bool:
    return bool(DIGEST_RE.match(value))


def check_digest(value: str) -> str:
    if not DIGEST_RE.match(value):
        raise InvalidReferenceError(f"invalid digest {value!r}: expected sha256:<64 lowercase hex>")
    return value


def check_tag(value: str) -> str:
    if not TAG_RE.match(value):
        raise InvalidReferenceError(
            f"invalid tag {value!r}: 1-128 characters [A-Za-z0-9_.-], not starting with '.' or '-'"
        )
    return value


def parse_tag_or_digest(value: str) -> tuple[str | None, str | None]:
    """Return (tag, digest). Accepts `TAG`, `sha256:...` or `TAG@sha256:...`."""
    if not value:
        raise InvalidReferenceError("empty tag or digest")
    if "@" in value:
        tag, _, digest = value.partition("@")
        return check_tag(tag), check_digest(digest)
    if value.startswith("sha256:") or ":" in value:
        return None, check_digest(value)
    return check_tag(value), None


def parse_image(value: str) -> tuple[str, str]:
    """`REGISTRY_NAME/REPOSITORY` -> (registry name, repository). No tag or digest allowed."""
    if "@" in value or ":" in value.rsplit("/", maxsplit=1)[-1]:
        raise InvalidReferenceError(
            f"invalid image {value!r}: give REGISTRY_NAME/REPOSITORY without a tag or digest; "
            "tags are chosen per release"
        )
    registry, sep, repository = value.partition("/")
    if not sep or not registry or not repository:
        raise InvalidReferenceError(
            f"invalid image {value!r}: expected REGISTRY_NAME/REPOSITORY (e.g. local/team/web)"
        )
    check_name("registry", registry)
    return registry, check_repository(repository)


def parse_component_pin(value: str) -> tuple[str, str | None, str | None]:
    """`COMPONENT=TAG_OR_DIGEST` -> (component, tag, digest)."""
    name, sep, ref = value.partition("=")
    if not sep:
        raise InvalidReferenceError(
            f"invalid component pin {value!r}: expected COMPONENT=TAG or COMPONENT=sha256:..."
        )
    check_name("component", name)
    tag, digest = parse_tag_or_digest(ref)
    return name, tag, digest
