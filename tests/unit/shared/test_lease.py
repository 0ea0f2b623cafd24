"""The host lease: one holder at a time, handed on when the holder lets go (or its process ends)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from shared.lease import HostLease


def test_one_holder_at_a_time_and_the_next_takes_over(tmp_path: Path) -> None:
    first, second = HostLease(tmp_path / "relay.lock"), HostLease(tmp_path / "relay.lock")
    assert first.held() and first.held()
    assert not second.held()
    first.release()
    assert second.held() and not first.held()
    second.release()


def test_leases_are_named_by_their_parts() -> None:
    a = HostLease.named("intake", "postgresql+asyncpg://db/test", "one")
    assert a.path == HostLease.named("intake", "postgresql+asyncpg://db/test", "one").path
    assert a.path != HostLease.named("intake", "postgresql+asyncpg://db/test", "two").path
    assert a.path != HostLease.named("dispatch", "postgresql+asyncpg://db/test", "one").path


def test_a_lease_without_a_lock_file_never_stops_its_holder(tmp_path: Path) -> None:
    nowhere = tmp_path / "missing" / "relay.lock"
    assert HostLease(nowhere).held() and HostLease(nowhere).held()


def test_letting_go_removes_the_lock_file(tmp_path: Path) -> None:
    lease = HostLease(tmp_path / "relay.lock")
    assert lease.held() and lease.path.exists()
    lease.release()
    assert not lease.path.exists()


def test_a_file_removed_after_it_was_opened_is_not_a_lease(tmp_path: Path) -> None:
    """The race of removal: a taker that opened the file just before its holder let go and
    removed it must not count the removed file's lock as the lease, while a newcomer locks the
    new file at the path."""
    path = tmp_path / "relay.lock"
    holder, late, newcomer = HostLease(path), HostLease(path), HostLease(path)
    assert holder.held()
    stale = os.open(path, os.O_RDWR)  # what `late` opened before the holder let go
    holder.release()
    assert newcomer.held()  # the new file at the path
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the removed file's lock is free
    assert not late._is_at_path(stale)
    os.close(stale)
    assert not late.held()  # and the real lease is the newcomer's
    newcomer.release()
    assert late.held()
    late.release()
