"""The host lease: one holder at a time, handed on when the holder lets go (or its process ends)."""

from __future__ import annotations

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
