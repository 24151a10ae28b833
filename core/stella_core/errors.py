"""One error root with families; the CLI and the desktop map classes to exit codes and messages.

Families: definition (bad input, exit 2), not found, authorization, integrity, connector
(registries, agents; says whether a retry can help), quota, and internal failures.
"""

from __future__ import annotations


class StellaError(Exception):
    """Root of every error the core raises on purpose.

    The message names inputs as the service does, never a command-line flag (the desktop shows
    it too); `field`, when given, is the input it is about, in those words, so the command line
    can name its own flag instead (`cli.common.error_text`). `remedy`, when given, names what
    fixes it (`"registry-insecure"`, then its arguments), so each front end can say how in its
    own terms: the command line names its command, the desktop its screen."""

    exit_code = 1

    def __init__(
        self, message: str, *, field: str | None = None, remedy: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.remedy = remedy


class DefinitionError(StellaError):
    """The input is malformed: a reference, a name, a document. Nothing was stored."""

    exit_code = 2


class InvalidReferenceError(DefinitionError):
    """An image reference, tag or digest does not follow the OCI grammar."""


class InvalidNameError(DefinitionError):
    """A name (user, release, component, registry) is not allowed."""


class NotFoundError(DefinitionError):
    """The named thing does not exist (in this tenant)."""


class AlreadyExistsError(DefinitionError):
    """The named thing exists already; nothing was changed."""


class AuthorizationError(StellaError):
    """The acting person may not do this."""

    exit_code = 1


class IntegrityError(StellaError):
    """Stored or received data does not match what it claims (digest, chain, signature)."""


class ConnectorError(StellaError):
    """Talking to something outside (registry, agent, host) failed."""

    def __init__(
        self, message: str, *, retryable: bool = False, remedy: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.retryable = retryable


class RegistryError(ConnectorError):
    """An OCI registry or layout could not answer."""


class RegistryUnreachableError(RegistryError):
    def __init__(self, message: str, *, remedy: tuple[str, ...] | None = None) -> None:
        super().__init__(message, retryable=True, remedy=remedy)


class RegistryAuthError(RegistryError):
    """The registry refused our credentials (or asked for some we do not have)."""


class ManifestNotFoundError(RegistryError):
    """The tag or digest is not in the repository."""


class DigestMismatchError(RegistryError, IntegrityError):
    """Content fetched by digest hashed to something else."""


class QuotaError(StellaError):
    def __init__(self, message: str, *, limit: int, usage: int, resets_at: str | None) -> None:
        super().__init__(message)
        self.limit = limit
        self.usage = usage
        self.resets_at = resets_at


class DatabaseError(StellaError):
    """The database could not be reached, started or migrated."""


class OrchestratorUnavailableError(StellaError):
    """What was asked is the orchestrator's to do, and this machine does not run it (it holds
    no orchestrator login): stella serve does it where it runs."""
