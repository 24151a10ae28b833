"""`compose.stella.lock.yml`: the compose file a deployment runs, every image pinned by digest.

One service per component: the component's service fragment, `image: host/repo@sha256:…` (the
tag the release was made from kept as a comment on that line, never as the reference), and the
labels `stella.release.id`, `stella.component`, `stella.digest`, `stella.deployment.id` that say
on the host which release put the container there. A top-level `x-stella` block carries the
release, the environment and the deployment (upstream-spec §9.2; compose ignores `x-` keys).

The text is a pure function of its inputs, so the same deployment renders the same bytes and
the sha256 of those bytes (`lockfile_sha256`) is what the sticker and the evidence name. The
file cannot carry its own hash; `x-stella.checksums.services` is the sha256 of the canonical
JSON of the `services` mapping, so an edit to a service is visible inside the file too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import yaml

import stella_core
from stella_core.errors import DefinitionError, InvalidReferenceError
from stella_core.evidence.packets import canonical_json
from stella_core.limits import check_name
from stella_core.releases.compose import check_service_fragment, labels_of
from stella_core.releases.reference import DIGEST_RE, REPOSITORY_RE, TAG_RE, check_release_name

LOCKFILE_NAME = "compose.stella.lock.yml"
GENERATOR = f"stella-release-desk/{stella_core.__version__}"

# host[:port]/repository (a registry host always comes first: the lockfile never relies on a
# runtime's default registry or its short-name resolution).
_HOST = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
IMAGE_RE = re.compile(
    rf"^(?P<host>{_HOST}(?::[0-9]{{1,5}})?)/(?P<repo>{REPOSITORY_RE.pattern[1:-1]})$"
)
_GENERATOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,127}$")


def check_image(image: str) -> str:
    """`host[:port]/repository`, as a pinned reference starts."""
    if len(image) > 512 or not IMAGE_RE.match(image):
        raise InvalidReferenceError(
            f"invalid image {image!r}: expected REGISTRY_HOST[:PORT]/REPOSITORY"
        )
    return image


def parse_pinned(reference: str) -> tuple[str, str]:
    """`host[:port]/repo@sha256:…` -> (image, digest); anything else is refused."""
    image, at, digest = reference.rpartition("@")
    if not at or not DIGEST_RE.match(digest):
        raise InvalidReferenceError(
            f"image {reference!r} is not pinned by digest (REGISTRY_HOST/REPOSITORY@sha256:…)"
        )
    return check_image(image), digest


@dataclass(frozen=True)
class LockedComponent:
    name: str
    image: str  # host[:port]/repository
    digest: str
    tag: str | None = None
    service: Mapping[str, Any] | None = None
    component_id: UUID | None = None
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def pinned(self) -> str:
        return f"{self.image}@{self.digest}"


def _when(value: datetime) -> str:
    if value.tzinfo is None:
        raise DefinitionError("lockfile times must carry a time zone")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _comment_text(value: str, what: str) -> str:
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise DefinitionError(f"{what} holds a control character")
    return value


def _service(c: LockedComponent, release_id: UUID, deployment_id: UUID) -> dict[str, Any]:
    check_name("component", c.name)
    check_image(c.image)
    if not DIGEST_RE.match(c.digest):
        raise InvalidReferenceError(f"component {c.name!r}: invalid digest {c.digest!r}")
    if c.tag is not None and not TAG_RE.match(c.tag):
        raise InvalidReferenceError(f"component {c.name!r}: invalid tag {c.tag!r}")
    # Again here, not only when stored: the row may have been written behind the service's back.
    fragment = check_service_fragment(
        dict(c.service or {}), f"the service fragment of component {c.name!r}"
    )
    labels = labels_of(fragment)
    labels.update({str(k): str(v) for k, v in c.extra_labels.items()})
    labels.update(
        {
            "stella.release.id": str(release_id),
            "stella.component": c.name,
            "stella.digest": c.digest,
            "stella.deployment.id": str(deployment_id),
        }
    )
    if c.component_id is not None:
        labels["stella.component.id"] = str(c.component_id)
    service = {k: _literal(v) for k, v in fragment.items() if k != "labels"}
    service["image"] = c.pinned
    service["labels"] = {k: _literal(v) for k, v in sorted(labels.items())}
    return service


def _literal(value: Any) -> Any:
    """`value` with every `$` doubled: compose substitutes `$VAR` and `${VAR}` from the
    environment of whoever runs it, so the lockfile would depend on the target's environment
    (and could mount `${HOME}` or copy `${SECRET}` into a container). `$$` is a literal `$`."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    return value


def render_lockfile(
    *,
    release_id: UUID,
    release_name: str,
    release_created_at: datetime,
    environment_id: UUID,
    environment_name: str,
    deployment_id: UUID,
    started_at: datetime,
    components: Sequence[LockedComponent],
    generator: str = GENERATOR,
) -> str:
    """The lockfile's text (deterministic for the same inputs)."""
    check_release_name(release_name)
    check_name("environment", environment_name)
    if not _GENERATOR_RE.match(generator):
        raise DefinitionError(f"invalid generator {generator!r}")
    if not components:
        raise DefinitionError("a lockfile needs at least one component")
    names = [c.name for c in components]
    if len(set(names)) != len(names):
        raise DefinitionError("a component appears twice in the lockfile")
    services = {c.name: _service(c, release_id, deployment_id) for c in components}
    document = {
        "services": services,
        "x-stella": {
            "release": {
                "id": str(release_id),
                "name": release_name,
                "created_at": _when(release_created_at),
            },
            "environment": {"id": str(environment_id), "name": environment_name},
            "deployment": {"id": str(deployment_id), "started_at": _when(started_at)},
            "checksums": {"services": "sha256:" + hashlib.sha256(_canonical(services)).hexdigest()},
            "generator": generator,
        },
    }
    # Each image line is written as a placeholder first, then given its comment: PyYAML writes
    # no comments, and a plain scalar of known text is the only thing replaced.
    placeholders = {}
    for i, c in enumerate(components):
        token = f"stella-image-placeholder-{i}"
        placeholders[token] = c
        services[c.name]["image"] = token
    body: str = yaml.safe_dump(
        document, sort_keys=True, default_flow_style=False, allow_unicode=True, width=4096
    )
    for token, c in placeholders.items():
        comment = f"  # tag: {c.tag}" if c.tag else ""
        line = f"image: {token}\n"
        if body.count(line) != 1:  # pragma: no cover - the token is unique by construction
            raise DefinitionError("could not place an image line in the lockfile")
        # The pinned reference has no character YAML would need to quote (checked above).
        body = body.replace(line, f"image: {c.pinned}{comment}\n")
        services[c.name]["image"] = c.pinned
    header = (
        "# Generated by Stella Release Desk; do not edit (each deployment writes it anew).\n"
        f"# Release: {_comment_text(release_name, 'the release name')} ({release_id})\n"
        f"# Deployment: {deployment_id}, started {_when(started_at)}\n"
        f"# Generator: {generator}\n"
    )
    text = header + body
    if yaml.safe_load(text) != document:  # pragma: no cover - a guard on the comment surgery
        raise DefinitionError("the rendered lockfile does not read back as written")
    return text


def _canonical(value: Any) -> bytes:
    # Compose fragments may hold floats (cpus: 0.5), which signed JSON refuses; render those as
    # text for the checksum only.
    return canonical_json(_no_floats(value))


def _no_floats(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return [_no_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _no_floats(v) for k, v in value.items()}
    return value


def lockfile_sha256(text: str) -> str:
    """Lowercase hex sha256 of the lockfile's UTF-8 bytes (what the sticker and evidence name)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pinned_images(text: str) -> dict[str, str]:
    """service -> image of a lockfile's text (for a runner checking what it was given)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DefinitionError("the lockfile is not valid YAML") from exc
    services = document.get("services") if isinstance(document, dict) else None
    if not isinstance(services, dict) or not services:
        raise DefinitionError("the lockfile has no services")
    images = {}
    for name, service in services.items():
        image = service.get("image") if isinstance(service, dict) else None
        if not isinstance(name, str) or not isinstance(image, str):
            raise DefinitionError(f"lockfile service {name!r} has no image")
        images[name] = image
    return images
