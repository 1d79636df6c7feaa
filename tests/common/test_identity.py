"""Users' tokens from an identity provider: keys from a JWKS URL the test serves over HTTP,
RS256 / ES256 / EdDSA, rotation, forged tokens, rate-limited refetches, failing closed; and
service tokens on their own key."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import jwt
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as pb_grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from google.rpc import error_details_pb2

from services.common import jwks as jwks_module
from services.common.auth import SERVICE_KID, JwtAuthority
from services.common.errors import Unauthenticated, Unavailable
from services.common.jwks import JwksKeys
from services.common.server import authority_from
from services.common.status import status_details
from tests.common.kit_servicer import kit_spec
from tests.conftest import FakeClock, StartServer, bearer, channel, make_settings

ISSUER = "https://idp.test/"
AUDIENCE = "arconv"


class Jwks:
    """A JWKS endpoint on a free port: its keys, status and delay can change; it counts GETs."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.status = 200
        self.delay_s = 0.0
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                time.sleep(outer.delay_s)
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        # A short poll: shutdown() waits for serve_forever to look at its flag.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp() -> Iterator[Jwks]:
    server = Jwks()
    yield server
    server.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The keys' clock (their ages, refresh and refetch intervals), moved on by the test."""
    fake = FakeClock()
    monkeypatch.setattr(jwks_module, "time", SimpleNamespace(monotonic=fake))
    return fake


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, use="sig")
    return jwk


def _token(private: Any, kid: str | None, alg: str, **over: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "alice@example.com",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(over)
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims, private, algorithm=alg, headers=headers)


def _authority(keys: JwksKeys) -> JwtAuthority:
    return JwtAuthority(
        secret="d" * 40,
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway_s=0,
        jwks=keys,
        algorithms=("RS256", "ES256", "EdDSA"),
    )


async def test_rs256_es256_and_eddsa_tokens_are_verified_with_the_published_keys(
    idp: Jwks,
) -> None:
    signers = {
        "RS256": _rsa(),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }
    idp.keys = [_public_jwk(k, f"k-{alg}", alg) for alg, k in signers.items()]
    auth = _authority(JwksKeys(idp.url))
    for alg, private in signers.items():
        principal = await auth.principal_for(_token(private, f"k-{alg}", alg), None)
        assert (principal.user_id, principal.is_service) == ("alice@example.com", False)
    assert idp.hits == 1  # one fetch served every key
    # The synchronous path uses the keys already fetched.
    assert auth.verify(_token(signers["ES256"], "k-ES256", "ES256"))["sub"] == "alice@example.com"


async def test_forged_and_confused_tokens_are_refused(idp: Jwks, clock: FakeClock) -> None:
    real = _rsa()
    idp.keys = [_public_jwk(real, "k1", "RS256")]
    auth = _authority(JwksKeys(idp.url, min_refetch_s=0.5))
    assert (await auth.verify_async(_token(real, "k1", "RS256")))["sub"] == "alice@example.com"

    async def refused(token: str) -> str:
        with pytest.raises(Unauthenticated) as err:
            await auth.verify_async(token)
        return str(err.value.reason)

    # Signed by another key under the real key's id.
    assert await refused(_token(_rsa(), "k1", "RS256")) == "TOKEN_SIGNATURE"
    # The real key's public half used as an HMAC secret (algorithm confusion).
    pem = real.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = jwt.encode(
        {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": 1, "exp": 2**40},
        "x" * 40,
        algorithm="HS256",
        headers={"kid": "k1"},
    )
    assert await refused(confused) == "TOKEN_ALGORITHM"
    assert await refused(confused.replace(confused.split(".")[2], pem.hex()[:43])) in (
        "TOKEN_ALGORITHM",
        "TOKEN_MALFORMED",
    )
    # An ES256 header on the RSA key, "none", a user token claiming the service role, the
    # wrong issuer and audience, an expired token.
    assert await refused(_token(ec.generate_private_key(ec.SECP256R1()), "k1", "ES256")) == (
        "TOKEN_ALGORITHM"
    )
    none = jwt.encode({"sub": "alice"}, None, algorithm="none")  # type: ignore[arg-type]
    assert await refused(none) == "TOKEN_ALGORITHM"
    assert await refused(_token(real, "k1", "RS256", role="service")) == "TOKEN_INVALID"
    assert await refused(_token(real, "k1", "RS256", iss="https://evil.test/")) == "TOKEN_INVALID"
    assert await refused(_token(real, "k1", "RS256", aud="other")) == "TOKEN_INVALID"
    assert await refused(_token(real, "k1", "RS256", exp=int(time.time()) - 60)) == (
        "TOKEN_EXPIRED"
    )
    # A development HS256 user token is not a user token any more.
    dev = jwt.encode(
        {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": 1, "exp": 2**40},
        "d" * 40,
        algorithm="HS256",
    )
    assert await refused(dev) == "TOKEN_ALGORITHM"
    # Made-up key ids: one refetch, then none until min_refetch_s has passed.
    assert idp.hits == 1
    clock.now += 0.5
    assert await refused(_token(real, "made-up-1", "RS256")) == "TOKEN_KEY_UNKNOWN"
    assert await refused(_token(real, "made-up-2", "RS256")) == "TOKEN_KEY_UNKNOWN"
    assert idp.hits == 2


async def test_rotation_a_new_kid_triggers_one_refetch(idp: Jwks) -> None:
    old, new = _rsa(), ed25519.Ed25519PrivateKey.generate()
    idp.keys = [_public_jwk(old, "2026-01", "RS256")]
    auth = _authority(JwksKeys(idp.url, min_refetch_s=0))
    assert await auth.verify_async(_token(old, "2026-01", "RS256"))
    # The provider rotates: a token with the new key's id makes concurrent callers wait for
    # one refetch.
    idp.keys = [_public_jwk(new, "2026-02", "EdDSA")]
    tokens = [_token(new, "2026-02", "EdDSA", sub=f"u{i}") for i in range(20)]
    claims = await asyncio.gather(*(auth.verify_async(t) for t in tokens))
    assert [c["sub"] for c in claims] == [f"u{i}" for i in range(20)]
    assert idp.hits == 2
    # The old key has left the set: a token it signs now is refused.
    with pytest.raises(Unauthenticated) as err:
        await auth.verify_async(_token(old, "2026-01", "RS256", sub="late"))
    assert err.value.reason == "TOKEN_KEY_UNKNOWN"


async def test_keys_are_refreshed_in_the_background_and_the_fetch_never_blocks_the_loop(
    idp: Jwks, clock: FakeClock
) -> None:
    first, second = _rsa(), _rsa()
    idp.keys = [_public_jwk(first, "a", "RS256")]
    keys = JwksKeys(idp.url, refresh_s=0.2, max_age_s=60, min_refetch_s=0)
    auth = _authority(keys)
    idp.delay_s = 0.25
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        await auth.verify_async(_token(first, "a", "RS256"))
    finally:
        task.cancel()
    assert ticks > 5  # the loop kept running while the keys were fetched
    idp.delay_s = 0
    idp.keys = [_public_jwk(first, "a", "RS256"), _public_jwk(second, "b", "RS256")]
    clock.now += 0.3
    # Past refresh_s: the current keys answer at once and a refresh starts behind them.
    await auth.verify_async(_token(first, "a", "RS256", sub="bob"))
    assert keys._fetch is not None
    await keys._fetch
    assert keys.fetches == 2 and idp.hits == 2
    assert auth.verify(_token(second, "b", "RS256"))["sub"] == "alice@example.com"


async def test_without_keys_the_verifier_fails_closed(idp: Jwks, clock: FakeClock) -> None:
    private = _rsa()
    idp.status = 503
    keys = JwksKeys(idp.url, refresh_s=0.1, max_age_s=0.3, min_refetch_s=0)
    auth = _authority(keys)
    with pytest.raises(Unavailable) as down:
        await auth.verify_async(_token(private, "k", "RS256"))
    assert down.value.reason == "JWKS_UNAVAILABLE" and "HTTP 503" in down.value.message
    idp.status = 200
    idp.keys = [_public_jwk(private, "k", "RS256")]
    assert await auth.verify_async(_token(private, "k", "RS256"))
    # The provider breaks; its keys keep serving until max_age_s, then nothing is accepted.
    idp.status = 500
    idp.keys = [{"kty": "RSA", "kid": "junk"}]
    clock.now += 0.35
    with pytest.raises(Unavailable):
        await auth.verify_async(_token(private, "k", "RS256", sub="after"))
    with pytest.raises(Unavailable):
        auth.verify(_token(private, "k", "RS256", sub="after-sync"))
    # A document without usable keys does not replace good ones either.
    idp.status = 200
    with pytest.raises(Unavailable) as bad:
        await auth.verify_async(_token(private, "k", "RS256", sub="junk"))
    assert "no usable signing key" in bad.value.message


def test_service_tokens_have_their_own_key() -> None:
    auth = JwtAuthority(secret="u" * 40, service_secret="s" * 40, issuer="i", audience="a")
    service = auth.mint("service:rooms", ttl_s=60, role="service")
    assert jwt.get_unverified_header(service)["kid"] == SERVICE_KID
    assert auth.verify(service)["role"] == "service"
    now = int(time.time())
    claims = {"sub": "x", "iss": "i", "aud": "a", "iat": now, "exp": now + 60, "role": "service"}
    # The users' key cannot make a service token, with or without the service kid.
    for headers in ({}, {"kid": SERVICE_KID}):
        forged = jwt.encode(claims, "u" * 40, algorithm="HS256", headers=headers)
        with pytest.raises(Unauthenticated):
            auth.verify(forged)
    # The service key cannot make a user token.
    user = jwt.encode({**claims, "role": "user"}, "s" * 40, "HS256", {"kid": SERVICE_KID})
    with pytest.raises(Unauthenticated):
        auth.verify(user)


async def test_a_server_takes_users_from_the_provider_and_services_by_their_key(
    idp: Jwks, tmp_path: Path, start_server: StartServer
) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    idp.keys = [_public_jwk(private, "es", "ES256")]
    settings = make_settings(
        tmp_path,
        jwt_jwks_url=idp.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        service_jwt_secret="v" * 40,
    )
    srv = await start_server(settings, kit_spec())
    async with channel(srv.port) as ch:
        stub = pb_grpc.RoomServiceStub(ch)
        room = await stub.GetRoom(
            pb.GetRoomRequest(room_id="r1"), metadata=bearer(_token(private, "es", "ES256"))
        )
        assert room.room.user_id == "alice@example.com"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetRoom(
                pb.GetRoomRequest(room_id="r1"),
                metadata=bearer(_token(ec.generate_private_key(ec.SECP256R1()), "es", "ES256")),
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        info = [d for d in status_details(err.value) if isinstance(d, error_details_pb2.ErrorInfo)]
        assert info[0].reason == "TOKEN_SIGNATURE"
        internal = pb_grpc.RoomInternalServiceStub(ch)
        service = authority_from(settings).mint("service:test", ttl_s=60, role="service")
        other = authority_from(make_settings(tmp_path, service_jwt_secret="w" * 40))
        wrong = other.mint("service:test", ttl_s=60, role="service")
        md = (*bearer(service), ("x-arconv-user", "alice"))
        await internal.AppendMessage(pb.AppendMessageRequest(room_id="r1"), metadata=md)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await internal.AppendMessage(
                pb.AppendMessageRequest(room_id="r1"),
                metadata=(*bearer(wrong), ("x-arconv-user", "alice")),
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert idp.hits == 1
