"""A unix socket path one process serves at a time, the agent's status API and the
consumer's alike: a second process never removes a socket another one holds."""

from __future__ import annotations

import contextlib
import fcntl
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SocketBusy", "claimed_socket"]


class SocketBusy(Exception):
    """Another live process serves the socket path this one is configured with."""


def _answers(path: Path) -> bool:
    """Whether a process listens on the unix socket ``path`` (a stale one refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def claimed_socket(path: Path, busy: Exception) -> Iterator[None]:
    """Hold ``PATH.lock`` while the caller serves ``path``; raise ``busy`` (a
    :class:`SocketBusy`, or the caller's own error) if another process holds the lock or
    answers on the socket.

    Two processes starting together cannot both find the socket stale, and a SIGKILLed one
    releases the lock with its last breath: its stale socket is removed, and so is ours when
    the caller is done. The lock file stays, so there is no unlink race on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with Path(f"{path}.lock").open("ab") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        if _answers(path):  # a live socket without the lock: another program on that path
            raise busy
        _remove(path)
        try:
            yield
        finally:
            _remove(path)
