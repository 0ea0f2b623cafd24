"""Who is calling: the hook every route that needs an identity depends on.

A caller proves who it is in one of three ways, chosen by ``<SERVICE>_AUTH_MODE``:

- ``token``: a signed JWT in ``Authorization: Bearer …`` whose claims name the ``role``, the
  subject (``sub``) and, for departments, grid workers and scoped centres, the ``unit``. Keys
  come from configuration (a shared HS256 secret, PEM public keys for RS256 / ES256) or from the
  city identity provider's JWKS URL; issuer, audience and expiry are always checked.
- ``header``: a trusted gateway authenticates users and sets ``X-Fengqiao-Role``,
  ``X-Fengqiao-Subject`` and ``X-Fengqiao-Department`` (the unit), and proves it set them with
  ``X-Fengqiao-Timestamp`` and ``X-Fengqiao-Signature``: an HMAC-SHA256, under the secret only
  the gateway and the services hold, over the identity, the method, the path and the time
  (``gateway_signature``). Unsigned, stale or tampered headers are refused with 401. A bearer
  token is accepted as well.
- ``open`` (the embedded default only): a caller that names no role acts as ``operator``; a
  caller may still name one with the headers above, unsigned, which is how tests and demos act
  as a department. A bearer token, when sent, is verified as in ``token`` mode.

In every mode an identity header or ``Authorization`` sent twice is refused with 400 (proxies
disagree on which copy wins), a department or grid worker without its unit is refused with 401
(it would otherwise see every unit's dispatches), and a subject or unit that is too long or holds
anything but printable ASCII is refused: both end up in audit columns.

``require_roles`` both checks the role and declares it: the roles appear as the scopes of the
``fengqiao`` security requirement of the route in the OpenAPI document, which is how a test
finds any route that declares none. The principal of the request is also kept in a context
variable for the outbox, which records who caused every event it writes (``acting_principal``).

Kept as one module of about 600 lines on purpose: every way an identity is established and the
FastAPI dependencies that apply it are read together in a security review, and a split would
scatter the refusal rules (duplicate headers, algorithms, units) across files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import HTTPException, Request, Security, status
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

# Audit columns hold ``role:subject@department`` in 128 characters (dispatch's ``actor``): the
# longest role, the subject, the department and the two separators must fit.
AUDIT_ACTOR_LENGTH = 128
MAX_SUBJECT_LENGTH = 48
MAX_DEPARTMENT_LENGTH = 64  # dispatch's department codes
MAX_TOKEN_LENGTH = 8192  # a JWT larger than this is not one an identity provider issues
VERIFIED_TOKENS = 4096  # tokens remembered as verified, per configuration
VERIFIED_FOR_S = 60.0

SCHEME_NAME = "fengqiao"
ROLE_HEADER = "X-Fengqiao-Role"
SUBJECT_HEADER = "X-Fengqiao-Subject"
UNIT_HEADER = "X-Fengqiao-Department"
TIMESTAMP_HEADER = "X-Fengqiao-Timestamp"
SIGNATURE_HEADER = "X-Fengqiao-Signature"
# Headers that must arrive once: with two copies, which one a proxy or framework reads differs.
SINGLE_HEADERS = (
    ROLE_HEADER,
    SUBJECT_HEADER,
    UNIT_HEADER,
    TIMESTAMP_HEADER,
    SIGNATURE_HEADER,
    "Authorization",
)

# HS256 only: a longer hash wants a longer secret than deployments are asked for (RFC 7518 3.2).
HMAC_ALGORITHMS = frozenset({"HS256"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = frozenset({"ES256", "ES384", "ES512"})
TOKEN_ALGORITHMS = HMAC_ALGORITHMS | RSA_ALGORITHMS | EC_ALGORITHMS  # never "none"


class Role(StrEnum):
    HOTLINE = "hotline"  # the 12345 platform and other channels: post tickets and callbacks
    DEPARTMENT = "department"  # acts on its own dispatches only
    GRID_WORKER = "grid_worker"
    CENTRE = "centre"  # the dispatch centre: approves returns and extensions, supervises
    MEDIATOR = "mediator"
    COMMITTEE = "committee"  # reads metrics, writes nothing
    OPERATOR = "operator"  # runs the system


# Roles that act for one unit: without the unit code their queries would not be scoped at all.
UNIT_ROLES = frozenset({Role.DEPARTMENT, Role.GRID_WORKER})

# The actor role recorded for work no request asked for: consumers, schedulers, start-up.
SYSTEM_ROLE = "system"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    role: Role
    subject: str
    department_code: str | None = None  # the unit: a department, a grid or a centre


# ``open`` mode's caller that names neither role nor subject (frozen: one instance serves all).
_OPEN_OPERATOR = Principal(Role.OPERATOR, "anonymous")


class AuthConfig(Protocol):
    """The settings auth reads (``shared.settings.ServiceSettings`` has them all)."""

    auth_mode: str
    auth_token_issuer: str
    auth_token_audience: str
    auth_token_leeway_s: float
    auth_token_public_key_file: Path | None
    auth_jwks_url: str | None
    auth_gateway_max_skew_s: float

    def token_secret(self) -> str | None: ...

    def gateway_secret(self) -> str | None: ...


# ------------------------------------------------------------------------------------------------
# Refusals


def _unauthorized(detail: str) -> HTTPException:
    # RFC 6750: a 401 names the scheme the caller should use.
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="fengqiao"'},
    )


def _bad_request(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail)


def _checked_value(name: str, value: str | None, max_length: int) -> str | None:
    """``value`` unchanged, or 400 naming ``name`` when it is too long or not printable ASCII
    (no control characters: the value is written to audit rows and logs)."""
    if value is None:
        return None
    if len(value) > max_length:
        raise _bad_request(f"{name} is {len(value)} characters long; at most {max_length}")
    if not all(" " <= ch <= "~" for ch in value):
        raise _bad_request(f"{name} may hold printable ASCII only (no control characters)")
    return value


def _role(raw: str, *, where: str) -> Role:
    try:
        return Role(raw)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise _unauthorized(f"unknown role {raw[:32]!r} in {where}; one of {known}") from None


def _principal(role: Role, subject: str, unit: str | None, *, unit_from: str) -> Principal:
    if role in UNIT_ROLES and not unit:
        raise _unauthorized(f"role {role.value} needs {unit_from}")
    return Principal(role, subject, unit or None)


# ------------------------------------------------------------------------------------------------
# The gateway's proof


def gateway_signature(
    secret: str,
    *,
    timestamp: str,
    method: str,
    path: str,
    role: str,
    subject: str | None,
    unit: str | None,
) -> str:
    """The hex HMAC-SHA256 a trusted gateway sends in ``X-Fengqiao-Signature``.

    The message is the lines ``fengqiao-gateway-v1``, the Unix timestamp sent in
    ``X-Fengqiao-Timestamp``, the method, the path, the role, the subject and the unit (empty
    when absent). Values are printable ASCII (checked before), so the lines cannot run together.
    """
    message = "\n".join(
        ("fengqiao-gateway-v1", timestamp, method.upper(), path, role, subject or "", unit or "")
    )
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def gateway_headers(
    secret: str,
    *,
    method: str,
    path: str,
    role: str,
    subject: str | None = None,
    unit: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The identity headers a gateway sends for one request, signed (for gateways and tests)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {ROLE_HEADER: role, TIMESTAMP_HEADER: stamp}
    if subject is not None:
        headers[SUBJECT_HEADER] = subject
    if unit is not None:
        headers[UNIT_HEADER] = unit
    headers[SIGNATURE_HEADER] = gateway_signature(
        secret, timestamp=stamp, method=method, path=path, role=role, subject=subject, unit=unit
    )
    return headers


def mint_token(
    key: Any,
    *,
    role: str,
    subject: str,
    unit: str | None = None,
    ttl_s: float = 900,
    issuer: str = "fengqiao",
    audience: str = "fengqiao",
    algorithm: str = "HS256",
    now: float | None = None,
    kid: str | None = None,
) -> str:
    """A signed token as the identity provider issues it (``fengqiao token issue``, tests)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "role": role,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_s),
    }
    if unit is not None:
        claims["unit"] = unit
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


# ------------------------------------------------------------------------------------------------
# Verification


class Authenticator:
    """Turns a request into a ``Principal`` under one configuration; built once per configuration
    (``authenticator``) so that parsed keys and the JWKS cache are shared by every request."""

    def __init__(self, config: AuthConfig) -> None:
        self.mode = config.auth_mode
        self._issuer = config.auth_token_issuer
        self._audience = config.auth_token_audience
        self._leeway = config.auth_token_leeway_s
        self._secret = config.token_secret()
        self._gateway_secret = config.gateway_secret()
        self._skew = config.auth_gateway_max_skew_s
        self._public_keys = _load_public_keys(config.auth_token_public_key_file)
        self._verified: dict[str, tuple[Principal, float]] = {}
        # The key set is cached for five minutes; single keys are not cached apart from it (that
        # cache never expires: a key the provider withdrew would be trusted until a restart).
        self._jwks = (
            jwt.PyJWKClient(config.auth_jwks_url, cache_keys=False, lifespan=300, timeout=5)
            if config.auth_jwks_url
            else None
        )

    # -- the request

    def principal(self, request: Request, *, mode: str | None = None) -> Principal:
        """The caller of ``request``, or 401 / 400 naming what is wrong."""
        mode = mode or self.mode
        identity = _identity_headers(request)
        token = _bearer(identity.get("authorization")) if identity else None
        if token is not None:
            return self.verify_token(token)
        if mode == "token":
            raise _unauthorized(
                "missing bearer token (Authorization: Bearer …); this service verifies tokens"
            )
        raw_role = identity.get(_ROLE)
        if raw_role is None and mode != "open":
            raise _unauthorized(f"missing {ROLE_HEADER} header (or a bearer token)")
        if not identity:  # no identity header at all: an open service's anonymous operator
            return _OPEN_OPERATOR
        subject = _checked_value(SUBJECT_HEADER, identity.get(_SUBJECT), MAX_SUBJECT_LENGTH)
        unit = _checked_value(UNIT_HEADER, identity.get(_UNIT), MAX_DEPARTMENT_LENGTH)
        if raw_role is None:
            return Principal(Role.OPERATOR, subject) if subject else _OPEN_OPERATOR
        if mode != "open":
            self._verify_gateway(request, raw_role, subject, unit)
        role = _role(raw_role, where=ROLE_HEADER)
        return _principal(role, subject or "anonymous", unit, unit_from=f"an {UNIT_HEADER} header")

    def _verify_gateway(
        self, request: Request, role: str, subject: str | None, unit: str | None
    ) -> None:
        """401 unless the identity headers carry a fresh signature under the gateway secret."""
        signature = request.headers.get(SIGNATURE_HEADER)
        stamp = request.headers.get(TIMESTAMP_HEADER)
        if signature is None or stamp is None:
            raise _unauthorized(
                f"identity headers must be signed by the gateway ({TIMESTAMP_HEADER} and "
                f"{SIGNATURE_HEADER}), or send a bearer token"
            )
        if self._gateway_secret is None:
            raise _unauthorized("no gateway secret is configured: signed headers cannot be checked")
        try:
            sent_at = int(stamp)
        except ValueError:
            raise _unauthorized(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
        if abs(time.time() - sent_at) > self._skew:
            raise _unauthorized(
                f"{TIMESTAMP_HEADER} is more than {self._skew:g} s away from this server's clock"
            )
        # ``raw_path``: the path exactly as the gateway sent it, before percent-decoding (some
        # servers leave the query string on it; the signature covers the path alone).
        raw_path = request.scope.get("raw_path")
        path = raw_path.split(b"?", 1)[0].decode("latin-1") if raw_path else request.url.path
        expected = gateway_signature(
            self._gateway_secret,
            timestamp=stamp,
            method=request.method,
            path=path,
            role=role,
            subject=subject,
            unit=unit,
        )
        # Bytes: compare_digest refuses str holding anything but ASCII, and headers may.
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise _unauthorized(f"{SIGNATURE_HEADER} does not match the identity headers")

    # -- tokens

    def verify_token(self, token: str) -> Principal:
        """The principal a bearer token names, or 401 naming why it is not accepted.

        A client sends the same token with every request until it expires, and PyJWT spends a
        few hundred microseconds on each verification: a token that verified is remembered for
        up to ``VERIFIED_FOR_S`` (never past its expiry), so a key the identity provider
        withdraws stops being honoured within that time.
        """
        now = time.time()
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, valid_until = remembered
            if now < valid_until:
                return principal
            del self._verified[token]
        principal, expires_at = self._verify_token(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (principal, min(expires_at, now + VERIFIED_FOR_S))
        return principal

    def _verify_token(self, token: str) -> tuple[Principal, float]:
        if len(token) > MAX_TOKEN_LENGTH:
            raise _unauthorized(f"bearer token is over {MAX_TOKEN_LENGTH} characters")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"bearer token is not a JWT: {exc}") from None
        if not isinstance(algorithm, str) or algorithm not in TOKEN_ALGORITHMS:
            accepted = ", ".join(sorted(TOKEN_ALGORITHMS))
            raise _unauthorized(f"token algorithm {algorithm!r} is not accepted; one of {accepted}")
        claims = self._decode(token, algorithm)
        raw_role = claims.get("role")
        if not isinstance(raw_role, str):
            raise _unauthorized("token has no role claim")
        subject = claims["sub"]
        unit = claims.get("unit")
        if not isinstance(subject, str) or not (unit is None or isinstance(unit, str)):
            raise _unauthorized("token sub and unit claims must be strings")
        role = _role(raw_role, where="the token's role claim")
        subject = _checked_value("token sub claim", subject, MAX_SUBJECT_LENGTH)
        if not subject:
            raise _unauthorized("token sub claim is empty")
        unit = _checked_value("token unit claim", unit, MAX_DEPARTMENT_LENGTH)
        principal = _principal(role, subject, unit, unit_from="a unit claim in its token")
        return principal, float(claims["exp"]) + self._leeway

    def _decode(self, token: str, algorithm: str) -> dict[str, Any]:
        keys = self._keys_for(token, algorithm)
        if not keys:
            raise _unauthorized(f"no key is configured for {algorithm} tokens")
        for index, key in enumerate(keys):
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
            except jwt.InvalidSignatureError:
                if index == len(keys) - 1:
                    raise _unauthorized("token signature does not verify") from None
            except jwt.ExpiredSignatureError:
                raise _unauthorized("token has expired") from None
            except jwt.PyJWTError as exc:
                raise _unauthorized(f"token refused: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _keys_for(self, token: str, algorithm: str) -> list[Any]:
        """The keys that may have signed a token of ``algorithm`` (the family decides: an HMAC
        token is never checked against a public key, which would let anyone sign with it)."""
        if algorithm in HMAC_ALGORITHMS:
            return [self._secret] if self._secret else []
        family = rsa.RSAPublicKey if algorithm in RSA_ALGORITHMS else ec.EllipticCurvePublicKey
        keys: list[Any] = [k for k in self._public_keys if isinstance(k, family)]
        if self._jwks is not None:
            try:
                keys.append(self._jwks.get_signing_key_from_jwt(token).key)
            except jwt.PyJWKClientConnectionError as exc:
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    f"the identity provider's keys are unavailable: {exc}",
                    headers={"Retry-After": "5"},
                ) from None
            except jwt.PyJWTError as exc:  # no key with the token's kid, or a bad key set
                if not keys:
                    raise _unauthorized(f"token key not found: {exc}") from None
        return keys

    async def warm(self, request: Request) -> None:
        """Fetch the JWKS off the event loop when its cache is cold and a token needs it."""
        if self._jwks is None or _bearer(request.headers.get("authorization")) is None:
            return
        cache = self._jwks.jwk_set_cache
        if cache is None or cache.get() is None:
            # A failure here is reported by verification, with the status it deserves.
            with contextlib.suppress(jwt.PyJWTError):
                await asyncio.to_thread(self._jwks.get_jwk_set)


_ROLE, _SUBJECT, _UNIT = (name.lower() for name in (ROLE_HEADER, SUBJECT_HEADER, UNIT_HEADER))
_SINGLE = {name.lower().encode("latin-1"): name for name in SINGLE_HEADERS}


def _identity_headers(request: Request) -> dict[str, str]:
    """The identity headers of ``request`` by lower-case name, read in one pass over the raw
    headers (ASGI names are lower case); 400 naming a header sent more than once."""
    found: dict[str, str] = {}
    raw: list[tuple[bytes, bytes]] = request.scope["headers"]  # what ``headers.raw`` returns
    for key, value in raw:
        name = _SINGLE.get(key)
        if name is None:
            continue
        lowered = key.decode("latin-1")
        if lowered in found:
            copies = sum(1 for k, _ in raw if k == key)
            raise _bad_request(f"{name} sent {copies} times; send it once")
        found[lowered] = value.decode("latin-1")
    return found


def _bearer(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Authorization must be 'Bearer <token>'")
    return token.strip()


def _load_public_keys(path: Path | None) -> list[Any]:
    """Every PEM public key in the file (several allow a rotation: old and new side by side)."""
    if path is None:
        return []
    text = path.read_bytes()
    marker = b"-----BEGIN PUBLIC KEY-----"
    blocks = [marker + part for part in text.split(marker)[1:]]
    if not blocks:
        raise ValueError(f"{path} holds no PEM public key")
    return [load_pem_public_key(block) for block in blocks]


def _config_key(config: AuthConfig) -> tuple[Any, ...]:
    return (
        config.auth_mode,
        config.auth_token_issuer,
        config.auth_token_audience,
        config.auth_token_leeway_s,
        config.auth_token_public_key_file,
        config.auth_jwks_url,
        config.auth_gateway_max_skew_s,
        config.token_secret(),
        config.gateway_secret(),
    )


_AUTHENTICATORS: dict[tuple[Any, ...], Authenticator] = {}
# The configuration objects last asked about, by identity: a request then finds its authenticator
# without reading nine settings, two of them secrets. A service's settings are not changed once
# it runs (a changed configuration is a new settings object). The object is held, so its id is
# not reused while it is here.
_BY_OBJECT: dict[int, tuple[AuthConfig, Authenticator]] = {}
_BY_OBJECT_MAX = 64


def authenticator(config: AuthConfig) -> Authenticator:
    """The authenticator of a configuration, built on first use and kept."""
    seen = _BY_OBJECT.get(id(config))
    if seen is not None and seen[0] is config:
        return seen[1]
    key = _config_key(config)
    found = _AUTHENTICATORS.get(key)
    if found is None:
        found = _AUTHENTICATORS[key] = Authenticator(config)
    if len(_BY_OBJECT) >= _BY_OBJECT_MAX:
        _BY_OBJECT.clear()
    _BY_OBJECT[id(config)] = (config, found)
    return found


# ------------------------------------------------------------------------------------------------
# Who is acting: for the audit rows the outbox writes

_acting: ContextVar[Principal | None] = ContextVar("fengqiao_acting_principal", default=None)


def acting_principal() -> Principal | None:
    """The principal of the request being served in this task; None for system work."""
    return _acting.get()


def principal_from_request(
    request: Request, *, mode: str | None = None, settings: AuthConfig | None = None
) -> Principal:
    """Build the caller's principal from the request (once per request), or raise 401 naming what
    is missing (400 naming the header whose value is malformed or repeated). ``settings``: the
    app's runtime settings when the caller holds them (else read from the app's state)."""
    # ``request.state`` keeps its attributes in the scope's "state" dict: read there, the first
    # call of a request does not build a ``State`` and raise inside its ``__getattr__``.
    state: dict[str, Any] = request.scope.setdefault("state", {})
    found = state.get("principal")
    if isinstance(found, Principal):
        return found
    if settings is None:
        settings = request.app.state.runtime.settings
    principal = authenticator(settings).principal(request, mode=mode)
    state["principal"] = principal
    _acting.set(principal)
    return principal


@lru_cache(maxsize=1)
def _bearer_model() -> HTTPBearerModel:
    return HTTPBearerModel(
        bearerFormat="JWT",
        description=(
            "A JWT with role, sub and unit claims (AUTH_MODE=token), or identity headers signed "
            "by the trusted gateway (AUTH_MODE=header). The scopes of a route's requirement are "
            "the roles it admits."
        ),
    )


class FengqiaoIdentity(SecurityBase):
    """The security scheme every role check depends on: it resolves the caller, and its scopes
    in the OpenAPI document are the roles a route admits."""

    def __init__(self) -> None:
        self.model = _bearer_model()
        self.scheme_name = SCHEME_NAME
        self.auto_error = True

    async def __call__(self, request: Request) -> Principal:
        await authenticator(request.app.state.runtime.settings).warm(request)
        return principal_from_request(request)


identity = FengqiaoIdentity()


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the caller, per the service's auth mode."""
    return await identity(request)


CurrentPrincipal = Annotated[Principal, Security(identity)]


# A route anyone may call, unauthenticated (Open311 for citizens, published reference data),
# says so, and why, in its OpenAPI operation: ``openapi_extra=public("…")``.
PUBLIC_EXTENSION = "x-fengqiao-public"


def public(reason: str, **openapi_extra: Any) -> dict[str, Any]:
    """``openapi_extra`` declaring a route open to every caller, with the reason it may be."""
    if not reason.strip():
        raise ValueError("a public route states why it may be public")
    return {**openapi_extra, PUBLIC_EXTENSION: reason}


def checks_roles(*roles: Role, **openapi_extra: Any) -> dict[str, Any]:
    """``openapi_extra`` declaring the roles a route admits when the route checks them itself
    (a hot route authorizing inline, saving a dependency's cost per request; or a route whose
    domain decides per unit): the same security requirement ``require_roles`` declares, so the
    OpenAPI document and the route-roles test see it. The route must check exactly these."""
    names = sorted(r.value for r in {*roles, Role.OPERATOR})
    return {**openapi_extra, "security": [{SCHEME_NAME: names}]}


def require_roles(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting only the given roles (operators always pass); 403 otherwise.
    The roles are declared as the scopes of the route's OpenAPI security requirement."""
    allowed = {*roles, Role.OPERATOR}
    names = sorted(r.value for r in allowed)

    # A default, not ``Annotated``: postponed annotations cannot see ``names`` from here.
    async def check(principal: Principal = Security(identity, scopes=names)) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role.value} may not do this; needs {', '.join(names)}",
            )
        return principal

    return check
