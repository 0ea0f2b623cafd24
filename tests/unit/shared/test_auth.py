"""The auth hook: signed tokens, gateway-signed headers, the embedded default, and refusals that
say what is wrong."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI, Request

from services.intake.settings import IntakeSettings
from shared.auth import (
    AUDIT_ACTOR_LENGTH,
    MAX_DEPARTMENT_LENGTH,
    MAX_SUBJECT_LENGTH,
    CurrentPrincipal,
    Principal,
    Role,
    acting_principal,
    authenticator,
    gateway_headers,
    mint_token,
    principal_from_request,
    require_roles,
)
from shared.settings import ServiceSettings
from tests.support import TEST_GATEWAY_SECRET, TEST_TOKEN_SECRET


class _Runtime:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings


def make_app(mode: str = "open", **settings: Any) -> FastAPI:
    app = FastAPI()
    values = {
        "auth_token_secret": TEST_TOKEN_SECRET,
        "auth_gateway_secret": TEST_GATEWAY_SECRET,
        **settings,
    }
    app.state.runtime = _Runtime(ServiceSettings(auth_mode=mode, **values))

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str | None]:
        acting = acting_principal()
        assert acting == principal  # what the outbox will record as the actor
        return {
            "role": principal.role.value,
            "subject": principal.subject,
            "department": principal.department_code,
        }

    @app.get("/metrics-ish")
    async def committee_only(
        principal: Annotated[Principal, Depends(require_roles(Role.COMMITTEE))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    return app


async def get(app: FastAPI, path: str, headers: Any = None, **named: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        # latin-1, as servers decode header bytes: lets a test send any byte, controls included
        raw: list[tuple[str, bytes]] = [
            (k.replace("_", "-"), v.encode("latin-1")) for k, v in named.items()
        ]
        if isinstance(headers, dict):
            raw += [(k, v.encode("latin-1")) for k, v in headers.items()]
        elif headers is not None:
            raw += [(k, v.encode("latin-1")) for k, v in headers]
        return await c.get(path, headers=raw)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def token(**claims: Any) -> str:
    values: dict[str, Any] = {"role": "committee", "subject": "c1", **claims}
    key = values.pop("key", TEST_TOKEN_SECRET)
    return mint_token(key, **values)


def _raw_token(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token as an attacker writes it, header included (the signature is junk)."""

    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment(header)}.{segment(claims)}.c2lnbmF0dXJl"


def signed(path: str, **identity: Any) -> dict[str, str]:
    return gateway_headers(TEST_GATEWAY_SECRET, method="GET", path=path, **identity)


# ------------------------------------------------------------------------------------------------
# The embedded default


async def test_open_mode_treats_anonymous_callers_as_operators() -> None:
    response = await get(make_app("open"), "/me")
    assert response.json() == {"role": "operator", "subject": "anonymous", "department": None}


async def test_open_mode_takes_unsigned_headers_for_tests_and_demos() -> None:
    response = await get(
        make_app("open"),
        "/me",
        x_fengqiao_role="grid_worker",
        x_fengqiao_subject="gw-0042",
        x_fengqiao_department="GRID-WG-339921001001001",
    )
    assert response.json() == {
        "role": "grid_worker",
        "subject": "gw-0042",
        "department": "GRID-WG-339921001001001",
    }


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ([("X-Fengqiao-Role", "committee")] * 3, "X-Fengqiao-Role sent 3 times"),
        ([("x-fengqiao-subject", "a"), ("X-FENGQIAO-SUBJECT", "b")], "X-Fengqiao-Subject sent 2"),
        ([("authorization", "Bearer a"), ("Authorization", "Bearer b")], "Authorization sent 2"),
    ],
)
async def test_an_identity_header_sent_more_than_once_is_refused_by_name(
    headers: list[tuple[str, str]], named: str
) -> None:
    """Which copy would count is not for the service to guess: any case of the name, counted."""
    response = await get(make_app("open"), "/me", headers)
    assert response.status_code == 400
    assert named in response.json()["detail"]


async def test_open_mode_still_verifies_a_token_it_is_sent() -> None:
    forged = token(key="another-secret-of-thirty-two-characters!", role="operator")
    response = await get(make_app("open"), "/me", bearer(forged))
    assert response.status_code == 401
    assert "signature" in response.json()["detail"]


# ------------------------------------------------------------------------------------------------
# Tokens


async def test_a_token_names_role_subject_and_unit() -> None:
    minted = token(role="department", subject="clerk-9", unit="DIST-ZF-330602")
    response = await get(make_app("token"), "/me", bearer(minted))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "role": "department",
        "subject": "clerk-9",
        "department": "DIST-ZF-330602",
    }


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: token(ttl_s=-120), "expired"),
        (lambda: token(key="not-the-services-secret-but-long-enough"), "signature"),
        (lambda: token(issuer="someone-else"), "issuer"),
        (lambda: token(audience="another-app"), "Audience"),
        (lambda: token(role="mayor"), "unknown role 'mayor'"),
        (lambda: token(role="department"), "unit claim"),
        (lambda: token(subject="x" * (MAX_SUBJECT_LENGTH + 1)), "sub claim"),
        (lambda: jwt.encode({"role": "operator", "sub": "x"}, None, algorithm="none"), "'none'"),
        (lambda: "not.a.jwt", "not a JWT"),
        (lambda: _raw_token({"alg": {"HS256": 1}}, {"role": "operator"}), "is not accepted"),
        (lambda: _raw_token({"alg": "HS512"}, {"role": "operator"}), "'HS512' is not accepted"),
        (
            lambda: jwt.encode(
                {"role": "operator", "sub": "x", "iss": "fengqiao", "aud": "fengqiao"},
                TEST_TOKEN_SECRET,
            ),
            "exp",
        ),
    ],
)
async def test_tokens_that_prove_nothing_are_refused(make: Any, needle: str) -> None:
    response = await get(make_app("token"), "/me", bearer(make()))
    assert response.status_code in (400, 401), response.text
    assert needle in response.json()["detail"]


async def test_a_token_without_a_role_claim_is_refused() -> None:
    claims = {"sub": "x", "iss": "fengqiao", "aud": "fengqiao", "exp": int(time.time()) + 60}
    response = await get(make_app("token"), "/me", bearer(jwt.encode(claims, TEST_TOKEN_SECRET)))
    assert response.status_code == 401
    assert response.json()["detail"] == "token has no role claim"


async def test_token_mode_refuses_a_request_without_a_token_and_says_how() -> None:
    response = await get(make_app("token"), "/me", x_fengqiao_role="operator")
    assert response.status_code == 401
    assert "bearer token" in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: Any) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def test_rs256_and_es256_tokens_verify_against_configured_public_keys(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = tmp_path / "keys.pem"
    keys.write_bytes(_pem(rsa_key) + _pem(ec_key))  # two keys: a rotation in progress
    app = make_app("token", auth_token_secret="", auth_token_public_key_file=keys)
    for key, algorithm in ((rsa_key, "RS256"), (ec_key, "ES256")):
        minted = token(key=key, algorithm=algorithm, role="centre", subject="duty")
        response = await get(app, "/me", bearer(minted))
        assert response.status_code == 200, response.text
        assert response.json()["role"] == "centre"
    # No shared secret configured: an HMAC token has no key to verify against, even one signed
    # with the public key's PEM text (the classic algorithm-confusion forgery).
    confused = jwt.api_jws.PyJWS()
    confused._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[attr-defined]
    payload = json.dumps(
        {
            "role": "operator",
            "sub": "x",
            "iss": "fengqiao",
            "aud": "fengqiao",
            "exp": int(time.time()) + 60,
        }
    ).encode()
    forged = confused.encode(payload, _pem(rsa_key), algorithm="HS256")
    response = await get(app, "/me", bearer(forged))
    assert response.status_code == 401
    assert response.json()["detail"] == "no key is configured for HS256 tokens"


class _JwksServer:
    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"


@pytest.fixture
def jwks_server(rsa_key: rsa.RSAPrivateKey) -> Iterator[_JwksServer]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    server = _JwksServer({"keys": [{**jwk, "kid": "city-idp-1", "use": "sig", "alg": "RS256"}]})
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


async def test_tokens_of_the_city_identity_provider_verify_through_its_jwks(
    jwks_server: _JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    app = make_app("token", auth_token_secret="", auth_jwks_url=jwks_server.url)
    for n in range(3):
        minted = token(key=rsa_key, algorithm="RS256", kid="city-idp-1", subject=f"c{n}")
        response = await get(app, "/me", bearer(minted))
        assert response.status_code == 200, response.text
        assert response.json()["subject"] == f"c{n}"
    assert jwks_server.fetches == 1  # the key set is cached, not fetched per request
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = token(key=stranger, algorithm="RS256", kid="city-idp-1", role="operator")
    response = await get(app, "/me", bearer(forged))
    assert response.status_code == 401
    assert "signature" in response.json()["detail"]


# ------------------------------------------------------------------------------------------------
# The gateway


async def test_header_mode_refuses_a_request_without_role() -> None:
    response = await get(make_app("header"), "/me")
    assert response.status_code == 401
    assert "X-Fengqiao-Role" in response.json()["detail"]


async def test_header_mode_takes_headers_the_gateway_signed() -> None:
    headers = signed("/me", role="department", unit="city-housing")
    response = await get(make_app("header"), "/me", headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "role": "department",
        "subject": "anonymous",
        "department": "city-housing",
    }


async def test_header_mode_refuses_unsigned_headers() -> None:
    response = await get(make_app("header"), "/me", x_fengqiao_role="operator")
    assert response.status_code == 401
    assert "signed by the gateway" in response.json()["detail"]


@pytest.mark.parametrize(
    ("tamper", "needle"),
    [
        (lambda h: {**h, "X-Fengqiao-Role": "operator"}, "does not match"),
        (lambda h: {**h, "X-Fengqiao-Department": "DIST-OTHER"}, "does not match"),
        (lambda h: {**h, "X-Fengqiao-Signature": "0" * 64}, "does not match"),
        (lambda h: {**h, "X-Fengqiao-Timestamp": "yesterday"}, "Unix seconds"),
        (lambda h: {**h, "X-Fengqiao-Timestamp": "9" * 5000}, "Unix seconds"),
        (lambda h: {**h, "X-Fengqiao-Signature": "\xe9" * 64}, "does not match"),
    ],
)
async def test_header_mode_refuses_tampered_headers(tamper: Any, needle: str) -> None:
    headers = tamper(signed("/me", role="department", subject="clerk", unit="city-housing"))
    response = await get(make_app("header"), "/me", headers)
    assert response.status_code == 401
    assert needle in response.json()["detail"]


async def test_header_mode_refuses_stale_and_replayed_signatures() -> None:
    app = make_app("header")
    stale = signed("/me", role="committee", timestamp=int(time.time()) - 3600)
    response = await get(app, "/me", stale)
    assert response.status_code == 401 and "clock" in response.json()["detail"]
    other_route = signed("/metrics-ish", role="committee")  # replayed on another path
    response = await get(app, "/me", other_route)
    assert response.status_code == 401 and "does not match" in response.json()["detail"]


async def test_header_mode_accepts_a_bearer_token_too() -> None:
    response = await get(make_app("header"), "/me", bearer(token(subject="svc")))
    assert response.json()["subject"] == "svc"


# ------------------------------------------------------------------------------------------------
# Every mode


@pytest.mark.parametrize("mode", ["open", "header", "token"])
@pytest.mark.parametrize(
    "headers",
    [
        [("x-fengqiao-role", "operator"), ("x-fengqiao-role", "hotline")],
        [("x-fengqiao-role", "hotline"), ("x-fengqiao-role", "operator")],
        [("x-fengqiao-department", "A"), ("x-fengqiao-department", "B")],
        [("authorization", "Bearer a"), ("authorization", "Bearer b")],
    ],
)
async def test_identity_headers_sent_twice_are_refused(
    mode: str, headers: list[tuple[str, str]]
) -> None:
    response = await get(make_app(mode), "/me", headers)
    assert response.status_code == 400
    assert "sent 2 times" in response.json()["detail"]


@pytest.mark.parametrize("mode", ["open", "header"])
@pytest.mark.parametrize("role", ["department", "grid_worker"])
async def test_unit_roles_are_refused_without_their_unit(mode: str, role: str) -> None:
    # Without a unit code dispatch's inbox and grab pool would apply no department filter.
    response = await get(make_app(mode), "/me", signed("/me", role=role))
    assert response.status_code == 401
    assert response.json()["detail"] == f"role {role} needs an X-Fengqiao-Department header"


def test_the_longest_actor_fits_the_audit_columns() -> None:
    # dispatch writes ``role:subject@department`` into VARCHAR(128) columns
    longest_role = max(len(r.value) for r in Role)
    assert longest_role + 1 + MAX_SUBJECT_LENGTH + 1 + MAX_DEPARTMENT_LENGTH <= AUDIT_ACTOR_LENGTH


@pytest.mark.parametrize("mode", ["open", "header"])
async def test_a_subject_at_the_limit_is_accepted(mode: str) -> None:
    subject = "u" * MAX_SUBJECT_LENGTH
    headers = signed("/me", role="grid_worker", subject=subject, unit="G" * MAX_DEPARTMENT_LENGTH)
    response = await get(make_app(mode), "/me", headers)
    assert response.status_code == 200
    assert response.json()["subject"] == subject


@pytest.mark.parametrize("mode", ["open", "header"])
@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({"x_fengqiao_subject": "u" * (MAX_SUBJECT_LENGTH + 1)}, "X-Fengqiao-Subject is 49"),
        ({"x_fengqiao_subject": "u" * 10_000}, "X-Fengqiao-Subject is 10000"),
        ({"x_fengqiao_subject": "clerk\x01admin"}, "X-Fengqiao-Subject may hold printable"),
        ({"x_fengqiao_subject": "clerk\tadmin"}, "X-Fengqiao-Subject may hold printable"),
        ({"x_fengqiao_subject": "clerk\x7f"}, "X-Fengqiao-Subject may hold printable"),
        ({"x_fengqiao_subject": "clerk\x85"}, "X-Fengqiao-Subject may hold printable"),
        # UTF-8 sent raw arrives as latin-1 mojibake; refused rather than stored garbled
        (
            {"x_fengqiao_subject": "张三".encode().decode("latin-1")},
            "X-Fengqiao-Subject may hold printable",
        ),
        (
            {"x_fengqiao_department": "D" * (MAX_DEPARTMENT_LENGTH + 1)},
            "X-Fengqiao-Department is 65",
        ),
        ({"x_fengqiao_department": "DEPT\x1b[2J"}, "X-Fengqiao-Department may hold printable"),
    ],
)
async def test_malformed_identity_headers_are_refused_naming_the_header(
    mode: str, headers: dict[str, str], needle: str
) -> None:
    for role in ({}, {"x_fengqiao_role": "department"}):
        all_headers = {"x_fengqiao_department": "city-housing", **role, **headers}
        if not role and mode == "header":
            continue  # no role in header mode: 401 for the missing role comes first
        response = await get(make_app(mode), "/me", **all_headers)
        assert response.status_code == 400, response.text
        assert needle in response.json()["detail"]


async def test_a_missing_role_is_reported_before_a_malformed_subject() -> None:
    response = await get(make_app("header"), "/me", x_fengqiao_subject="u" * 500)
    assert response.status_code == 401
    assert "X-Fengqiao-Role" in response.json()["detail"]


@pytest.mark.parametrize(
    ("identity", "status", "needle"),
    [
        ({"role": "mayor"}, 401, "unknown role 'mayor'"),
        ({"role": "department"}, 401, "X-Fengqiao-Department"),
        ({"role": "grid_worker"}, 401, "X-Fengqiao-Department"),
        ({"role": "hotline"}, 403, "role hotline may not"),
        ({"role": "committee", "subject": "c1"}, 200, "c1"),
    ],
)
async def test_role_requirements(identity: dict[str, str], status: int, needle: str) -> None:
    response = await get(make_app("header"), "/metrics-ish", signed("/metrics-ish", **identity))
    assert response.status_code == status
    assert needle in response.text


def test_require_roles_declares_the_roles_in_the_openapi_document() -> None:
    operation = make_app("token").openapi()["paths"]["/metrics-ish"]["get"]
    assert operation["security"] == [{"fengqiao": ["committee", "operator"]}]


# ------------------------------------------------------------------------------------------------
# Secrets a deployment must not run with


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"auth_mode": "token"}, "AUTH_TOKEN_SECRET is the development default"),
        (
            {"database_url": "postgresql://postgres@db/x"},
            "AUTH_TOKEN_SECRET is the development default",
        ),
        ({"auth_mode": "token", "auth_token_secret": "short"}, "at least 32 characters"),
        ({"auth_mode": "token", "auth_token_secret": ""}, "AUTH_MODE=token needs a key"),
        (
            {"auth_mode": "header", "auth_token_secret": TEST_TOKEN_SECRET},
            "AUTH_MODE=header needs AUTH_GATEWAY_SECRET",
        ),
        (
            {
                "auth_mode": "header",
                "auth_token_secret": TEST_TOKEN_SECRET,
                "auth_gateway_secret": "gw",
            },
            "AUTH_GATEWAY_SECRET must be at least 32",
        ),
    ],
)
def test_production_refuses_development_and_missing_secrets(
    values: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValueError, match=needle):
        ServiceSettings(**values)


def test_the_embedded_default_runs_on_the_development_secret() -> None:
    settings = ServiceSettings()
    assert not settings.is_production
    assert settings.token_secret() is not None


def test_production_settings_with_secrets_of_their_own_are_accepted() -> None:
    settings = ServiceSettings(
        auth_mode="header",
        database_url="postgresql://postgres@db/x",
        auth_token_secret=TEST_TOKEN_SECRET,
        auth_gateway_secret=TEST_GATEWAY_SECRET,
    )
    assert settings.is_production
    assert TEST_TOKEN_SECRET not in repr(settings)  # kept out of logs and tracebacks


@pytest.mark.parametrize(
    "values", [{"database_url": "postgresql://postgres@db/x"}, {"auth_mode": "token"}]
)
def test_intake_refuses_the_development_citizen_hash_salt_in_production(
    values: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match="INTAKE_CITIZEN_HASH_SALT is the development default"):
        IntakeSettings(auth_token_secret=TEST_TOKEN_SECRET, **values)
    accepted = IntakeSettings(
        auth_token_secret=TEST_TOKEN_SECRET, citizen_hash_salt="a-salt-of-our-own", **values
    )
    assert accepted.citizen_hash_salt == "a-salt-of-our-own"


async def test_a_remembered_token_is_refused_once_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app("token")
    minted = bearer(token(ttl_s=120, subject="short-lived"))
    assert (await get(app, "/me", minted)).status_code == 200  # verified, and remembered
    assert (await get(app, "/me", minted)).status_code == 200
    later = time.time() + 120 + 31  # past expiry and the 30 s leeway

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Later:
            return cls.fromtimestamp(later, tz)

    monkeypatch.setattr("shared.auth.time", SimpleNamespace(time=lambda: later))
    monkeypatch.setattr("jwt.api_jwt.datetime", Later)  # PyJWT's clock
    response = await get(app, "/me", minted)
    assert response.status_code == 401
    assert response.json()["detail"] == "token has expired"


def test_each_settings_object_finds_the_authenticator_of_its_own_values() -> None:
    """Settings objects are remembered by identity; a new object, even one that takes the place
    (and the id) of a collected one, is read for its own secrets and mode."""
    made = []
    for n in range(200):  # freed at once: CPython hands their ids out again
        settings = ServiceSettings(
            auth_mode="open" if n % 2 else "token",
            auth_token_secret=f"{TEST_TOKEN_SECRET}-{n}",
            auth_gateway_secret=TEST_GATEWAY_SECRET,
        )
        found = authenticator(settings)
        assert found is authenticator(settings)
        token = mint_token(f"{TEST_TOKEN_SECRET}-{n}", role="hotline", subject=f"platform-{n}")
        assert found.verify_token(token).subject == f"platform-{n}"
        assert found.mode == settings.auth_mode
        made.append(id(settings))
        del settings
    assert len(set(made)) < len(made)  # ids were reused: the case the check is about


async def test_the_principal_is_read_once_and_kept_on_request_state() -> None:
    """The principal is kept where ``request.state`` reads it, and later calls return it."""
    app = make_app()
    seen: list[Any] = []

    @app.get("/twice")
    async def twice(request: Request) -> dict[str, bool]:
        first = principal_from_request(request)
        seen.extend([first, request.state.principal, principal_from_request(request)])
        return {"ok": True}

    response = await get(app, "/twice", x_fengqiao_role="centre", x_fengqiao_subject="c-1")
    assert response.status_code == 200
    assert seen[0] == Principal(Role.CENTRE, "c-1")
    assert seen[1] is seen[0] and seen[2] is seen[0]
