"""A group's appeals: each distinct address normalized once, the same keys as one by one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.intake import repeats
from services.intake.canonical import TicketDraft
from services.intake.channels import get_channel
from tests.integration.intake.support import IntakeEnv

ADDRESSES = ("枫桥市越城区北海街道塔山社区8号", "北海街道 塔山社区８号", None, "府山街道西小路3号")


async def test_a_groups_addresses_are_normalized_once_each(
    env: IntakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve rows in two units at four addresses (one missing): four normalizations, and every
    row's address key the one ``normalize_address`` gives its public address."""
    calls: list[str | None] = []
    real = repeats.normalize_address

    def counted(address: str | None) -> str | None:
        calls.append(address)
        return real(address)

    monkeypatch.setattr(repeats, "normalize_address", counted)
    channel = get_channel("hotline-12345-phone")

    def draft(n: int) -> TicketDraft:
        return TicketDraft(
            channel_code=channel.code,
            title="路灯不亮",
            content=f"门口路灯坏了{n}天",
            citizen_phone=env.phone(),
            address=ADDRESSES[n % len(ADDRESSES)],
            category_code="0102",
        )

    units = [[(channel, draft(n)) for n in range(u, 12, 2)] for u in range(2)]
    outcomes = await env.ctx.ready_pipeline.prepare_group(units, now=datetime.now(UTC))
    assert all(isinstance(o, list) and len(o) == 6 for o in outcomes), outcomes
    assert len(calls) == len(set(calls)) == len(ADDRESSES)
    monkeypatch.setattr(repeats, "normalize_address", real)
    prepared = [p for o in outcomes for p in o]  # type: ignore[union-attr]
    keys = {p.row["address_key"] for p in prepared}
    assert None in keys and len(keys) >= 3
    for p in prepared:
        assert p.row["address_key"] == real(p.normalized.public_address)
