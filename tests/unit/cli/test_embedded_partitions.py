"""``fengqiao up`` gives its embedded broker's topics one partition unless told otherwise."""

from __future__ import annotations

import pytest

from fengqiao.supervisor import EMBEDDED_PARTITIONS, embedded_defaults
from shared.settings import BusSettings


def test_an_unset_partition_count_becomes_one_for_the_embedded_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_TOPIC_PARTITIONS", raising=False)
    monkeypatch.delenv("kafka_topic_partitions", raising=False)
    assert EMBEDDED_PARTITIONS == 1
    defaults = embedded_defaults(BusSettings())
    assert defaults == {"KAFKA_TOPIC_PARTITIONS": "1"}
    monkeypatch.setenv(*next(iter(defaults.items())))
    assert BusSettings().kafka_topic_partitions == 1  # what the services then read


@pytest.mark.parametrize("name", ["KAFKA_TOPIC_PARTITIONS", "kafka_topic_partitions"])
def test_a_partition_count_the_operator_set_is_kept(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.delenv("KAFKA_TOPIC_PARTITIONS", raising=False)
    monkeypatch.setenv(name, "2")
    assert embedded_defaults(BusSettings()) == {}
    assert BusSettings().kafka_topic_partitions == 2
