"""A service's PostgreSQL schema is named as the connections' search path and CREATE SCHEMA both
read it: a lower-case name, or a settings error that says so."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import ServiceSettings


@pytest.mark.parametrize("name", ["intake", "t_0a1b2c3d4e_intake", "_scratch", "a" * 63])
def test_a_plain_name_is_taken(name: str) -> None:
    assert ServiceSettings(database_schema=name).database_schema == name


def test_an_empty_name_is_none() -> None:
    assert ServiceSettings(database_schema="").database_schema is None


@pytest.mark.parametrize(
    "name", ["Intake", "inA_1", "my city", 'x"; DROP SCHEMA public; --', "1st", "a" * 64]
)
def test_any_other_name_is_refused_naming_the_setting(name: str) -> None:
    with pytest.raises(ValidationError, match=r"database_schema .* must be a lower-case"):
        ServiceSettings(database_schema=name)
