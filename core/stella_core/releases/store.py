"""Rows of the `release` schema and the queries over them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    FetchedValue,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID

from stella_core.releases.model import (
    Component,
    Registry,
    RegistryKind,
    Release,
    ReleaseComponent,
)

metadata = MetaData(schema="release")

registries = Table(
    "registries",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),
    Column("tenant_id", PgUUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("username", Text),
    Column("password_ciphertext", LargeBinary),
    Column("insecure", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True)),
    Column("created_by", Text),
)

components = Table(
    "components",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),
    Column("tenant_id", PgUUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("registry_id", PgUUID(as_uuid=True), ForeignKey(registries.c.id), nullable=False),
    Column("repository", Text, nullable=False),
    Column("service", JSONB(none_as_null=True)),
    Column("created_at", DateTime(timezone=True)),
    Column("created_by", Text),
)

releases = Table(
    "releases",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),
    Column("tenant_id", PgUUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True)),
    Column("created_by", Text),
)

release_components = Table(
    "release_components",
    metadata,
    Column("release_id", PgUUID(as_uuid=True), ForeignKey(releases.c.id), primary_key=True),
    Column("tenant_id", PgUUID(as_uuid=True), nullable=False),
    Column("position", Integer, primary_key=True),
    Column("component_id", PgUUID(as_uuid=True), nullable=False),
    Column("component_name", Text, nullable=False),
    Column("registry_name", Text, nullable=False),
    Column("repository", Text, nullable=False),
    Column("tag", Text),
    Column("digest", Text, nullable=False),
    Column("media_type", Text),
)


def _registry(row: Any) -> Registry:
    return Registry(
        id=row.id,
        name=row.name,
        url=row.url,
        kind=RegistryKind(row.kind),
        username=row.username,
        has_password=row.password_ciphertext is not None,
        insecure=row.insecure,
        created_at=row.created_at,
    )


class ReleaseStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # registries -------------------------------------------------------------------------
    def insert_registry(
        self,
        tenant_id: UUID,
        name: str,
        kind: RegistryKind,
        url: str,
        username: str | None,
        password_ciphertext: bytes | None,
        insecure: bool,
    ) -> Registry:
        row = self.conn.execute(
            registries.insert()
            .values(
                tenant_id=tenant_id,
                name=name,
                kind=kind.value,
                url=url,
                username=username,
                password_ciphertext=password_ciphertext,
                insecure=insecure,
            )
            .returning(*registries.c)
        ).one()
        return _registry(row)

    def list_registries(self) -> list[Registry]:
        return [
            _registry(r) for r in self.conn.execute(select(registries).order_by(registries.c.name))
        ]

    def registry_row(self, name: str) -> Any | None:
        return self.conn.execute(select(registries).where(registries.c.name == name)).first()

    def components_using(self, registry_id: UUID) -> list[str]:
        rows = self.conn.execute(
            select(components.c.name)
            .where(components.c.registry_id == registry_id)
            .order_by(components.c.name)
        )
        return [r.name for r in rows]

    def delete_registry(self, registry_id: UUID) -> None:
        self.conn.execute(registries.delete().where(registries.c.id == registry_id))

    def registry_rows_by_id(self, ids: set[UUID]) -> dict[UUID, Any]:
        rows = self.conn.execute(select(registries).where(registries.c.id.in_(ids)))
        return {r.id: r for r in rows}

    # components -------------------------------------------------------------------------
    def insert_component(
        self,
        tenant_id: UUID,
        name: str,
        registry_id: UUID,
        repository: str,
        service: dict[str, Any] | None = None,
    ) -> UUID:
        return UUID(
            str(
                self.conn.execute(
                    components.insert()
                    .values(
                        tenant_id=tenant_id,
                        name=name,
                        registry_id=registry_id,
                        repository=repository,
                        service=service,
                    )
                    .returning(components.c.id)
                ).scalar_one()
            )
        )

    def list_components(self) -> list[Component]:
        rows = self.conn.execute(
            select(components, registries.c.name.label("registry_name"))
            .join(registries, registries.c.id == components.c.registry_id)
            .order_by(components.c.name)
        )
        return [
            Component(
                id=r.id,
                name=r.name,
                registry=r.registry_name,
                repository=r.repository,
                created_at=r.created_at,
                service=r.service,
            )
            for r in rows
        ]

    def component_rows(self, names: list[str]) -> dict[str, Any]:
        rows = self.conn.execute(select(components).where(components.c.name.in_(names)))
        return {r.name: r for r in rows}

    # releases ---------------------------------------------------------------------------
    def release_exists(self, name: str) -> bool:
        return (
            self.conn.execute(select(releases.c.id).where(releases.c.name == name)).first()
            is not None
        )

    def insert_release(
        self, tenant_id: UUID, name: str, pinned: list[tuple[UUID, ReleaseComponent]]
    ) -> UUID:
        release_id = UUID(
            str(
                self.conn.execute(
                    releases.insert()
                    .values(tenant_id=tenant_id, name=name)
                    .returning(releases.c.id)
                ).scalar_one()
            )
        )
        self.conn.execute(
            release_components.insert(),
            [
                {
                    "release_id": release_id,
                    "tenant_id": tenant_id,
                    "position": i,
                    "component_id": component_id,
                    "component_name": c.name,
                    "registry_name": c.registry or "",
                    "repository": c.repository,
                    "tag": c.tag,
                    "digest": c.digest,
                    "media_type": c.media_type,
                }
                for i, (component_id, c) in enumerate(pinned)
            ],
        )
        return release_id

    def get_releases(self, name: str | None = None) -> list[Release]:
        query = select(releases).order_by(releases.c.created_at.desc(), releases.c.name)
        if name is not None:
            query = query.where(releases.c.name == name)
        heads = list(self.conn.execute(query))
        if not heads:
            return []
        parts = self.conn.execute(
            select(release_components)
            .where(release_components.c.release_id.in_([h.id for h in heads]))
            .order_by(release_components.c.release_id, release_components.c.position)
        )
        by_release: dict[UUID, list[ReleaseComponent]] = {}
        for p in parts:
            by_release.setdefault(p.release_id, []).append(
                ReleaseComponent(
                    name=p.component_name,
                    repository=p.repository,
                    tag=p.tag,
                    digest=p.digest,
                    media_type=p.media_type,
                    registry=p.registry_name,
                )
            )
        return [
            Release(
                id=h.id,
                name=h.name,
                created_at=h.created_at,
                created_by=h.created_by,
                components=tuple(by_release.get(h.id, [])),
            )
            for h in heads
        ]
