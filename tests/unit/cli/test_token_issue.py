"""``fengqiao token issue``: tokens the services accept, under the configured key."""

from __future__ import annotations

import jwt
import pytest
from typer.testing import CliRunner

from fengqiao.cli import app
from shared.auth import authenticator
from shared.settings import ServiceSettings
from tests.support import TEST_TOKEN_SECRET

runner = CliRunner()


def test_an_issued_token_is_the_principal_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_TOKEN_SECRET", TEST_TOKEN_SECRET)
    issue = ["token", "issue", "--role", "department", "--subject", "clerk-7"]
    result = runner.invoke(app, [*issue, "--unit", "DIST-ZF-330602", "--ttl", "15m"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    settings = ServiceSettings(auth_mode="token", auth_token_secret=TEST_TOKEN_SECRET)
    principal = authenticator(settings).verify_token(token)
    assert (principal.role.value, principal.subject, principal.department_code) == (
        "department",
        "clerk-7",
        "DIST-ZF-330602",
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 15 * 60


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--role", "grid_worker", "--subject", "gw"], "needs --unit"),
        (["--role", "mayor", "--subject", "x"], "mayor"),
        (["--role", "centre", "--subject", "x", "--ttl", "soon"], "not a lifetime"),
    ],
)
def test_issue_refuses_what_the_services_would(args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["token", "issue", *args])
    assert result.exit_code == 2
    assert needle in result.output
