"""Connections as a person: one engine per profile, tenant context per transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import psycopg
import sqlalchemy.exc
from sqlalchemy import Connection, Engine, create_engine, text

from stella_core.errors import (
    AlreadyExistsError,
    AuthorizationError,
    DatabaseError,
    DefinitionError,
    NotFoundError,
    StellaError,
)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=5,
        pool_pre_ping=True,
        # No hstore here: skips a type lookup on every engine's first connection.
        use_native_hstore=False,
        connect_args={"connect_timeout": 10, "application_name": "stella"},
    )


class Database:
    """A person's view of the database: every transaction carries their tenant, set LOCAL."""

    def __init__(self, engine: Engine, tenant_id: UUID | None) -> None:
        self.engine = engine
        self.tenant_id = tenant_id

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                if self.tenant_id is not None:
                    # Transaction-local (third argument true): nothing leaks through the pool.
                    conn.execute(
                        text("SELECT set_config('app.tenant_id', :t, true)"),
                        {"t": str(self.tenant_id)},
                    )
                yield conn
        except sqlalchemy.exc.DBAPIError as exc:
            raise translate(exc) from exc
        except psycopg.Error as exc:  # from statements sent on the driver connection
            raise translate_driver(exc) from exc
        except UnicodeEncodeError as exc:  # the driver cannot send a lone surrogate
            raise DefinitionError(
                "a value is not valid UTF-8 text (was it bytes of another encoding?); "
                "nothing was stored"
            ) from exc

    def dispose(self) -> None:
        self.engine.dispose()


def translate(exc: sqlalchemy.exc.DBAPIError) -> StellaError:
    """Map database refusals to the error families the CLI and desktop understand."""
    return translate_driver(exc.orig)


def translate_driver(orig: BaseException | None) -> StellaError:
    message = _primary_message(orig)
    if isinstance(orig, psycopg.errors.InsufficientPrivilege):
        return AuthorizationError(message)
    if isinstance(orig, psycopg.errors.UniqueViolation):
        return AlreadyExistsError(message)
    if isinstance(orig, psycopg.errors.ForeignKeyViolation):
        return NotFoundError(message)
    if isinstance(orig, psycopg.DataError):
        # SQLSTATE class 22 (a number out of range, a NUL in text, a time past year 9999...):
        # a value the services should have refused first; bad input all the same.
        return DefinitionError(f"the database refused a value: {message}; nothing was stored")
    if isinstance(orig, psycopg.OperationalError):
        return DatabaseError(f"database unavailable: {message}")
    return DatabaseError(message)


def _primary_message(orig: BaseException | None) -> str:
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        return str(primary)
    return str(orig).strip().splitlines()[0] if orig else "database error"
