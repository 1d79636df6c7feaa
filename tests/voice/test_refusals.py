"""Every refusal: the right status and the token service's reason, and nothing counted."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from arconv.token.v1 import token_service_pb2 as token_pb
from arconv.voice.v1 import voice_service_pb2 as pb
from google.rpc import error_details_pb2

from services.common.status import status_details
from tests.conftest import bearer
from tests.token.keyutil import claims, sign, tamper
from tests.voice.conftest import Voice

Code = grpc.StatusCode


async def refused(voice: Voice, token: str, text: str = "Hello.", **kw: Any) -> tuple[Code, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await voice.speak(token, text, **kw)
    infos = [d for d in status_details(err.value) if isinstance(d, error_details_pb2.ErrorInfo)]
    reason = infos[0].reason if infos else ""
    # A refusal of the token service names its reason too (DENY_REASON_SCOPE, ...).
    token_reason = infos[0].metadata.get("token_reason", "") if infos else ""
    if reason not in ("TOKEN_MISSING", "INVALID_ARGUMENT"):
        assert token_reason.startswith("DENY_REASON_"), (reason, token_reason)
        assert token_reason.removeprefix("DENY_REASON_") in reason or reason == "TOKEN_INVALID"
    return err.value.code(), reason


async def test_the_refusal_matrix_counts_nothing(voice_factory: Callable[..., Any]) -> None:
    voice: Voice = await voice_factory()
    mesh = voice.mesh
    tok = await voice.token(ops=("tts.synthesize",))
    kid, key = mesh.keys[0]
    expired = sign(claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 4000), key, kid)
    cases: list[tuple[str, dict[str, Any], Code, str]] = [
        ("", {}, Code.UNAUTHENTICATED, "TOKEN_MISSING"),
        (mesh.authority.mint("alice", ttl_s=600), {}, Code.UNAUTHENTICATED, "TOKEN_INVALID"),
        (tamper(tok.token, sub="mallory"), {}, Code.UNAUTHENTICATED, "TOKEN_INVALID"),
        (expired, {}, Code.UNAUTHENTICATED, "TOKEN_EXPIRED"),
        (tok.token, {"voice_id": "someone-else"}, Code.PERMISSION_DENIED, "TOKEN_VOICE"),
        (tok.token, {"visemes": True}, Code.PERMISSION_DENIED, "TOKEN_SCOPE"),
        (tok.token, {"text": "x" * 5001}, Code.INVALID_ARGUMENT, "INPUT_TOO_LONG"),
        (tok.token, {"text": "  "}, Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (tok.token, {"text": "[emotion:happy]"}, Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (tok.token, {"speed": 9.0}, Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ]
    for token, kw, code, reason in cases:
        text = kw.pop("text", "Hello.")
        assert await refused(voice, token, text, **kw) == (code, reason), (token[:12], kw, text)
    viseme_only = await voice.token(ops=("tts.viseme_stream",))
    assert await refused(voice, viseme_only.token) == (Code.PERMISSION_DENIED, "TOKEN_SCOPE")
    assert await mesh.counters("alice", tok.token_id) == (0, 0)
    assert await mesh.counters("alice", viseme_only.token_id) == (0, 0)
    # Revoked.
    await mesh.token.RevokeProviderToken(
        token_pb.RevokeProviderTokenRequest(token_id=tok.token_id), metadata=mesh.md("alice")
    )
    assert await refused(voice, tok.token) == (Code.UNAUTHENTICATED, "TOKEN_REVOKED")
    assert await mesh.counters("alice", tok.token_id) == (0, 0)


async def test_rate_and_quota(mesh_factory: Callable[..., Any]) -> None:
    from services.common.server import create_server
    from services.voice.app import VoiceSettings, open_spec
    from services.voice.engines.espeak import EspeakEngine
    from tests.token.conftest import BASE

    mesh = await mesh_factory(
        token_plans={"free": {"daily_characters": 60, "requests_per_token_per_hour": 3}}
    )
    settings = VoiceSettings(**BASE, token_addr=f"127.0.0.1:{mesh.token_port}")
    async with open_spec(settings, engines=[EspeakEngine()]) as spec:
        srv = await create_server(settings, spec, port=0)
        voice = Voice(mesh, srv.port)
        try:
            tok = await voice.token()
            for _ in range(2):
                assert (await voice.speak(tok.token, "Hello there.")).summary is not None
            assert await mesh.counters("alice", tok.token_id) == (2, 24)
            over = "This sentence would pass the daily quota."
            assert await refused(voice, tok.token, over) == (
                Code.RESOURCE_EXHAUSTED,
                "QUOTA_EXCEEDED",
            )
            assert await mesh.counters("alice", tok.token_id) == (2, 24)
            assert (await voice.speak(tok.token, "Hi.")).summary is not None
            assert await refused(voice, tok.token, "Hi.") == (
                Code.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
            )
            assert await mesh.counters("alice", tok.token_id) == (3, 27)
        finally:
            for ch in voice.channels:
                await ch.close()
            await srv.stop(0)


async def test_list_voices_needs_a_provider_token(voice: Voice) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await voice.stub.ListVoices(
            pb.ListVoicesRequest(), metadata=bearer(voice.mesh.authority.mint("alice", ttl_s=60))
        )
    assert err.value.code() == Code.UNAUTHENTICATED
