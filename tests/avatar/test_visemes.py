"""ComputeVisemes: markers removed, the shared speech engine's cue, input limits."""

from __future__ import annotations

import itertools

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb
from arconv.avatar.v1 import speech_pb2

from tests.avatar.conftest import AvatarClient


async def visemes(client: AvatarClient, text: str, tone: str = "") -> speech_pb2.SpeechCue:
    resp = await client.stub.ComputeVisemes(
        pb.ComputeVisemesRequest(text=text, tone=tone), metadata=client.user
    )
    return resp.cue


async def test_cue_for_text_with_markers(avatar: AvatarClient) -> None:
    cue = await visemes(avatar, "[emotion:happy,gesture:wave] Hello there! [tone:excited]")
    assert "[" not in cue.text and cue.text.startswith("Hello there!")
    assert cue.emotion == "happy" and cue.gesture == "wave"
    assert cue.tone == "excited" and cue.rate == pytest.approx(1.2)
    keys = list(cue.visemes)
    assert keys[0].name == "sil" and keys[-1].name == "sil" and keys[0].time_ms == 0
    assert all(a.time_ms < b.time_ms for a, b in itertools.pairwise(keys))
    for key in keys:
        assert speech_pb2.Viseme.Name(key.viseme) == f"VISEME_{key.name.upper()}"
        assert 0.0 <= key.weight <= 1.0
    assert cue.duration_ms >= keys[-1].time_ms > 0
    assert not cue.stream_id and cue.text_offset == 0


async def test_request_tone_wins_and_unknown_tone_is_neutral(avatar: AvatarClient) -> None:
    calm = await visemes(avatar, "[tone:excited] Take a breath.", tone="calm")
    assert calm.tone == "calm" and calm.rate == pytest.approx(0.9)
    odd = await visemes(avatar, "Take a breath.", tone="whimsical")
    assert odd.tone == "neutral" and odd.rate == pytest.approx(1.0)
    slow = await visemes(avatar, "Take a breath.", tone="calm")
    fast = await visemes(avatar, "Take a breath.", tone="excited")
    assert slow.duration_ms > fast.duration_ms


@pytest.mark.parametrize("text", ["", "   \n", "x" * 5001])
async def test_invalid_text(avatar: AvatarClient, text: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await visemes(avatar, text)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_longest_text_is_accepted(avatar: AvatarClient) -> None:
    cue = await visemes(avatar, ("Hello world. " * 400)[:5000])
    assert cue.duration_ms > 0


async def test_needs_a_token(avatar: AvatarClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await avatar.stub.ComputeVisemes(pb.ComputeVisemesRequest(text="hi"))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
