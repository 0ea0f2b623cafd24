"""Writing a batch set-wise: the rows and events of many placements staged as plain drafts and
written with one insert per table at the end, instead of mapped instances flushed one by one.

The functions that create rows take a ``Writer``: a session (the row is a mapped instance,
added to it, as every single action does) or a ``Staged`` batch (the row is a ``Draft`` with
the same attributes, written by ``Staged.write``). Intake's tickets are routed a fetched batch at
a time through ``Staged``: constructing and flushing the mapped instances was ~40 % of it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from shared.bulk import Draft, insert_drafts
from shared.events.base import Event
from shared.outbox import Outbox

M = TypeVar("M", bound=SQLModel)


class Staged:
    """The rows and events of a batch, in the order they were made."""

    def __init__(self) -> None:
        self.drafts: dict[type[SQLModel], list[Draft]] = defaultdict(list)
        self.events: list[Event] = []

    async def write(self, session: AsyncSession, outbox: Outbox) -> None:
        """One insert per table, then the events in one outbox insert."""
        for model, drafts in self.drafts.items():
            await insert_drafts(session, drafts, model.__table__)  # type: ignore[attr-defined]
        await outbox.add(session, *self.events)


Writer = AsyncSession | Staged


def new_row(writer: Writer, model: type[M], **values: Any) -> M:
    """A new row of ``model``: a mapped instance added to the session, or a staged draft (which
    has the same attributes, and is what the caller reads and sets)."""
    if isinstance(writer, Staged):
        draft = Draft(model, **values)
        writer.drafts[model].append(draft)
        return cast(M, draft)
    row = model(**values)
    writer.add(row)
    return row


async def emit(writer: Writer, outbox: Outbox, *events: Event) -> None:
    """Events in the writer's transaction: staged with the batch, or added to the outbox now."""
    if isinstance(writer, Staged):
        writer.events.extend(events)
    else:
        await outbox.add(writer, *events)
