"""The store-side decision (``repeat_lookup.decide``) is ``find_repeats`` with a chain count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.repeat_lookup import NOT_A_REPEAT, Earlier, Verdict, decide
from services.intake.repeats import RepeatPolicy, appeal, find_repeats

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TEXTS = (
    "翠苑三区地下车库积水严重，最深处没过脚踝，排水泵坏了",
    "翠苑三区地下车库积水严重，最深处没过脚踝，排水泵坏了，物业一直不修",
    "楼下烧烤店每天营业到凌晨两点，油烟和噪音扰民",
    "路灯坏了",
    "",
)


def reference(new: object, earlier: list[Earlier], policy: RepeatPolicy) -> Verdict:
    """The definition: ``find_repeats``, counting the longest chain among the matches."""
    decision = find_repeats(new, [e.appeal for e in earlier], policy)  # type: ignore[arg-type]
    if not decision.is_repeat:
        return NOT_A_REPEAT
    counts = {e.appeal.ticket_id: e.repeat_count for e in earlier}
    chain = max(counts.get(m.ticket_id, 0) + 1 for m in decision.matches)
    return Verdict(
        repeat_of=decision.repeat_of,
        repeat_count=max(decision.repeat_count, chain),
        reason=decision.matches[0].reason,
    )


candidate = st.fixed_dictionaries(
    {
        "days": st.integers(-3, 40),
        "text": st.sampled_from(TEXTS),
        "citizen": st.sampled_from([None, "h1", "h2"]),
        "grid": st.sampled_from([None, "g1", "g2"]),
        "address": st.sampled_from([None, "北海街道塔山社区8号", "塔山社区8号"]),
        "repeat_of": st.sampled_from([None, "T0"]),
        "count": st.integers(0, 5),
    }
)


@settings(max_examples=300, deadline=None)
@given(
    new=candidate,
    olds=st.lists(candidate, max_size=8),
    citizen_min=st.sampled_from([0.0, 0.3]),
)
def test_decide_is_find_repeats_with_the_chain_count(
    new: dict[str, object], olds: list[dict[str, object]], citizen_min: float
) -> None:
    policy = RepeatPolicy(citizen_min_similarity=citizen_min)

    def make(fields: dict[str, object], ticket_id: str | None, at: datetime) -> object:
        return appeal(
            received_at=at,
            title="",
            content=str(fields["text"]),
            ticket_id=ticket_id,
            citizen_hash=fields["citizen"],  # type: ignore[arg-type]
            grid_code=fields["grid"],  # type: ignore[arg-type]
            address=fields["address"],  # type: ignore[arg-type]
            repeat_of=fields["repeat_of"] if ticket_id else None,  # type: ignore[arg-type]
        )

    now = T0 + timedelta(days=35)
    fresh = make(new, "N", now)
    earlier = [
        Earlier(make(o, f"T{i + 1}", now - timedelta(days=o["days"])), o["count"])  # type: ignore[arg-type, operator]
        for i, o in enumerate(olds)
    ]
    assert decide(fresh, earlier, policy) == reference(fresh, earlier, policy)  # type: ignore[arg-type]
