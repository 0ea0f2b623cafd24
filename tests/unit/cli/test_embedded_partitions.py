"""``fengqiao up`` gives its embedded broker's topics one partition, and its consumers every
partition of their topics without a group join, unless told otherwise."""

from __future__ import annotations

import pytest

from fengqiao.supervisor import EMBEDDED_PARTITIONS, embedded_defaults
from shared.settings import BusSettings

NAMES = ("KAFKA_TOPIC_PARTITIONS", "KAFKA_CONSUMER_TAKES_ALL")


@pytest.fixture(autouse=True)
def _unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_unset_the_embedded_broker_gets_one_partition_a_topic_and_consumers_that_take_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert EMBEDDED_PARTITIONS == 1
    assert BusSettings().kafka_consumer_takes_all is False  # elsewhere, groups share partitions
    defaults = embedded_defaults(BusSettings())
    assert defaults == {"KAFKA_TOPIC_PARTITIONS": "1", "KAFKA_CONSUMER_TAKES_ALL": "true"}
    for name, value in defaults.items():
        monkeypatch.setenv(name, value)
    settings = BusSettings()  # what the services then read
    assert settings.kafka_topic_partitions == 1 and settings.kafka_consumer_takes_all is True


@pytest.mark.parametrize("name", ["KAFKA_TOPIC_PARTITIONS", "kafka_topic_partitions"])
def test_a_partition_count_the_operator_set_is_kept(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "2")
    assert embedded_defaults(BusSettings()) == {"KAFKA_CONSUMER_TAKES_ALL": "true"}
    assert BusSettings().kafka_topic_partitions == 2


def test_consumers_the_operator_sent_to_their_groups_stay_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service scaled out to several processes on the embedded broker needs the join."""
    monkeypatch.setenv("KAFKA_CONSUMER_TAKES_ALL", "false")
    assert embedded_defaults(BusSettings()) == {"KAFKA_TOPIC_PARTITIONS": "1"}
    assert BusSettings().kafka_consumer_takes_all is False
