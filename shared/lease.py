"""One process of a host at a time: an exclusive lock on a file, held until the process ends.

uvicorn's workers of one service share its database; the outbox relay needs only one of them
(``OutboxRelay(lease=...)``): the others spend their core on requests. The lock is the kernel's
(``flock``), so it goes with its process — a worker that dies hands the lease to the next one to
ask, with nothing to expire. A holder that lets go removes the file, so leases of databases
that are gone (a test's schema, say) leave nothing behind; a taker therefore checks, once it has
the lock, that the file it locked is still the one at the path (else it locked a removed file
and asks again).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path


class HostLease:
    """Held by at most one open holder on this host; ``held()`` asks (and takes it if free)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def named(cls, *parts: str) -> HostLease:
        """The lease of ``parts`` (a service and its database), a file in the temp directory."""
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
        return cls(Path(tempfile.gettempdir()) / f"fengqiao-lease-{digest}.lock")

    def held(self) -> bool:
        """True if this holder has the lease, taking it now if no one else holds it."""
        if self._fd is not None:
            return True
        for _ in range(3):  # a file removed under us twice in a row: someone holds it
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                # No lock file to be had (an unwritable directory): every asker holds it, as if
                # there were no lease — publishing twice is safe, publishing never is not.
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            if self._is_at_path(fd):
                self._fd = fd
                return True
            os.close(fd)  # its holder let go and removed it: lock the file now at the path
        return False

    def _is_at_path(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except OSError:
            return False

    def release(self) -> None:
        """Let go: the file is removed while still locked, then the lock dropped."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
