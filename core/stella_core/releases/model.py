"""Release domain types. Frozen pydantic models; no I/O."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, StringConstraints

Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[a-f0-9]{64}$")]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MediaType(StrEnum):
    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


# Order matters only for readability; registries get them as one comma-separated header.
MANIFEST_ACCEPT: tuple[str, ...] = tuple(m.value for m in MediaType)


class RegistryKind(StrEnum):
    DISTRIBUTION = "distribution"  # an OCI Distribution API endpoint
    OCI_LAYOUT = "oci-layout"  # an OCI image layout directory (air-gapped import)


class ResolvedManifest(Frozen):
    """What a tag or digest resolved to: the top-level digest (index digest for multi-arch)."""

    digest: Digest
    media_type: str
    size: int


class Registry(Frozen):
    id: UUID
    name: str
    url: str
    kind: RegistryKind
    username: str | None
    has_password: bool
    insecure: bool
    created_at: datetime


class Component(Frozen):
    id: UUID
    name: str
    registry: str
    repository: str
    created_at: datetime
    # Its compose service without `image` (releases/compose.py checks it), or None.
    service: dict[str, Any] | None = None


class ReleaseComponent(Frozen):
    name: str
    repository: str
    tag: str | None
    digest: Digest
    media_type: str | None = None
    registry: str | None = None

    @property
    def pinned_reference(self) -> str:
        return f"{self.repository}@{self.digest}"


class Release(Frozen):
    id: UUID
    name: str
    created_at: datetime
    created_by: str
    components: tuple[ReleaseComponent, ...]

    def to_json(self) -> dict[str, object]:
        """The CLI contract shape (kept stable for acceptance checks)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "components": [
                {"name": c.name, "repository": c.repository, "tag": c.tag, "digest": c.digest}
                for c in self.components
            ],
        }


class ComponentPin(Frozen):
    """What a person asked for at release creation: a tag, a digest, or both."""

    component: str
    tag: str | None = None
    digest: Digest | None = None
