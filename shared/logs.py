"""JSON logs that carry the event id and ticket id of the work in hand."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)
ticket_id_var: ContextVar[str | None] = ContextVar("ticket_id", default=None)
service_var: ContextVar[str | None] = ContextVar("service", default=None)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.service = getattr(record, "service", None) or service_var.get()
        record.event_id = getattr(record, "event_id", None) or event_id_var.get()
        record.ticket_id = getattr(record, "ticket_id", None) or ticket_id_var.get()
        return True


@contextmanager
def log_context(*, event_id: str | None = None, ticket_id: str | None = None) -> Iterator[None]:
    """Tag every log line written inside the block with these ids."""
    tokens = [event_id_var.set(event_id), ticket_id_var.set(ticket_id)]
    try:
        yield
    finally:
        ticket_id_var.reset(tokens[1])
        event_id_var.reset(tokens[0])


def configure(*, service: str, level: str = "INFO", json: bool = True) -> None:
    """Route the root logger to stderr, as JSON lines by default."""
    service_var.set(service)
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s "
                "%(service)s %(event_id)s %(ticket_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(service)s] %(name)s: %(message)s")
        )
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt at ERROR while the broker is away; warnings suffice.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
