"""Rows of the `evidence` schema: packets (the chained ledger), their inputs and checkpoints.
Private to the evidence module.

The database assigns `seq`, `prev_hash`, `hash`, `bundle_digest`, `actor` and `created_at` (see
migration 0004): the application only proposes a signed bundle and what it is about.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, text

from stella_core.evidence.model import ChainEntry, CheckpointRow, Filter, Input, PacketRow, Refs

_PACKET_COLUMNS = (
    "id, seq, type, predicate_type, subject_digests, release_name, environment, promotion_id, "
    "run_id, actor, signer_key_id, created_at, bundle_digest, prev_hash, hash"
)


_APPEND_SQL = (
    "INSERT INTO evidence.packets (tenant_id, type, predicate_type, subject_digests,"
    " signer_key_id, bundle, release_name, environment, promotion_id, run_id,"
    " seq, actor, created_at, bundle_digest, prev_hash, hash)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, '', now(), '', '', '')"
    f" RETURNING {_PACKET_COLUMNS}"
)


def _packet(row: Any, *, with_bundle: bool = False) -> PacketRow:
    return PacketRow(
        id=row.id,
        seq=row.seq,
        type=row.type,
        predicate_type=row.predicate_type,
        subject_digests=tuple(row.subject_digests),
        release=row.release_name,
        environment=row.environment,
        promotion_id=row.promotion_id,
        run_id=row.run_id,
        actor=row.actor,
        signer_key_id=row.signer_key_id,
        created_at=row.created_at,
        bundle_digest=row.bundle_digest,
        prev_hash=row.prev_hash,
        hash=row.hash,
        bundle=bytes(row.bundle) if with_bundle else None,
    )


class LedgerStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def put_inputs(self, tenant_id: UUID, inputs: Iterable[Input]) -> None:
        unique = list({i.digest: i for i in inputs}.values())
        if not unique:
            return
        # One statement over arrays: documents are small and many (a decision has several).
        self.conn.execute(
            text(
                "INSERT INTO evidence.inputs (tenant_id, digest, media_type, body)"
                " SELECT :t, x.d, x.m, x.b FROM unnest(CAST(:d AS text[]), CAST(:m AS text[]),"
                " CAST(:b AS bytea[])) AS x(d, m, b) ON CONFLICT DO NOTHING"
            ),
            {
                "t": tenant_id,
                "d": [i.digest for i in unique],
                "m": [i.media_type for i in unique],
                "b": [i.body for i in unique],
            },
        )

    def append(
        self,
        tenant_id: UUID,
        items: Sequence[tuple[str, str, Sequence[str], str, bytes, Refs]],
    ) -> list[PacketRow]:
        """Append packets: (type, predicate_type, subject digests, signer key id, bundle, refs).
        Returns the rows as the database numbered and chained them, in order."""
        params = [
            (
                tenant_id,
                kind,
                ptype,
                list(subjects),
                signer,
                bundle,
                refs.release,
                refs.environment,
                refs.promotion_id,
                refs.run_id,
            )
            for kind, ptype, subjects, signer, bundle, refs in items
        ]
        # The driver's executemany pipelines the rows (measured faster than one statement over
        # unnested arrays); the trigger numbers them in the order sent.
        driver: psycopg.Connection[Any] = self.conn.connection.driver_connection  # type: ignore[assignment]
        with driver.cursor(row_factory=namedtuple_row) as cursor:
            cursor.executemany(_APPEND_SQL, params, returning=True)
            found = []
            while True:
                found.extend(cursor.fetchall())
                if not cursor.nextset():
                    break
        rows = [_packet(r) for r in found]
        return sorted(rows, key=lambda r: r.seq)

    def select(self, where: Filter) -> list[PacketRow]:
        clauses, params = self._where(where)
        sql = f"SELECT {_PACKET_COLUMNS} FROM evidence.packets"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY seq"
        if where.limit:
            sql += f" LIMIT {int(where.limit)}"
        return [_packet(r) for r in self.conn.execute(text(sql), params)]

    @staticmethod
    def _where(where: Filter) -> tuple[list[str], dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        simple = {
            "type": ("type", where.type),
            "release_name": ("release", where.release),
            "environment": ("env", where.environment),
            "actor": ("person", where.person),
            "promotion_id": ("promotion", where.promotion_id),
            "run_id": ("run", where.run_id),
        }
        for column, (name, value) in simple.items():
            if value is not None:
                clauses.append(f"{column} = :{name}")
                params[name] = value
        if where.since is not None:
            clauses.append("created_at >= :since")
            params["since"] = where.since
        if where.until is not None:
            clauses.append("created_at < :until")
            params["until"] = where.until
        if where.ids is not None:
            clauses.append("id = ANY(:ids)")
            params["ids"] = list(where.ids)
        if where.bundle_digests is not None:
            clauses.append("bundle_digest = ANY(:bundles)")
            params["bundles"] = list(where.bundle_digests)
        return clauses, params

    def get(self, packet_id: UUID) -> PacketRow | None:
        row = self.conn.execute(
            text(f"SELECT {_PACKET_COLUMNS}, bundle FROM evidence.packets WHERE id = :id"),
            {"id": packet_id},
        ).first()
        return _packet(row, with_bundle=True) if row else None

    def bundles(self, seqs: Sequence[int]) -> dict[int, bytes]:
        rows = self.conn.execute(
            text("SELECT seq, bundle FROM evidence.packets WHERE seq = ANY(:s)"), {"s": list(seqs)}
        )
        return {r.seq: bytes(r.bundle) for r in rows}

    def chain(self, upto: int | None = None) -> list[ChainEntry]:
        rows = self.conn.execute(
            text(
                "SELECT seq, bundle_digest, prev_hash, hash FROM evidence.packets"
                " WHERE CAST(:n AS bigint) IS NULL OR seq <= :n ORDER BY seq"
            ),
            {"n": upto},
        )
        return [ChainEntry(r.seq, r.bundle_digest, r.prev_hash, r.hash) for r in rows]

    def altered_bundles(self) -> list[int]:
        """Packets whose stored bytes no longer hash to the digest recorded at append."""
        rows = self.conn.execute(
            text(
                "SELECT seq FROM evidence.packets"
                " WHERE bundle_digest <> 'sha256:' || encode(sha256(bundle), 'hex') ORDER BY seq"
            )
        )
        return [int(r.seq) for r in rows]

    def size(self) -> int:
        value = self.conn.execute(
            text("SELECT COALESCE(max(seq), 0) FROM evidence.packets")
        ).scalar_one()
        return int(value)

    def inputs(self, digests: Iterable[str]) -> dict[str, tuple[str, bytes]]:
        rows = self.conn.execute(
            text("SELECT digest, media_type, body FROM evidence.inputs WHERE digest = ANY(:d)"),
            {"d": sorted(set(digests))},
        )
        return {r.digest: (r.media_type, bytes(r.body)) for r in rows}

    def all_inputs(self) -> dict[str, tuple[str, bytes]]:
        rows = self.conn.execute(text("SELECT digest, media_type, body FROM evidence.inputs"))
        return {r.digest: (r.media_type, bytes(r.body)) for r in rows}

    def add_checkpoint(
        self, tenant_id: UUID, tree_size: int, root_hash: str, note: str, signer_key_id: str
    ) -> None:
        self.conn.execute(
            text(
                "INSERT INTO evidence.checkpoints (tenant_id, tree_size, root_hash, note,"
                " signer_key_id) VALUES (:t, :n, :r, :note, :k) ON CONFLICT DO NOTHING"
            ),
            {"t": tenant_id, "n": tree_size, "r": root_hash, "note": note, "k": signer_key_id},
        )

    def checkpoints(self) -> list[CheckpointRow]:
        rows = self.conn.execute(
            text(
                "SELECT tree_size, root_hash, note, signer_key_id, created_at, created_by"
                " FROM evidence.checkpoints ORDER BY tree_size"
            )
        )
        return [
            CheckpointRow(
                r.tree_size, r.root_hash, r.note, r.signer_key_id, r.created_at, r.created_by
            )
            for r in rows
        ]

    def lock(self, tenant_id: UUID) -> None:
        """The ledger's writer lock (the one the append trigger takes), until commit."""
        self.conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"stella.evidence:{tenant_id}"},
        )
