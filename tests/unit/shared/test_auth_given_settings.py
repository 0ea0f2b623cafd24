"""The caller's principal from settings the caller holds, and a request with no identity header."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

import shared.auth as auth
from shared.auth import Principal, Role, principal_from_request
from shared.settings import ServiceSettings
from tests.support import TEST_GATEWAY_SECRET, TEST_TOKEN_SECRET

_HEADERS = [(b"host", b"intake"), (b"content-type", b"application/json")]


class _NoState:
    """An app whose state must not be read: the settings were handed over."""

    @property
    def state(self) -> Any:
        raise AssertionError("the app's state was read although the settings were given")


def _settings(mode: str) -> ServiceSettings:
    return ServiceSettings(
        auth_mode=mode,
        auth_token_secret=TEST_TOKEN_SECRET,
        auth_gateway_secret=TEST_GATEWAY_SECRET,
    )


def _request(headers: list[tuple[bytes, bytes]]) -> Request:
    return Request({"type": "http", "headers": headers, "app": _NoState()})


def test_given_settings_are_used_without_reading_the_apps_state() -> None:
    principal = principal_from_request(_request(_HEADERS), settings=_settings("open"))
    assert principal == Principal(Role.OPERATOR, "anonymous")
    # Unsigned identity headers in open mode: the same rules as through the app's state.
    named = _request([*_HEADERS, (b"x-fengqiao-role", b"centre"), (b"x-fengqiao-subject", b"c-7")])
    assert principal_from_request(named, settings=_settings("open")) == Principal(
        Role.CENTRE, "c-7"
    )


def test_no_identity_header_skips_the_value_checks_and_keeps_every_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def checked(*_: Any, **__: Any) -> str | None:
        raise AssertionError("an absent header's value was checked")

    monkeypatch.setattr(auth, "_checked_value", checked)
    principal = principal_from_request(_request(_HEADERS), settings=_settings("open"))
    assert principal is auth._OPEN_OPERATOR
    for mode, needle in (("token", "missing bearer token"), ("header", "missing X-Fengqiao-Role")):
        with pytest.raises(auth.HTTPException) as refused:
            principal_from_request(_request(_HEADERS), settings=_settings(mode))
        assert refused.value.status_code == 401
        assert needle in str(refused.value.detail)
