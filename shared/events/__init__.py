"""Domain events, declared once each in the module of the service that emits them."""

from __future__ import annotations

import importlib

from shared.events.base import (
    Event,
    EventDecodeError,
    Record,
    UnknownEventType,
    decode,
    encode,
    register,
    registry,
)

# Logical topic names; the bus prefixes them (``fengqiao.intake.tickets``).
INTAKE_TOPIC = "intake.tickets"
DISPATCH_TOPIC = "dispatch.events"
MEDIATION_TOPIC = "mediation.events"
EVALUATION_TOPIC = "evaluation.events"
DEAD_LETTER_TOPIC = "deadletter"
ALL_TOPICS = (INTAKE_TOPIC, DISPATCH_TOPIC, MEDIATION_TOPIC, EVALUATION_TOPIC, DEAD_LETTER_TOPIC)
# The topics each service consumes (its ``ServiceSpec.consumes``), by service: also what a
# planned rotation of the embedded broker asks the consumer groups' positions on.
CONSUMES: dict[str, tuple[str, ...]] = {
    "intake": (DISPATCH_TOPIC, MEDIATION_TOPIC),
    "dispatch": (INTAKE_TOPIC, MEDIATION_TOPIC, EVALUATION_TOPIC),
    "mediation": (DISPATCH_TOPIC,),
    "evaluation": (INTAKE_TOPIC, DISPATCH_TOPIC, MEDIATION_TOPIC),
}

_EVENT_MODULES = ("intake", "dispatch", "mediation", "evaluation")


def load_all() -> None:
    """Import every event module so the registry is complete."""
    for name in _EVENT_MODULES:
        importlib.import_module(f"shared.events.{name}")


__all__ = [
    "ALL_TOPICS",
    "CONSUMES",
    "DEAD_LETTER_TOPIC",
    "DISPATCH_TOPIC",
    "EVALUATION_TOPIC",
    "INTAKE_TOPIC",
    "MEDIATION_TOPIC",
    "Event",
    "EventDecodeError",
    "Record",
    "UnknownEventType",
    "decode",
    "encode",
    "load_all",
    "register",
    "registry",
]
