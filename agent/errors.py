"""The error tree: one root, one subclass per outside system.

Every error says whether retrying the same operation later can succeed, so the
loops that catch them decide between backing off and giving up without guessing.
"""

from __future__ import annotations

# Process exit codes (BSD sysexits): systemd's RestartPreventExitStatus=78 keeps a broken
# configuration from restart-looping.
EX_OK, EX_FAILURE, EX_USAGE, EX_UNAVAILABLE, EX_CONFIG = 0, 1, 64, 69, 78


class DistillSyncError(Exception):
    """Root of every error the agent raises on purpose."""

    retryable: bool = False


class ConfigError(DistillSyncError):
    """The configuration is invalid; carries every problem, each with its TOML key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class SourceError(DistillSyncError):
    """An ERP source could not be read (connection refused, query failed, ...)."""

    retryable = True


class RelayError(DistillSyncError):
    """The MQTT relay could not be reached or refused us."""

    retryable = True


class OutboxError(DistillSyncError):
    """The local SQLite outbox could not be opened or written."""


class ApiError(DistillSyncError):
    """The status API cannot be served: another live process holds ``api.socket``."""


class OutboxTooNew(OutboxError):
    """The outbox was written by a newer agent: restarting cannot help (exit 78)."""
